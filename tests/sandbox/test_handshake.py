"""The host checks every tool a worker declares in its Hello and refuses a worker whose
tool set breaks the rules, whatever the plugin did to get past the SDK's own checks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psutil
import pytest
from support.procs import wait_process_gone

from mcphost.sandbox import RlimitBackend, WorkerSpec, spawn_worker
from mcphost.sdk import HandshakeRefused
from mcphost.sdk.tool_rules import MAX_DESCRIPTION_BYTES, MAX_SCHEMA_BYTES, MAX_TOOLS

PluginWriter = Callable[..., WorkerSpec]

#: A plugin that sends, in its Hello, the tool descriptors built by ``{specs}``.
FORGED = """
from mcphost.sdk import Plugin, ToolSpec

plugin = Plugin("forged")


@plugin.tool
def ok() -> str:
    return "ok"


# Past the SDK's checks: the Hello is built from whatever specs() returns.
plugin.specs = lambda: {specs}
"""

GOOD = 'ToolSpec(name="ok", input_schema={"type": "object"})'


def tools(*names: str) -> str:
    return "[" + ", ".join(f"ToolSpec(name={n!r})" for n in names) + "]"


CASES = {
    "empty name": (tools(""), "tool name '' is not allowed"),
    "a dot in the name": (tools("a.b"), "tool name 'a.b' is not allowed: use letters"),
    "a path": (tools("../../etc/passwd"), "tool name '../../etc/passwd' is not allowed"),
    "an escape sequence": (tools("\x1b[31mred"), "tool name '\\x1b[31mred' is not allowed"),
    "a newline": (tools("two\nlines"), "tool name 'two\\nlines' is not allowed"),
    "a duplicate": (tools("ok", "ok"), "it offers two tools named 'ok'"),
    "a 5,000-character name": (
        f"[ToolSpec(name='n' * 5000), {GOOD}]",
        "is too long: forged.<tool> is 5007 characters, over MCP's limit of 128",
    ),
    "a 2 MB description": (
        "[ToolSpec(name='ok', description='d' * 2_000_000)]",
        f"tool ok: its description is 2,000,000 bytes, over the limit of {MAX_DESCRIPTION_BYTES:,}",
    ),
    "a huge schema": (
        "[ToolSpec(name='ok', input_schema={'type': 'object', 'x': 'y' * 100_000})]",
        f"tool ok: its input schema is 100,024 bytes of JSON, over the limit of "
        f"{MAX_SCHEMA_BYTES:,}",
    ),
    "an input schema that is no object schema": (
        "[ToolSpec(name='ok', input_schema={'type': 'string'})]",
        'its input schema does not describe an object ("type": "object")',
    ),
    "an unknown kind": (
        "[ToolSpec(name='ok', kind='exec')]",
        "tool ok: its kind is 'exec', not one of call, stream",
    ),
    "3,000 extra tools": (
        f"[{GOOD}] + [ToolSpec(name=f't{{i}}') for i in range(3000)]",
        f"it offers 3,001 tools, over the limit of {MAX_TOOLS:,}",
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_worker_declaring_a_bad_tool_set_is_refused_with_the_reason(
    write_plugin: PluginWriter, backend: RlimitBackend, case: str
) -> None:
    specs, reason = CASES[case]
    spec = write_plugin("forged", FORGED.replace("{specs}", specs))

    async def scenario() -> HandshakeRefused:
        pids_before = {p.pid for p in psutil.Process().children(recursive=True)}
        try:
            worker = await spawn_worker(spec, backend, handshake_timeout=20)
        except HandshakeRefused as exc:
            refused = exc
        else:
            await worker.close()
            raise AssertionError(f"the worker was accepted with {case}")
        # The refused worker is gone.
        left = {p.pid for p in psutil.Process().children(recursive=True)} - pids_before
        for pid in left:
            await wait_process_gone(pid, 5)
        return refused

    error = asyncio.run(scenario())
    assert reason in error.message
    assert error.message.startswith("worker for forged 1.0.0 was refused: ")
    assert "the plugin must be fixed" in error.message
    assert error.code == "handshake_refused" and error.data["plugin"] == "forged"
    # One line, and nothing in it a terminal would act on.
    assert error.message.isprintable()


def test_a_worker_declaring_tools_within_the_rules_is_accepted(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    specs = (
        f"[ToolSpec(name='ok', description='d' * {MAX_DESCRIPTION_BYTES}, "
        "input_schema={'type': 'object'})] + "
        f"[ToolSpec(name=f't{{i}}') for i in range({MAX_TOOLS - 1})]"
    )
    spec = write_plugin("forged", FORGED.replace("{specs}", specs))

    async def scenario() -> str:
        w = await spawn_worker(spec, backend, handshake_timeout=20)
        try:
            assert w.hello is not None and len(w.hello.tools) == MAX_TOOLS
            return str(await w.call("ok", {}))
        finally:
            await w.close()

    assert asyncio.run(scenario()) == "ok"
