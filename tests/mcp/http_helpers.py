"""Helpers of the HTTP tests: an embedded server, ``mcphost serve --http`` as a process,
and the official client presenting a bearer token."""

from __future__ import annotations

import re
import resource
import secrets
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from mcphost.host import Host
from mcphost.host.home import Home
from mcphost.host.mcp import McpServer, ServerOptions
from mcphost.host.mcp.http import HttpFrontEnd, HttpOptions
from mcphost.security.tokens import create_token


@asynccontextmanager
async def http_client(url: str, token: str | None, **kwargs: Any) -> AsyncIterator[Client]:
    """The official client over streamable HTTP, presenting ``token`` as a bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http), **kwargs) as client,
    ):
        yield client


class Served(NamedTuple):
    """An embedded server: its host, its HTTP front end and a token for all its tools."""

    host: Host
    front: HttpFrontEnd
    token: str

    def client(self, **kwargs: Any) -> AbstractAsyncContextManager[Client]:
        return http_client(self.front.url, self.token, **kwargs)


@asynccontextmanager
async def embedded_http(
    home: Path,
    dirs: list[Path],
    *,
    page_size: int = 100,
    forward_plugin_logs: bool = False,
    **options: Any,
) -> AsyncIterator[Served]:
    """A Host served over HTTP on a free loopback port, in this event loop."""
    tokens = Home(home).tokens_file
    token, _ = create_token(tokens, f"test-{secrets.token_hex(4)}")
    host = Host(home, plugin_dirs=dirs, environment=False, registry=False)
    server = McpServer(
        host, ServerOptions(page_size=page_size, forward_plugin_logs=forward_plugin_logs)
    )
    front = HttpFrontEnd(
        server, HttpOptions(host="127.0.0.1", port=0, tokens_file=tokens, **options)
    )
    await front.start()
    await server.ready()
    try:
        yield Served(host, front, token)
    finally:
        await front.close()
        await server.close()


class ServedProcess(NamedTuple):
    """A running ``mcphost serve --http`` process, a token for it, and what it logged."""

    proc: subprocess.Popen[bytes]
    port: int
    token: str
    log: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


#: The line ``mcphost serve --http`` logs once it listens, naming the port it bound.
SERVING = re.compile(r"serving MCP at http://[^ ]*:(\d+)/")


def served_port(line: str) -> int | None:
    """The port a ``serving MCP at URL`` log line names, or None for another line."""
    m = SERVING.search(line)
    return int(m.group(1)) if m else None


@contextmanager
def serve_http_process(
    argv: list[str], home: Path, *extra: str, limit_files: int | None = None
) -> Iterator[ServedProcess]:
    """Run ``argv --http 127.0.0.1:0 *extra`` until it says where it serves (bounded wait).

    The server binds port 0 and the port comes from its log line: no port is picked
    here and released for the server to bind again, which another process may take
    meanwhile.
    """
    token, _ = create_token(Home(home).tokens_file, f"test-{secrets.token_hex(4)}")

    def lower_limit() -> None:
        if limit_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit_files, limit_files))

    proc = subprocess.Popen(
        [*argv, "--http", "127.0.0.1:0", *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lower_limit,
    )
    lines: list[str] = []
    ports: list[int] = []
    serving = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for raw_line in proc.stderr:
            line = raw_line.decode(errors="replace").rstrip()
            lines.append(line)
            port = served_port(line)
            if port is not None and not ports:
                ports.append(port)
                serving.set()
        serving.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert serving.wait(30), "mcphost serve --http did not start in 30 s"
        assert proc.poll() is None, "mcphost serve --http exited:\n" + "\n".join(lines)
        assert ports, "mcphost serve --http named no port:\n" + "\n".join(lines)
        yield ServedProcess(proc, ports[0], token, lines)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=10)
