"""Type hints become JSON Schemas; arguments are validated with errors that name the field."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest

from mcphost.sdk import Context, InvalidArguments, Plugin


class Point(msgspec.Struct):
    """A point in the plane."""

    x: float
    y: float


@dataclasses.dataclass
class Window:
    """A labelled rectangle."""

    label: str
    corner: Point
    size: list[int] = dataclasses.field(default_factory=lambda: [1, 1])


class Opaque:
    """Neither a Struct nor a dataclass."""


class Summary(msgspec.Struct):
    """What a tool returns."""

    count: int
    names: list[str]


plugin = Plugin("schemas")


@plugin.tool
def basic(text: str, times: int = 2, loud: bool = False) -> str:
    """Repeat the text.

    The second paragraph stays in the description too.
    """
    return text * times


@plugin.tool
def optional(name: str | None = None, tags: list[str] | None = None) -> None:
    """Optional parameters."""


@plugin.tool
def nested(window: Window, points: list[Point], ctx: Context) -> Summary:
    """Nested structures, and a context that is not part of the schema."""
    return Summary(count=len(points), names=[window.label])


@plugin.tool
def numbers(values: list[float], weights: dict[str, float]) -> list[float]:
    """A list and a mapping."""
    return values


@plugin.tool
def stream_items(n: int) -> Iterator[Point]:
    """A sync generator of points."""
    yield Point(0, 0)


@plugin.tool
async def astream_items(n: int) -> AsyncIterator[int]:
    """An async generator of ints."""
    yield n


@plugin.tool
def untyped_result(x: int):  # type: ignore[no-untyped-def]
    """No return annotation."""
    return x


@plugin.tool(name="renamed", description="Described here, not by the docstring.")
def whatever(x: int) -> int:
    """Ignored docstring."""
    return x


def spec(name: str) -> Any:
    return plugin.tools[name].spec


def test_required_parameters_defaults_and_types_come_from_the_signature() -> None:
    schema = spec("basic").input_schema
    assert schema["type"] == "object"
    assert schema["required"] == ["text"]
    assert schema["properties"]["text"] == {"type": "string"}
    assert schema["properties"]["times"] == {"type": "integer", "default": 2}
    assert schema["properties"]["loud"] == {"type": "boolean", "default": False}
    assert schema["additionalProperties"] is False


def test_optional_parameters_accept_null_and_are_not_required() -> None:
    schema = spec("optional").input_schema
    assert "required" not in schema or schema["required"] == []
    name = schema["properties"]["name"]
    assert {"type": "null"} in name["anyOf"] and {"type": "string"} in name["anyOf"]
    assert name["default"] is None
    tags = schema["properties"]["tags"]
    assert {"type": "array", "items": {"type": "string"}} in tags["anyOf"]


def test_lists_and_mappings_have_their_item_types() -> None:
    props = spec("numbers").input_schema["properties"]
    assert props["values"] == {"type": "array", "items": {"type": "number"}}
    assert props["weights"] == {"type": "object", "additionalProperties": {"type": "number"}}


def test_nested_structs_and_dataclasses_are_described_in_defs() -> None:
    schema = spec("nested").input_schema
    assert set(schema["properties"]) == {"window", "points"}  # no ctx
    assert schema["properties"]["window"] == {"$ref": "#/$defs/Window"}
    assert schema["properties"]["points"] == {
        "type": "array",
        "items": {"$ref": "#/$defs/Point"},
    }
    window = schema["$defs"]["Window"]
    assert window["required"] == ["label", "corner"]
    assert window["properties"]["corner"] == {"$ref": "#/$defs/Point"}
    assert window["properties"]["size"]["type"] == "array"
    point = schema["$defs"]["Point"]
    assert point["properties"] == {"x": {"type": "number"}, "y": {"type": "number"}}
    assert point["description"] == "A point in the plane."


def test_the_context_parameter_is_injected_and_never_part_of_the_schema() -> None:
    tool = plugin.tools["nested"]
    assert tool.signature.context_param == "ctx"
    assert "ctx" not in tool.spec.input_schema["properties"]


def test_the_output_schema_comes_from_the_return_annotation() -> None:
    out = spec("nested").output_schema
    assert out["title"] == "Summary"
    assert out["required"] == ["count", "names"]
    assert out["properties"]["names"] == {"type": "array", "items": {"type": "string"}}
    assert spec("numbers").output_schema == {"type": "array", "items": {"type": "number"}}
    assert spec("basic").output_schema == {"type": "string"}


def test_a_streaming_tools_output_schema_describes_one_item() -> None:
    assert spec("stream_items").kind == "stream"
    assert spec("stream_items").output_schema["title"] == "Point"
    assert spec("astream_items").kind == "stream"
    assert spec("astream_items").output_schema == {"type": "integer"}


def test_tools_without_a_return_annotation_or_returning_none_have_no_output_schema() -> None:
    assert spec("untyped_result").output_schema is None
    assert spec("optional").output_schema is None


def test_the_description_is_the_whole_docstring_unless_given() -> None:
    assert spec("basic").description == (
        "Repeat the text.\n\nThe second paragraph stays in the description too."
    )
    assert spec("renamed").description == "Described here, not by the docstring."
    assert "renamed" in plugin.tools and "whatever" not in plugin.tools


def test_the_handshake_descriptors_are_every_tools_spec() -> None:
    assert [s.name for s in plugin.specs()] == list(plugin.tools)


def test_valid_arguments_are_converted_to_the_declared_types() -> None:
    tool = plugin.tools["nested"]
    kwargs = tool.signature.bind(
        "schemas.nested",
        {"window": {"label": "w", "corner": {"x": 1, "y": 2}}, "points": [{"x": 0, "y": 0.5}]},
    )
    assert kwargs["window"] == Window(label="w", corner=Point(1.0, 2.0), size=[1, 1])
    assert kwargs["points"] == [Point(0.0, 0.5)]
    assert plugin.tools["basic"].signature.bind("schemas.basic", {"text": "a"}) == {
        "text": "a",
        "times": 2,
        "loud": False,
    }


@pytest.mark.parametrize(
    ("tool", "args", "named"),
    [
        ("basic", {}, "missing required field `text`"),
        ("basic", {"text": 3}, "`$.text`"),
        ("basic", {"text": "a", "times": "many"}, "`$.times`"),
        ("basic", {"text": "a", "colour": "red"}, "unknown field `colour`"),
        ("nested", {"window": {"label": "w"}, "points": []}, "`corner`"),
        (
            "nested",
            {"window": {"label": "w", "corner": {"x": 1, "y": 2}}, "points": [{"x": "a"}]},
            "`$.points[0].x`",
        ),
        ("numbers", {"values": [1, "two"], "weights": {}}, "`$.values[1]`"),
    ],
)
def test_invalid_arguments_are_refused_with_an_error_naming_the_field(
    tool: str, args: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidArguments) as info:
        plugin.tools[tool].signature.bind(f"schemas.{tool}", args)
    assert info.value.code == "invalid_arguments"
    assert named in info.value.message
    assert "input schema" in info.value.message  # says where to look
    assert info.value.data["tool"] == f"schemas.{tool}"


def test_an_invalid_arguments_message_leaves_the_tool_name_to_whoever_shows_it() -> None:
    # The CLI, MCP clients and the demo show the error next to the tool's name already.
    with pytest.raises(InvalidArguments) as info:
        plugin.tools["basic"].signature.bind("schemas.basic", {"text": 3})
    assert info.value.message.startswith("invalid arguments: Expected `str`, got `int`")
    assert "schemas.basic" not in info.value.message
    with pytest.raises(InvalidArguments) as info:
        plugin.tools["basic"].signature.bind("schemas.basic", [1])  # type: ignore[arg-type]
    assert "schemas.basic" not in info.value.message


def test_arguments_that_are_not_an_object_are_refused() -> None:
    with pytest.raises(InvalidArguments, match="must be a JSON object, got list"):
        plugin.tools["basic"].signature.bind("schemas.basic", [1, 2])  # type: ignore[arg-type]


def test_unsupported_signatures_are_refused_when_the_tool_is_registered() -> None:
    p = Plugin("bad")
    with pytest.raises(TypeError, match="args and \\*\\*kwargs are not supported"):

        @p.tool
        def star(*values: int) -> int:
            return 0

    with pytest.raises(TypeError, match="unsupported parameter type") as info:

        @p.tool
        def opaque(thing: Opaque) -> None:  # a plain class has no JSON form
            pass

    # It says what a tool may use, not msgspec's advice a plugin cannot follow.
    assert "schema_hook" not in str(info.value)
    assert "msgspec Structs or pydantic models" in str(info.value)


@pytest.mark.parametrize("name", ["", "has.dot", "has space", "x" * 65])
def test_plugin_and_tool_names_are_validated(name: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        Plugin(name)
    p = Plugin("ok")
    with pytest.raises(ValueError, match="letters, digits"):
        p.tool(name=name)(lambda: None)


def test_a_tool_name_is_registered_once() -> None:
    p = Plugin("dupes")

    @p.tool
    def same() -> None:
        pass

    with pytest.raises(ValueError, match="already has a tool 'same'"):
        p.tool(name="same")(lambda: None)


def test_a_batch_tool_is_marked_in_its_spec() -> None:
    p = Plugin("batchy")

    @p.tool(batch=True)
    def double(items: list[int]) -> list[int]:
        return [2 * i for i in items]

    assert p.tools["double"].spec.batch is True
    assert spec("basic").batch is False
