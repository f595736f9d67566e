"""References: how a step's arguments name the composition's input or an earlier output.

A string value that starts with ``$`` is a reference, kept typed (never templated):

- ``$input`` or ``$input.values[0]``: the composition's input, or a part of it;
- ``$steps.fetch.output.items[0].id``: what step ``fetch`` produced, or a part of it;
- ``$item`` / ``$item.name``: the current item of a ``for_each`` step.

``$$`` starts a literal string beginning with ``$``. Objects and lists in ``args`` may
hold references anywhere; a reference may stand for a whole object or list.
``{"$first": [ref, ...]}`` is the first of the values that is not null (the output of a
fallback chain or of a branch): the steps it reads need no ``default``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec

__all__ = ["Ref", "RefError", "iter_refs", "parse_ref", "resolve"]

_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]")
_HEAD = re.compile(r"\$(input|item|steps\.([A-Za-z_][A-Za-z0-9_]*)\.output)")


FIRST = "$first"


class First(msgspec.Struct, frozen=True):
    """``{"$first": [...]}``: the first of the values that is not null."""

    options: tuple[Any, ...]


class RefError(ValueError):
    """A reference that cannot be parsed, or whose path is not in the data."""


class Ref(msgspec.Struct, frozen=True):
    """A parsed reference: ``root`` is "input", "item" or "steps"; ``step`` the step id
    for "steps"; ``path`` the keys and indexes after it."""

    root: str
    step: str
    path: tuple[str | int, ...]
    text: str

    def get(self, value: Any) -> Any:
        """Follow ``path`` into ``value``."""
        for i, part in enumerate(self.path):
            if isinstance(part, int):
                if not isinstance(value, list) or part >= len(value):
                    raise RefError(f"{self.text}: no item [{part}] at {self._at(i)}")
            elif not isinstance(value, dict) or part not in value:
                raise RefError(f"{self.text}: no field {part!r} at {self._at(i)}")
            value = value[part]
        return value

    @property
    def head(self) -> str:
        return f"$steps.{self.step}.output" if self.root == "steps" else f"${self.root}"

    def _at(self, i: int) -> str:
        return format_path(self.head, self.path[:i])


def format_path(head: str, path: tuple[str | int, ...]) -> str:
    out = head
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def is_ref(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("$") and not value.startswith("$$")


def parse_ref(text: str) -> Ref:
    """Parse ``text`` (which starts with ``$``); :class:`RefError` says what is wrong."""
    m = _HEAD.match(text)
    if m is None:
        raise RefError(
            f"{text!r} is not a reference: use $input..., $steps.ID.output... or $item... "
            "(write $$ for a literal string starting with $)"
        )
    path: list[str | int] = []
    pos = m.end()
    while pos < len(text):
        seg = _SEGMENT.match(text, pos)
        if seg is None:
            raise RefError(f"{text!r}: cannot read the path from {text[pos:]!r}")
        path.append(seg.group(1) if seg.group(1) is not None else int(seg.group(2)))
        pos = seg.end()
    root = m.group(1)
    if root.startswith("steps."):
        return Ref("steps", m.group(2), tuple(path), text)
    return Ref(root, "", tuple(path), text)


def iter_refs(value: Any, field: str = "") -> Iterator[tuple[str, str]]:
    """(field path, reference text) of every reference inside ``value``."""
    if isinstance(value, str):
        if is_ref(value):
            yield field, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from iter_refs(v, f"{field}.{k}" if field else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from iter_refs(v, f"{field}[{i}]")


def compile_value(value: Any) -> Any:
    """``value`` with every reference parsed (a :class:`Ref`) and ``$$`` unescaped, so a
    run only looks values up."""
    if isinstance(value, str):
        if is_ref(value):
            return parse_ref(value)
        return value[1:] if value.startswith("$$") else value
    if isinstance(value, dict):
        if list(value) == [FIRST] and isinstance(value[FIRST], list):
            return First(tuple(compile_value(v) for v in value[FIRST]))
        return {k: compile_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compile_value(v) for v in value]
    return value


def resolve(compiled: Any, input: Any, outputs: dict[str, Any], item: Any = None) -> Any:
    """The value of a compiled ``args``/``output`` with the data of this run."""
    if isinstance(compiled, Ref):
        if compiled.root == "input":
            return compiled.get(input)
        if compiled.root == "item":
            return compiled.get(item)
        return compiled.get(outputs[compiled.step])
    if isinstance(compiled, First):
        for option in compiled.options:
            got = resolve(option, input, outputs, item)
            if got is not None:
                return got
        return None
    if isinstance(compiled, dict):
        return {k: resolve(v, input, outputs, item) for k, v in compiled.items()}
    if isinstance(compiled, list):
        return [resolve(v, input, outputs, item) for v in compiled]
    return compiled
