"""The root ``mcphost`` group, its global options and the one place an error becomes an
exit code (every command's :class:`MCPHostError` ends here)."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from mcphost.sandbox.loops import loop_factory
from mcphost.sdk.errors import MCPHostError

from ..home import Home

__all__ = ["echo_json", "main", "pass_home", "run_async"]

T = TypeVar("T")


#: Command name -> the module under mcphost.host.cli that defines it. A command's module
#: is imported only when that command runs (or help lists them all): `mcphost serve`
#: answers its client sooner without the registry, signing and demo code loaded.
COMMAND_MODULES = {
    "audit": "audit",
    "call": "core",
    "compose": "compose_cmd",
    "config": "config_cmd",
    "demo": "demo",
    "doctor": "core",
    "keys": "keys",
    "plugin": "plugin",
    "registry": "registry_cmd",
    "serve": "serve",
    "status": "status",
    "tokens": "tokens",
    "tools": "core",
}


class _Group(click.Group):
    """Loads commands on first use; turns any :class:`MCPHostError` into a clear message
    and its exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if cmd_name not in self.commands and module is not None:
            importlib.import_module(f"{__package__}.{module}")
        return super().get_command(ctx, cmd_name)

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
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar="MCPHOST_LOG_FORMAT",
    show_default=True,
    help="How log lines on stderr look; json: one object per line, for log collectors "
    "(time, level, logger, message, plugin, tool, call_id, trace_id).",
)
@click.version_option(package_name="mcphost")
@click.pass_context
def main(ctx: click.Context, home: Path | None, verbose: int, log_format: str) -> None:
    """mcphost: a sandboxed plugin host for MCP tools."""
    level = logging.WARNING - 10 * min(verbose, 2)
    if log_format == "json":
        from .log_format import configure

        configure(level)
    else:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Home(home)


pass_home = click.make_pass_decorator(Home)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a new loop of the kind mcphost runs (uvloop unless MCPHOST_LOOP
    says otherwise)."""
    try:
        factory = loop_factory()  # a bad MCPHOST_LOOP is a ConfigError, shown like any
    except BaseException:
        coro.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
