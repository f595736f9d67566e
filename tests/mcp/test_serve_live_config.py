"""A running ``mcphost serve`` applies ``mcphost config set`` without a restart."""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import time
from pathlib import Path

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def wait_for_line(fd: int, text: str, timeout: float = 20.0) -> str:
    """Read ``fd`` until a line containing ``text`` arrives (at most ``timeout`` s)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"no {text!r} in: {buf.decode(errors='replace')}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise EOFError(buf.decode(errors="replace"))
        buf += chunk
    return buf.decode()


def test_serve_uses_a_call_timeout_set_while_it_runs(
    mcp_home: Path, plugin_dirs: dict[str, Path], mcphost_cmd: list[str]
) -> None:
    cmd = mcphost_cmd
    params = StdioServerParameters(
        command=cmd[0],
        args=[
            *cmd[1:],
            "-v",
            "--home",
            str(mcp_home),
            "serve",
            "--no-environment",
            "--plugin-dir",
            str(plugin_dirs["textkit"]),
        ],
    )
    read_fd, write_fd = os.pipe()

    async def scenario() -> None:
        with os.fdopen(write_fd, "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (r, w), ClientSession(r, w) as s:
                await s.initialize()
                done = await s.call_tool("textkit.sleep", {"seconds": 0})
                assert not done.is_error
                proc = await asyncio.to_thread(
                    subprocess.run,
                    [*cmd, "--home", str(mcp_home), "config", "set", "call_timeout", "0.3"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert proc.returncode == 0, proc.stderr
                await asyncio.to_thread(
                    wait_for_line, read_fd, "setting call_timeout changed from 60.0 to 0.3"
                )
                result = await s.call_tool("textkit.sleep", {"seconds": 30})
                assert result.is_error
                text = result.content[0].text  # type: ignore[union-attr]
                assert "0.3" in text, text

    try:
        asyncio.run(scenario())
    finally:
        os.close(read_fd)
