"""``mcphost demo``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..demo import run_demo
from .main import main, run_async


@main.command()
@click.option(
    "--examples",
    type=click.Path(file_okay=False, path_type=Path),
    help="The example_plugins folder (default: the copy installed with mcphost).",
)
@click.option("--keep", is_flag=True, help="Keep the throw-away home and print where it is.")
@click.option(
    "--isolation",
    type=click.Choice(["auto", "bwrap", "rlimits"]),
    default=None,
    help="Force an isolation backend (default: the configuration's, usually auto).",
)
def demo(examples: Path | None, keep: bool, isolation: str | None) -> None:
    """Install the example plugins into a throw-away home, call them, hot-swap one under
    load and roll it back, and show what mcphost does."""
    figures = run_async(run_demo(click.echo, examples=examples, keep=keep, isolation=isolation))
    swap = figures["swap"]
    if swap["failed"] or swap["stale"]:
        click.echo(
            f"error: the hot swap under load had {swap['failed']} failed calls and "
            f"{swap['stale']} answers from the wrong version; both must be 0",
            err=True,
        )
        sys.exit(1)
