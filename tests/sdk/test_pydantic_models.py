"""pydantic models as tool parameters and results, next to dataclasses and Structs."""

from __future__ import annotations

import asyncio
import datetime
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from mcphost.sdk import InvalidArguments, Plugin
from mcphost.sdk.runner import to_wire
from mcphost.sdk.testing import run_in_worker


class Range(BaseModel):
    """An interval of line numbers."""

    low: int = 0
    high: int


class FilterSpec(BaseModel):
    """Which words to keep."""

    word: str = Field(min_length=1)
    limit: int = 10
    ranges: list[Range] = []


class Hit(BaseModel):
    """A match, with a time and an id that JSON has no type for."""

    word: str
    count: int
    at: datetime.datetime
    id: uuid.UUID


AT = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
ID = uuid.UUID(int=7)

plugin = Plugin("filters")


@plugin.tool
def find(spec: FilterSpec, text: str = "") -> Hit:
    """Count the spec's word in the text."""
    return Hit(word=spec.word, count=text.count(spec.word), at=AT, id=ID)


@plugin.tool
def many(
    specs: list[FilterSpec],
    named: dict[str, Range] | None = None,
    maybe: FilterSpec | None = None,
) -> list[Hit]:
    """Models inside a list, a dict and an optional."""
    return [Hit(word=s.word, count=s.limit, at=AT, id=ID) for s in specs]


DEFAULT_SPEC = FilterSpec(word="x")


@plugin.tool
def defaulted(spec: FilterSpec = DEFAULT_SPEC) -> dict[str, Hit]:
    """A model parameter with a default; models inside a returned dict."""
    return {"hit": Hit(word=spec.word, count=spec.limit, at=AT, id=ID)}


def test_a_pydantic_model_parameter_gets_the_models_own_json_schema() -> None:
    schema = plugin.tools["find"].spec.input_schema
    own = FilterSpec.model_json_schema(ref_template="#/$defs/{model}")
    own_defs = own.pop("$defs")
    assert schema["properties"]["spec"] == own
    assert schema["properties"]["text"] == {"type": "string", "default": ""}
    assert schema["required"] == ["spec"]
    assert schema["additionalProperties"] is False
    # The definitions the model refers to sit at the root, where #/$defs/.. points.
    assert schema["$defs"] == own_defs
    assert own["properties"]["ranges"]["items"] == {"$ref": "#/$defs/Range"}


def test_the_output_schema_of_a_pydantic_result_is_its_serialization_schema() -> None:
    out = plugin.tools["find"].spec.output_schema
    assert out == Hit.model_json_schema(mode="serialization")
    assert out is not None and out["properties"]["at"]["format"] == "date-time"


def test_pydantic_models_inside_lists_dicts_and_optionals_are_described_and_validated() -> None:
    tool = plugin.tools["many"]
    props = tool.spec.input_schema["properties"]
    assert props["specs"] == {"type": "array", "items": {"$ref": "#/$defs/FilterSpec"}}
    assert {"$ref": "#/$defs/Range"} in [
        alt.get("additionalProperties") for alt in props["named"]["anyOf"]
    ]
    assert set(tool.spec.input_schema["$defs"]) == {"FilterSpec", "Range"}
    kwargs = tool.signature.bind(
        "filters.many",
        {"specs": [{"word": "a", "ranges": [{"high": "3"}]}], "named": {"r": {"high": 1}}},
    )
    assert kwargs["specs"] == [FilterSpec(word="a", ranges=[Range(high=3)])]
    assert kwargs["named"] == {"r": Range(high=1)}
    assert kwargs["maybe"] is None


def test_a_defaulted_model_parameter_gets_its_default_and_shows_it_in_the_schema() -> None:
    tool = plugin.tools["defaulted"]
    assert tool.signature.bind("filters.defaulted", {}) == {"spec": FilterSpec(word="x")}
    prop = tool.spec.input_schema["properties"]["spec"]
    assert prop["default"] == {"word": "x", "limit": 10, "ranges": []}
    assert "required" not in tool.spec.input_schema


def test_invalid_pydantic_arguments_read_like_other_invalid_arguments() -> None:
    with pytest.raises(InvalidArguments) as info:
        plugin.tools["many"].signature.bind(
            "filters.many", {"specs": [{"word": "", "ranges": [{"low": 1}]}]}
        )
    err = info.value
    assert err.code == "invalid_arguments"
    assert err.message.startswith("invalid arguments: String should have at least 1 character")
    assert "- at `$.specs[0].word`" in err.message
    assert "Field required - at `$.specs[0].ranges[0].high`" in err.message
    assert err.message.endswith("see the tool's input schema (`mcphost tools --json`)")
    assert err.data["tool"] == "filters.many"
    # The other parameters are still checked by msgspec, in the same words.
    with pytest.raises(InvalidArguments, match=r"Expected `str`, got `int` - at `\$\.text`"):
        plugin.tools["find"].signature.bind("filters.find", {"spec": {"word": "a"}, "text": 1})


def test_pydantic_results_are_dumped_in_json_mode_wherever_they_are() -> None:
    hit = Hit(word="a", count=1, at=AT, id=ID)
    plain = {"word": "a", "count": 1, "at": "2026-01-02T03:04:05Z", "id": str(ID)}
    assert to_wire(hit, "filters.find") == plain
    assert to_wire([hit], "filters.many") == [plain]
    assert to_wire({"hit": hit}, "filters.defaulted") == {"hit": plain}


PROBE = '''
import sys

from mcphost.sdk import Plugin

plugin = Plugin("probe")


@plugin.tool
def pydantic_loaded() -> bool:
    """Whether this worker has imported pydantic."""
    return "pydantic" in sys.modules
'''

MODELS = '''
import datetime

from pydantic import BaseModel

from mcphost.sdk import Plugin

plugin = Plugin("models")


class Spec(BaseModel):
    word: str
    times: int = 1


class Echo(BaseModel):
    words: list[str]
    at: datetime.date


@plugin.tool
def repeat(spec: Spec) -> Echo:
    """Repeat the word."""
    return Echo(words=[spec.word] * spec.times, at=datetime.date(2026, 12, 6))
'''


def _write(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / name / f"{name}_plugin.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(code))
    return path


def test_a_worker_for_a_plugin_without_pydantic_never_imports_it(
    tmp_path: Path, no_leftover_workers: None
) -> None:
    async def scenario() -> Any:
        async with run_in_worker(str(_write(tmp_path, "lean", PROBE)), isolation="rlimits") as w:
            return await w.call("pydantic_loaded")

    assert "pydantic" in sys.modules  # this test process has it: the worker must not
    assert asyncio.run(scenario()) is False


def test_a_plugin_with_pydantic_models_is_served_by_a_real_worker(
    tmp_path: Path, no_leftover_workers: None
) -> None:
    async def scenario() -> tuple[Any, InvalidArguments]:
        path = _write(tmp_path, "models", MODELS)
        async with run_in_worker(str(path), isolation="rlimits") as w:
            result = await w.call("repeat", {"spec": {"word": "hi", "times": "2"}})
            with pytest.raises(InvalidArguments) as info:
                await w.call("repeat", {"spec": {"times": 2}})
            return result, info.value

    result, error = asyncio.run(scenario())
    assert result == {"words": ["hi", "hi"], "at": "2026-12-06"}
    assert error.message.startswith("invalid arguments: Field required - at `$.spec.word`")
