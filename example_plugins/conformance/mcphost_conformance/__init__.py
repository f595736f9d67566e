"""conformance: the fixtures the official MCP conformance suite's server scenarios call.

The suite (``@modelcontextprotocol/conformance``, server mode) connects to a server as
an MCP client and calls tools, reads resources and gets prompts by fixed names; the
names, arguments and answers here are the ones its scenarios check and its reference
server returns (docs/mcp.md, "Conformance", lists every scenario and what it needs).
Served with bare names (``[plugins.conformance] expose = "bare"``) the tools are listed
as the suite expects them, ``test_simple_text`` and not ``conformance.test_simple_text``.

Only what the SDK can express is here: plain results, log lines, progress and errors.
The fixtures that need resources, prompts, completions, image, audio or embedded
resource content, sampling or elicitation are listed in docs/mcp.md with what each needs.
"""

from __future__ import annotations

import asyncio

from mcphost.sdk import Context, Plugin, ToolError

__version__ = "1.0.0"

plugin = Plugin("conformance", description="The MCP conformance suite's server fixtures")

#: The pause between two log lines or progress reports, as the reference server makes:
#: the client must take several notifications while one call runs.
STEP_SECONDS = 0.05


@plugin.tool
def test_simple_text() -> str:
    """Tests simple text content response."""
    return "This is a simple text response for testing."


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
