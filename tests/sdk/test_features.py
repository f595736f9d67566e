"""Resources, prompts and completions as the SDK declares and runs them (in-process,
through ToolTester, with the worker's own runner)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from mcphost.sdk import (
    BlobResource,
    Context,
    Image,
    InvalidArguments,
    Message,
    Plugin,
    ResourceNotFound,
    ToolError,
    ToolTimeout,
)
from mcphost.sdk.features import (
    PromptSpec,
    ResourceSpec,
    TemplateSpec,
    UriTemplate,
    features_problem,
)
from mcphost.sdk.testing import ToolTester

plugin = Plugin("feat")


@plugin.resource("feat://greeting")
def greeting() -> str:
    """Hello."""
    return "hello"


@plugin.resource("feat://bytes/{n}", mime_type="application/octet-stream")
async def some_bytes(n: int, ctx: Context) -> bytes:
    ctx.notify_resource_updated(f"feat://bytes/{n}")
    return bytes(range(n))


@plugin.resource("feat://slow")
async def slow() -> str:
    await asyncio.sleep(30)
    return "late"


@plugin.resource("feat://broken")
def broken() -> int:
    return 5


@plugin.prompt
def ask(topic: str, times: int = 1) -> list[Message | str]:
    """Ask about a topic."""
    return [
        f"Tell me about {topic}" * times,
        Message("assistant", Image(b"\x89PNG", "image/png")),
        Message("user", BlobResource("feat://greeting", b"\x00\x01")),
    ]


@plugin.completion("ask", "topic")
def topics(value: str, arguments: dict[str, str]) -> list[str]:
    return [t for t in ("cats", "cars", "dogs") if t.startswith(value)] + sorted(arguments)


def test_static_resources_and_templates_are_declared_apart() -> None:
    assert plugin.resource_specs()[0] == ResourceSpec(
        uri="feat://greeting", name="greeting", description="Hello.", mime_type="text/plain"
    )
    templates = plugin.template_specs()
    assert [t.uri_template for t in templates] == ["feat://bytes/{n}"]
    assert isinstance(templates[0], TemplateSpec)
    (prompt,) = plugin.prompt_specs()
    assert isinstance(prompt, PromptSpec)
    assert [(a.name, a.required) for a in prompt.arguments] == [("topic", True), ("times", False)]
    assert prompt.input_schema["properties"]["times"]["type"] == "integer"


def test_text_and_binary_resources_read_in_mcp_shape_and_updates_are_collected() -> None:
    with ToolTester(plugin) as t:
        assert t.read_resource("feat://greeting") == {
            "contents": [{"uri": "feat://greeting", "mimeType": "text/plain", "text": "hello"}]
        }
        (blob,) = t.read_resource("feat://bytes/4")["contents"]
        assert base64.b64decode(blob["blob"]) == bytes([0, 1, 2, 3])
        assert blob["mimeType"] == "application/octet-stream"
        assert t.updated == ["feat://bytes/4"]


def test_bad_reads_fail_with_codes_that_say_why() -> None:
    with ToolTester(plugin) as t:
        with pytest.raises(ResourceNotFound):
            t.read_resource("feat://nothing")
        with pytest.raises(InvalidArguments):
            t.read_resource("feat://bytes/many")  # {n} is an int
        with pytest.raises(ToolError) as err:
            t.read_resource("feat://broken")
        assert err.value.code == "bad_result" and "str (text) or bytes" in err.value.message
        with pytest.raises(ToolTimeout):
            t.read_resource("feat://slow", timeout=0.2)


def test_prompts_convert_string_arguments_and_shape_every_content_kind() -> None:
    with ToolTester(plugin) as t:
        got = t.get_prompt("feat.ask", {"topic": "cats", "times": "2"})
    assert got["description"] == "Ask about a topic."
    text, image, embedded = got["messages"]
    assert text == {"role": "user", "content": {"type": "text", "text": "Tell me about cats" * 2}}
    assert image["role"] == "assistant"
    assert image["content"] == {
        "type": "image",
        "data": base64.b64encode(b"\x89PNG").decode(),
        "mimeType": "image/png",
    }
    assert embedded["content"]["resource"] == {
        "uri": "feat://greeting",
        "blob": base64.b64encode(b"\x00\x01").decode(),
    }
    with ToolTester(plugin) as t, pytest.raises(InvalidArguments):
        t.get_prompt("ask", {"times": "1"})  # topic is required


def test_completion_handlers_get_the_value_and_the_other_arguments() -> None:
    with ToolTester(plugin) as t:
        assert t.complete("ask", "topic", "ca") == ["cats", "cars"]
        assert t.complete("ask", "topic", "d", {"times": "2"}) == ["dogs", "times"]
        assert t.complete("ask", "times", "1") == []  # no handler: no values


def test_declaration_mistakes_are_refused_at_once_saying_what_to_do() -> None:
    p = Plugin("bad")
    with pytest.raises(ValueError, match="must be exactly the function's parameters"):
        p.resource("bad://{a}")(lambda b: "x")
    with pytest.raises(ValueError, match="takes no parameters"):
        p.resource("bad://fixed")(lambda a: "x")
    with pytest.raises(ValueError, match="with a scheme"):
        p.resource("no-scheme")(lambda: "x")
    with pytest.raises(ValueError, match="prompt name"):
        p.prompt(name="has.dot")(lambda: "x")
    with pytest.raises(ValueError, match="takes `value`"):
        p.completion("x", "y")(lambda text: [])


def test_uri_templates_match_one_segment_per_variable() -> None:
    t = UriTemplate("notes://note/{title}/v{version}")
    assert t.match("notes://note/a b/v3") == {"title": "a b", "version": "3"}
    assert t.match("notes://note/a/b/v3") is None
    assert t.match("notes://note//v3") is None
    assert UriTemplate("x://{a}.json").match("x://f.json") == {"a": "f"}


def test_the_host_check_refuses_duplicates_and_bad_uris_from_a_handshake() -> None:
    r = ResourceSpec(uri="a://x", name="x")
    assert features_problem("p", [r], [], []) is None
    assert "twice" in (features_problem("p", [r, r], [], []) or "")
    assert "scheme" in (features_problem("p", [ResourceSpec(uri="x", name="x")], [], []) or "")
    bad_prompt = PromptSpec(name="a b")
    assert "prompt name" in (features_problem("p", [], [], [bad_prompt]) or "")


def test_the_notes_example_offers_a_resource_a_template_a_prompt_and_a_completion(
    tmp_path: Path,
) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "example_plugins" / "notes"))
    try:
        from mcphost_notes import plugin as notes
    finally:
        sys.path.pop(0)
    with ToolTester(notes, data_dir=tmp_path) as t:
        t.call("save", {"title": "groceries", "body": "eggs"})
        assert t.updated == ["notes://note/groceries", "notes://index"]
        index = t.read_resource("notes://index")["contents"][0]
        assert json.loads(index["text"]) == ["groceries"]
        assert t.read_resource("notes://note/groceries")["contents"][0]["text"] == "eggs"
        got = t.get_prompt("summarize", {"title": "groceries"})
        assert got["messages"][1]["content"]["resource"]["text"] == "eggs"
        assert t.complete("notes://note/{title}", "title", "gr") == ["groceries"]
