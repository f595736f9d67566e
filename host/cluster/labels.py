"""Ray label selectors of ``[plugins.NAME] labels`` (docs/cluster.md): their syntax,
checked when the configuration loads, and whether a node's labels satisfy one, checked
before a remote worker starts so that a selector no live node satisfies fails the start
with a clear error instead of leaving the actor pending.

The syntax is Ray's (Ray >= 2.49, Kubernetes-style): a key ``[prefix/]name``; a value
``v`` (equals), ``!v`` (not equal or absent), ``in(a,b)`` (one of), ``!in(a,b)`` (none
of). Ray is not imported here: the configuration loads without it.
"""

from __future__ import annotations

import re

__all__ = ["label_error", "selector_matches", "unmatched"]

_NAME = r"[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?"
_PREFIX = re.compile(rf"{_NAME}(\.{_NAME})*")
_KEY_NAME = re.compile(_NAME)
#: As Ray's own check: values in ``in(...)`` separated by a comma and at most one space.
_SELECTOR = re.compile(rf"!?(in\({_NAME}(, ?{_NAME})*\)|{_NAME})")


def label_error(key: str, value: str) -> str | None:
    """Why ``key = value`` is not a label selector Ray accepts (None: it is)."""
    if "/" in key:
        prefix, name = key.rsplit("/", 1)
        if len(prefix) > 253 or not _PREFIX.fullmatch(prefix):
            return (
                f"label key {key!r}: its prefix must be DNS labels separated by dots "
                "(like example.com/zone)"
            )
    else:
        name = key
    if not _KEY_NAME.fullmatch(name):
        return (
            f"label key {key!r}: a name is at most 63 letters, digits, '-', '_' or '.', "
            "beginning and ending with a letter or digit"
        )
    if not _SELECTOR.fullmatch(value):
        return (
            f'label {key} = {value!r}: write a value ("a"), its negation ("!a"), one '
            'of several ("in(a,b)") or none of several ("!in(a,b)")'
        )
    return None


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a node with ``labels`` satisfies every condition of ``selector``."""
    for key, condition in selector.items():
        negate = condition.startswith("!")
        body = condition[1:] if negate else condition
        if body.startswith("in(") and body.endswith(")"):
            wanted = {v.strip() for v in body[3:-1].split(",")}
        else:
            wanted = {body}
        if (labels.get(key) in wanted) == negate:
            return False
    return True


def unmatched(selector: dict[str, str], nodes: list[dict[str, str]]) -> bool:
    """Whether no node among ``nodes`` (their labels) satisfies ``selector``."""
    return not any(selector_matches(selector, n) for n in nodes)
