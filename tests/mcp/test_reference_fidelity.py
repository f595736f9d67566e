"""``mcphost serve`` answers ``tools/call`` as the official SDK's server does.

One plugin, built as a real wheel, is served by ``mcphost serve`` (stdio); the same
functions are served by the official SDK's ``MCPServer`` (stdio, a script run as a
subprocess). The official client calls both, in both protocol eras, and the results
must carry the same ``content`` and ``structuredContent``. A ``ToolError`` is compared
where the two can be (``isError``, the message in the text) and mcphost's code and data
must be in ``_meta["mcphost/error"]``.
"""

from __future__ import annotations

import asyncio
import sys
import zipfile
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from support import subprocess_coverage
from support.cli import mcphost_command
from support.wheels import build_wheels

#: The tools, as plain functions both servers register.
TOOLS = '''
import dataclasses

from pydantic import BaseModel


@dataclasses.dataclass
class Point:
    """A point on a grid, with a label."""

    x: int
    y: int
    label: str


class Spec(BaseModel):
    """A filter, as a pydantic model."""

    word: str
    limit: int = 10
    tags: list[str] = []


def upper(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


def count(text: str) -> int:
    """How many words the text has."""
    return len(text.split())


def words(text: str) -> list[str]:
    """The words of the text."""
    return text.split()


def squares(n: int) -> list[dict[str, int]]:
    """The first n squares, one object each."""
    return [{"n": i, "square": i * i} for i in range(n)]


def groups() -> list[list[int]]:
    """Numbers in groups: a list of lists."""
    return [[1, 2], [3]]


def tally(text: str) -> dict[str, int]:
    """How often each word occurs."""
    counts: dict[str, int] = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return counts


def point(x: int, y: int) -> Point:
    """A dataclass result."""
    return Point(x, y, f"({x}, {y})")


def spec(word: str) -> Spec:
    """A pydantic result."""
    return Spec(word=word, tags=["a", "\u00e9t\u00e9"])


FUNCTIONS = [upper, count, words, squares, groups, tally, point, spec]
'''

PLUGIN = f'''"""fidelity: the same tools as the official server in the fidelity test."""

from mcphost.sdk import Plugin, ToolError
{TOOLS}
plugin = Plugin("fidelity", description="Results of every shape")
for function in FUNCTIONS:
    plugin.tool(function)


@plugin.tool
def find_city(name: str) -> str:
    """Fail on purpose, with a code and data."""
    raise ToolError(f"no city named {{name!r}}", code="not_found", data={{"name": name}})
'''

OFFICIAL = f'''"""The same tools under the official SDK's server, on stdio."""

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
{TOOLS}
server = MCPServer("fidelity")
for function in FUNCTIONS:
    server.tool(name="fidelity." + function.__name__)(function)


@server.tool(name="fidelity.find_city")
def find_city(name: str) -> str:
    """Fail on purpose."""
    raise ToolError(f"no city named {{name!r}}")


server.run()
'''

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "mcphost-fidelity"
version = "1.0.0"
requires-python = ">=3.11"
dependencies = []

[project.entry-points."mcphost.plugins"]
fidelity = "mcphost_fidelity:plugin"

[tool.setuptools]
packages = ["mcphost_fidelity"]
"""

#: case -> (tool, arguments)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "str": ("upper", {"text": "hi"}),
    "int": ("count", {"text": "a b c"}),
    "list": ("words", {"text": "alpha beta"}),
    "empty-list": ("words", {"text": ""}),
    "list-of-objects": ("squares", {"n": 3}),
    "list-of-lists": ("groups", {}),
    "dict": ("tally", {"text": "to be or not to be \u00e9t\u00e9"}),
    "dataclass": ("point", {"x": 1, "y": -2}),
    "pydantic": ("spec", {"word": "hi"}),
    "tool-error": ("find_city", {"name": "Atlantis"}),
}
ERAS = {"2026-07-28": "auto", "2025-11-25": "legacy"}

Answers = dict[tuple[str, str], types.CallToolResult]


@pytest.fixture(scope="session")
def fidelity_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fidelity plugin, built as a wheel and installed into a folder of its own.

    A pure-Python wheel without scripts or data installs by unpacking it, which is what
    ``pip install --target`` does with it."""
    root = tmp_path_factory.mktemp("fidelity")
    project = root / "src"
    (project / "mcphost_fidelity").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "mcphost_fidelity" / "__init__.py").write_text(PLUGIN)
    # Built by the project's PEP 517 backend, as pip would (several times faster).
    (wheel,) = build_wheels([project], root / "wheels")
    target = root / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


async def _answers(params: StdioServerParameters) -> Answers:
    """Every case, called in both eras (one connection per era, side by side)."""

    async def era(version: str, mode: str) -> Answers:
        got: Answers = {}
        async with Client(params, mode=mode) as client:
            assert client.protocol_version == version
            for case, (tool, args) in CASES.items():
                got[version, case] = await client.call_tool(f"fidelity.{tool}", args)
        return got

    found: Answers = {}
    for part in await asyncio.gather(*(era(v, m) for v, m in ERAS.items())):
        found.update(part)
    return found


@pytest.fixture(scope="session")
def mcphost_answers(tmp_path_factory: pytest.TempPathFactory, fidelity_dir: Path) -> Answers:
    home = tmp_path_factory.mktemp("fidelity-home")
    (home / "config.toml").write_text("allow_unsigned = true\n")
    argv = [*mcphost_command(), "--home", str(home), "serve", "--no-environment"]
    argv += ["--plugin-dir", str(fidelity_dir)]
    env = subprocess_coverage.environment()
    return asyncio.run(_answers(StdioServerParameters(command=argv[0], args=argv[1:], env=env)))


@pytest.fixture(scope="session")
def official_answers(tmp_path_factory: pytest.TempPathFactory) -> Answers:
    script = tmp_path_factory.mktemp("official") / "official_server.py"
    script.write_text(OFFICIAL)
    params = StdioServerParameters(
        command=sys.executable, args=[str(script)], env=subprocess_coverage.environment()
    )
    return asyncio.run(_answers(params))


def _dump(result: types.CallToolResult) -> dict[str, Any]:
    return {
        "isError": bool(result.is_error),
        "content": [block.model_dump(mode="json", exclude_none=True) for block in result.content],
        "structuredContent": result.structured_content,
    }


@pytest.mark.parametrize("version", list(ERAS))
@pytest.mark.parametrize("case", [c for c in CASES if c != "tool-error"])
def test_a_result_has_the_same_content_and_structured_content_as_under_the_official_server(
    mcphost_answers: Answers, official_answers: Answers, case: str, version: str
) -> None:
    ours, reference = mcphost_answers[version, case], official_answers[version, case]
    assert _dump(ours) == _dump(reference)


@pytest.mark.parametrize("version", list(ERAS))
def test_a_tool_error_reads_like_the_official_servers_and_carries_its_code_and_data_in_meta(
    mcphost_answers: Answers, official_answers: Answers, version: str
) -> None:
    ours = mcphost_answers[version, "tool-error"]
    reference = official_answers[version, "tool-error"]
    message = "no city named 'Atlantis'"
    assert ours.is_error and reference.is_error
    assert ours.structured_content is None and reference.structured_content is None
    (ours_block,) = ours.content
    (reference_block,) = reference.content
    assert isinstance(ours_block, types.TextContent)
    assert isinstance(reference_block, types.TextContent)
    assert reference_block.text.endswith(message)
    assert ours_block.text == f"error [not_found]: {message}"
    assert ours.meta is not None
    assert ours.meta["mcphost/error"] == {
        "code": "not_found",
        "message": message,
        "data": {"name": "Atlantis"},
    }
