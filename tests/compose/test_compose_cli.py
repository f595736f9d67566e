"""The operator's path, end to end: ``compose new``, a file with mistakes, ``validate``,
``add``, ``run --trace``, a call over MCP with the official client, a plugin swap that
would break the composition (refused, then forced), and rollbacks."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from support import subprocess_coverage

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("mcphost")
COMMAND = (
    [str(SCRIPT)]
    if SCRIPT.exists()
    else [sys.executable, "-c", "from mcphost.host.cli import main; main()"]
)


def _pip_wheel(project: Path, out: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "-q",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(project),
        ],
        check=True,
        capture_output=True,
    )
    return next(out.glob("*.whl"))


@pytest.fixture(scope="module")
def textkit_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """textkit 1.0.0 as shipped, and 2.0.0 whose ``upper`` takes ``value``, not ``text``."""
    root = tmp_path_factory.mktemp("textkit-versions")
    v1 = _pip_wheel(REPO / "example_plugins" / "textkit", root / "w1")
    src = root / "v2"
    shutil.copytree(REPO / "example_plugins" / "textkit", src)
    py = src / "pyproject.toml"
    py.write_text(py.read_text().replace('version = "1.0.0"', 'version = "2.0.0"'))
    code = src / "mcphost_textkit" / "__init__.py"
    text = code.read_text()
    old = 'def upper(text: str) -> str:\n    """Upper-case the text."""\n    return text.upper()'
    assert old in text, "textkit's upper changed; update this fixture"
    code.write_text(
        text.replace(
            old, 'def upper(value: str) -> str:\n    """Upper-case it."""\n    return value.upper()'
        ).replace('"1.0.0"', '"2.0.0"')
    )
    return {"1.0.0": v1, "2.0.0": _pip_wheel(src, root / "w2")}


@pytest.fixture
def op(home_dir: Path, plugin_dirs: dict[str, Path], tmp_path: Path) -> Any:
    """Run ``mcphost ARGS`` as an operator would, in ``tmp_path`` (mathkit from
    MCPHOST_PLUGIN_PATH, textkit from the registry)."""
    (home_dir / "config.toml").write_text('allow_unsigned = true\nisolation = "rlimits"\n')
    env = {
        **os.environ,
        **subprocess_coverage.environment(),
        "MCPHOST_HOME": str(home_dir),
        "MCPHOST_PLUGIN_PATH": str(plugin_dirs["mathkit"]),
    }

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*COMMAND, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        if ok:
            assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
        return proc

    return run


def test_an_operator_writes_checks_installs_runs_and_protects_a_composition(
    op: Any,
    home_dir: Path,
    plugin_dirs: dict[str, Path],
    tmp_path: Path,
    textkit_wheels: dict[str, Path],
    no_leftover_workers: None,
) -> None:
    op("plugin", "install", str(textkit_wheels["1.0.0"]), "--yes")
    op("plugin", "install", str(textkit_wheels["2.0.0"]), "--yes", "--no-activate")

    # A template, then two mistakes of the kind people make.
    out = op("compose", "new", "pipeline", "demo.title")
    path = tmp_path / "demo_title.toml"
    assert f"wrote {path.name}" in out.stdout
    good = path.read_text()
    path.write_text(
        good.replace('tool = "textkit.slugify"', 'tool = "textkit.slugifi"').replace(
            'text = "$input.text"', 'text = "$input.txt"'
        )
    )
    bad = op("compose", "validate", str(path), ok=False)
    assert bad.returncode == 2
    assert "has 2 problems" in bad.stderr
    assert "step 's1', args.text: $input.txt: the composition's input has no field 'txt'" in (
        bad.stderr
    )
    assert "step 's2', tool: no tool 'textkit.slugifi' (did you mean 'textkit.slugify'?)" in (
        bad.stderr
    )
    path.write_text(good)
    assert "demo.title is valid (2 steps)" in op("compose", "validate", str(path)).stdout

    assert "added demo.title version 1" in op("compose", "add", str(path)).stdout
    listed = json.loads(op("compose", "list", "--json").stdout)
    assert [(c["name"], c["active"], c["unavailable"]) for c in listed] == [("demo.title", 1, None)]
    assert "demo.title" in op("tools").stdout

    run = op("compose", "run", "demo.title", "--input", '{"text": "Hello Big World"}', "--trace")
    assert json.loads(run.stdout) == "hello-big-world"
    lines = run.stderr.splitlines()  # the timeline goes to stderr, after any warnings
    trace = lines[next(i for i, line in enumerate(lines) if line.startswith("step "))]
    trace = lines[lines.index(trace) :]
    assert [line.split()[0] for line in trace[1:]] == ["s1", "s2"]
    assert all(" ok " in line and "|" in line for line in trace[1:])
    assert json.loads(op("call", "demo.title", '{"text": "Via Call"}').stdout) == "via-call"

    # Over MCP, with the official client: listed with its schemas, called, with progress.
    async def over_mcp() -> tuple[Any, Any, list[tuple[float, float | None]]]:
        seen: list[tuple[float, float | None]] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            seen.append((p, total))

        argv = [
            *COMMAND,
            "--home",
            str(home_dir),
            "serve",
            "--no-environment",
            "--plugin-dir",
            str(plugin_dirs["mathkit"]),
        ]
        env = {**subprocess_coverage.environment(), "MCPHOST_HOME": str(home_dir)}
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=env)
        async with Client(params) as client:
            listed = await client.list_tools()
            tool = next(t for t in listed.tools if t.name == "demo.title")
            res = await client.call_tool(
                "demo.title", {"text": "Over MCP"}, progress_callback=on_progress
            )
            return tool, res, seen

    tool, res, seen = asyncio.run(over_mcp())
    assert tool.input_schema["required"] == ["text"]
    assert tool.output_schema is not None
    assert res.structured_content == {"result": "over-mcp"}
    assert seen == [(1, 2), (2, 2)]

    # textkit 2.0.0 renames upper's parameter: the swap is refused, naming what breaks.
    refused = op("plugin", "swap", "textkit", "2.0.0", ok=False)
    assert refused.returncode != 0
    assert "would break 1 installed composition" in refused.stderr
    assert "composition demo.title: step 's1', args.text: textkit.upper has no parameter " in (
        refused.stderr
    )
    assert "--force" in refused.stderr
    assert json.loads(op("plugin", "list", "--json").stdout)[0]["active"] == "1.0.0"

    # Forced: the composition is marked unavailable with the reason, and says so.
    forced = op("plugin", "swap", "textkit", "2.0.0", "--force", "--yes")
    assert "composition demo.title is now unavailable" in forced.stderr
    listed = json.loads(op("compose", "list", "--json").stdout)
    assert "swap of textkit to 2.0.0 broke it" in listed[0]["unavailable"]
    gone = op("compose", "run", "demo.title", "--input", '{"text": "x"}', ok=False)
    assert "error [composition_unavailable]" in gone.stderr
    called = op("call", "demo.title", '{"text": "x"}', ok=False)
    assert "error [composition_unavailable]" in called.stderr

    # Back: the plugin rolls back; a second version of the composition, then its rollback.
    op("plugin", "rollback", "textkit", "--yes")
    path.write_text(good.replace("Upper-case a title", "Shout a title"))
    assert "added demo.title version 2" in op("compose", "add", str(path)).stdout
    shown = op("compose", "show", "demo.title").stdout
    assert "version 2 (active: 2)" in shown and "Shout a title" in shown
    assert "version 2 -> 1" in op("compose", "rollback", "demo.title").stdout
    assert "Upper-case a title" in op("compose", "show", "demo.title").stdout
    run = op("compose", "run", "demo.title", "--input", '{"text": "Back Again"}')
    assert json.loads(run.stdout) == "back-again"

    audit = [json.loads(line) for line in (home_dir / "audit.jsonl").read_text().splitlines()]
    actions = [a["action"] for a in audit if a["action"].startswith("composition.")]
    assert actions == [
        "composition.add",
        "composition.unavailable",
        "composition.add",
        "composition.rollback",
    ]
    assert "removed demo.title" in op("compose", "remove", "demo.title").stdout
    assert "no compositions installed" in op("compose", "list").stdout


def test_compose_commands_say_when_compositions_are_switched_off(
    op: Any, home_dir: Path, tmp_path: Path
) -> None:
    op("compose", "new", "map-reduce", "demo.sq")
    (home_dir / "config.toml").write_text(
        'allow_unsigned = true\nisolation = "rlimits"\n[features]\ncomposition = false\n'
    )
    for args in (
        ("validate", "demo_sq.toml"),
        ("add", "demo_sq.toml"),
        ("run", "demo_sq.toml", "--input", '{"values": [1]}'),
    ):
        proc = op("compose", *args, ok=False)
        assert "error [composition_unavailable]: compositions are switched off" in proc.stderr


def test_run_from_a_file_with_every_template(
    op: Any, tmp_path: Path, textkit_wheels: dict[str, Path]
) -> None:
    op("plugin", "install", str(textkit_wheels["1.0.0"]), "--yes")
    inputs = {
        "pipeline": {"text": "A Title"},
        "gather": {"a": 1, "b": 2},
        "map-reduce": {"values": [1, 2, 3]},
        "fallback": {"key": "k1"},
        "branch": {"text": "short"},
        "retry": {"seconds": 0.01},
    }
    expected = {
        "pipeline": "a-title",
        "map-reduce": 14,
        "fallback": 2,
        "branch": "SHORT",
        "retry": 0.01,
    }
    for kind, args in inputs.items():
        name = "demo." + kind.replace("-", "_")
        op("compose", "new", kind, name, "-o", f"{kind}.toml")
        out = op("compose", "run", f"{kind}.toml", "--input", json.dumps(args))
        result = json.loads(out.stdout)
        if kind == "gather":
            assert result["count"] == 2 and result["maximum"] == 3
        else:
            assert result == expected[kind], kind
    again = op("compose", "new", "pipeline", "demo.pipeline", "-o", "pipeline.toml", ok=False)
    assert "exists" in again.stderr


def test_the_worked_example_of_the_guide_runs_as_documented(
    op: Any, tmp_path: Path, textkit_wheels: dict[str, Path]
) -> None:
    guide = (REPO / "docs" / "compositions.md").read_text()
    example = guide.split("## A worked example", 1)[1]
    toml = example.split("```toml\n", 1)[1].split("```", 1)[0]
    commands = example.split("```sh\n", 1)[1].split("```", 1)[0].strip().splitlines()
    outputs = [part.split("`")[0] for part in example.split("prints\n`")[1:]]
    outputs += [example.split("the call prints `")[1].split("`")[0]]
    op("plugin", "install", str(textkit_wheels["1.0.0"]), "--yes")
    (tmp_path / "report.toml").write_text(toml)
    import shlex

    results = []
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "mcphost"
        results.append(op(*argv[1:]))
    assert "demo.report is valid (3 steps)" in results[0].stdout
    assert json.loads(results[1].stdout) == json.loads(outputs[0])
    assert json.loads(results[3].stdout) == json.loads(outputs[1])


def test_a_rollback_to_a_version_the_tools_no_longer_fit_is_refused_unless_forced(
    op: Any, tmp_path: Path, textkit_wheels: dict[str, Path]
) -> None:
    op("plugin", "install", str(textkit_wheels["1.0.0"]), "--yes")
    op("plugin", "install", str(textkit_wheels["2.0.0"]), "--yes", "--no-activate")
    op("compose", "new", "pipeline", "demo.p")
    path = tmp_path / "demo_p.toml"
    v1 = path.read_text()
    op("compose", "add", str(path))
    op("plugin", "swap", "textkit", "2.0.0", "--force", "--yes")
    path.write_text(v1.replace('text = "$input.text"', 'value = "$input.text"', 1))
    assert "version 2" in op("compose", "add", str(path)).stdout
    refused = op("compose", "rollback", "demo.p", ok=False)
    assert refused.returncode == 2
    assert "composition demo.p version 1 (pass --force to roll back anyway) has 2 problems" in (
        refused.stderr
    )
    assert "step 's1', args.text: textkit.upper has no parameter 'text'" in refused.stderr
    assert "version 2 -> 1" in op("compose", "rollback", "demo.p", "--force").stdout


def test_json_output_of_validate_list_and_show(
    op: Any, tmp_path: Path, textkit_wheels: dict[str, Path]
) -> None:
    op("plugin", "install", str(textkit_wheels["1.0.0"]), "--yes")
    op("compose", "new", "branch", "demo.b")
    good = json.loads(op("compose", "validate", "demo_b.toml", "--json").stdout)
    assert good == {"valid": True, "name": "demo.b", "steps": 2}
    (tmp_path / "bad.json").write_text(
        json.dumps({"name": "demo.bad", "steps": [{"id": "a", "tool": "textkit.upper"}]})
    )
    bad = op("compose", "validate", "bad.json", "--json", ok=False)
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["problems"] == [
        {
            "step": "a",
            "field": "args.text",
            "message": "textkit.upper needs parameter 'text'; map it to a constant or a reference",
        }
    ]
    op("compose", "add", "demo_b.toml")
    shown = json.loads(op("compose", "show", "demo.b", "--json").stdout)
    assert shown["record"]["versions"] == [1]
    assert [s["id"] for s in shown["definition"]["steps"]] == ["then", "otherwise"]
    listed = op("compose", "list").stdout
    assert listed.startswith("demo.b  v1 (versions 1)  ok  A slug for a long text")
    unknown = op("compose", "show", "demo.nope", ok=False)
    assert "no composition named 'demo.nope' is installed (installed: demo.b)" in unknown.stderr
