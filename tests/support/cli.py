"""Running the ``mcphost`` command line: the installed console script in its own process,
or click's runner in this one (the same code, faster, with no process to wait for)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from click.testing import CliRunner, Result

from mcphost.host import Home

__all__ = ["MCPHOST", "invoke", "mcphost_command", "run_mcphost", "run_mcphost_ok_async"]

#: The ``mcphost`` console script of this interpreter's environment.
MCPHOST = Path(sys.executable).with_name("mcphost")


def mcphost_command() -> list[str]:
    """The argv that runs ``mcphost``: the console script, or this interpreter running
    the CLI's entry point where no script was installed."""
    if MCPHOST.exists():
        return [str(MCPHOST)]
    return [sys.executable, "-c", "from mcphost.host.cli import main; main()"]


def _home_args(home: Path | Home | None) -> list[str]:
    if home is None:
        return []
    return ["--home", str(home.root if isinstance(home, Home) else home)]


def run_mcphost(
    *args: str | Path,
    home: Path | Home | None = None,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 60,
    command: list[str] | None = None,
    **popen: object,
) -> subprocess.CompletedProcess[str]:
    """``mcphost [--home HOME] ARGS...`` as a real process, its output captured as text
    (unless ``stdout`` or ``stderr`` say otherwise).

    ``env`` is its whole environment (this process's by default), ``extra_env`` is
    added to it; ``command`` replaces the console script (a launcher that runs the CLI
    with the arguments after it); other keyword arguments go to :func:`subprocess.run`
    (``stdin``, ``cwd``...)."""
    options: dict[str, object] = {"capture_output": True}
    if "stdout" in popen or "stderr" in popen:
        options = {}
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*(command or mcphost_command()), *_home_args(home), *map(str, args)],
        text=True,
        timeout=timeout,
        env={**(os.environ if env is None else env), **(extra_env or {})},
        **options,
        **popen,
    )


async def run_mcphost_ok_async(*args: str | Path, home: Path | Home | None = None) -> str:
    """``mcphost [--home HOME] ARGS...`` as a real process, awaited from a coroutine (as
    an operator runs a command beside a running host, whose loop goes on meanwhile);
    fails the test with its output unless it exits 0; returns its stdout."""
    proc = await asyncio.create_subprocess_exec(
        *mcphost_command(),
        *_home_args(home),
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out + err).decode()
    return out.decode()


def invoke(
    *args: str | Path,
    home: Path | Home | None = None,
    input: str | None = None,
    env: Mapping[str, str | None] | None = None,
) -> Result:
    """``mcphost [--home HOME] ARGS...`` run in this process by click's runner; an
    exception the command does not handle propagates to the test."""
    from mcphost.host.cli import main

    return CliRunner().invoke(
        main,
        [*_home_args(home), *map(str, args)],
        input=input,
        env=env,
        catch_exceptions=False,
    )
