"""``mcphost compose``: write, check, install, run and roll back compositions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import msgspec

from mcphost.sdk.errors import CompositionInvalid, CompositionUnavailable, MCPHostError

from ..compose import Composition, CompositionStore, Plan, check, load_composition, make_run
from ..compose.model import invalid
from ..compose.templates import TEMPLATES, template, to_toml
from ..config import load_config
from ..home import Home
from ..host import Host
from .homes import pass_existing_home, pass_home_to_create, pass_serving_home
from .main import echo_json, main, run_async


def _switched_on(home: Home) -> None:
    cfg = load_config(home.config_file)
    if not cfg.features.composition:
        raise CompositionUnavailable(
            f"compositions are switched off (features.composition = false in "
            f"{home.config_file}); switch them on with `mcphost config set "
            "features.composition true`"
        )


async def _catalog(host: Host, leave_out: str = "") -> dict[str, Any]:
    catalog: dict[str, Any] = host.plugin_catalog()
    catalog.update((t.name, t) for t in host.tools() if not t.plugin and t.name != leave_out)
    return catalog


def _checked(home: Home, comp: Composition, source: str) -> None:
    async def go() -> list[Any]:
        async with Host(home) as host:
            return check(comp, await _catalog(host, comp.name))

    problems = run_async(go())
    if problems:
        raise invalid(problems, source)


@main.group()
def compose() -> None:
    """Compositions: workflows of tools, checked before they run (docs/compositions.md)."""


@compose.command("new")
@click.argument("kind", metavar="TEMPLATE", type=click.Choice(sorted(TEMPLATES)))
@click.argument("name")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write it (default: NAME with _ for the dot, .toml).",
)
def new(kind: str, name: str, output: Path | None) -> None:
    """Write a composition NAME (<group>.<name>) from TEMPLATE, to edit."""
    comp = template(kind, name)
    path = output or Path(name.replace(".", "_") + ".toml")
    if path.exists():
        raise click.UsageError(f"{path} exists; pick another name or --output")
    path.write_text(
        f"# A {kind} composition; docs/compositions.md lists every field.\n" + to_toml(comp),
        encoding="utf-8",
    )
    click.echo(f"wrote {path}; check it with `mcphost compose validate {path}`")


@compose.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
@pass_serving_home
def validate(home: Home, file: Path, as_json: bool) -> None:
    """Check FILE against the tools installed now; print every problem at once."""
    _switched_on(home)
    try:
        comp = load_composition(file)
        _checked(home, comp, str(file))
    except CompositionInvalid as exc:
        if not as_json:
            raise
        echo_json(
            {"valid": False, "problems": exc.data.get("problems", []), "message": exc.message}
        )
        sys.exit(exc.exit_code)
    if as_json:
        echo_json({"valid": True, "name": comp.name, "steps": len(comp.steps)})
        return
    click.echo(f"{file}: {comp.name} is valid ({len(comp.steps)} steps)")


@compose.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_home_to_create
def add(home: Home, file: Path) -> None:
    """Install the composition in FILE as a new version (checked against the tools
    installed now); running hosts serve it within a second."""
    _switched_on(home)
    comp = load_composition(file)
    _checked(home, comp, str(file))
    with CompositionStore(home, create=True) as store:
        version = store.add(comp)
    click.echo(f"added {comp.name} version {version}; running hosts serve it within a second")


@compose.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@pass_existing_home
def list_(home: Home, as_json: bool) -> None:
    """The installed compositions, their versions and whether they can run."""
    with CompositionStore(home) as store:
        recs = store.records()
    if as_json:
        echo_json(msgspec.to_builtins(recs))
        return
    if not recs:
        click.echo("no compositions installed; add one with `mcphost compose add FILE`")
        return
    for r in recs:
        state = f"UNAVAILABLE: {r.unavailable}" if r.unavailable else "ok"
        versions = ",".join(map(str, r.versions))
        click.echo(f"{r.name}  v{r.active} (versions {versions})  {state}  {r.description}")


@compose.command()
@click.argument("name")
@click.option("--version", "version", type=int, help="Show this version instead.")
@click.option("--json", "as_json", is_flag=True, help="Print the definition as JSON.")
@pass_existing_home
def show(home: Home, name: str, version: int | None, as_json: bool) -> None:
    """Print the definition of composition NAME (its active version)."""
    with CompositionStore(home) as store:
        rec = store.record(name)
        comp = store.definition(name, version)
    if as_json:
        echo_json({"record": msgspec.to_builtins(rec), "definition": comp.to_data()})
        return
    click.echo(f"# {name} version {version or rec.active} (active: {rec.active})")
    if rec.unavailable:
        click.echo(f"# UNAVAILABLE: {rec.unavailable}")
    click.echo(to_toml(comp), nl=False)


@compose.command()
@click.argument("name")
@pass_existing_home
def remove(home: Home, name: str) -> None:
    """Remove composition NAME, every version of it."""
    with CompositionStore(home) as store:
        versions = store.remove(name)
    click.echo(f"removed {name} (versions {', '.join(map(str, versions))})")


@compose.command()
@click.argument("name")
@click.option("--to", "to", type=int, help="Roll back to this version instead.")
@click.option("--force", is_flag=True, help="Roll back even if that version fails validation.")
@pass_existing_home
def rollback(home: Home, name: str, to: int | None, force: bool) -> None:
    """Make the version of NAME that was active before (or --to N) active again; it is
    checked against the tools installed now first."""
    _switched_on(home)
    with CompositionStore(home) as store:
        target = to if to is not None else store.record(name).previous
        comp = store.definition(name, target) if target is not None else None
    if comp is not None and not force:
        _checked(
            home, comp, f"composition {name} version {target} (pass --force to roll back anyway)"
        )
    with CompositionStore(home) as store:
        old, new = store.rollback(name, to)
    click.echo(f"{name}: version {old} -> {new}; running hosts switch within a second")


@compose.command()
@click.argument("target", metavar="FILE|NAME")
@click.option("--input", "input_", default="{}", help="The input as a JSON object.")
@click.option("--trace", is_flag=True, help="Print each step's start, duration and outcome.")
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds for the whole run."
)
@pass_serving_home
def run(home: Home, target: str, input_: str, trace: bool, timeout: float | None) -> None:
    """Run a composition from FILE, or the installed one called NAME; print its output."""
    _switched_on(home)
    try:
        args = json.loads(input_)
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"--input is not valid JSON ({exc})") from None
    path = Path(target)
    if path.suffix in (".toml", ".json") or path.exists():
        comp = load_composition(path)
        source = str(path)
    else:
        with CompositionStore(home) as store:
            rec = store.record(target)
            if rec.unavailable:
                raise CompositionUnavailable(
                    f"composition {target} is unavailable: {rec.unavailable}"
                )
            comp = store.definition(target)
        source = f"composition {target}"

    async def go() -> tuple[Any, Any, BaseException | None]:
        async with Host(home) as host:
            problems = check(comp, await _catalog(host, comp.name))
            if problems:
                raise invalid(problems, source)
            r = make_run(
                Plan(comp), host, args, timeout=timeout, call_timeout=host.config.call_timeout
            )
            try:
                return await r.run(), r, None
            except MCPHostError as exc:
                return None, r, exc

    result, r, error = run_async(go())
    if trace:
        _print_trace(r)
    if error is not None:
        raise error
    click.echo(json.dumps(result, indent=2))


def _print_trace(r: Any) -> None:
    records = r.trace()
    end = max((rec.start + rec.duration for rec in records), default=0.0) or 1e-9
    width = 30
    click.echo("step            start ms  duration ms  attempts  outcome  timeline", err=True)
    for rec in records:
        a = int(rec.start / end * width)
        b = max(a + 1, int((rec.start + rec.duration) / end * width))
        bar = " " * a + "#" * (b - a)
        outcome = rec.status + (f" [{rec.error}]" if rec.error else "")
        items = f"  {rec.items} items, {rec.failed_items} failed" if rec.items else ""
        click.echo(
            f"{rec.id:<15} {rec.start * 1000:8.1f}  {rec.duration * 1000:11.1f}  "
            f"{rec.attempts:8d}  {outcome:<7}  |{bar:<{width}}|{items}",
            err=True,
        )
