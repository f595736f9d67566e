"""Fixtures for the MCP front end: a home that runs unsigned example plugins, the
``mcphost serve`` command line, and an embedded HTTP server on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from http_helpers import embedded_http
from support.cli import mcphost_command
from support.raw_stdio import RawStdio
from support.wheels import install_target


@pytest.fixture
def mcp_home(tmp_path: Path) -> Path:
    """A home whose configuration runs the (unsigned) example plugins from directories."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("allow_unsigned = true\n")
    return home


@pytest.fixture
def mcphost_cmd() -> list[str]:
    """The argv that runs ``mcphost`` (support.cli.mcphost_command)."""
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


@pytest.fixture
def raw_stdio(serve_argv: list[str]) -> Iterator[RawStdio]:
    raw = RawStdio([*serve_argv, "--max-message-bytes", "4096"])
    try:
        yield raw
    finally:
        raw.kill()


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
    return install_target(wheel, root / "site")
