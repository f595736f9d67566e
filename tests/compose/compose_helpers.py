"""Small helpers shared by the composition tests."""

from __future__ import annotations

from typing import Any


def text_input(*names: str) -> dict[str, Any]:
    """An input schema of required string fields."""
    return {
        "type": "object",
        "properties": {n: {"type": "string"} for n in names},
        "required": list(names),
    }
