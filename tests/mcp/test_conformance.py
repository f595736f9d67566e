"""The official MCP conformance suite's server scenarios against ``mcphost serve --http``.

The suite (``@modelcontextprotocol/conformance``, pinned with the Node.js 22 it runs on by
tests/conformance/package-lock.json) is installed by tests/conformance/install.sh, which
.ci/run calls; this test installs nothing. It builds the example plugin
example_plugins/conformance (the suite's fixtures) into a wheel, signs it, installs it
into a fresh home with ``mcphost plugin install``, serves that home over streamable HTTP
on a free loopback port (the plugin exposed bare, as the suite calls tools and prompts by
their own names), runs every active server scenario and asserts that each passes, but for
:data:`EXPECTED_FAILURES` (none today): a scenario listed there must fail and one not
listed must pass, so a regression fails the test, and so does a listed scenario that
starts to pass until it is taken off the list (and the count in docs/mcp.md and the
README is brought up to date).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mcp_types as types
import pytest
from http_helpers import ServedProcess, http_client, serve_http_process
from support.cli import mcphost_command, run_mcphost
from support.wheels import build_wheel

from mcphost.host import Home
from mcphost.security import Permissions, TrustStore, generate_key, sign_wheel

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "example_plugins" / "conformance"
#: Where tests/conformance/install.sh puts the suite (MCPHOST_CONFORMANCE_DIR overrides).
SUITE_DIR = Path(os.environ.get("MCPHOST_CONFORMANCE_DIR") or REPO / ".venv" / "conformance")
SUITE_VERSION = "0.1.16"
#: Server scenarios the suite's "active" set runs (its other two are pending upstream).
ACTIVE_SCENARIOS = 30

#: Scenario -> why it cannot pass on mcphost. A scenario here must fail, one not here must
#: pass (each is listed with its reason in docs/mcp.md, "Conformance").
EXPECTED_FAILURES: dict[str, str] = {}

#: ``✓ NAME: 3 passed, 0 failed`` in the suite's closing summary, one line per scenario.
_SUMMARY = re.compile(r"^([✓✗]) (\S+): (\d+) passed, (\d+) failed$", re.M)
#: A result folder: ``server-<scenario>-<ISO time with : and . as ->``.
_RESULT_DIR = re.compile(r"^server-(.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$")


@dataclass
class Scenario:
    """One scenario's outcome: the suite's summary counts and its checks' statuses."""

    name: str
    passed: int
    failed: int
    #: The checks that did not succeed, as ``id: STATUS: message``.
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        # As the suite's own --expected-failures judges: a FAILURE or a WARNING fails.
        return self.failed == 0 and not self.problems


@pytest.fixture(scope="module")
def suite() -> tuple[Path, Path]:
    """The suite's Node.js and CLI; missing, a skip here and a failure in CI."""
    node = SUITE_DIR / "node_modules" / ".bin" / "node"
    cli = SUITE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    if not (node.exists() and cli.exists()):
        why = (
            f"the MCP conformance suite is not installed in {SUITE_DIR}; "
            "run tests/conformance/install.sh (it needs npm)"
        )
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    version = json.loads((cli.parents[1] / "package.json").read_text())["version"]
    assert version == SUITE_VERSION, (
        f"{SUITE_DIR} holds conformance {version}, not {SUITE_VERSION}; "
        "run tests/conformance/install.sh again"
    )
    return node, cli


@pytest.fixture(scope="module")
def conformance_home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """A home with the conformance plugin installed from a signed wheel, the way an
    operator installs it (a trusted key, ``mcphost plugin install``)."""
    root = tmp_path_factory.mktemp("conformance")
    key = generate_key()
    wheel = build_wheel(PLUGIN, root / "wheel")
    signed = sign_wheel(wheel, key, permissions=Permissions(), sequence=1, out=root / "signed")
    home = Home(root / "home").ensure()
    TrustStore(home.keys_dir).trust(key.public_key.pem(), "conformance test")
    # The suite calls tools and prompts by the names its reference server uses
    # (test_simple_text, test_simple_prompt), not conformance.test_simple_text.
    home.config_file.write_text('[plugins.conformance]\nexpose = "bare"\n')
    proc = run_mcphost("plugin", "install", signed, "--yes", home=home, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return home


@pytest.fixture
def served(conformance_home: Home) -> Iterator[ServedProcess]:
    """``mcphost serve --http`` of that home on a free loopback port, without tokens: the
    suite's client sends none (loopback only, as ``--no-auth`` allows)."""
    argv = [*mcphost_command(), "--home", str(conformance_home.root), "serve"]
    with serve_http_process(argv, conformance_home.root, "--no-auth") as process:
        yield process


def _scenarios(stdout: str, results: Path) -> dict[str, Scenario]:
    """Each scenario the suite ran, from its summary and its checks.json files."""
    ran = {
        m.group(2): Scenario(m.group(2), int(m.group(3)), int(m.group(4)))
        for m in _SUMMARY.finditer(stdout)
    }
    for checks_file in results.glob("server-*/checks.json"):
        m = _RESULT_DIR.match(checks_file.parent.name)
        assert m is not None and m.group(1) in ran, f"unexpected result {checks_file}"
        for check in json.loads(checks_file.read_text()):
            if check["status"] in ("FAILURE", "WARNING"):
                message = check.get("errorMessage") or check.get("details") or ""
                ran[m.group(1)].problems.append(f"{check['id']}: {check['status']}: {message}")
    return ran


def _baseline(path: Path) -> Path:
    """The suite's own --expected-failures file, from :data:`EXPECTED_FAILURES` (the
    suite wants a list there, so none is ``[]``)."""
    names = "".join(f"  - {name}\n" for name in EXPECTED_FAILURES)
    path.write_text(f"server:\n{names}" if names else "server: []\n")
    return path


@pytest.mark.timeout(300)
def test_official_conformance_suite_server_scenarios(
    suite: tuple[Path, Path], served: ServedProcess, tmp_path: Path
) -> None:
    node, cli = suite
    results = tmp_path / "results"
    proc = subprocess.run(
        [
            str(node),
            str(cli),
            "server",
            "--url",
            served.url,
            "--output-dir",
            str(results),
            "--expected-failures",
            str(_baseline(tmp_path / "baseline.yml")),
        ],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=240,
        cwd=tmp_path,
    )
    server_log = "\n".join(served.log)
    output = proc.stdout + proc.stderr
    ran = _scenarios(proc.stdout, results)
    assert len(ran) == ACTIVE_SCENARIOS, f"the suite ran {len(ran)} scenarios:\n{output}"

    failing = {name for name, s in ran.items() if not s.ok}
    unexpected = sorted(failing - EXPECTED_FAILURES.keys())
    fixed = sorted((EXPECTED_FAILURES.keys() & ran.keys()) - failing)
    unknown = sorted(EXPECTED_FAILURES.keys() - ran.keys())
    report = "\n".join(
        [
            f"unexpected failure: {name}\n    " + "\n    ".join(ran[name].problems)
            for name in unexpected
        ]
        + [
            f"now passes (take it off EXPECTED_FAILURES, update the count in docs/mcp.md "
            f"and the README): {name}"
            for name in fixed
        ]
        + [f"not a scenario of this suite: {name}" for name in unknown]
    )
    assert not (unexpected or fixed or unknown), (
        f"{report}\n\n--- suite output ---\n{output}\n--- server log ---\n{server_log}"
    )
    # The suite judges the same way from the same list.
    assert proc.returncode == 0, output


@pytest.mark.filterwarnings(
    "ignore::mcp.shared.exceptions.MCPDeprecationWarning"  # logging/setLevel before 2026
)
async def test_the_fixtures_answer_as_the_scenarios_check(served: ServedProcess) -> None:
    """The plugin's fixtures, called as the suite calls them (the handshake era, log
    level debug, a progress token), give what its scenarios check; under whichever
    names the server lists them."""
    logs: list[types.LoggingMessageNotificationParams] = []
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async with http_client(served.url, None, mode="legacy", logging_callback=on_log) as client:
        listed = (await client.list_tools()).tools
        names = {t.name.rsplit(".", 1)[-1]: t.name for t in listed}
        assert set(names) == {
            "test_simple_text",
            "test_image_content",
            "test_audio_content",
            "test_embedded_resource",
            "test_multiple_content_types",
            "test_tool_with_logging",
            "test_tool_with_progress",
            "test_error_handling",
            "test_sampling",
            "test_elicitation",
            "test_elicitation_sep1034_defaults",
            "test_elicitation_sep1330_enums",
        }
        assert all(t.description for t in listed)  # tools-list wants every description

        text = await client.call_tool(names["test_simple_text"])
        assert not text.is_error
        assert [c.text for c in text.content if isinstance(c, types.TextContent)] == [
            "This is a simple text response for testing."
        ]

        await client.set_logging_level("debug")
        await client.call_tool(names["test_tool_with_logging"], {})
        # Each line is sent on the call's stream before its answer.
        assert [(p.level, p.data) for p in logs] == [
            ("info", "Tool execution started"),
            ("info", "Tool processing data"),
            ("info", "Tool execution completed"),
        ]

        await client.call_tool(names["test_tool_with_progress"], {}, progress_callback=on_progress)
        assert progress == [
            (0.0, 100.0, "Completed step 0 of 100"),
            (50.0, 100.0, "Completed step 50 of 100"),
            (100.0, 100.0, "Completed step 100 of 100"),
        ]

        failed = await client.call_tool(names["test_error_handling"], {})
        assert failed.is_error
        first = failed.content[0]
        assert isinstance(first, types.TextContent)
        assert "This tool intentionally returns an error for testing" in first.text

        # Prompts by their own names too (the plugin is exposed bare), and the completion.
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert set(prompts) == {
            "test_simple_prompt",
            "test_prompt_with_arguments",
            "test_prompt_with_embedded_resource",
            "test_prompt_with_image",
        }
        assert all(p.description for p in prompts.values())  # prompts-list wants them
        args = {
            a.name: a.description for a in prompts["test_prompt_with_arguments"].arguments or []
        }
        assert args == {"arg1": "First test argument", "arg2": "Second test argument"}
        got = await client.get_prompt("test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
        (message,) = got.messages
        assert isinstance(message.content, types.TextContent)
        assert message.content.text == "Prompt with arguments: arg1='a', arg2='b'"
        done = await client.complete(
            types.PromptReference(type="ref/prompt", name="test_prompt_with_arguments"),
            {"name": "arg1", "value": "test"},
        )
        assert done.completion.values == ["test", "testValue1"]

        # Resources under the URIs the scenarios read.
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert uris == {"test://static-text", "test://static-binary", "test://watched-resource"}
        read = await client.read_resource("test://template/123/data")
        (contents,) = read.contents
        assert isinstance(contents, types.TextResourceContents)
        assert json.loads(contents.text) == {
            "id": "123",
            "templateTest": True,
            "data": "Data for ID: 123",
        }
