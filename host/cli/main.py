"""The root ``mcphost`` group, its global options and the error-to-exit-code mapping."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from mcphost.sdk.errors import MCPHostError

from ..home import Home

__all__ = ["cli_errors", "echo_json", "main", "pass_home", "run_async"]

T = TypeVar("T")


class _Group(click.Group):
    """Turns any :class:`MCPHostError` into a clear message and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MCPHostError as exc:
            click.echo(f"error [{exc.code}]: {exc.message}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="MCPHOST_HOME",
    help=(
        "Where mcphost keeps its state (default: $MCPHOST_HOME, else "
        "$XDG_DATA_HOME/mcphost, else ~/.local/share/mcphost)."
    ),
)
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.version_option(package_name="mcphost")
@click.pass_context
def main(ctx: click.Context, home: Path | None, verbose: int) -> None:
    """mcphost: a sandboxed plugin host for MCP tools."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Home(home)


pass_home = click.make_pass_decorator(Home)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def cli_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Kept for commands defined outside the root group; the group already maps errors."""
    return fn


# Commands register here; each module adds its own with main.add_command().
from . import audit, config_cmd, core, demo, keys, plugin, serve  # noqa: E402,F401
