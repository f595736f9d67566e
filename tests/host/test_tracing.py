"""Traces: one ``execute_tool`` span a call, parented to the MCP client's ``traceparent``,
with the plugin's own spans nested under it; and no OpenTelemetry at all when off."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mcphost.host import Home, Host, HostConfig, PluginSource
from mcphost.host.mcp import McpServer, ServerOptions
from mcphost.host.mcp.http import HttpFrontEnd, HttpOptions
from mcphost.host.mcp.server import HANDSHAKE_VERSIONS
from mcphost.host.observe import tracing
from mcphost.security.tokens import create_token

TRACED = """
    from collections.abc import Iterator

    from mcphost.sdk import Context, Plugin

    plugin = Plugin("traced")


    def _nested() -> dict:
        # The plugin's own OpenTelemetry: a span started while the tool runs.
        from opentelemetry.sdk.trace import TracerProvider

        with TracerProvider().get_tracer("plugin").start_as_current_span("own") as span:
            parent = span.parent
        return {
            "trace_id": format(parent.trace_id, "032x") if parent else "",
            "parent_id": format(parent.span_id, "016x") if parent else "",
        }


    @plugin.tool
    def work(ctx: Context) -> dict:
        return {**_nested(), "traceparent": ctx.traceparent}


    @plugin.tool
    async def awork() -> dict:
        return _nested()


    @plugin.tool
    def fail() -> str:
        raise ValueError("no")


    @plugin.tool
    def count(n: int) -> Iterator[int]:
        yield from range(n)
"""


def _hex(n: int, width: int) -> str:
    return format(n, f"0{width}x")


async def _mcp_calls(home: Path, host: Host, parents: list[str], trace_id: str) -> list[Any]:
    server = McpServer(host, ServerOptions())
    tokens = Home(home).tokens_file
    token, _ = create_token(tokens, "test-tracing")
    front = HttpFrontEnd(server, HttpOptions(host="127.0.0.1", port=0, tokens_file=tokens))
    await front.start()
    await server.ready()
    results: list[Any] = []
    try:
        async with (
            create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http,
            Client(streamable_http_client(front.url, http_client=http)) as client,
        ):
            for tool, parent in zip(("work", "awork", "fail"), parents, strict=True):
                res = await client.call_tool(
                    f"traced.{tool}", {}, meta={"traceparent": f"00-{trace_id}-{parent}-01"}
                )
                results.append(res)
    finally:
        await front.close()
        await server.close()
    return results


def test_each_mcp_call_is_a_span_under_the_clients_traceparent_with_the_plugins_spans_under_it(
    home_dir: Path,
    write_plugin_source: Callable[..., PluginSource],
    host_config: Callable[..., HostConfig],
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    host = Host(
        home_dir,
        config=host_config(),
        sources=[write_plugin_source("traced", TRACED)],
        environment=False,
        registry=False,
        tracing=provider,
    )
    trace_id = secrets.token_hex(16)
    parents = [secrets.token_hex(8) for _ in range(3)]
    results = asyncio.run(_mcp_calls(home_dir, host, parents, trace_id))

    spans: list[ReadableSpan] = [s for s in exporter.get_finished_spans()]
    assert [s.name for s in spans] == [
        "execute_tool traced.work",
        "execute_tool traced.awork",
        "execute_tool traced.fail",
    ]
    for span, parent, tool in zip(spans, parents, ("work", "awork", "fail"), strict=True):
        assert span.parent is not None and span.parent.is_remote
        assert _hex(span.context.trace_id, 32) == trace_id
        assert _hex(span.parent.span_id, 16) == parent
        assert span.kind is SpanKind.SERVER
        attrs = dict(span.attributes or {})
        assert attrs["gen_ai.operation.name"] == "execute_tool"
        assert attrs["gen_ai.tool.name"] == f"traced.{tool}"
        assert attrs["mcp.method.name"] == "tools/call"
        # A handshake-era HTTP session has an Mcp-Session-Id; the stateless era none.
        stateful = attrs["mcp.protocol.version"] in HANDSHAKE_VERSIONS
        assert ("mcp.session.id" in attrs) is stateful
        assert attrs["jsonrpc.request.id"]
    # The plugin's spans (sync and async tools) have the call's span as their parent.
    for res, span in zip(results[:2], spans[:2], strict=True):
        nested = res.structured_content or json.loads(res.content[0].text)
        nested = nested.get("result", nested)
        assert nested["trace_id"] == trace_id
        assert nested["parent_id"] == _hex(span.context.span_id, 16)
    work = results[0].structured_content or json.loads(results[0].content[0].text)
    work = work.get("result", work)
    assert work["traceparent"] == f"00-{trace_id}-{_hex(spans[0].context.span_id, 16)}-01"
    # A failed call: error.type is the stable code, the status ERROR.
    assert results[2].is_error
    assert spans[2].attributes is not None
    assert spans[2].attributes["error.type"] == "tool_exception"
    assert spans[2].status.status_code is StatusCode.ERROR
    assert "error.type" not in (spans[0].attributes or {})


def test_a_call_made_without_mcp_is_an_internal_span_under_the_callers_current_span(
    home_dir: Path,
    write_plugin_source: Callable[..., PluginSource],
    host_config: Callable[..., HostConfig],
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    host = Host(
        home_dir,
        config=host_config(),
        sources=[write_plugin_source("traced", TRACED)],
        environment=False,
        registry=False,
        tracing=provider,
    )

    async def go() -> Any:
        async with host:
            with provider.get_tracer("app").start_as_current_span("app") as app:
                value = await host.call("traced.work", {})
            items = [i async for i in host.stream("traced.count", {"n": 3})]
            assert items == [0, 1, 2]
            async for _ in host.stream("traced.count", {"n": 3}):
                break  # leaving early is no failure
            return app, value

    app, value = asyncio.run(go())
    streams = [s for s in exporter.get_finished_spans() if s.name == "execute_tool traced.count"]
    assert len(streams) == 2
    assert all(s.status.status_code is not StatusCode.ERROR for s in streams)
    call = next(s for s in exporter.get_finished_spans() if s.name.startswith("execute_tool"))
    assert call.kind is SpanKind.INTERNAL
    assert call.parent is not None and call.parent.span_id == app.get_span_context().span_id
    assert value["parent_id"] == _hex(call.context.span_id, 16)
    assert "mcp.method.name" not in (call.attributes or {})


PROBE = """
import json, sys
from mcphost.host import SyncHost, HostConfig, PluginSource
source = PluginSource(name="traced", version="1.0.0", entry="traced:plugin",
                      paths=[sys.argv[1]], origin="directory", root=sys.argv[1])
config = HostConfig(allow_unsigned=True, isolation="rlimits")
with SyncHost(sys.argv[2], config=config, sources=[source], environment=False,
              registry=False) as host:
    worker = host.call("traced.modules", {})
host_side = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
print(json.dumps({"host": host_side, "worker": worker}))
"""

MODULES = """
    import sys

    from mcphost.sdk import Plugin

    plugin = Plugin("traced")


    @plugin.tool
    def modules() -> list:
        return sorted(m for m in sys.modules if m.startswith("opentelemetry"))
"""


def _probe(tmp_path: Path, env: dict[str, str]) -> tuple[dict[str, Any], str, str]:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "traced.py").write_text(textwrap.dedent(MODULES))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(code), str(tmp_path / "home")],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    found = next(json.loads(line) for line in lines if line.startswith('{"host"'))
    return found, proc.stdout, proc.stderr


def test_with_tracing_off_neither_host_nor_worker_imports_opentelemetry(tmp_path: Path) -> None:
    found, _, _ = _probe(tmp_path, {})
    assert found == {"host": [], "worker": []}


def test_otel_traces_exporter_in_the_environment_switches_tracing_on(tmp_path: Path) -> None:
    found, out, err = _probe(tmp_path, {"OTEL_TRACES_EXPORTER": "console,nosuch"})
    assert "opentelemetry.sdk.trace" in found["host"]
    # The worker got the call's traceparent and attached it where OpenTelemetry exists.
    assert "opentelemetry.context" in found["worker"]
    # The console exporter printed the call's span before the host closed.
    assert '"name": "execute_tool traced.modules"' in out
    assert '"service.name": "mcphost"' in out
    # An exporter that is not installed is named, with the ones that are.
    assert "OTEL_TRACES_EXPORTER names 'nosuch', which is not installed" in err
    assert "console" in err


def test_the_switch_follows_the_standard_environment_variables() -> None:
    assert not tracing.enabled_by_env({})
    assert not tracing.enabled_by_env({"OTEL_TRACES_EXPORTER": "none"})
    assert tracing.enabled_by_env({"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing.enabled_by_env({"OTEL_TRACES_EXPORTER": "console,otlp"})
    assert not tracing.enabled_by_env({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"})
    assert tracing.from_env({}) is None
