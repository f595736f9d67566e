"""The `mcphost` console script, run as a real subprocess against a real home."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support.cli import run_mcphost

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_home(home_dir: Path) -> Path:
    """A home whose configuration allows the unsigned example plugins."""
    (home_dir / "config.toml").write_text('allow_unsigned = true\nisolation = "rlimits"\n')
    return home_dir


@pytest.fixture
def mcphost(cli_home: Path, plugin_dirs: dict[str, Path]) -> Run:
    """Run ``mcphost ARGS...``; the example plugins are visible via MCPHOST_PLUGIN_PATH."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {
            **os.environ,
            "MCPHOST_HOME": str(cli_home),
            "MCPHOST_PLUGIN_PATH": os.pathsep.join(str(p) for p in plugin_dirs.values()),
            **(env or {}),
        }
        return run_mcphost(*args, env=full_env)

    return run


def test_the_console_script_reports_its_version(mcphost: Run) -> None:
    proc = mcphost("--version")
    assert proc.returncode == 0
    assert "0.1.0" in proc.stdout


def test_tools_lists_every_tool_with_the_first_line_of_its_description(mcphost: Run) -> None:
    proc = mcphost("tools")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(
        line.startswith("textkit.upper") and "Upper-case the text." in line for line in lines
    )
    assert any(line.startswith("textkit.count_to") and line.endswith("(stream)") for line in lines)
    assert any(line.startswith("notes.list") for line in lines)
    assert any(line.startswith("mathkit.factorize") for line in lines)


def test_tools_json_gives_names_schemas_and_kinds(mcphost: Run) -> None:
    proc = mcphost("tools", "--json")
    assert proc.returncode == 0, proc.stderr
    tools = {t["name"]: t for t in json.loads(proc.stdout)}
    assert tools["textkit.upper"]["input_schema"]["required"] == ["text"]
    assert tools["textkit.upper"]["output_schema"] == {"type": "string"}
    assert tools["textkit.count_to"]["kind"] == "stream"
    assert tools["mathkit.factorize"]["batch"] is True
    assert tools["notes.save"]["plugin"] == "notes" and tools["notes.save"]["version"] == "1.0.0"


def test_call_prints_the_json_result_and_exits_zero(mcphost: Run) -> None:
    proc = mcphost("call", "mathkit.stats", '{"values": [2, 4, 6]}')
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["mean"] == 4.0 and result["count"] == 3


def test_call_of_a_streaming_tool_prints_one_json_line_per_item(mcphost: Run) -> None:
    proc = mcphost("call", "textkit.tokens", '{"text": "alpha beta gamma"}')
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line) for line in proc.stdout.splitlines()] == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("mathkit.stats", '{"values": []}'), "error [empty_input]: stats needs at least one"),
        (("textkit.upper", '{"txt": "x"}'), "error [invalid_arguments]"),
        (("textkit.nope", "{}"), "error [tool_not_found]: plugin textkit has no tool 'nope'"),
        (("nosuch.tool", "{}"), "error [plugin_not_found]: no plugin named 'nosuch'"),
        (("textkit.sleep", '{"seconds": 30}', "--timeout", "0.2"), "error [tool_timeout]"),
    ],
    ids=["tool-error", "bad-arguments", "unknown-tool", "unknown-plugin", "timeout"],
)
def test_call_failures_exit_one_with_a_clear_message(
    mcphost: Run, args: tuple[str, ...], message: str
) -> None:
    proc = mcphost("call", *args)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert message in proc.stderr
    assert proc.stdout == ""


def test_call_with_invalid_arguments_does_not_repeat_the_tool_name_it_was_given(
    mcphost: Run,
) -> None:
    proc = mcphost("call", "textkit.upper", '{"text": 42}')
    assert proc.returncode == 1
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert error.startswith(
        "error [invalid_arguments]: invalid arguments: Expected `str`, got `int` - at `$.text`"
    ), error
    assert "textkit.upper" not in error


@pytest.mark.parametrize(
    ("arguments", "message"),
    [("{not json", "ARGUMENTS is not valid JSON"), ("[1, 2]", "must be a JSON object")],
)
def test_call_with_arguments_that_are_not_a_json_object_is_a_usage_error(
    mcphost: Run, arguments: str, message: str
) -> None:
    proc = mcphost("call", "textkit.upper", arguments)
    assert proc.returncode == 2
    assert message in proc.stderr


@pytest.mark.parametrize("timeout", ["0", "-1"])
def test_call_with_a_timeout_of_zero_or_less_is_a_usage_error_not_the_default(
    mcphost: Run, timeout: str
) -> None:
    proc = mcphost("call", "textkit.upper", '{"text": "x"}', "--timeout", timeout)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "--timeout" in proc.stderr
    assert proc.stdout == ""


def test_doctor_reports_python_platform_isolation_and_limits(mcphost: Run, cli_home: Path) -> None:
    proc = mcphost("doctor")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"python      {sys.version.split()[0]}" in out
    assert "platform" in out
    assert "isolation   rlimits" in out  # what the home's configuration chose
    assert "backend rlimits (rlimits): available" in out
    assert "memory_mb=1024" in out
    assert str(cli_home.resolve()) in out
    data = json.loads(mcphost("doctor", "--json").stdout)
    assert data["isolation"]["chosen"] == "rlimits"
    assert {b["backend"] for b in data["isolation"]["backends"]} >= {"rlimits"}
    assert data["limits"]["cpu_seconds"] == 600


def test_the_home_option_wins_over_mcphost_home(mcphost: Run, tmp_path: Path) -> None:
    other = tmp_path / "other-home"
    other.mkdir()  # an empty directory: a new home
    data = json.loads(mcphost("--home", str(other), "doctor", "--json").stdout)
    assert data["home"] == str(other.resolve())
    # That home has no configuration allowing unsigned plugins: its own rules apply.
    proc = mcphost("--home", str(other), "call", "textkit.upper", '{"text": "x"}')
    assert proc.returncode == 1
    assert "not signed" in proc.stderr


def test_a_bad_configuration_in_the_home_exits_two_naming_the_key(
    mcphost: Run, cli_home: Path
) -> None:
    (cli_home / "config.toml").write_text("[limits]\nmemroy_mb = 5\n")
    proc = mcphost("tools")
    assert proc.returncode == 2
    assert "limits.memroy_mb" in proc.stderr
    doctor = mcphost("doctor")
    assert doctor.returncode == 0  # doctor still reports, and shows the problem
    assert "config      ERROR" in doctor.stdout and "limits.memroy_mb" in doctor.stdout


ESCAPES = '''
from mcphost.sdk import Plugin

plugin = Plugin("esc")


@plugin.tool
def shout(text: str) -> str:
    """\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mRed\\x08\\u202egnp.exe\\x9b1m: upper-case it.\\x1b[0m"""
    return text.upper()
'''


def test_tools_prints_no_control_character_a_plugin_wrote(
    mcphost: Run, plugin_dirs: dict[str, Path], tmp_path: Path
) -> None:
    project = tmp_path / "esc-project"
    project.mkdir()
    (project / "esc.py").write_text(ESCAPES)
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "esc"\nversion = "1.0.0"\n'
        '[project.entry-points."mcphost.plugins"]\nesc = "esc:plugin"\n'
        '[tool.setuptools]\npy-modules = ["esc"]\n'
    )
    target = tmp_path / "esc-installed"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "-q",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-compile",
            "--target",
            str(target),
            str(project),
        ],
        check=True,
        capture_output=True,
    )
    path = os.pathsep.join(str(p) for p in [*plugin_dirs.values(), target])
    proc = mcphost("tools", env={"MCPHOST_PLUGIN_PATH": path})
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("esc.shout")]
    assert "Red" in line and "upper-case it." in line
    assert line.isprintable(), repr(line)
    assert not any(c in proc.stdout for c in "\x1b\x07\x08\u202e\x9b")


def test_call_json_prints_a_tools_whole_error_code_message_and_data_on_stdout(
    mcphost: Run,
) -> None:
    proc = mcphost("call", "--json", "mathkit.primes_below", '{"limit": 20000000}')
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert json.loads(proc.stdout) == {
        "error": {
            "code": "too_large",
            "message": "limit 20000000 is too large; use at most 10000000",
            "data": {"limit": 20000000, "max": 10000000},
        }
    }
    assert "error [" not in proc.stderr


def test_call_json_gives_the_hosts_own_errors_whole_too(mcphost: Run) -> None:
    proc = mcphost("call", "--json", "textkit.nope", "{}")
    assert proc.returncode == 1
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "tool_not_found"
    assert error["data"] == {"plugin": "textkit", "tool": "nope"}


def test_log_format_json_writes_one_object_per_line_naming_the_plugin_tool_call_and_trace(
    mcphost: Run,
) -> None:
    proc = mcphost(
        "-v",
        "--log-format",
        "json",
        "call",
        "textkit.sleep",
        '{"seconds": 0}',
        env={"OTEL_TRACES_EXPORTER": "console"},
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert lines, "nothing was logged at -v"
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line)
        assert line["time"].endswith("+00:00")
    plugin_line = next(line for line in lines if line["logger"] == "mcphost.plugin")
    assert plugin_line["message"] == "[textkit] sleeping 0.0s"
    assert plugin_line["level"] == "info"
    assert plugin_line["plugin"] == "textkit"
    assert plugin_line["tool"] == "sleep"
    assert isinstance(plugin_line["call_id"], int) and plugin_line["call_id"] > 0
    # The call was traced (console exporter on stdout): the line carries its trace id.
    assert re.fullmatch(r"[0-9a-f]{32}", plugin_line["trace_id"])
    assert f'"trace_id": "0x{plugin_line["trace_id"]}"' in proc.stdout


def test_log_format_text_is_the_default_and_a_bad_choice_is_refused(mcphost: Run) -> None:
    proc = mcphost("--log-format", "xml", "tools")
    assert proc.returncode == 2
    assert "'xml' is not one of 'text', 'json'" in proc.stderr
