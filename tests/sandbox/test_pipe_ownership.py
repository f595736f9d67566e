"""A pipe handed to the event loop has one owner, which closes it once, on every loop.

uvloop gives a pipe's fd to libuv, which closes it with the transport; the file object
attached to the transport then closed the same number again when it was collected, so a
descriptor opened in between (by any thread) was closed under its owner (uvloop issue
#763). Under uvloop the file object must leave the fd alone; under the stdlib loop the
transport closes the fd through it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os

import pytest

from mcphost.sandbox.loops import pipe_file


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.mark.parametrize("direction", ["read", "write"])
async def test_a_pipe_given_to_the_loop_is_closed_by_one_owner(direction: str) -> None:
    loop = asyncio.get_running_loop()
    libuv = type(loop).__module__.startswith("uvloop")
    r, w = os.pipe()
    mine, other = (r, w) if direction == "read" else (w, r)
    f = pipe_file(mine, "rb" if direction == "read" else "wb")
    if direction == "read":
        transport, _ = await loop.connect_read_pipe(asyncio.Protocol, f)
    else:
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol, f)
    try:
        if libuv:
            # What the collector does to the file object first: it must not close the
            # number that libuv will close (and that another thread may hold by then).
            f.close()
            assert is_open(mine), "the file object closed the fd that libuv owns"
        transport.close()
        del transport
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)  # the loop closes its handle in a callback
        assert not is_open(mine), "nobody closed the pipe"
    finally:
        os.close(other)


async def test_the_workers_output_pipes_are_owned_by_the_loop_alone() -> None:
    from mcphost.sandbox.spawn import start_process

    proc = await start_process(
        ["/bin/sh", "-c", "echo out; echo err >&2"],
        env=None,
        cwd=None,
        pass_fds=(),
        preexec_fn=None,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert await proc.stdout.read() == b"out\n"
    assert await proc.stderr.read() == b"err\n"
    assert await proc.wait() == 0
    assert proc._popen.stdout is None and proc._popen.stderr is None


async def test_a_pipe_whose_connection_is_cancelled_is_closed_once() -> None:
    """A start cancelled while the loop connects a worker's output pipe: the transport
    already owns the fd and closes it later; the start must not close the number too,
    or it closes whatever descriptor was given that number in between."""
    from mcphost.sandbox.spawn import _pipe_reader

    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    r, w = os.pipe()
    pipe = open(r, "rb", buffering=0)  # noqa: SIM115 - _pipe_reader closes it
    reader = asyncio.ensure_future(_pipe_reader(loop, pipe, 1024))
    await asyncio.sleep(0)  # the connection is under way
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    # A descriptor opened now takes the lowest free number: the start's, had it closed it.
    newcomer = os.open(os.devnull, os.O_RDONLY)
    try:
        for _ in range(5):
            await asyncio.sleep(0)  # the transport closes its fd in a callback
        gc.collect()
        assert is_open(newcomer), "the cancelled start closed a descriptor not its own"
        assert errors == [], errors
    finally:
        with contextlib.suppress(OSError):
            os.close(newcomer)
        os.close(w)
