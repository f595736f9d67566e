"""1 MB of bytes over MCP, the official SDK's server vs ``mcphost serve``: a tool
returning a 1 MB image, and a ``resources/read`` of a 1 MB binary resource.

The same official ``mcp`` client (``mcp.client.Client``, default connect mode) over
stdio (a) calls a tool that returns a 1 MiB PNG-typed image and (b) reads a resource
whose 1 MiB of bytes is sent as a base64 ``blob``: served by the SDK's own
``MCPServer`` with the tool and the resource in-process (``mcp.server.mcpserver.Image``,
a ``@app.resource`` function returning bytes), and by ``mcphost serve`` with both in a
plugin (``mcphost.sdk.content.Image``, a ``@plugin.resource`` function returning bytes)
in its sandboxed worker, where the bytes cross the worker's channel as MessagePack
binary and are base64-encoded by the front end. Every answer is decoded and checked to
be the same bytes.

Rounds in which the servers take turns; per round and per workload some sequential
requests on one connection (requests/s, MB/s, p50, p99). Figures are medians over the
rounds.

    python benchmarks/bench_mcp_content.py [--quick]

writes its section of ``benchmarks/results/mcp.md`` (between the markers below, the
rest of the file kept); ``run(quick)`` returns the rows for a runner.
"""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "mcp.md"
BEGIN = "<!-- bench_mcp_content -->"
END = "<!-- /bench_mcp_content -->"
SIZE = 1024 * 1024

#: The image and the resource both servers return: deterministic bytes, the same on
#: both sides.
MAKE_IMAGE = "bytes((i * 7 + 3) % 256 for i in range(1024 * 1024))"

OFFICIAL_SERVER = f"""
from mcp.server.mcpserver import Image, MCPServer

app = MCPServer("official-image")
IMAGE = {MAKE_IMAGE}


@app.tool()
def picture() -> Image:
    \"\"\"A 1 MiB image.\"\"\"
    return Image(data=IMAGE, format="png")


@app.resource("bench://blob", mime_type="application/octet-stream")
def blob() -> bytes:
    \"\"\"1 MiB of bytes.\"\"\"
    return IMAGE


app.run()
"""

PLUGIN = f'''
from mcphost.sdk import Plugin
from mcphost.sdk.content import Image

plugin = Plugin("pictures")
IMAGE = {MAKE_IMAGE}


@plugin.tool
def picture() -> Image:
    """A 1 MiB image."""
    return Image(IMAGE, "image/png")


@plugin.resource("bench://blob", mime_type="application/octet-stream")
def blob() -> bytes:
    """1 MiB of bytes."""
    return IMAGE
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "mcphost-pictures"
version = "1.0.0"

[project.entry-points."mcphost.plugins"]
pictures = "mcphost_pictures:plugin"
"""

OFFICIAL = "official MCPServer (in-process)"
SANDBOXED = "mcphost serve (sandboxed plugin)"
#: The URI of the 1 MiB resource on both servers.
BLOB_URI = "bench://blob"
#: The workloads, each measured on every server: what a row calls it.
IMAGE_TOOL = "tool returning a 1 MB image"
BLOB_READ = "resources/read of a 1 MB blob"
WORKLOADS = (IMAGE_TOOL, BLOB_READ)


def _mcphost_command() -> list[str]:
    script = Path(sys.executable).with_name("mcphost")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from mcphost.host.cli import main; main()"]


def _install_plugin(work: Path) -> Path:
    project = work / "src"
    (project / "mcphost_pictures").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "mcphost_pictures" / "__init__.py").write_text(PLUGIN)
    target = work / "plugins"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [
            *pip,
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(project),
        ],
        check=True,
    )
    return target


def _prepare(work: Path) -> dict[str, tuple[list[str], str]]:
    official = work / "official_image.py"
    official.write_text(OFFICIAL_SERVER)
    target = _install_plugin(work)
    home = work / "home"
    home.mkdir()
    (home / "config.toml").write_text("allow_unsigned = true\n")
    serve = [*_mcphost_command(), "--home", str(home), "serve", "--no-environment"]
    return {
        OFFICIAL: ([sys.executable, str(official)], "picture"),
        SANDBOXED: ([*serve, "--plugin-dir", str(target)], "pictures.picture"),
    }


async def _measure(argv: list[str], tool: str, workload: str, calls: int) -> dict[str, float]:
    from mcp.client.client import Client
    from mcp.client.stdio import StdioServerParameters

    expected = bytes((i * 7 + 3) % 256 for i in range(SIZE))
    params = StdioServerParameters(command=argv[0], args=argv[1:])

    async def once() -> str:
        """One request; the base64 text of the bytes it got."""
        if workload == IMAGE_TOOL:
            res = await client.call_tool(tool, {})
            (block,) = res.content
            return block.data  # type: ignore[union-attr,no-any-return]
        # cache_mode "bypass": every read goes to the server, whatever ttlMs says.
        read = await client.read_resource(BLOB_URI, cache_mode="bypass")
        (content,) = read.contents
        return content.blob  # type: ignore[union-attr,no-any-return]

    async with Client(params) as client:
        for _ in range(3):  # warm: the worker started, the paths taken once
            await once()
        lat: list[float] = []
        t_all = time.perf_counter()
        for _ in range(calls):
            t = time.perf_counter()
            data = await once()
            lat.append(time.perf_counter() - t)
            assert base64.b64decode(data) == expected
        elapsed = time.perf_counter() - t_all
    lat.sort()
    return {
        "calls_per_s": calls / elapsed,
        "mb_per_s": calls * SIZE / elapsed / 1e6,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure both servers in alternating rounds; one row per workload and server."""
    calls, rounds = (20, 2) if quick else (100, 5)
    per: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="mcphost-bench-content-") as tmp:
        servers = _prepare(Path(tmp))
        for _ in range(rounds):
            for workload in WORKLOADS:
                for name, (argv, tool) in servers.items():
                    result = asyncio.run(_measure(argv, tool, workload, calls))
                    per.setdefault((workload, name), []).append(result)
    rows = []
    for (workload, name), results in per.items():
        row: dict[str, Any] = {
            "name": f"{workload}: {name}",
            "workload": workload,
            "server": name,
            "calls": calls,
            "rounds": rounds,
            "quick": quick,
        }
        for key in ("calls_per_s", "mb_per_s", "p50_ms", "p99_ms"):
            row[key] = statistics.median(r[key] for r in results)
        rows.append(row)
    return rows


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def to_markdown(rows: list[dict[str, Any]]) -> str:
    r0 = rows[0]
    mode = " (quick mode)" if r0["quick"] else ""
    out = [
        BEGIN,
        "## 1 MB of bytes: a tool returning an image, a resource read",
        "",
        "`python benchmarks/bench_mcp_content.py`: the same official `mcp` client (`Client`, "
        "default connect mode), stdio; a tool returning a 1 MiB image, and `resources/read` "
        "of a 1 MiB binary resource (base64 on the wire, as `data` and as `blob`; every "
        f"answer decoded and checked). {r0['rounds']} rounds in which the servers take "
        f"turns, {r0['calls']} sequential requests per workload each{mode}; medians over "
        "the rounds.",
        "",
        f"Machine: {os.cpu_count()} CPUs, load average {_load()} when the run ended.",
        "",
        "| workload | server | requests/s | MB/s | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['workload']} | {r['server']} | {r['calls_per_s']:.1f} | "
            f"{r['mb_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    by = {(r["workload"], r["server"]): r for r in rows}
    out.append("")
    for workload in WORKLOADS:
        official, mine = by.get((workload, OFFICIAL)), by.get((workload, SANDBOXED))
        if official is not None and mine is not None:
            ratio = mine["calls_per_s"] / official["calls_per_s"]
            out.append(
                f"- {workload}: mcphost serve does {ratio:.2f}x the official server's requests/s."
            )
    out += ["", f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", END]
    return "\n".join(out) + "\n"


def write_section(section: str) -> None:
    """Put ``section`` into the results file in place of its previous run, keeping the
    rest (bench_mcp.py's table)."""
    old = RESULTS.read_text() if RESULTS.exists() else ""
    if BEGIN in old and END in old:
        head, _, rest = old.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + section.rstrip("\n") + tail
    else:
        text = old.rstrip("\n") + ("\n\n" if old else "") + section
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


def main() -> None:
    rows = run(quick="--quick" in sys.argv)
    section = to_markdown(rows)
    write_section(section)
    print(section)


if __name__ == "__main__":
    main()
