"""What ``mcphost serve --http`` prints when it starts."""

from __future__ import annotations

from pathlib import Path

from http_helpers import serve_http_process


def test_serve_http_prints_its_url_plainly_on_stderr_not_as_a_warning(
    serve_argv: list[str], mcp_home: Path
) -> None:
    with serve_http_process(serve_argv, mcp_home) as served:
        said = [line for line in served.log if "serving MCP at" in line]
        assert said == [f"mcphost serving MCP at {served.url}"], served.log
        assert not any(line.startswith("WARNING") and "serving" in line for line in served.log)
