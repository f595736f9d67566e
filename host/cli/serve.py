"""``mcphost serve``: every hosted tool to MCP clients, over stdio or streamable HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mcphost.sandbox.loops import loop_factory
from mcphost.sdk.errors import ConfigError

from ..home import Home
from .homes import pass_serving_home
from .main import main

if TYPE_CHECKING:
    from ..host import Host
    from ..observe.listener import PageAuth, Tokens

CLIENT_SNIPPET = """\
{
  "mcpServers": {
    "mcphost": {
      "command": "mcphost",
      "args": ["serve"]
    }
  }
}"""


@main.command(
    epilog="\b\nAdd mcphost to an MCP client (Claude Desktop, Cursor, VS Code, ...) with:\n"
    + CLIENT_SNIPPET
    + "\n\b\nOver HTTP: make a token with `mcphost tokens create NAME`, run"
    "\n`mcphost serve --http 127.0.0.1:8765` and point the client at"
    "\nhttp://127.0.0.1:8765/mcp (streamable HTTP) with the header"
    "\n'Authorization: Bearer <token>'."
)
@click.option(
    "--http",
    "http",
    metavar="HOST:PORT",
    help="Serve streamable HTTP on HOST:PORT instead of stdio.",
)
@click.option(
    "--path", "endpoint", default="/mcp", show_default=True, help="The HTTP endpoint path."
)
@click.option(
    "--allow-origin",
    "origins",
    multiple=True,
    metavar="ORIGIN",
    help="An extra browser Origin allowed to call the HTTP endpoint (repeatable).",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow binding HTTP to a non-loopback address (tokens stay required).",
)
@click.option(
    "--allow-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Another name clients may send in the Host header (repeatable; DNS rebinding "
    "protection allows only the bind address and localhost's names otherwise).",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Serve HTTP (and the --metrics status page) without bearer tokens: only on a "
    "loopback address, with a warning.",
)
@click.option(
    "--session-idle",
    type=click.FloatRange(min=0.1),
    default=1800.0,
    show_default=True,
    metavar="SECONDS",
    help="Forget a handshake-era HTTP session unused this long (its client re-initialises).",
)
@click.option(
    "--max-sessions",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Most handshake-era HTTP sessions at once.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Most open HTTP connections (lowered to half the open-files limit).",
)
@click.option(
    "--max-connections-per-client",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Most open HTTP connections from one client address.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Time a client has to send a request's headers.",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Time a client has to send a request's body.",
)
@click.option(
    "--keep-alive",
    type=click.FloatRange(min=1),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How long an idle HTTP connection is kept open between requests.",
)
@click.option(
    "--metrics",
    "metrics",
    metavar="HOST:PORT",
    help="Also serve Prometheus metrics at http://HOST:PORT/metrics, and the status page "
    "at / (open /?token=TOKEN once; loopback only unless --allow-remote).",
)
@click.option(
    "--publish-registry",
    is_flag=True,
    help="With --http: publish this home's registry and config.toml to followers "
    "(`serve --follow`), read-only, at <endpoint>/registry/ for tokens made with "
    "`mcphost tokens create NAME --follow` (docs/cluster.md).",
)
@click.option(
    "--follow",
    "follow_url",
    metavar="URL",
    help="With --http: keep this home's registry and config.toml in step with the primary "
    "serving at URL (its MCP endpoint, started with --publish-registry); the token comes "
    "from $MCPHOST_FOLLOW_TOKEN or --follow-token-file.",
)
@click.option(
    "--follow-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="A file holding the follower's token (instead of $MCPHOST_FOLLOW_TOKEN).",
)
@click.option(
    "--follow-interval",
    type=click.FloatRange(min=0.05),
    default=3.0,
    show_default=True,
    metavar="SECONDS",
    help="How often a follower asks the primary for changes.",
)
@click.option(
    "--plugin-dir",
    "plugin_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Also serve plugins pip-installed into this directory (repeatable).",
)
@click.option(
    "--environment/--no-environment",
    default=True,
    show_default=True,
    help="Also serve plugins installed in mcphost's own Python environment.",
)
@click.option(
    "--max-message-bytes",
    type=click.IntRange(min=1024),
    default=4 * 1024 * 1024,
    show_default=True,
    help="Largest JSON-RPC message accepted.",
)
@click.option(
    "--page-size",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Items per page of tools/list, resources/list, resources/templates/list, prompts/list.",
)
@click.option(
    "--tools-ttl-ms",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="How long 2026-07-28 clients may cache tools/list (ms).",
)
@click.option(
    "--forward-plugin-logs",
    is_flag=True,
    help="Also send plugins' log lines from outside any call (what they print, log at "
    "import) to every client session; a call's own lines always go to its caller only.",
)
@click.option(
    "--instructions",
    metavar="TEXT",
    help="Tell clients how to use these tools (sent as `instructions` in the initialize "
    "and server/discover results).",
)
@click.option(
    "--client-log-level",
    default="info",
    show_default=True,
    metavar="LEVEL",
    help="Least severe plugin log line sent to a handshake-era session until it sends "
    "logging/setLevel (an MCP level: debug, info, notice, warning, error, critical, "
    "alert, emergency).",
)
@pass_serving_home
def serve(
    home: Home,
    http: str | None,
    endpoint: str,
    origins: tuple[str, ...],
    allow_remote: bool,
    allowed_hosts: tuple[str, ...],
    no_auth: bool,
    session_idle: float,
    max_sessions: int,
    max_connections: int,
    max_connections_per_client: int,
    header_timeout: float,
    body_timeout: float,
    keep_alive: float,
    metrics: str | None,
    publish_registry: bool,
    follow_url: str | None,
    follow_token_file: Path | None,
    follow_interval: float,
    plugin_dirs: tuple[Path, ...],
    environment: bool,
    max_message_bytes: int,
    page_size: int,
    tools_ttl_ms: int,
    forward_plugin_logs: bool,
    instructions: str | None,
    client_log_level: str,
) -> None:
    """Serve every installed tool as an MCP server (stdio by default).

    Tools are named <plugin>.<tool>. Plugins run in sandboxed workers; installs, swaps
    and rollbacks show up in a running server as notifications/tools/list_changed.
    """
    from ..mcp import McpServer, ServerOptions
    from ..mcp.server import LOG_LEVELS

    if client_log_level not in LOG_LEVELS:
        raise click.BadParameter(
            f"{client_log_level!r} is not an MCP log level; use one of: " + ", ".join(LOG_LEVELS),
            param_hint="'--client-log-level'",
        )
    bind: tuple[str, int] | None = None
    if http is not None:
        host_part, sep, port_part = http.rpartition(":")
        if not sep or not port_part.isdigit():
            raise click.UsageError(f"--http {http!r}: expected HOST:PORT, e.g. 127.0.0.1:8765")
        bind = (host_part.strip("[]") or "127.0.0.1", int(port_part))
    if bind is None and (publish_registry or follow_url is not None):
        raise click.UsageError("--publish-registry and --follow serve over HTTP: add --http")
    follower = None
    if follow_url is not None:
        from ..follow import Follower, read_token

        follower = Follower(
            home, follow_url, read_token(follow_token_file), interval=follow_interval
        )
        follower.check_token()  # a refused token stops here, with what to do

    metrics_bind: tuple[str, int] | None = None
    if metrics is not None:
        from ..observe.listener import loopback, parse_bind

        metrics_bind = parse_bind(metrics, allow_remote=allow_remote)
        if no_auth and not loopback(metrics_bind[0]):
            raise ConfigError(
                f"--metrics {metrics!r} with --no-auth would show the status page to the "
                "network without a token; serve metrics on 127.0.0.1, or leave out --no-auth"
            )

    def make_host() -> Host:
        from ..host import Host

        return Host(home, plugin_dirs=plugin_dirs, environment=environment)

    async def go() -> None:
        options = ServerOptions(
            version=_version(),
            page_size=page_size,
            max_message_bytes=max_message_bytes,
            tools_ttl_ms=tools_ttl_ms,
            forward_plugin_logs=forward_plugin_logs,
            instructions=instructions,
            default_log_level=client_log_level,
            start_workers=True,
        )
        server = McpServer(make_host, options)
        exporter = None
        following = None
        try:
            if follower is not None:
                following = asyncio.ensure_future(follower.run())
            if metrics_bind is not None:
                from ..observe.listener import MetricsListener

                exporter = MetricsListener(
                    lambda: server.made_host,
                    *metrics_bind,
                    frontend=server.frontend,
                    auth=None if no_auth else _page_auth(home),
                )
                await exporter.start()
                click.echo(f"mcphost serving metrics at {exporter.url}", err=True)
            if bind is None:
                from ..mcp.stdio import serve_stdio

                await serve_stdio(server)
            else:
                from ..mcp.http import HttpOptions, Limits, serve_http

                opts = HttpOptions(
                    host=bind[0],
                    port=bind[1],
                    path=endpoint,
                    allowed_origins=list(origins),
                    allowed_hosts=list(allowed_hosts),
                    allow_remote=allow_remote,
                    auth=not no_auth,
                    tokens_file=home.tokens_file,
                    session_idle_seconds=session_idle,
                    max_sessions=max_sessions,
                    limits=Limits(
                        header_timeout=header_timeout,
                        body_timeout=body_timeout,
                        keep_alive=keep_alive,
                        max_connections=max_connections,
                        max_per_client=max_connections_per_client,
                    ),
                    publish_home=home.root if publish_registry else None,
                )
                try:
                    await serve_http(server, opts, on_ready=_say_serving)
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
        finally:
            if following is not None:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following
            if exporter is not None:
                await exporter.close()
            await server.close()

    async def until_signalled() -> None:
        # SIGTERM and SIGINT end serving the same way: calls cancelled, workers stopped.
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await go()

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(until_signalled())


def _page_auth(home: Home) -> PageAuth:
    """The status page's sign-in: the bearer tokens of ``serve --http`` (read on first use)."""
    from ..observe.listener import PageAuth

    def tokens() -> Tokens:
        from ..mcp.auth import TokenBook

        return TokenBook(home.tokens_file)

    return PageAuth(tokens)


def _say_serving(url: str) -> None:
    """The start-up line of ``serve --http``: information for the operator, not a log
    line (stdout stays free; the line always reads the same, at any -v level)."""
    click.echo(f"mcphost serving MCP at {url}", err=True)


def _version() -> str:
    # Not importlib.metadata: importing it (and the email parser) is a good part of the
    # time before serve can answer initialize.
    from .dist_version import installed_version

    return installed_version()
