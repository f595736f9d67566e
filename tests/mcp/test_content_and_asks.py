"""Rich content from tools (images, audio, resources) and tools asking their client
(sampling, elicitation), with the official client over stdio and streamable HTTP, in
both eras of the spec."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from asking_plugin import build
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from support.waiting import wait_until

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


@pytest.fixture(scope="session")
def asking_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("asking"))


def stdio(argv: list[str]) -> StdioServerParameters:
    return StdioServerParameters(command=argv[0], args=argv[1:])


@pytest.fixture
def asking_argv(mcphost_cmd: list[str], mcp_home: Path, asking_dir: Path) -> list[str]:
    return [
        *mcphost_cmd,
        "--home",
        str(mcp_home),
        "serve",
        "--no-environment",
        "--plugin-dir",
        str(asking_dir),
    ]


class Answers:
    """The client side: answers sampling and elicitation, and records what it was asked."""

    def __init__(self, elicit_action: str = "accept") -> None:
        self.sampled: list[types.CreateMessageRequestParams] = []
        self.elicited: list[types.ElicitRequestParams] = []
        self.elicit_action = elicit_action

    async def sampling(
        self, context: Any, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        self.sampled.append(params)
        text = params.messages[0].content
        assert isinstance(text, types.TextContent)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"verse on {text.text[-4:]}"),
            model="test-model",
            stop_reason="endTurn",
        )

    async def elicitation(
        self, context: Any, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        self.elicited.append(params)
        if self.elicit_action != "accept":
            return types.ElicitResult(action=self.elicit_action)  # type: ignore[arg-type]
        props = params.requested_schema["properties"]  # type: ignore[union-attr]
        if "ok" in props:
            return types.ElicitResult(action="accept", content={"ok": True})
        return types.ElicitResult(
            action="accept", content={"name": "tulips", "color": "red", "count": 3}
        )

    def kwargs(self) -> dict[str, Any]:
        return {"sampling_callback": self.sampling, "elicitation_callback": self.elicitation}


async def _content_checks(client: Client) -> None:
    pic = await client.call_tool("textkit.picture", {})
    assert not pic.is_error
    (image,) = pic.content
    assert isinstance(image, types.ImageContent)
    assert image.mime_type == "image/png"
    assert base64.b64decode(image.data) == PNG
    assert pic.structured_content is None

    media = await client.call_tool("textkit.media", {})
    kinds = [type(b).__name__ for b in media.content]
    assert kinds == [
        "TextContent",
        "ImageContent",
        "AudioContent",
        "EmbeddedResource",
        "EmbeddedResource",
        "ResourceLink",
    ]
    audio = media.content[2]
    assert isinstance(audio, types.AudioContent) and audio.mime_type == "audio/wav"
    assert base64.b64decode(audio.data).startswith(b"RIFF")
    text_res, blob_res = media.content[3], media.content[4]
    assert isinstance(text_res, types.EmbeddedResource)
    assert isinstance(text_res.resource, types.TextResourceContents)
    assert text_res.resource.text == "remember"
    assert isinstance(blob_res, types.EmbeddedResource)
    assert isinstance(blob_res.resource, types.BlobResourceContents)
    assert base64.b64decode(blob_res.resource.blob) == b"\x00\x01\x02"
    link = media.content[5]
    assert isinstance(link, types.ResourceLink) and link.name == "x.txt"

    framed = await client.call_tool("textkit.framed", {})
    assert framed.structured_content == {"width": 1, "height": 1}
    assert [type(b).__name__ for b in framed.content] == ["TextContent", "ImageContent"]
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert tools["textkit.framed"].output_schema is not None
    assert tools["textkit.picture"].output_schema is None


async def _ask_checks(client: Client, answers: Answers) -> None:
    res = await client.call_tool("textkit.haiku", {"topic": "rain"})
    assert not res.is_error, res.content
    assert res.structured_content == {"result": "test-model: verse on rain"}
    asked = answers.sampled[-1]
    assert asked.max_tokens == 50 and asked.system_prompt == "be brief"
    assert asked.temperature == 0.5

    res = await client.call_tool("textkit.haiku_sync", {"topic": "snow"})
    assert res.structured_content == {"result": "test-model: verse on snow"}

    res = await client.call_tool("textkit.order", {})
    assert res.structured_content == {"result": "3 red tulips"}
    schema = answers.elicited[-1].requested_schema  # type: ignore[union-attr]
    color = schema["properties"]["color"]
    assert color["type"] == "string" and sorted(color["enum"]) == ["green", "red"]
    assert color["default"] == "green"
    assert schema["properties"]["count"]["default"] == 1
    assert schema["required"] == ["name"]

    res = await client.call_tool("textkit.confirm", {})
    assert res.structured_content == {"result": "accept {'ok': True}"}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_content_and_asks_over_stdio(asking_argv: list[str], mode: str) -> None:
    answers = Answers()
    async with Client(stdio(asking_argv), mode=mode, **answers.kwargs()) as client:
        await _content_checks(client)
        await _ask_checks(client, answers)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_content_and_asks_over_http(
    mcp_home: Path, asking_dir: Path, embedded: Any, mode: str
) -> None:
    answers = Answers()
    async with (
        embedded(mcp_home, [asking_dir]) as served,
        served.client(mode=mode, **answers.kwargs()) as client,
    ):
        await _content_checks(client)
        await _ask_checks(client, answers)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_client_without_the_capability_gets_a_clear_error(
    asking_argv: list[str], mode: str
) -> None:
    async with Client(stdio(asking_argv), mode=mode) as client:
        res = await client.call_tool("textkit.haiku", {"topic": "rain"})
        assert res.is_error
        assert isinstance(res.content[0], types.TextContent)
        text = res.content[0].text
        assert text.startswith("error [ask_unsupported]")
        assert "'sampling' capability" in text and "sampling_handler" in text
        res = await client.call_tool("textkit.order", {})
        assert res.is_error and "'elicitation' capability" in res.content[0].text  # type: ignore[union-attr]


async def test_declined_elicitation_reaches_the_tool(asking_argv: list[str]) -> None:
    answers = Answers(elicit_action="decline")
    async with Client(stdio(asking_argv), mode="legacy", **answers.kwargs()) as client:
        res = await client.call_tool("textkit.order", {})
        assert res.structured_content == {"result": "decline"}


async def test_an_image_over_the_frame_limit_is_a_clear_error(asking_argv: list[str]) -> None:
    async with Client(stdio(asking_argv)) as client:
        res = await client.call_tool("textkit.picture", {"size": 17 * 1024 * 1024})
        assert res.is_error
        text = res.content[0].text  # type: ignore[union-attr]
        assert "over the limit" in text and "frame" in text


async def test_2026_era_asks_come_back_as_input_required_and_a_stale_state_is_refused(
    asking_argv: list[str],
) -> None:
    answers = Answers()
    async with Client(stdio(asking_argv), **answers.kwargs()) as client:
        assert client.protocol_version == "2026-07-28"
        first = await client.session.call_tool(
            "textkit.haiku", {"topic": "moss"}, allow_input_required=True
        )
        assert isinstance(first, types.InputRequiredResult)
        assert first.input_requests is not None and first.request_state
        ((key, request),) = first.input_requests.items()
        assert request.method == "sampling/createMessage"
        reply = types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="green"),
            model="by-hand",
        )
        done = await client.session.call_tool(
            "textkit.haiku",
            {"topic": "moss"},
            input_responses={key: reply},
            request_state=first.request_state,
            allow_input_required=True,
        )
        assert isinstance(done, types.CallToolResult)
        assert done.structured_content == {"result": "by-hand: green"}
        with pytest.raises(MCPError) as err:
            await client.session.call_tool(
                "textkit.haiku", {"topic": "moss"}, request_state=first.request_state
            )
        assert err.value.error.code == -32602
        assert "requestState names no call" in err.value.error.message


async def test_cancelling_a_call_cancels_its_open_elicitation_in_the_client_and_the_worker(
    asking_argv: list[str], mcp_home: Path
) -> None:
    asked = anyio.Event()
    client_cancelled = anyio.Event()

    async def elicitation(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            client_cancelled.set()
            raise
        raise AssertionError("unreachable")

    marker = mcp_home / "data" / "textkit" / "ask-cancelled"
    async with Client(stdio(asking_argv), mode="legacy", elicitation_callback=elicitation) as c:
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.call_tool, "textkit.ask_forever", {})
            await asked.wait()
            tg.cancel_scope.cancel()
        await wait_until(marker.exists, 30, "the tool's wait for its answer was cancelled")
        with anyio.fail_after(30):
            await client_cancelled.wait()
        # The session serves on.
        res = await c.call_tool("textkit.picture", {})
        assert not res.is_error
