"""Tools that return rich content and ask their client, appended to a copy of textkit
for the tests of sdk/content.py and of sampling and elicitation (tests/mcp)."""

from __future__ import annotations

from pathlib import Path

TOOLS = '''

import enum as _enum

from mcphost.sdk.content import (
    Audio, BlobResource, Block, Image, ResourceLink, Text, TextResource, ToolResult,
)

#: The smallest PNG (1x1, transparent) and a few bytes of WAV: what the client gets
#: back must be these bytes exactly.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)
WAV = b"RIFF$\\x00\\x00\\x00WAVEfmt " + bytes(range(40))


class Shape(msgspec.Struct):
    width: int
    height: int


@plugin.tool
def picture(size: int = 0) -> Image:
    """An image: the tiny PNG, or ``size`` bytes of a PNG-looking blob."""
    return Image(PNG if size == 0 else PNG[:8] + bytes(size), "image/png")


@plugin.tool
def media() -> list[Block]:
    """Every kind of block at once."""
    return [
        Text("a picture and a sound"),
        Image(PNG, "image/png"),
        Audio(WAV, "audio/wav"),
        TextResource("note://1", "remember", "text/plain"),
        BlobResource("blob://1", b"\\x00\\x01\\x02", "application/octet-stream"),
        ResourceLink("file:///tmp/x.txt", "x.txt", description="a file", mime_type="text/plain"),
    ]


@plugin.tool
def framed() -> ToolResult[Shape]:
    """Content with a structured value beside it."""
    return ToolResult([Text("1x1"), Image(PNG, "image/png")], Shape(1, 1))


@plugin.tool
async def haiku(topic: str, ctx: Context) -> str:
    """Ask the client's model for a haiku."""
    answer = await ctx.sample(
        f"a haiku about {topic}", max_tokens=50, system_prompt="be brief", temperature=0.5
    )
    return f"{answer.model}: {answer.text}"


@plugin.tool
def haiku_sync(topic: str, ctx: Context) -> str:
    """ctx.sample_sync from a sync tool."""
    answer = ctx.sample_sync([("user", f"a haiku about {topic}")], max_tokens=50)
    return f"{answer.model}: {answer.text}"


class Color(_enum.Enum):
    RED = "red"
    GREEN = "green"


class Order(msgspec.Struct):
    name: str
    color: Color = Color.GREEN
    count: int = 1


@plugin.tool
async def order(ctx: Context) -> str:
    """Ask the user for an order, from a typed model."""
    got = await ctx.elicit("What would you like?", Order)
    if not got.accepted:
        return got.action
    return f"{got.content.count} {got.content.color.value} {got.content.name}"


@plugin.tool
def confirm(ctx: Context) -> str:
    """ctx.elicit_sync with a dict schema."""
    got = ctx.elicit_sync(
        "Sure?",
        {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    )
    return f"{got.action} {got.content}"


@plugin.tool
async def ask_forever(ctx: Context) -> str:
    """Elicit and record whether the wait was cancelled."""
    import asyncio as _asyncio

    try:
        await ctx.elicit("never answered", {"properties": {"x": {"type": "string"}}})
    except _asyncio.CancelledError:
        (ctx.data_dir / "ask-cancelled").write_text("yes")
        raise
    return "answered"
'''


def build(root: Path) -> Path:
    """textkit plus the tools above, built as a wheel and pip-installed (--target)."""
    from support.wheels import install_target

    from mcphost.host.examples import build_wheels, copy_example, find_examples

    source = find_examples(Path(__file__).resolve().parents[2] / "example_plugins")
    project = copy_example(source / "textkit", root / "src", version="1.0.2")
    init = project / "mcphost_textkit" / "__init__.py"
    init.write_text(init.read_text() + TOOLS)
    wheel = build_wheels({"textkit": project}, root / "wheels")["textkit"]
    return install_target(wheel, root / "site")
