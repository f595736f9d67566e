"""Batch keys: what a call's arguments say about which calls may share a batch and
which replica should run it.

A tool's ``batch_key`` is an argument's name (read directly) or a JMESPath expression
over the arguments (compiled once, with the compositions' expression helper; JMESPath
is imported only then). A key's value is made a string (canonical JSON), so equal
values are equal keys whatever their type.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mcphost.sdk.errors import InvalidArguments
from mcphost.sdk.tool_rules import KEY_NAME

__all__ = ["KeyFunction", "key_function"]

#: ``key(args)``: the call's key as a string.
KeyFunction = Callable[[dict[str, Any]], str]


def _text(value: Any) -> str:
    if type(value) is str:
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def key_function(tool: str, key: str) -> KeyFunction | None:
    """The function giving a call's key for ``tool``'s ``batch_key`` (None: no key)."""
    if not key:
        return None
    if KEY_NAME.fullmatch(key):

        def by_name(args: dict[str, Any]) -> str:
            return _text(args.get(key))

        return by_name
    from ..compose.expr import Condition, ExpressionError

    try:
        expr = Condition(key)
    except ExpressionError as exc:
        raise InvalidArguments(f"{tool}: its batch_key {key!r} {exc}") from None

    def by_expression(args: dict[str, Any]) -> str:
        try:
            return _text(expr.value(args))
        except ExpressionError as exc:
            raise InvalidArguments(
                f"{tool}: the batch key could not be read from these arguments: {exc}",
                data={"tool": tool},
            ) from None

    return by_expression
