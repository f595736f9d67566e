"""sdk/content.py and the asking side of Context, run in this process (ToolTester)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Literal

import msgspec
import pytest

from mcphost.sdk import Context, Plugin
from mcphost.sdk.ask import elicit_params, sample_params
from mcphost.sdk.content import (
    Audio,
    Block,
    Image,
    Text,
    ToolResult,
    from_wire,
    to_mcp,
)
from mcphost.sdk.errors import AskUnsupported
from mcphost.sdk.testing import ToolTester


class Size(msgspec.Struct):
    w: int
    h: int


plugin = Plugin("rich")


@plugin.tool
def pic() -> Image:
    return Image(b"\x89PNG\x00\xff", "image/png")


@plugin.tool
def both() -> list[Block]:
    return [Text("hi"), Audio(b"RIFF", "audio/wav")]


@plugin.tool
def sized() -> ToolResult[Size]:
    return ToolResult([Text("2x3")], Size(2, 3))


@plugin.tool
async def ask(ctx: Context) -> str:
    got = await ctx.sample("hello", max_tokens=5)
    return got.text


def test_content_crosses_the_wire_as_bytes_and_reaches_mcp_in_base64() -> None:
    with ToolTester(plugin) as t:
        wire = t.call("pic")
        assert wire == {"$content": "image", "data": b"\x89PNG\x00\xff", "mimeType": "image/png"}
        assert from_wire(wire) == Image(b"\x89PNG\x00\xff", "image/png")
        blocks, _, has = to_mcp(wire)
        assert blocks == [{"type": "image", "data": "iVBORwD/", "mimeType": "image/png"}]
        assert not has
        blocks, _, _ = to_mcp(t.call("both"))
        assert [b["type"] for b in blocks] == ["text", "audio"]
        blocks, structured, has = to_mcp(t.call("sized"))
        assert has and structured == {"w": 2, "h": 3}


def test_content_return_types_give_no_output_schema_and_tool_result_gives_its_models() -> None:
    assert plugin.tools["pic"].spec.output_schema is None
    assert plugin.tools["both"].spec.output_schema is None
    schema = plugin.tools["sized"].spec.output_schema
    assert schema is not None and set(schema["properties"]) == {"w", "h"}


def test_bad_blocks_say_what_is_wrong() -> None:
    with pytest.raises(TypeError, match="must be bytes"):
        Image("aGk=", "image/png")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="MIME type"):
        Audio(b"x", "wav")


def test_tool_tester_answers_asks_with_its_handlers_or_says_it_has_none() -> None:
    def sampling(params: dict[str, Any]) -> dict[str, Any]:
        return {"role": "assistant", "content": {"type": "text", "text": "hey"}, "model": "m"}

    with ToolTester(plugin, sampling_handler=sampling) as t:
        assert t.call("ask") == "hey"
        assert t.asked[0][0] == "sample"
    with ToolTester(plugin) as t, pytest.raises(AskUnsupported, match="sampling_handler"):
        t.call("ask")


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


@dataclasses.dataclass
class Form:
    name: str
    mood: Mood = Mood.HAPPY
    age: int | None = None
    level: Literal["low", "high"] = "low"


def test_elicitation_schemas_from_classes_are_flat_with_enums_and_defaults() -> None:
    params, tp = elicit_params("Tell me", Form)
    assert tp is Form
    props = params["requestedSchema"]["properties"]
    assert props["mood"]["type"] == "string" and sorted(props["mood"]["enum"]) == ["happy", "sad"]
    assert props["mood"]["default"] == "happy"
    assert props["age"]["type"] == "integer"
    assert props["level"] == {"type": "string", "enum": ["high", "low"], "default": "low"}
    assert params["requestedSchema"]["required"] == ["name"]


def test_elicitation_refuses_nested_fields_and_sampling_checks_its_arguments() -> None:
    @dataclasses.dataclass
    class Nested:
        inner: list[int]

    with pytest.raises(TypeError, match="flat forms"):
        elicit_params("x", Nested)
    with pytest.raises(TypeError, match="JSON Schema object"):
        elicit_params("x", {"type": "array"})
    with pytest.raises(ValueError, match="max_tokens"):
        sample_params("hi", max_tokens=0)
    with pytest.raises(ValueError, match="role"):
        sample_params([{"role": "system", "content": "x"}], max_tokens=5)
    image = sample_params([("user", [Text("look"), Image(b"\x00", "image/png")])], max_tokens=5)
    assert image["messages"][0]["content"][1] == {
        "type": "image",
        "data": "AA==",
        "mimeType": "image/png",
    }
