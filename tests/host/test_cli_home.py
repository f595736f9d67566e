"""Which commands create a home, and what a wrong or unusable home gives: the CLI run
in this process (the same code as the executable), and once as the real executable."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.cli import invoke, run_mcphost

from mcphost.host import Home
from mcphost.security import generate_key, write_private_key, write_public_key

CHECK = "check --home / MCPHOST_HOME"
NOT_FOUND = (
    "error [home_not_found]: no mcphost home at {} (run `mcphost plugin install` or "
    "`mcphost keys trust` to create one, or check --home / MCPHOST_HOME)\n"
)

#: Every command that uses a home but only reads it, or changes what is in it.
READING = [
    ("plugin", "list"),
    ("plugin", "info", "textkit"),
    ("plugin", "verify"),
    ("plugin", "swap", "textkit", "1.0"),
    ("plugin", "rollback", "textkit"),
    ("plugin", "remove", "textkit"),
    ("plugin", "reset", "textkit"),
    ("tools",),
    ("call", "textkit.upper", '{"text": "hi"}'),
    ("serve",),
    ("audit",),
    ("config", "show"),
    ("keys", "list"),
    ("keys", "revoke", "ed25519:0000000000000000"),
    ("tokens", "list"),
    ("tokens", "revoke", "ci"),
    ("registry", "rebuild"),
]


@pytest.fixture
def creating(tmp_path: Path, example_wheels: dict[str, Path]) -> list[tuple[str, ...]]:
    """Every command that creates a home when it is missing, with real arguments."""
    key = generate_key()
    write_private_key(tmp_path / "pub.key", key, None)
    write_public_key(tmp_path / "pub.pub", key)
    wheel = str(example_wheels["textkit"])
    return [
        ("plugin", "install", "--yes", wheel),
        ("plugin", "sign", wheel, "--key", str(tmp_path / "pub.key"), "--out", str(tmp_path)),
        ("keys", "trust", str(tmp_path / "pub.pub")),
        ("keys", "generate", "k", "--out", str(tmp_path)),
        ("tokens", "create", "ci"),
    ]


def test_reading_commands_on_a_mistyped_home_say_there_is_none_and_create_nothing(
    tmp_path: Path,
) -> None:
    typo = tmp_path / "mcphost-typo"
    for args in READING:
        result = invoke("--home", typo, *args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr == NOT_FOUND.format(typo), args
        assert not typo.exists(), f"{args} created the home"


def test_a_folder_inside_a_home_is_never_used_as_a_home(
    tmp_path: Path, creating: list[tuple[str, ...]]
) -> None:
    home = Home(tmp_path / "home").ensure()
    keys = home.keys_dir  # empty: nothing trusted yet
    part = f"it is inside the mcphost home {home.root}, where it keeps its trusted keys"
    for args in READING:
        result = invoke("--home", keys, *args)
        assert result.exit_code == 1, (args, result.output)
        assert (
            result.stderr == f"error [home_not_found]: no mcphost home at {keys}: {part}; {CHECK}\n"
        )
    for args in creating:
        result = invoke("--home", keys, *args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr == (
            f"error [home_error]: cannot use {keys} as the mcphost home: {part}; {CHECK}\n"
        )
    assert list(keys.iterdir()) == []


def test_a_home_may_live_in_an_applications_data_folder_beside_its_config_toml(
    tmp_path: Path, creating: list[tuple[str, ...]]
) -> None:
    app = tmp_path / "app"
    (app / "data").mkdir(parents=True)
    (app / "config.toml").write_text("[app]\n")
    home = app / "data" / "mcphost"
    keys_trust = next(args for args in creating if args[:2] == ("keys", "trust"))
    made = invoke("--home", home, *keys_trust)
    assert made.exit_code == 0, made.output
    assert invoke("--home", home, "keys", "list").exit_code == 0


def test_creating_commands_refuse_a_directory_that_is_not_a_home_saying_what_it_holds(
    tmp_path: Path, creating: list[tuple[str, ...]]
) -> None:
    elsewhere = tmp_path / "projects"
    (elsewhere / "photos").mkdir(parents=True)
    (elsewhere / "notes.txt").write_text("mine\n")
    for args in creating:
        result = invoke("--home", elsewhere, *args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr == (
            f"error [home_error]: {elsewhere} is not an mcphost home and not empty (it holds "
            "notes.txt, photos); give --home / MCPHOST_HOME an empty or new directory, or "
            "the path of an existing home\n"
        ), args
        assert sorted(p.name for p in elsewhere.iterdir()) == ["notes.txt", "photos"]


def test_homes_made_by_hand_or_by_any_command_are_found_by_reading_commands(
    tmp_path: Path, creating: list[tuple[str, ...]]
) -> None:
    by_hand = tmp_path / "by-hand"
    by_hand.mkdir()
    (by_hand / "config.toml").write_text('isolation = "rlimits"\n')
    empty = tmp_path / "empty"
    empty.mkdir()
    made = [by_hand, empty, Home(tmp_path / "by-host").ensure().root]
    for i, args in enumerate(creating):
        new = tmp_path / f"new-{i}" / "home"  # its parent is missing too
        result = invoke("--home", new, *args)
        # The example wheel is unsigned: a new home refuses it, after making the home.
        assert result.exit_code == 0 or "not signed" in result.stderr, (args, result.output)
        assert (new / "keys").is_dir() and new.stat().st_mode & 0o077 == 0
        made.append(new)
    for home in made:
        listed = invoke("--home", home, "audit")
        assert listed.exit_code == 0, (home, listed.output)
    # Before any home of this layout, keys trust and keys generate made only these:
    old = tmp_path / "old"
    (old / "keys").mkdir(parents=True)
    (old / "audit.jsonl").write_text("")
    assert invoke("--home", old, "keys", "list").exit_code == 0


def test_messages_that_find_nothing_installed_name_the_home_they_looked_in(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('isolation = "rlimits"\n')
    env: dict[str, str | None] = {"MCPHOST_PLUGIN_PATH": None}
    said = {
        ("plugin", "list"): f"no plugins installed in the home {home}: install one with",
        ("plugin", "verify"): f"no plugins installed in the home {home}: nothing to verify",
        ("keys", "list"): f"no trusted keys in {home / 'keys'}: add one with",
        ("tokens", "list"): f"no tokens in {home / 'tokens.json'}; make one with",
        ("tools",): f"no tools: no plugin is installed in the home {home}, in",
    }
    for args, start in said.items():
        result = invoke("--home", home, *args, env=env)
        assert result.exit_code == 0, (args, result.output)
        assert result.stdout.startswith(start), (args, result.stdout)
    called = invoke("--home", home, "call", "nosuch.tool", env=env)
    assert called.exit_code == 1
    assert called.stderr.rstrip().endswith(f"(home: {home})"), called.stderr
    info = invoke("--home", home, "plugin", "info", "nosuch")
    assert f"no plugin named 'nosuch' is in the registry of the home {home}" in info.stderr


def test_the_default_home_is_made_by_tools_but_never_by_a_listing(tmp_path: Path) -> None:
    env: dict[str, str | None] = {
        "MCPHOST_HOME": None,
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "MCPHOST_PLUGIN_PATH": None,
    }
    default = tmp_path / "xdg" / "mcphost"
    listed = invoke("plugin", "list", env=env)
    assert listed.exit_code == 1 and listed.stderr == NOT_FOUND.format(default)
    assert not default.exists()
    # The default home cannot be mistyped; a host makes it for the plugins' data.
    tools = invoke("tools", env=env)
    assert tools.exit_code == 0, tools.output
    assert (default / "data").is_dir()
    assert invoke("plugin", "list", env=env).exit_code == 0


@pytest.mark.parametrize(
    "case",
    ["under a file", "keys is a file", "proc", "symlink loop", "cannot be created"],
)
def test_an_unusable_home_is_one_line_and_exit_one_never_a_traceback(
    tmp_path: Path, case: str, creating: list[tuple[str, ...]]
) -> None:
    if case == "under a file":
        (tmp_path / "file").write_text("")
        home = tmp_path / "file" / "sub"
        said = f"cannot use {home} as the mcphost home: {tmp_path / 'file'} is a file, not a "
        reading = creating_said = said
    elif case == "keys is a file":
        home = tmp_path / "home"
        home.mkdir()
        (home / "config.toml").write_text("")
        (home / "keys").write_text("")
        said = f"the mcphost home {home} is damaged: {home / 'keys'} is not a directory "
        reading = creating_said = said
    elif case == "proc":
        home = Path("/proc")
        reading = "no mcphost home at /proc: that directory holds "
        creating_said = "/proc is not an mcphost home and not empty (it holds "
    elif case == "symlink loop":
        home = tmp_path / "loop"
        home.symlink_to(home)
        reading = creating_said = f"cannot use {home} as the mcphost home: "
    else:
        home = Path("/sys") / f"mcphost-test-{os.getpid()}"  # sysfs makes no directories
        reading = f"no mcphost home at {home} ("
        creating_said = f"cannot create {home} as the mcphost home: "
    for args, start in [(("plugin", "list"), reading), (("tools",), reading)] + [
        (args, creating_said) for args in creating
    ]:
        result = invoke("--home", home, *args)
        assert result.exit_code == 1, (args, result.output)
        line = result.stderr.removeprefix("error [home_not_found]: ")
        line = line.removeprefix("error [home_error]: ")
        assert line.startswith(start), (args, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stdout == "", (args, result.output)


def test_the_executable_reports_a_home_under_a_file_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("root:x:0:0\n")
    home = tmp_path / "passwd" / "sub"
    proc = run_mcphost("serve", home=home, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"error [home_error]: cannot use {home} as the mcphost home: {tmp_path / 'passwd'} is "
        f"a file, not a directory; {CHECK}\n"
    )
