"""The SDK refuses, when a tool is declared, what the host would refuse at the handshake."""

from __future__ import annotations

from typing import Literal

import pytest

from mcphost.sdk import Plugin
from mcphost.sdk.tool_rules import MAX_DESCRIPTION_BYTES, MAX_TOOLS


@pytest.mark.parametrize("name", ["", "a.b", "../../etc/passwd", "\x1b[31mred", "two\nlines"])
def test_a_tool_name_outside_mcps_rule_is_refused_when_declared(name: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        Plugin("rules").tool(name=name)(lambda: None)


def test_a_full_tool_name_over_128_characters_is_refused_when_declared() -> None:
    p = Plugin("p" * 64)
    with pytest.raises(ValueError, match="is 129 characters, over MCP's limit of 128"):
        p.tool(name="t" * 64)(lambda: None)
    p.tool(name="t" * 63)(lambda: None)  # exactly 128: allowed


def test_a_description_over_its_limit_is_refused_when_declared() -> None:
    p = Plugin("rules")
    with pytest.raises(ValueError, match=f"over the limit of {MAX_DESCRIPTION_BYTES:,}"):
        p.tool(name="long", description="d" * (MAX_DESCRIPTION_BYTES + 1))(lambda: None)
    p.tool(name="fits", description="d" * MAX_DESCRIPTION_BYTES)(lambda: None)
    assert list(p.tools) == ["fits"]


def test_a_schema_over_its_limit_is_refused_when_declared() -> None:
    def pick(choice: str) -> str:
        return choice

    # One of 10,000 values: an enum of them in the schema.
    pick.__annotations__["choice"] = Literal[tuple(f"value-{i}" for i in range(10_000))]

    with pytest.raises(ValueError, match=r"its input schema is [0-9,]+ bytes of JSON, over"):
        Plugin("rules").tool(pick)


def test_more_tools_than_the_limit_are_refused_when_declared() -> None:
    p = Plugin("rules")
    for i in range(MAX_TOOLS):
        p.tool(name=f"t{i}")(lambda: None)
    with pytest.raises(ValueError, match=f"has {MAX_TOOLS} tools, the most it may"):
        p.tool(name="one_more")(lambda: None)
