"""conformance: the fixtures the official MCP conformance suite's server scenarios call.

The suite (``@modelcontextprotocol/conformance``, server mode) connects to a server as
an MCP client and calls tools, reads resources and gets prompts by fixed names; the
names, URIs, arguments and answers here are the ones its scenarios check and its
reference server returns (docs/mcp.md, "Conformance", lists every scenario and what it
sends). Served with bare names (``[plugins.conformance] expose = "bare"``) the tools and
prompts are listed as the suite expects them, ``test_simple_text`` and not
``conformance.test_simple_text``; resource URIs are never prefixed.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Annotated, Any

import msgspec

from mcphost.sdk import (
    Audio,
    Context,
    Image,
    Message,
    Plugin,
    Text,
    TextResource,
    ToolError,
)
from mcphost.sdk.content import Block

__version__ = "1.1.0"

plugin = Plugin("conformance", description="The MCP conformance suite's server fixtures")

#: The pause between two log lines or progress reports, as the reference server makes:
#: the client must take several notifications while one call runs.
STEP_SECONDS = 0.05

#: The reference server's 1x1 PNG and its tiny WAV file.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
WAV = base64.b64decode("UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=")

WATCHED_URI = "test://watched-resource"


# -- tools ---------------------------------------------------------------------------
@plugin.tool
def test_simple_text() -> str:
    """Tests simple text content response."""
    return "This is a simple text response for testing."


@plugin.tool
def test_image_content() -> Image:
    """Tests image content response."""
    return Image(PNG, "image/png")


@plugin.tool
def test_audio_content() -> Audio:
    """Tests audio content response."""
    return Audio(WAV, "audio/wav")


@plugin.tool
def test_embedded_resource() -> TextResource:
    """Tests embedded resource content response."""
    return TextResource(
        "test://embedded-resource", "This is an embedded resource content.", mime_type="text/plain"
    )


@plugin.tool
def test_multiple_content_types() -> list[Block]:
    """Tests response with multiple content types (text, image, resource)."""
    return [
        Text("Multiple content types test:"),
        Image(PNG, "image/png"),
        TextResource(
            "test://mixed-content-resource",
            json.dumps({"test": "data", "value": 123}, separators=(",", ":")),
            mime_type="application/json",
        ),
    ]


@plugin.tool
async def test_tool_with_logging(ctx: Context) -> str:
    """Tests tool that emits log messages during execution."""
    ctx.info("Tool execution started")
    await asyncio.sleep(STEP_SECONDS)
    ctx.info("Tool processing data")
    await asyncio.sleep(STEP_SECONDS)
    ctx.info("Tool execution completed")
    return "Tool with logging executed successfully"


@plugin.tool
async def test_tool_with_progress(ctx: Context) -> str:
    """Tests tool that reports progress notifications."""
    for step in (0, 50, 100):
        if step:
            await asyncio.sleep(STEP_SECONDS)
        ctx.progress(step, 100, f"Completed step {step} of 100")
    return "Tool with progress executed successfully"


@plugin.tool
def test_error_handling() -> str:
    """Tests error response handling."""
    raise ToolError("This tool intentionally returns an error for testing")


@plugin.tool
async def test_sampling(
    prompt: Annotated[str, msgspec.Meta(description="The prompt to send to the LLM")],
    ctx: Context,
) -> str:
    """Tests server-initiated sampling (LLM completion request)."""
    answer = await ctx.sample(prompt, max_tokens=100)
    return f"LLM response: {answer.text}"


@plugin.tool
async def test_elicitation(
    message: Annotated[str, msgspec.Meta(description="The message to show the user")],
    ctx: Context,
) -> str:
    """Tests server-initiated elicitation (user input request)."""
    answer = await ctx.elicit(
        message,
        {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        },
    )
    return f"User response: action={answer.action}, content={json.dumps(answer.content)}"


@plugin.tool
async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    """Tests elicitation with default values per SEP-1034."""
    answer = await ctx.elicit(
        "Please review and update the form fields with defaults",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "User name", "default": "John Doe"},
                "age": {"type": "integer", "description": "User age", "default": 30},
                "score": {"type": "number", "description": "User score", "default": 95.5},
                "status": {
                    "type": "string",
                    "description": "User status",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {
                    "type": "boolean",
                    "description": "Verification status",
                    "default": True,
                },
            },
            "required": [],
        },
    )
    return _elicit_answer(answer.action, answer.content)


def _choices(titles: dict[str, str]) -> list[dict[str, str]]:
    return [{"const": value, "title": title} for value, title in titles.items()]


@plugin.tool
async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    """Tests elicitation with enum schema improvements per SEP-1330."""
    answer = await ctx.elicit(
        "Please select options from the enum fields",
        {
            "type": "object",
            "properties": {
                "untitledSingle": {
                    "type": "string",
                    "description": "Select one option",
                    "enum": ["option1", "option2", "option3"],
                },
                "titledSingle": {
                    "type": "string",
                    "description": "Select one option with titles",
                    "oneOf": _choices(
                        {
                            "value1": "First Option",
                            "value2": "Second Option",
                            "value3": "Third Option",
                        }
                    ),
                },
                "legacyEnum": {
                    "type": "string",
                    "description": "Select one option (legacy)",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "description": "Select multiple options",
                    "minItems": 1,
                    "maxItems": 3,
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {
                    "type": "array",
                    "description": "Select multiple options with titles",
                    "minItems": 1,
                    "maxItems": 3,
                    "items": {
                        "anyOf": _choices(
                            {
                                "value1": "First Choice",
                                "value2": "Second Choice",
                                "value3": "Third Choice",
                            }
                        )
                    },
                },
            },
            "required": [],
        },
    )
    return _elicit_answer(answer.action, answer.content)


def _elicit_answer(action: str, content: Any) -> str:
    return f"Elicitation completed: action={action}, content={json.dumps(content)}"


# -- resources -----------------------------------------------------------------------
@plugin.resource("test://static-text", name="Static Text Resource", mime_type="text/plain")
def static_text() -> str:
    """A static text resource for testing."""
    return "This is the content of the static text resource."


@plugin.resource("test://static-binary", name="Static Binary Resource", mime_type="image/png")
def static_binary() -> bytes:
    """A static binary resource (image) for testing."""
    return PNG


@plugin.resource(
    "test://template/{id}/data", name="Resource Template", mime_type="application/json"
)
def template_data(id: str) -> str:
    """A resource template with parameter substitution."""
    return json.dumps(
        {"id": id, "templateTest": True, "data": f"Data for ID: {id}"}, separators=(",", ":")
    )


@plugin.resource(WATCHED_URI, name="Watched Resource", mime_type="text/plain")
def watched() -> str:
    """A resource that can be subscribed to."""
    return "Watched resource content"


# -- prompts -------------------------------------------------------------------------
@plugin.prompt
def test_simple_prompt() -> str:
    """A simple prompt without arguments."""
    return "This is a simple prompt for testing."


@plugin.prompt
def test_prompt_with_arguments(
    arg1: Annotated[str, msgspec.Meta(description="First test argument")],
    arg2: Annotated[str, msgspec.Meta(description="Second test argument")],
) -> str:
    """A prompt with required arguments."""
    return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"


@plugin.prompt
def test_prompt_with_embedded_resource(
    resourceUri: Annotated[str, msgspec.Meta(description="URI of the resource to embed")],
) -> list[Message]:
    """A prompt that includes an embedded resource."""
    return [
        Message(
            "user",
            TextResource(
                resourceUri, "Embedded resource content for testing.", mime_type="text/plain"
            ),
        ),
        Message("user", "Please process the embedded resource above."),
    ]


@plugin.prompt
def test_prompt_with_image() -> list[Message]:
    """A prompt that includes image content."""
    return [
        Message("user", Image(PNG, "image/png")),
        Message("user", "Please analyze the image above."),
    ]


# -- completion ----------------------------------------------------------------------
@plugin.completion("test_prompt_with_arguments", "arg1")
def complete_arg1(value: str) -> list[str]:
    """Suggestions for arg1 that begin with what was typed."""
    return [v for v in ("test", "testValue1", "sample") if v.startswith(value)]
