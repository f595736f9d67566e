"""The composition act of ``mcphost demo``: a composition of the example tools (with a
condition and a fan-out) is added through the CLI, run with ``--trace``, called through
the running host, and a plugin swap that would break it is refused."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .home import Home
from .host import Host

__all__ = ["BREAKING_VERSION", "COMPOSITION", "breaking_textkit", "composition_act"]

#: A textkit whose ``upper`` takes ``value`` instead of ``text``: it breaks the demo's
#: composition, which maps ``text``.
BREAKING_VERSION = "2.0.0"

COMPOSITION = """\
name = "demo.report"
description = "Count a title's words, shout it when it is long, and test numbers for primes"

[input_schema]
type = "object"
required = ["title", "numbers"]

[input_schema.properties.title]
type = "string"

[input_schema.properties.numbers]
type = "array"
items = { type = "integer" }

[[steps]]
id = "count"
tool = "textkit.count"
args = { text = "$input.title" }

[[steps]]
id = "loud"
tool = "textkit.upper"
args = { text = "$input.title" }
when = "steps.count.output.words > `2`"
default = "(a short title)"

[[steps]]
id = "primes"
tool = "mathkit.is_prime"
args = { n = "$item" }
for_each = { items = "$input.numbers", max_concurrency = 4 }

[output]
words = "$steps.count.output.words"
title = "$steps.loud.output"
primes = "$steps.primes.output"
"""


def breaking_textkit(project: Path) -> Path:
    """Rename the ``text`` parameter of ``upper`` in a textkit copy (in place)."""
    init = project / "mcphost_textkit" / "__init__.py"
    code, n = re.subn(
        r"def upper\(text: str\) -> str:\n(    \"\"\".*?\"\"\"\n)    return text\.upper\(\)",
        "def upper(value: str) -> str:\n\\1    return value.upper()",
        init.read_text(),
        flags=re.S,
    )
    if n != 1:
        raise ValueError(f"{init}: textkit's upper changed; update the demo")
    init.write_text(code)
    return project


async def _cli(home: Home, *args: str) -> tuple[int, str, str]:
    script = Path(sys.executable).with_name("mcphost")
    cmd = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from mcphost.host.cli import main; main()"]
    )
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        "--home",
        str(home.root),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _own_lines(text: str) -> list[str]:
    """The command's own lines, without the host's log lines."""
    return [ln for ln in text.splitlines() if ln and not ln.startswith(("WARNING ", "INFO "))]


async def composition_act(
    p: Any, host: Host, home: Home, work: Path, ms: Callable[[float], str]
) -> dict[str, Any]:
    """Add, run, call and protect the demo's composition; returns its figures."""
    p.step("a composition of the example tools, checked before it runs")
    path = work / "demo_report.toml"
    path.write_text(COMPOSITION)
    p.line("demo.report: count -> loud (only when the title has more than 2 words);")
    p.line("             primes: mathkit.is_prime for each number, 4 at a time")
    t0 = time.perf_counter()
    code, out, err = await _cli(home, "compose", "add", str(path))
    if code != 0:
        raise RuntimeError(f"`mcphost compose add` failed: {err.strip()}")
    p.line(f"$ mcphost compose add demo_report.toml  [{ms(time.perf_counter() - t0)}]")
    p.line(f"  {out.strip()}")

    args = {"title": "Tools that work together", "numbers": [2, 9, 11, 15, 17]}
    code, out, err = await _cli(
        home, "compose", "run", "demo.report", "--input", json.dumps(args), "--trace"
    )
    if code != 0:
        raise RuntimeError(f"`mcphost compose run` failed: {err.strip()}")
    p.line("$ mcphost compose run demo.report --input '...' --trace")
    for line in _own_lines(err):
        p.line(f"  {line}")
    result = json.loads(out)
    p.line(f"  -> {json.dumps(result)}")

    t0 = time.perf_counter()
    for _ in range(100):  # the running host follows the add within a second
        if "demo.report" in {t.name for t in host.tools()}:
            break
        await asyncio.sleep(0.05)
    picked = time.perf_counter() - t0
    called = await host.call("demo.report", {"title": "Short one", "numbers": [4, 7]})
    p.line(f"the running host serves it as a tool too: {json.dumps(called)}")

    p.step(f"a plugin swap that would break it is refused (textkit {BREAKING_VERSION})")
    code, out, err = await _cli(home, "plugin", "swap", "textkit", BREAKING_VERSION)
    refused = code != 0
    p.line(f"$ mcphost plugin swap textkit {BREAKING_VERSION}  -> exit status {code}")
    for line in _own_lines(err):
        p.line(f"  {line}")
    return {"result": result, "refused": refused, "picked_up_s": picked}
