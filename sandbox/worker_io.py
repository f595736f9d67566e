"""The worker's channel I/O on plain threads: blocking reads, locked writes, one timer.

The worker reads its channel on its main thread (:class:`FrameReader`), so a call to a
sync tool is decoded, run and answered there without waking an event loop; whichever
thread has a frame to send writes it itself (:class:`FrameWriter`). Both work on a
blocking socket:

- Reads go into one preallocated buffer, every whole frame in it is decoded in one
  pass; a frame larger than the buffer is read straight into a buffer of its size
  (``MSG_WAITALL``), kept for the next large frame (:class:`~.buffers.BodyBuffer`), so
  it is neither copied, nor grown piece by piece, nor paid for in fresh pages.
- Writes are encoded into one outgoing buffer and leave with ``sendall`` of the whole
  buffer (the kernel takes it from the buffer itself: no ``data[n:]`` copies after a
  partial write); a buffer that grew large keeps its memory for the next large frame
  (:class:`~.buffers.OutBuffer`). Frames queued while a batch is handled (all the
  frames of one read, a loop turn's results, a run of stream items) leave together in
  one write.

:class:`Timer` is the worker's one clock thread: the deadlines of calls running on
threads, and a bounded delay before queued frames are written when their producer
might block (a stream whose generator is slow to yield the next item).
"""

from __future__ import annotations

import heapq
import math
import socket
import threading
import time
from collections.abc import Callable, Collection

from mcphost.sdk.errors import ProtocolError

from .buffers import BodyBuffer, OutBuffer
from .protocol import HEADER, Error, Frame, FrameCodec, ItemBatch

__all__ = ["FrameReader", "FrameWriter", "Timer", "send_or_error"]

#: Size of the read buffer; larger frames get a buffer of their own.
READ_SIZE = 256 * 1024
#: A read is never offered less room than this (the partial frame moves to the front).
MIN_READ = 16 * 1024
#: Queued frames are written once they hold this many bytes, whoever queued them.
FLUSH_BYTES = 256 * 1024


class FrameReader:
    """Whole frames from a blocking socket, as many as each read brings."""

    def __init__(self, sock: socket.socket, codec: FrameCodec) -> None:
        self._sock = sock
        self.codec = codec
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)
        self._start = 0  # the first byte not yet decoded
        self._end = 0  # the end of the bytes read
        self._large = BodyBuffer()  # where frames larger than the buffer are read
        self.frames_in = 0

    def read(self) -> list[Frame] | None:
        """The next frames (at least one); None once the peer closed the channel.

        A malformed frame or one over the limit raises ProtocolError; a socket error
        (the channel's fd closed in this process) raises OSError."""
        codec = self.codec
        size = HEADER.size
        while True:
            buf, view = self._buf, self._view
            pos, end = self._start, self._end
            frames: list[Frame] = []
            need = size
            while end - pos >= size:
                need = size + codec.body_length(buf, pos)
                if end - pos < need:
                    break
                frames.append(codec.decode(view[pos + size : pos + need]))
                pos += need
                need = size
            if frames:
                if pos == end:
                    pos = end = 0
                self._start, self._end = pos, end
                self.frames_in += len(frames)
                return frames
            if need > READ_SIZE:
                frame = self._read_large(pos, end, need)
                if frame is None:
                    return None
                self.frames_in += 1
                return [frame]
            if self._large.held:
                self._large.trim()
            if len(buf) - end < max(need - (end - pos), MIN_READ) and pos:
                # Move the partial frame to the front (at most one frame, and small).
                rest = bytes(view[pos:end])
                buf[: len(rest)] = rest
                pos, end = 0, len(rest)
            self._start = pos
            n = self._sock.recv_into(view[end:])
            if not n:
                return None
            self._end = end + n

    def _read_large(self, pos: int, end: int, need: int) -> Frame | None:
        """A frame larger than the read buffer, read into a buffer of its size."""
        size = HEADER.size
        length = need - size
        body = self._large.view(length)
        have = end - pos - size
        body[:have] = self._view[pos + size : end]
        self._start = self._end = 0
        while have < length:
            n = self._sock.recv_into(body[have:], 0, socket.MSG_WAITALL)
            if not n:
                return None
            have += n
        return self.codec.decode(body)


class FrameWriter:
    """Frames to a blocking socket from any thread, in order, under one lock.

    :meth:`send` writes at once (with whatever was queued before it); :meth:`queue`
    only encodes, and whoever queues makes sure :meth:`flush` follows.
    :meth:`queue_item` adds a stream's item to the writer's open :class:`Items` batch
    (protocol 4): consecutive items of one stream leave in one frame, which any other
    frame, item of another stream, write or flush closes first, so frames keep their
    order. After a failed
    write (the host went away) the writer is closed and drops what it is given: the
    reader sees the end of the channel and ends the worker.
    """

    def __init__(self, sock: socket.socket, codec: FrameCodec) -> None:
        self._sock = sock
        self.codec = codec
        self._lock = threading.Lock()
        self._out = OutBuffer()
        self._batch = ItemBatch(codec)
        self.closed = False
        self.frames_out = 0

    def send(self, frame: Frame) -> None:
        """Write ``frame`` now; ProtocolError (and nothing written) if it is too large."""
        with self._lock:
            if self.closed:
                return
            if self._batch.count:
                self._close_batch()
            self.codec.encode_out(frame, self._out)
            self.frames_out += 1
            self._write()

    def queue(self, frame: Frame) -> int:
        """Encode ``frame`` to leave with the next write; ProtocolError if too large.
        Returns the length of its body (0 once the writer is closed)."""
        with self._lock:
            if self.closed:
                return 0
            if self._batch.count:
                self._close_batch()
            out = self._out
            size = self.codec.encode_out(frame, out)
            self.frames_out += 1
            if len(out) >= FLUSH_BYTES:
                self._write()
            return size

    def queue_item(self, call_id: int, seq: int, value: object) -> int:
        """Add item ``seq`` of stream ``call_id`` to the open Items batch (the peer must
        speak protocol 4); it leaves with the next write. Returns the item's size (its
        value's bytes; 0 once the writer is closed); ProtocolError, and nothing added,
        for a value too large for any frame."""
        with self._lock:
            if self.closed:
                return 0
            batch = self._batch
            size = batch.add(call_id, seq, value)
            if size < 0:  # another stream's, or the frame is full: this batch leaves
                self._close_batch()
                size = batch.add(call_id, seq, value)
            if len(batch.values) + len(self._out) >= FLUSH_BYTES:
                self._close_batch()
                self._write()
            return size

    def _close_batch(self) -> None:
        """Encode the open Items batch into the outgoing buffer; the caller holds the
        lock."""
        self._batch.encode_into(self.codec, self._out)
        self.frames_out += 1

    def write(self, frames: OutBuffer) -> None:
        """Write frames encoded elsewhere (after what is queued), and empty ``frames``."""
        with self._lock:
            self._write()
            if frames.used and not self.closed:
                try:
                    frames.write_to(self._sock)
                except OSError:
                    self.closed = True
        frames.clear()

    def flush(self) -> None:
        """Write what is queued."""
        if self._out.used or self._batch.count:
            with self._lock:
                self._write()

    @property
    def pending(self) -> int:
        """Bytes queued and not yet written."""
        return len(self._out) + len(self._batch.values)

    def close(self) -> None:
        """Write what is queued, then write nothing more."""
        with self._lock:
            self._write()
            self.closed = True

    def _write(self) -> None:
        if self._batch.count:
            self._close_batch()
        out = self._out
        if not out.used or self.closed:
            return
        try:
            out.write_to(self._sock)
        except OSError:
            self.closed = True
        out.clear()


class Timer:
    """One thread calling ``expire(call_id)`` once a call's deadline passes (for ids
    still in ``live``) and ``flush()`` once a requested delay is over.

    A call that finished is not removed: its entry is skipped when it comes up, and the
    heap is pruned when such entries outnumber the calls in flight several times over.
    Times are ``time.monotonic()``. The thread starts on first use.
    """

    def __init__(
        self, live: Collection[int], expire: Callable[[int], None], flush: Callable[[], None]
    ) -> None:
        self._live = live
        self._expire = expire
        self._flush = flush
        self._heap: list[tuple[float, int]] = []
        self._flush_at = math.inf
        self._wake_at = math.inf  # when the thread wakes next on its own
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def add(self, when: float, call_id: int) -> None:
        """Expire ``call_id`` at ``when`` unless it has finished by then."""
        with self._cond:
            heap = self._heap
            if len(heap) > 4 * len(self._live) + 1024:
                live = self._live
                heap[:] = [e for e in heap if e[1] in live]
                heapq.heapify(heap)
            heapq.heappush(heap, (when, call_id))
            self._wake(when)

    def flush_at(self, when: float) -> None:
        """Call ``flush()`` at ``when`` (or earlier, with an earlier request)."""
        with self._cond:
            if when < self._flush_at:
                self._flush_at = when
                self._wake(when)

    def _wake(self, when: float) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="timer", daemon=True)
            self._thread.start()
        if when < self._wake_at:
            self._cond.notify()

    def _run(self) -> None:
        heap = self._heap
        live = self._live
        cond = self._cond
        while True:
            due: list[int] = []
            flush = False
            with cond:
                while True:
                    now = time.monotonic()
                    while heap and (heap[0][1] not in live or heap[0][0] <= now):
                        _, call_id = heapq.heappop(heap)
                        if call_id in live:
                            due.append(call_id)
                    if self._flush_at <= now:
                        self._flush_at = math.inf
                        flush = True
                    if due or flush:
                        break
                    self._wake_at = min(heap[0][0] if heap else math.inf, self._flush_at)
                    cond.wait(None if self._wake_at == math.inf else self._wake_at - now)
                self._wake_at = -math.inf  # busy: the next add need not notify
            for call_id in due:
                self._expire(call_id)
            if flush:
                self._flush()


def send_or_error(writer: FrameWriter, frame: Frame, call_id: int, *, now: bool) -> int:
    """Send (or queue) ``frame``; one over the size limit fails its call instead.
    Returns the length of a queued frame's body (0 when sent now or failed)."""
    try:
        if now:
            writer.send(frame)
            return 0
        return writer.queue(frame)
    except ProtocolError as exc:
        err = Error(id=call_id, code=exc.code, message=exc.message)
        if now:
            writer.send(err)
        else:
            writer.queue(err)
        return 0
