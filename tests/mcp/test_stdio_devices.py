"""stdin and stdout of `mcphost serve` may be /dev/null or a terminal, on either loop."""

from __future__ import annotations

import asyncio
import os

from mcphost.host.mcp.stdio_pipes import open_stdio


def test_dev_null_on_stdin_and_stdout_reads_as_the_end_and_swallows_writes() -> None:
    async def scenario() -> bytes:
        source, sink = await open_stdio(
            os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY)
        )
        await sink.write(b"{}\n")
        got = await asyncio.wait_for(source.read(), 5)
        await sink.close()
        source.close()
        return got

    assert asyncio.run(scenario()) == b""


def test_a_terminal_on_stdin_and_stdout_is_read_and_written() -> None:
    master, slave = os.openpty()

    async def scenario() -> tuple[bytes, bytes]:
        source, sink = await open_stdio(os.dup(slave), os.dup(slave))
        await sink.write(b"out\n")
        written = await asyncio.get_running_loop().run_in_executor(None, os.read, master, 100)
        os.write(master, b"in\n")
        read = await asyncio.wait_for(source.read(), 5)
        await sink.close()
        source.close()
        return written, read

    try:
        written, read = asyncio.run(scenario())
    finally:
        os.close(master)
        os.close(slave)
    assert written == b"out\r\n"
    assert read == b"in\n"
