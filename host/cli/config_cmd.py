"""``mcphost config show`` and ``config set``: the effective configuration, where each value
came from, and changing one setting in config.toml."""

from __future__ import annotations

import json
import os
import tomllib
from typing import Any, Literal, get_args, get_origin

import click
from pydantic import ValidationError

from mcphost.sdk.errors import ConfigError

from ..config import HostConfig, PluginSettings, ToolOverride, load_config
from ..home import Home
from .homes import pass_existing_home
from .main import echo_json, main

__all__ = ["config", "effective_config"]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        # A table named with dots (a tool's, "plugin.tool") is quoted, as in TOML.
        name = f'{prefix}"{key}"' if "." in key else f"{prefix}{key}"
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
    """Show or change the configuration (config.toml under the home)."""


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


def _parse_value(text: str) -> Any:
    """VALUE as a TOML value (``2.5``, ``true``, ``["a:1"]``), else as a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


@config.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("key")
@click.argument("value")
@pass_existing_home
def set_(home: Home, key: str, value: str) -> None:
    """Set KEY (dotted: limits.memory_mb) to VALUE in config.toml, keeping the rest of
    the file and its comments. A running host applies it within a second, or notes it
    as needing a restart."""
    from ..config_watch import flat_settings, is_live
    from ..follow import refuse_if_following

    refuse_if_following(home, f"mcphost config set {key} ...")
    valid = sorted(flat_settings(HostConfig()))
    if key not in valid and not _plugin_key(key):
        per_plugin = [k for k in PluginSettings.model_fields if k != "tools"]
        raise ConfigError(
            f"unknown setting {key!r}; valid settings: {', '.join(valid)}, and per plugin "
            f"plugins.NAME.{{{','.join(per_plugin)}}}, plugins.NAME.tools.TOOL.name, "
            "plugins.NAME.tools.TOOL.description"
        )
    import tomlkit  # only here: it keeps the file's comments and layout as they are

    path = home.config_file
    text = path.read_text("utf-8") if path.exists() else ""
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}; fix the file first") from None
    *tables, last = key.split(".")
    table: Any = doc
    for t in tables:
        if t not in table:
            table[t] = tomlkit.table()
        table = table[t]
    table[last] = _parse_value(value)
    new_text = tomlkit.dumps(doc)
    try:
        new_config = HostConfig.model_validate(tomllib.loads(new_text))
    except ValidationError as exc:
        raise ConfigError(_set_error(key, exc)) from None
    if _plugin_key(key) and key.split(".")[2] != "replicas":
        _check_names(home, new_config)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(new_text, encoding="utf-8")
    if path.exists():
        os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)  # whole: a running host never reads half a file
    when = (
        "running hosts apply it within a second"
        if is_live(key)
        else ("running hosts apply it when restarted")
    )
    click.echo(f"{key} = {tomlkit.item(table[last]).as_string()}  ({when})")


def _check_names(home: Home, config: HostConfig) -> None:
    """Refuse names that would clash among the registry's active plugins (a running host
    would refuse the file too, and keep its last good configuration)."""
    from ..registry_link import check_names, open_reader

    reader = open_reader(home)
    if reader is None:
        return
    with reader:
        tools = {r.plugin: r.tools for r in reader.active()}
    check_names(home, config, tools)


def _plugin_key(key: str) -> bool:
    """``plugins.NAME.<setting>`` or ``plugins.NAME.tools.TOOL.<name|description>``."""
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "plugins":
        return parts[2] in PluginSettings.model_fields and parts[2] != "tools"
    return (
        len(parts) == 5
        and parts[0] == "plugins"
        and parts[2] == "tools"
        and parts[4] in ToolOverride.model_fields
    )


def _set_error(key: str, exc: ValidationError) -> str:
    msgs = "; ".join(e["msg"] for e in exc.errors())
    parts = key.split(".")
    if parts[0] == "plugins":  # tables by name: the model of the setting itself
        model: Any = ToolOverride if len(parts) == 5 else PluginSettings
        parts = parts[-1:]
    else:
        model = HostConfig
    field: Any = model
    for part in parts:
        field = field.model_fields[part].annotation
    choices = ""
    if get_origin(field) is Literal:
        choices = "; valid values: " + ", ".join(map(str, get_args(field)))
    elif field is bool:
        choices = "; valid values: true, false"
    return f"invalid value for {key}: {msgs}{choices}"
