"""``mcphost config show``: the effective configuration and where each value came from."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import click

from mcphost.sdk.errors import ConfigError

from ..config import load_config
from ..home import Home
from .homes import pass_existing_home
from .main import echo_json, main

__all__ = ["config", "effective_config"]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def effective_config(home: Home) -> list[dict[str, Any]]:
    """Every setting as ``{"key", "value", "source"}``; source is "default" or the file."""
    cfg = load_config(home.config_file)
    file_keys: set[str] = set()
    if home.config_file.exists():
        try:
            file_keys = set(_flatten(tomllib.loads(home.config_file.read_text("utf-8"))))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # load_config said so
            raise ConfigError(f"{home.config_file} is not valid TOML: {exc}") from None
    values = _flatten(cfg.model_dump(mode="json"))
    source = str(home.config_file)
    rows = []
    for key in sorted(values):
        # A table set whole in the file (e.g. `limits = {...}`) counts for its keys too.
        from_file = key in file_keys or any(key.startswith(k + ".") for k in file_keys)
        rows.append(
            {"key": key, "value": values[key], "source": source if from_file else "default"}
        )
    return rows


@main.group()
def config() -> None:
    """Show the configuration (config.toml under the home)."""


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
@pass_existing_home
def show(home: Home, as_json: bool) -> None:
    """Print every setting, its effective value and where it came from."""
    rows = effective_config(home)
    if as_json:
        echo_json(
            {
                "config_file": str(home.config_file),
                "exists": home.config_file.exists(),
                "settings": rows,
            }
        )
        return
    state = "" if home.config_file.exists() else " (not present: all defaults)"
    click.echo(f"# configuration file: {home.config_file}{state}")
    width = max(len(r["key"]) + len(json.dumps(r["value"])) for r in rows) + 3
    for r in rows:
        line = f"{r['key']} = {json.dumps(r['value'])}"
        click.echo(f"{line:<{width}}  # {r['source']}")
