"""Fixtures for the MCP front end: a home that runs unsigned example plugins, the
``mcphost serve`` command line, and an embedded HTTP server on a free port."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from http_helpers import embedded_http


@pytest.fixture
def mcp_home(tmp_path: Path) -> Path:
    """A home whose configuration runs the (unsigned) example plugins from directories."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("allow_unsigned = true\n")
    return home


def mcphost_command() -> list[str]:
    """The installed ``mcphost`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("mcphost")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from mcphost.host.cli import main; main()"]


@pytest.fixture
def mcphost_cmd() -> list[str]:
    return mcphost_command()


@pytest.fixture
def serve_argv(mcp_home: Path, plugin_dirs: dict[str, Path]) -> list[str]:
    """``mcphost serve`` over stdio with textkit and mathkit (argv, command first)."""
    return [
        *mcphost_command(),
        "--home",
        str(mcp_home),
        "serve",
        "--no-environment",
        "--plugin-dir",
        str(plugin_dirs["textkit"]),
        "--plugin-dir",
        str(plugin_dirs["mathkit"]),
    ]


class RawStdio:
    """``mcphost serve`` driven with raw bytes, for the malformed-input cases only."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self._buf = b""

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send_json(self, obj: Any) -> None:
        self.send(json.dumps(obj).encode() + b"\n")

    def read(self, timeout: float = 20.0) -> dict[str, Any]:
        """The next message the server writes, waiting at most ``timeout`` seconds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("mcphost serve wrote nothing in time")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("mcphost serve closed its stdout")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def raw_stdio(serve_argv: list[str]) -> Iterator[RawStdio]:
    raw = RawStdio([*serve_argv, "--max-message-bytes", "4096"])
    try:
        yield raw
    finally:
        if raw.proc.poll() is None:
            raw.proc.kill()
            raw.proc.wait()


@pytest.fixture
def embedded() -> Any:
    """``embedded(home, dirs, **HttpOptions)``: async context manager of :class:`Served`."""
    return embedded_http


#: Tools added to a copy of textkit for the flood tests: each writes ``done-<tag>`` into
#: the plugin's data directory when it has produced everything, so a test whose client
#: reads nothing can tell when the flood is over; and ``watched_sleep``, which writes
#: ``started-<tag>`` and, when cancelled in its worker, ``cancelled-<tag>``.
CHATTY_TOOLS = '''

def _done(ctx: Context, tag: str) -> None:
    (ctx.data_dir / f"done-{tag}").write_text("done")


@plugin.tool
async def watched_sleep(seconds: float, ctx: Context, tag: str = "sleep") -> float:
    """Sleep like ``sleep``; say in the data directory that it began and if it was cancelled."""
    (ctx.data_dir / f"started-{tag}").write_text("started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        (ctx.data_dir / f"cancelled-{tag}").write_text("cancelled")
        raise
    return seconds


@plugin.tool
def shout(lines: int, ctx: Context, width: int = 100, tag: str = "shout") -> int:
    """Print ``lines`` lines of ``width`` characters to stdout."""
    import sys

    row = "x" * width + "\\n"
    for _ in range(lines):
        sys.stdout.write(row)
    sys.stdout.flush()
    _done(ctx, tag)
    return lines


@plugin.tool
def chatter(lines: int, ctx: Context, tag: str = "chatter") -> int:
    """Log ``lines`` lines at info level, all inside this call."""
    for i in range(lines):
        ctx.info(f"chatter line {i} of {lines}")
    _done(ctx, tag)
    return lines


@plugin.tool
def progress_flood(steps: int, ctx: Context, tag: str = "progress") -> int:
    """Report progress ``steps`` times."""
    for i in range(steps):
        ctx.progress(i + 1, steps)
    _done(ctx, tag)
    return steps
'''


@pytest.fixture(scope="session")
def chatty_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """textkit, plus the flood tools above, built as a wheel and pip-installed (--target)."""
    from mcphost.host.examples import build_wheels, copy_example, find_examples

    root = tmp_path_factory.mktemp("chatty")
    source = find_examples(Path(__file__).resolve().parents[2] / "example_plugins")
    project = copy_example(source / "textkit", root / "src", version="1.0.1")
    init = project / "mcphost_textkit" / "__init__.py"
    init.write_text(init.read_text() + CHATTY_TOOLS)
    wheel = build_wheels({"textkit": project}, root / "wheels")["textkit"]
    target = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "-q",
            "install",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return target
