"""A pipe handed to the event loop has one owner, which closes it once, on every loop.

uvloop gives a pipe's fd to libuv, which closes it with the transport; the file object
attached to the transport then closed the same number again when it was collected, so a
descriptor opened in between (by any thread) was closed under its owner (uvloop issue
#763). Under uvloop the file object must leave the fd alone; under the stdlib loop the
transport closes the fd through it."""

from __future__ import annotations

import asyncio
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
