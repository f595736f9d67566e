"""The ``mcp`` 1.x client (handshake era) gets images and audio from tools and answers
their sampling and elicitation requests, over stdio and streamable HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import test_mcp1_client
from asking_plugin import build
from test_mcp1_client import run_client_script

CLIENT = r"""
import base64, json, sys
import anyio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client


async def sampling(context, params):
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(
            type="text", text="old verse on " + params.messages[0].content.text[-4:]
        ),
        model="model-1",
    )


async def elicitation(context, params):
    content = {"name": "roses", "color": "red", "count": 2}
    return types.ElicitResult(action="accept", content=content)


async def exercise(session):
    init = await session.initialize()
    pic = await session.call_tool("textkit.picture", {})
    media = await session.call_tool("textkit.media", {})
    haiku = await session.call_tool("textkit.haiku", {"topic": "wind"})
    order = await session.call_tool("textkit.order", {})
    return {
        "version": init.protocolVersion,
        "png": base64.b64decode(pic.content[0].data).hex(),
        "kinds": [b.type for b in media.content],
        "audio": media.content[2].mimeType,
        "haiku": haiku.structuredContent,
        "order": order.structuredContent,
    }


async def main():
    target = json.loads(sys.argv[1])
    kw = {"sampling_callback": sampling, "elicitation_callback": elicitation}
    if isinstance(target, list):
        params = StdioServerParameters(command=target[0], args=target[1:])
        async with stdio_client(params) as (r, w), ClientSession(r, w, **kw) as s:
            print(json.dumps(await exercise(s)))
    else:
        headers = {"Authorization": "Bearer " + target["token"]}
        async with (
            streamablehttp_client(target["url"], headers=headers) as (r, w, _),
            ClientSession(r, w, **kw) as s,
        ):
            print(json.dumps(await exercise(s)))


anyio.run(main)
"""

PNG_HEX = (
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


#: The 1.x client's Python (the fixture of test_mcp1_client, which fails when it is missing).
mcp1_python = test_mcp1_client.mcp1_python


@pytest.fixture(scope="session")
def asking_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("asking1"))


def check(result: dict[str, Any]) -> None:
    assert result["version"] in ("2025-06-18", "2025-11-25")
    assert result["png"] == PNG_HEX
    assert result["kinds"] == ["text", "image", "audio", "resource", "resource", "resource_link"]
    assert result["audio"] == "audio/wav"
    assert result["haiku"] == {"result": "model-1: old verse on wind"}
    assert result["order"] == {"result": "2 red roses"}


def test_mcp_1x_client_gets_content_and_answers_asks_over_stdio(
    mcp1_python: Path, mcphost_cmd: list[str], mcp_home: Path, asking_dir: Path
) -> None:
    argv = [*mcphost_cmd, "--home", str(mcp_home), "serve", "--no-environment"]
    check(run_client_script(mcp1_python, CLIENT, [*argv, "--plugin-dir", str(asking_dir)]))


def test_mcp_1x_client_gets_content_and_answers_asks_over_http(
    mcp1_python: Path, mcp_home: Path, asking_dir: Path, embedded: Any
) -> None:
    async def go() -> dict[str, Any]:
        async with embedded(mcp_home, [asking_dir]) as served:
            target = {"url": served.front.url, "token": served.token}
            return await asyncio.to_thread(run_client_script, mcp1_python, CLIENT, target)

    check(asyncio.run(go()))
