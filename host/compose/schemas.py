"""JSON schemas as the validator reads them: the part at a path, and whether a value of
one schema can flow into a parameter of another."""

from __future__ import annotations

from typing import Any

__all__ = ["ANY", "at_path", "flow_problem", "json_type", "type_names"]

#: The schema that says nothing: any value.
ANY: dict[str, Any] = {}

_ALL = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})


def _deref(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return node if isinstance(node, dict) else ANY
    return schema


def _options(schema: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _deref(schema, root)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            out: list[dict[str, Any]] = []
            for s in schema[key]:
                out.extend(_options(s, root) if isinstance(s, dict) else [ANY])
            return out
    return [schema]


def type_names(schema: dict[str, Any] | None, root: dict[str, Any] | None = None) -> set[str]:
    """The JSON types a schema allows (every type when it does not say)."""
    if not schema:
        return set(_ALL)
    root = root if root is not None else schema
    out: set[str] = set()
    for opt in _options(schema, root):
        t = opt.get("type")
        if isinstance(t, str):
            out.add(t)
        elif isinstance(t, list):
            out.update(x for x in t if isinstance(x, str))
        elif "const" in opt:
            out.add(json_type(opt["const"]))
        elif "enum" in opt and isinstance(opt["enum"], list):
            out.update(json_type(v) for v in opt["enum"])
        else:
            return set(_ALL)
    return out


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def at_path(
    schema: dict[str, Any] | None, path: tuple[str | int, ...], root: dict[str, Any] | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """The schema of the part of a value at ``path``, or (None, what is missing)."""
    if schema is None:
        return ANY, None
    root = root if root is not None else schema
    node = _deref(schema, root)
    for i, part in enumerate(path):
        opts = _options(node, root)
        found: list[dict[str, Any]] = []
        for opt in opts:
            if not opt or ("type" not in opt and "properties" not in opt and "items" not in opt):
                return ANY, None  # says nothing: anything may be there
            if isinstance(part, int):
                items = opt.get("items")
                if isinstance(items, dict):
                    found.append(_deref(items, root))
                elif "array" in type_names(opt, root):
                    return ANY, None
            else:
                props = opt.get("properties")
                if isinstance(props, dict) and part in props:
                    found.append(_deref(props[part], root))
                elif isinstance(opt.get("additionalProperties"), dict):
                    found.append(_deref(opt["additionalProperties"], root))
                elif "object" in type_names(opt, root) and not isinstance(props, dict):
                    return ANY, None
        if not found:
            what = f"item [{part}]" if isinstance(part, int) else f"field {part!r}"
            kinds = "/".join(sorted(type_names(node, root)))
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[:i])
            return None, f"has no {what} at {where or 'the top'} (a {kinds})"
        node = found[0] if len(found) == 1 else {"anyOf": found}
    return node, None


def flow_problem(
    source: dict[str, Any] | None,
    target: dict[str, Any] | None,
    source_root: dict[str, Any] | None = None,
    target_root: dict[str, Any] | None = None,
) -> str | None:
    """Why a value of ``source`` cannot go where ``target`` is expected (None: it can)."""
    have = type_names(source, source_root)
    want = type_names(target, target_root)
    if have >= _ALL or want >= _ALL:
        return None
    accepted = set(want)
    if "number" in accepted:
        accepted.add("integer")
    wrong = have - accepted
    if wrong:
        return f"{'/'.join(sorted(have))} cannot flow into {'/'.join(sorted(want))}"
    if have == {"array"} and want == {"array"} and source and target:
        s_items = _deref(source, source_root or source).get("items")
        t_items = _deref(target, target_root or target).get("items")
        if isinstance(s_items, dict) and isinstance(t_items, dict):
            inner = flow_problem(s_items, t_items, source_root or source, target_root or target)
            if inner:
                return f"array items: {inner}"
    return None
