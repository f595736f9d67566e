"""Supply-chain attacks on plugins, end to end, as an operator meets them.

Real wheels are built with ``pip wheel``, signed with ``mcphost plugin sign`` by keys
from ``mcphost keys generate``, trusted with ``mcphost keys trust`` and installed with
``mcphost plugin install --yes`` into a fresh home; they run through a real ``Host`` or
``mcphost call``, every worker inside the bubblewrap jail. Each test is one attack and
checks what the operator sees (exit code, a message that says what was wrong and what to
do) and that nothing is lost: the registry, the other plugins and the host keep working.

Two plugins take part: ``scgood``, the target, and ``scother``, a bystander signed by
another trusted publisher that must keep serving whatever happens to ``scgood``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bwrap_check import require_bwrap
from security_helpers import member
from support.cli import invoke, run_mcphost
from support.waiting import wait_until
from support.wheels import build_wheel

from mcphost.host import Home, Host, HostEvent
from mcphost.sdk.errors import VerificationError
from mcphost.security.wheel import record_hash, render_record

pytestmark = pytest.mark.bwrap

INIT = "mcphost_scgood/__init__.py"
DIST_INFO = "mcphost_scgood-1.0.0.dist-info"

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "mcphost-{name}"
version = "{version}"
requires-python = ">=3.11"
dependencies = []

[project.entry-points."mcphost.plugins"]
{name} = "mcphost_{name}:plugin"

[tool.setuptools]
packages = ["mcphost_{name}"]
"""

PLUGIN = '''\
"""{name} {version}: a plugin of the supply-chain tests."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from mcphost.sdk import Plugin

plugin = Plugin("{name}", description="supply-chain test plugin")


@plugin.tool
def ping() -> str:
    """Say which build answers."""
    return "{answer}"


def _attempt(action: Callable[[], object]) -> str:
    try:
        action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "done"


def _write(path: str, data: str) -> None:
    with open(path, "a") as f:
        f.write(data)


@plugin.tool
def tamper() -> dict[str, str]:
    """Try to change this plugin's own installed files from inside its worker."""
    here = os.path.dirname(os.path.abspath(__file__))
    top = os.path.dirname(here)
    cache = os.path.join(here, "__pycache__")
    return {{
        "append to its module": _attempt(lambda: _write(__file__, "\\nHACKED = 1\\n")),
        "make its module writable": _attempt(lambda: os.chmod(__file__, 0o666)),
        "drop a module beside it": _attempt(
            lambda: _write(os.path.join(here, "evil.py"), "HACKED = 1\\n")
        ),
        "drop a .pth at the top of its tree": _attempt(
            lambda: _write(os.path.join(top, "evil.pth"), "import os\\n")
        ),
        "write bytecode": _attempt(lambda: os.makedirs(cache)),
        "rename its module away": _attempt(lambda: os.rename(__file__, __file__ + ".bak")),
    }}
'''


# -- building, signing, running ----------------------------------------------------------


@dataclass
class Outcome:
    """What a command showed: its exit code and both output streams."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def in_process(home: Path, *args: str) -> Outcome:
    """``mcphost --home HOME ARGS...`` in this process (the same code as the executable)."""
    result = invoke(*args, home=home)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def run(home: Path, *args: str) -> Outcome:
    """``mcphost --home HOME ARGS...`` as the real executable in its own process."""
    proc = run_mcphost(*args, home=home, stdin=subprocess.DEVNULL)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def ok(outcome: Outcome) -> Outcome:
    assert outcome.code == 0, outcome.output
    return outcome


def build_plugin(root: Path, name: str, version: str, answer: str) -> Path:
    """A real wheel of a small plugin project, built by ``pip wheel``."""
    project = root / f"{name}-{version}-{hashlib.sha256(answer.encode()).hexdigest()[:6]}"
    (project / f"mcphost_{name}").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT.format(name=name, version=version))
    code = PLUGIN.format(name=name, version=version, answer=answer)
    (project / f"mcphost_{name}" / "__init__.py").write_text(code)
    return build_wheel(project, project / "dist")


@dataclass(frozen=True)
class Publisher:
    """A key pair made by ``mcphost keys generate``."""

    key_id: str
    private: Path
    public: Path


@dataclass(frozen=True)
class Kit:
    """Everything built once per module: keys, unsigned and signed wheels."""

    keys: dict[str, Publisher]
    unsigned: dict[str, Path]
    signed: dict[str, Path]


@pytest.fixture(scope="module", autouse=True)
def _bubblewrap() -> None:
    """These attacks are only meaningful inside the jail; in CI a missing bwrap fails."""
    require_bwrap()


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    """Three publishers' keys and the wheels they sign, made with the real commands.

    ``publisher`` owns scgood; ``other`` publishes scother and is trusted too;
    ``stranger`` is trusted by nobody.
    """
    root = tmp_path_factory.mktemp("supply-chain")
    desk = root / "publisher-home"  # signing writes to the audit log of some home
    keys = {}
    for name in ("publisher", "other", "stranger"):
        out = ok(in_process(desk, "keys", "generate", name, "--out", str(root / "keys")))
        keys[name] = Publisher(
            key_id=out.stdout.strip(),
            private=root / "keys" / f"{name}.key",
            public=root / "keys" / f"{name}.pub",
        )
    raw = root / "raw"
    unsigned = {
        "scgood-1.0": build_plugin(raw, "scgood", "1.0.0", "pong 1.0"),
        "scgood-1.1": build_plugin(raw, "scgood", "1.1.0", "pong 1.1"),
        "scgood-1.0-rebuilt": build_plugin(raw, "scgood", "1.0.0", "pong 1.0, rebuilt"),
        "scother-1.0": build_plugin(raw, "scother", "1.0.0", "hello from scother"),
    }
    plan = {
        # name: (unsigned wheel, key, sequence)
        "good-1.0": ("scgood-1.0", "publisher", 100),
        "good-1.1": ("scgood-1.1", "publisher", 200),
        "good-1.0-rebuilt": ("scgood-1.0-rebuilt", "publisher", 150),
        "good-1.0-far-future": ("scgood-1.0", "publisher", 2**62),
        "good-1.0-by-stranger": ("scgood-1.0", "stranger", 100),
        "good-1.1-by-other": ("scgood-1.1", "other", 300),
        "other-1.0": ("scother-1.0", "other", 100),
    }
    signed = {}
    for name, (wheel, key, sequence) in plan.items():
        out = ok(
            in_process(
                desk,
                "plugin",
                "sign",
                str(unsigned[wheel]),
                "--key",
                str(keys[key].private),
                "--sequence",
                str(sequence),
                "--out",
                str(root / "signed" / name),
            )
        )
        signed[name] = Path(out.stdout.strip())
    return Kit(keys=keys, unsigned=unsigned, signed=signed)


class Operator:
    """One fresh mcphost home and the commands an operator runs against it."""

    def __init__(self, root: Path, kit: Kit) -> None:
        self.home = root
        self.kit = kit
        root.mkdir()
        (root / "config.toml").write_text('isolation = "bwrap"\n')
        for name in ("publisher", "other"):
            ok(self.cli("keys", "trust", str(kit.keys[name].public), "--name", name))

    def cli(self, *args: str) -> Outcome:
        return in_process(self.home, *args)

    def run(self, *args: str) -> Outcome:
        return run(self.home, *args)

    def install(self, wheel: str | Path, *args: str) -> Outcome:
        path = self.kit.signed[wheel] if isinstance(wheel, str) else wheel
        return self.cli("plugin", "install", "--yes", str(path), *args)

    def plugins(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = json.loads(ok(self.cli("plugin", "list", "--json")).stdout)
        return listed

    def audit(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = json.loads(ok(self.cli("audit", "--json")).stdout)
        return entries

    def state(self) -> tuple[list[dict[str, Any]], list[str], list[str]]:
        """What must not change when an install is refused: plugins, versions, wheels."""
        versions = sorted(
            str(p.relative_to(self.home))
            for p in (self.home / "versions").glob("*/*")
            if not p.name.startswith(".")
        )
        wheels = sorted(p.name for p in (self.home / "store").glob("*.whl"))
        return self.plugins(), versions, wheels

    def plugin_dir(self, plugin: str = "scgood", version: str = "1.0.0") -> Path:
        (path,) = (self.home / "versions" / plugin).glob(f"{version}-*/plugin")
        return path

    def call(self, tool: str) -> Outcome:
        """``mcphost call TOOL`` as the real executable (a fresh host each time)."""
        return self.run("call", tool)


@pytest.fixture
def op(tmp_path: Path, kit: Kit) -> Operator:
    """A fresh home that trusts ``publisher`` and ``other``, nothing installed yet."""
    return Operator(tmp_path / "home", kit)


@pytest.fixture
def both(op: Operator) -> Operator:
    """``op`` with scgood 1.0 (by publisher) and scother 1.0 (by other) installed."""
    ok(op.install("good-1.0"))
    ok(op.install("other-1.0"))
    return op


def answer(outcome: Outcome) -> Any:
    return json.loads(ok(outcome).stdout)


def refusals(op: Operator, action: str) -> list[dict[str, Any]]:
    return [e for e in op.audit() if e["action"] == action and e["outcome"] == "refused"]


def crash_watch(host: Host, plugin: str) -> asyncio.Future[str]:
    """A future set to the reason of the next crash of ``plugin``'s worker."""
    seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on(event: HostEvent) -> None:
        if event.kind == "plugin_crashed" and event.plugin == plugin and not seen.done():
            seen.set_result(event.message)

    remove = host.add_listener(on)
    seen.add_done_callback(lambda _: remove())
    return seen


async def stopped_on_purpose(host: Host, plugin: str, bound: float) -> str:
    """Wait, at most ``bound`` seconds, until ``plugin``'s worker was stopped by the host;
    return why."""

    def stats() -> dict[str, Any]:
        (st,) = [s for s in host.stats() if s["plugin"] == plugin]
        return st

    def stopped() -> bool:
        st = stats()
        return st["state"] == "stopped" and st["pid"] is None and bool(st["failure"])

    await wait_until(stopped, bound, f"{plugin}'s worker stopped by the host", interval=0.05)
    return str(stats()["failure"])


async def kill_worker(host: Host, plugin: str) -> None:
    """End a plugin's running worker the hard way, as a crash would, and wait until the
    host has noticed."""
    (pid,) = [s["pid"] for s in host.stats() if s["plugin"] == plugin]
    assert pid is not None, f"{plugin} has no running worker"
    crashed = crash_watch(host, plugin)
    os.killpg(pid, signal.SIGKILL)
    await asyncio.wait_for(crashed, 10)


def as_root_writable(path: Path) -> None:
    """The registry leaves installed files and directories read-only; root may change that."""
    path.chmod(0o755 if path.is_dir() else 0o644)


def rewrite(src: Path, dst: Path, replace: dict[str, bytes]) -> Path:
    """Copy a wheel with some members replaced, the signature left as it was and RECORD
    rewritten to match, as an attacker who wants plain pip to take the wheel would do."""
    with zipfile.ZipFile(src) as zin:
        members = {info.filename: zin.read(info) for info in zin.infolist()}
    members.update(replace)
    record = next(n for n in members if n.endswith(".dist-info/RECORD"))
    unhashed = (record, record.replace("/RECORD", "/mcphost.sig"))
    members[record] = render_record(
        [
            (n, "", "") if n in unhashed else (n, record_hash(data), str(len(data)))
            for n, data in members.items()
        ]
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = 0o100644 << 16
            zout.writestr(info, data)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(buf.getvalue())
    return dst


# -- (1) a plugin's installed files change after install ----------------------------------

Tamper = Callable[[Path], str]


def _append_code(tree: Path) -> str:
    target = tree / INIT
    as_root_writable(target)
    with target.open("a") as f:
        f.write("\nimport os  # added after install\n")
    return INIT


def _drop(rel: str, data: bytes) -> Tamper:
    def tamper(tree: Path) -> str:
        target = tree / rel
        for parent in reversed(target.relative_to(tree).parents):
            if (tree / parent).is_dir():
                as_root_writable(tree / parent)
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(data)
        return rel

    return tamper


CHANGES: dict[str, Tamper] = {
    "code appended to its module": _append_code,
    "a module dropped beside it": _drop("mcphost_scgood/helper.py", b"import os\n"),
    "a .pth dropped at the top of its tree": _drop("zz_hook.pth", b"import os\n"),
    "bytecode dropped in __pycache__": _drop(
        "mcphost_scgood/__pycache__/__init__.cpython-311.pyc", b"\x00" * 32
    ),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_plugin_security_changed_installed_files_are_refused_at_the_next_start(
    both: Operator, change: str, no_leftover_workers: None
) -> None:
    op = both

    async def scenario() -> tuple[str, VerificationError, str, str]:
        async with Host(Home(op.home), environment=False) as host:
            before = await host.call("scgood.ping")
            assert await host.call("scother.ping") == "hello from scother"
            changed = CHANGES[change](op.plugin_dir())
            await kill_worker(host, "scgood")
            with pytest.raises(VerificationError) as refused:
                await host.call("scgood.ping")
            # The other plugin is served by the same host, and the refusal holds.
            other = await host.call("scother.ping")
            with pytest.raises(VerificationError):
                await host.call("scgood.ping")
            return before, refused.value, other, changed

    before, refused, other, changed = asyncio.run(scenario())
    assert before == "pong 1.0" and other == "hello from scother"
    assert changed in refused.message
    assert refused.data["plugin"] == "scgood"

    # Every later start, in any host, refuses it with the same clear error.
    called = op.call("scgood.ping")
    assert called.code == 1
    assert "error [verification_failed]" in called.stderr and changed in called.stderr
    assert "mcphost plugin install" in called.stderr, "the message says how to recover"
    assert answer(op.call("scother.ping")) == "hello from scother"
    verified = op.cli("plugin", "verify", "scgood")
    assert verified.code == 1 and "FAIL" in verified.stdout and changed in verified.stdout
    refused_starts = refusals(op, "plugin.start")
    assert refused_starts and all(e["plugin"] == "scgood" for e in refused_starts)
    assert changed in refused_starts[-1]["detail"]

    # Following the advice restores the signed files; nothing else had to change.
    repaired = ok(op.install("good-1.0"))
    assert "repaired" in repaired.stdout and changed in repaired.stdout
    assert answer(op.call("scgood.ping")) == "pong 1.0"
    ok(op.cli("plugin", "verify", "scgood"))


def test_plugin_security_a_plugin_cannot_change_its_own_files_and_tampering_on_disk_is_refused(
    both: Operator, no_leftover_workers: None
) -> None:
    op = both
    tree = op.plugin_dir()
    before = {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()}

    async def scenario() -> tuple[dict[str, str], VerificationError, str]:
        async with Host(Home(op.home), environment=False) as host:
            attempts: dict[str, str] = await host.call("scgood.tamper")
            # Its own attempts changed nothing: it still verifies and serves.
            assert await host.call("scgood.ping") == "pong 1.0"
            # Root changes the file on disk while the worker runs; the next start refuses.
            _append_code(tree)
            await kill_worker(host, "scgood")
            with pytest.raises(VerificationError) as refused:
                await host.call("scgood.tamper")
            return attempts, refused.value, await host.call("scother.ping")

    attempts, refused, other = asyncio.run(scenario())
    assert attempts and all(
        result in {"EROFS", "EACCES", "EPERM"} for result in attempts.values()
    ), attempts
    assert INIT in refused.message and other == "hello from scother"
    assert {p for p in tree.rglob("*") if p.is_file()} == set(before), "no file was added"


# -- (2) a wheel signed by a key nobody trusts -------------------------------------------


def test_plugin_security_a_wheel_signed_by_an_untrusted_key_is_refused_at_install(
    op: Operator,
) -> None:
    ok(op.install("other-1.0"))
    stranger = op.kit.keys["stranger"]
    before = op.state()

    refused = op.install("good-1.0-by-stranger")
    assert refused.code == 1
    assert stranger.key_id in refused.stderr and "not trusted" in refused.stderr
    assert "mcphost keys trust" in refused.stderr, "the message says how to trust the key"
    assert "mcphost_scgood-1.0.0-py3-none-any.whl" in refused.stderr, "it names the wheel"
    assert op.state() == before, "nothing was installed or stored"
    (entry,) = refusals(op, "plugin.install")
    assert entry["key_id"] == stranger.key_id and "not trusted" in entry["detail"]
    called = op.call("scgood.ping")
    assert called.code == 1 and "no plugin named 'scgood'" in called.stderr
    assert answer(op.call("scother.ping")) == "hello from scother"

    # The advice works: once the operator trusts the key, the same wheel installs.
    ok(op.cli("keys", "trust", str(stranger.public), "--name", "stranger"))
    ok(op.install("good-1.0-by-stranger"))
    assert answer(op.call("scgood.ping")) == "pong 1.0"


# -- (3) a revoked key ----------------------------------------------------------------------


def test_plugin_security_a_revoked_key_is_refused_at_install_and_stops_its_installed_plugins(
    both: Operator, no_leftover_workers: None
) -> None:
    op = both
    publisher = op.kit.keys["publisher"]

    async def scenario() -> tuple[Outcome, str, VerificationError, str, Outcome]:
        async with Host(Home(op.home), environment=False) as host:
            assert await host.call("scgood.ping") == "pong 1.0"
            assert await host.call("scother.ping") == "hello from scother"
            (before,) = [s for s in host.stats() if s["plugin"] == "scgood"]
            seen: list[HostEvent] = []
            host.add_listener(lambda e: seen.append(e) if e.plugin == "scgood" else None)
            revoked = await asyncio.to_thread(
                op.run, "keys", "revoke", publisher.key_id, "--reason", "key leaked"
            )
            # The running host stops the plugin's worker within a poll interval, on
            # purpose: not counted as a crash, nothing restarts it ...
            why = await stopped_on_purpose(host, "scgood", 10)
            # ... and its next start is refused; the other plugin keeps serving.
            with pytest.raises(VerificationError) as refused:
                await host.call("scgood.ping")
            other = await host.call("scother.ping")
            upgrade = await asyncio.to_thread(op.install, "good-1.1")
            # Checked at the end, after a refused call and another registry change:
            # nothing of the plugin crashed, restarted or started since the revocation.
            (after,) = [s for s in host.stats() if s["plugin"] == "scgood"]
            assert [e.kind for e in seen if e.kind != "log"] == []
            assert after["state"] == "refused" and after["pid"] is None
            assert after["restarts"] == before["restarts"]
            return revoked, why, refused.value, other, upgrade

    revoked, why, refused, other, upgrade = asyncio.run(scenario())
    assert revoked.code == 0 and publisher.key_id in revoked.stdout
    assert "running hosts stop them" in revoked.stderr
    assert publisher.key_id in why and "revoked" in why
    assert other == "hello from scother"
    assert publisher.key_id in refused.message and "revoked" in refused.message
    assert "scgood" in refused.message, "the error names the plugin"
    # Installing anything else it signed is refused too, and changes nothing.
    assert upgrade.code == 1
    assert publisher.key_id in upgrade.stderr and "revoked (key leaked)" in upgrade.stderr
    assert [p["active"] for p in op.plugins()] == ["1.0.0", "1.0.0"]

    # A fresh host (mcphost call) refuses it as well, and serves the other plugin.
    called = op.call("scgood.ping")
    assert called.code == 1 and "revoked" in called.stderr and publisher.key_id in called.stderr
    assert answer(op.call("scother.ping")) == "hello from scother"
    # A revoked key cannot be trusted back in.
    again = op.cli("keys", "trust", str(publisher.public))
    assert again.code == 2 and "cannot be trusted again" in again.stderr
    actions = [(e["action"], e["outcome"]) for e in op.audit()]
    assert ("key.revoke", "ok") in actions
    assert ("plugin.start", "refused") in actions and ("plugin.install", "refused") in actions


# -- (4) a valid signature over files that were swapped -------------------------------------


def _swap_module(kit: Kit, out: Path) -> Path:
    """The module's bytes replaced inside the signed wheel (same size), manifest and
    signature kept."""
    wheel = kit.signed["good-1.0"]
    evil = member(wheel, INIT).replace(b'return "pong 1.0"', b'return "pwnd 1.0"')
    return rewrite(wheel, out, {INIT: evil})


def _signature_from(donor: str, *, dist_info: str = DIST_INFO) -> Callable[[Kit, Path], Path]:
    """The manifest and signature of another signed wheel moved into scgood 1.0."""

    def make(kit: Kit, out: Path) -> Path:
        source = kit.signed[donor]
        with zipfile.ZipFile(source) as zf:
            donor_info = next(n.split("/")[0] for n in zf.namelist() if ".dist-info/" in n)
        moved = {
            f"{dist_info}/{name}": member(source, f"{donor_info}/{name}")
            for name in ("mcphost.manifest", "mcphost.sig")
        }
        return rewrite(kit.signed["good-1.0"], out, moved)

    return make


SWAPS: dict[str, tuple[Callable[[Kit, Path], Path], list[str]]] = {
    # attack: (how the wheel is made, what the refusal names)
    "module bytes swapped": (
        _swap_module,
        [INIT, "sha256 differs", "altered after it was signed; get it again from its publisher"],
    ),
    "signature of another version": (_signature_from("good-1.1"), ["version '1.1.0'"]),
    "signature of another build of the same version": (
        _signature_from("good-1.0-rebuilt"),
        [INIT],
    ),
    "signature of another plugin": (_signature_from("other-1.0"), ["mcphost_scother"]),
}


@pytest.mark.parametrize("attack", list(SWAPS))
def test_plugin_security_a_valid_signature_over_swapped_files_is_refused_at_install(
    op: Operator, attack: str, tmp_path: Path
) -> None:
    ok(op.install("other-1.0"))
    make, named = SWAPS[attack]
    wheel = make(op.kit, tmp_path / "attack" / "mcphost_scgood-1.0.0-py3-none-any.whl")
    before = op.state()

    refused = op.install(wheel)
    assert refused.code == 1, refused.output
    assert "error [verification_failed]" in refused.stderr
    for words in named:
        assert words in refused.stderr, refused.stderr
    assert op.state() == before
    assert refusals(op, "plugin.install")
    verified = op.cli("plugin", "verify", str(wheel))
    assert verified.code == 1 and "FAIL" in verified.stdout
    assert answer(op.call("scother.ping")) == "hello from scother"


# -- (5) an unsigned wheel ---------------------------------------------------------------


def test_plugin_security_an_unsigned_wheel_runs_only_when_allowed_and_then_with_a_warning(
    op: Operator,
) -> None:
    ok(op.install("other-1.0"))
    wheel = op.kit.unsigned["scgood-1.0"]
    before = op.state()

    refused = op.install(wheel)
    assert refused.code == 1 and "is not signed" in refused.stderr
    assert "mcphost plugin sign" in refused.stderr and "allow_unsigned" in refused.stderr
    assert wheel.name in refused.stderr
    assert op.state() == before

    (op.home / "config.toml").write_text('isolation = "bwrap"\nallow_unsigned = true\n')
    installed = ok(op.install(wheel))
    assert "warning:" in installed.stderr and "not signed" in installed.stderr
    assert "UNSIGNED" in installed.stdout
    for _ in range(2):  # a warning with every start, not only the first
        called = op.call("scgood.ping")
        assert answer(called) == "pong 1.0"
        assert "scgood 1.0.0 is not signed" in called.stderr and "allow_unsigned" in called.stderr
    assert answer(op.call("scother.ping")) == "hello from scother"

    # Switched off again, the unsigned plugin installed meanwhile stops running.
    (op.home / "config.toml").write_text('isolation = "bwrap"\n')
    called = op.call("scgood.ping")
    assert called.code == 1 and "not signed" in called.stderr
    assert "allow_unsigned = true" in called.stderr
    assert answer(op.call("scother.ping")) == "hello from scother"


# -- (6) the same version with other content; a name owned by another key ------------------


def test_plugin_security_the_same_version_with_different_content_is_refused(
    both: Operator,
) -> None:
    op = both
    before = op.state()
    refused = op.install("good-1.0-rebuilt")
    assert refused.code == 1
    assert "scgood 1.0.0 is installed already from a different wheel" in refused.stderr
    assert "publish it under a new version" in refused.stderr
    assert op.state() == before
    assert answer(op.call("scgood.ping")) == "pong 1.0"
    assert refusals(op, "plugin.install")[-1]["plugin"] == "scgood"


def test_plugin_security_a_name_owned_by_another_key_needs_the_explicit_override(
    both: Operator,
) -> None:
    op = both
    publisher, other = op.kit.keys["publisher"], op.kit.keys["other"]
    before = op.state()
    refused = op.install("good-1.1-by-other")
    assert refused.code == 1
    assert f"plugin name scgood belongs to key {publisher.key_id}" in refused.stderr
    assert other.key_id in refused.stderr and "--allow-key-change" in refused.stderr
    assert op.state() == before
    assert answer(op.call("scgood.ping")) == "pong 1.0"
    assert refusals(op, "plugin.install")[-1]["key_id"] == other.key_id

    ok(op.install("good-1.1-by-other", "--allow-key-change"))
    scgood = next(p for p in op.plugins() if p["name"] == "scgood")
    assert scgood["owner_key"] == other.key_id and scgood["active"] == "1.1.0"
    assert answer(op.call("scgood.ping")) == "pong 1.1"


# -- (7) rollback ------------------------------------------------------------------------


def test_plugin_security_a_manifest_older_than_the_installed_one_is_refused(
    op: Operator,
) -> None:
    ok(op.install("good-1.1"))  # sequence 200
    before = op.state()
    refused = op.install("good-1.0")  # sequence 100: an older, validly signed release
    assert refused.code == 1
    assert "sequence 100" in refused.stderr and "sequence 200" in refused.stderr
    assert "rollback attack" in refused.stderr and "mcphost plugin rollback" in refused.stderr
    assert op.state() == before
    assert answer(op.call("scgood.ping")) == "pong 1.1"
    assert "rollback" in refusals(op, "plugin.install")[-1]["detail"]


def test_plugin_security_an_explicit_rollback_to_an_installed_version_stays_allowed(
    op: Operator,
) -> None:
    ok(op.install("good-1.0"))
    ok(op.install("good-1.1"))
    assert answer(op.call("scgood.ping")) == "pong 1.1"
    rolled = ok(op.cli("plugin", "rollback", "scgood", "--json"))
    assert json.loads(rolled.stdout)["to"] == "1.0.0"
    assert answer(op.call("scgood.ping")) == "pong 1.0"
    # Removing the newer version does not reopen the door to older manifests.
    ok(op.cli("plugin", "remove", "scgood", "1.1.0"))
    ok(op.cli("plugin", "remove", "scgood", "1.0.0", "--force"))
    refused = op.install("good-1.0")
    assert refused.code == 1 and "rollback attack" in refused.stderr


def test_plugin_security_a_far_future_sequence_blocks_updates_only_until_its_key_is_revoked(
    op: Operator,
) -> None:
    publisher, other = op.kit.keys["publisher"], op.kit.keys["other"]
    ok(op.install("good-1.0-far-future"))  # fast-forward: sequence 2**62 by a stolen key
    frozen = op.install("good-1.1")
    assert frozen.code == 1 and "rollback attack" in frozen.stderr
    # The operator revokes the stolen key; the publisher signs with a new one.
    ok(op.cli("keys", "revoke", publisher.key_id, "--reason", "stolen"))
    called = op.call("scgood.ping")
    assert called.code == 1 and "revoked (stolen)" in called.stderr
    refused = op.install("good-1.1-by-other")
    assert refused.code == 1 and "--allow-key-change" in refused.stderr
    ok(op.install("good-1.1-by-other", "--allow-key-change"))
    assert answer(op.call("scgood.ping")) == "pong 1.1"
    scgood = next(p for p in op.plugins() if p["name"] == "scgood")
    assert scgood["owner_key"] == other.key_id


# -- (8) links and special files ------------------------------------------------------------


def _symlink_out(tree: Path, tmp: Path) -> str:
    """A new file in the tree that is a symlink to a host file."""
    as_root_writable(tree / "mcphost_scgood")
    (tree / "mcphost_scgood" / "notes.txt").symlink_to("/etc/hostname")
    return "mcphost_scgood/notes.txt"


def _module_as_symlink(tree: Path, tmp: Path) -> str:
    """The module replaced by a symlink to an identical copy elsewhere (same bytes!)."""
    copy = tmp / "outside" / "__init__.py"
    copy.parent.mkdir()
    copy.write_bytes((tree / INIT).read_bytes())
    as_root_writable(tree / "mcphost_scgood")
    (tree / INIT).unlink()
    (tree / INIT).symlink_to(copy)
    return INIT


def _hard_link(tree: Path, tmp: Path) -> str:
    """A hard link to the module from outside the tree: whoever holds it can change it."""
    os.link(tree / INIT, tmp / "alias.py")
    return INIT


def _fifo(tree: Path, tmp: Path) -> str:
    as_root_writable(tree / "mcphost_scgood")
    os.mkfifo(tree / "mcphost_scgood" / "pipe")
    return "mcphost_scgood/pipe"


def _device(tree: Path, tmp: Path) -> str:
    as_root_writable(tree / "mcphost_scgood")
    os.mknod(tree / "mcphost_scgood" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return "mcphost_scgood/null"


LINKS: dict[str, tuple[Callable[[Path, Path], str], str]] = {
    "symlink to a host file": (_symlink_out, "symlink"),
    "module replaced by a symlink": (_module_as_symlink, "symlink"),
    "hard link from outside": (_hard_link, "hard links"),
    "fifo": (_fifo, "not a regular file"),
    "device node": (_device, "not a regular file"),
}


@pytest.mark.parametrize("kind", list(LINKS))
def test_plugin_security_links_and_special_files_in_an_installed_tree_are_refused(
    both: Operator, kind: str, tmp_path: Path
) -> None:
    op = both
    make, why = LINKS[kind]
    name = make(op.plugin_dir(), tmp_path)
    called = op.call("scgood.ping")
    assert called.code == 1, called.output
    assert name in called.stderr and why in called.stderr
    assert answer(op.call("scother.ping")) == "hello from scother"
    assert refusals(op, "plugin.start")[-1]["plugin"] == "scgood"


def test_plugin_security_a_symlink_inside_a_wheel_is_refused_at_install(
    op: Operator, tmp_path: Path
) -> None:
    ok(op.install("other-1.0"))
    wheel = op.kit.signed["good-1.0"]
    evil = tmp_path / "evil" / wheel.name
    evil.parent.mkdir()
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(evil, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        link = zipfile.ZipInfo("mcphost_scgood/secret.txt")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zout.writestr(link, "/etc/shadow")
    before = op.state()
    refused = op.install(evil)
    assert refused.code == 1
    assert "mcphost_scgood/secret.txt" in refused.stderr and "symlink" in refused.stderr
    assert op.state() == before
    assert answer(op.call("scother.ping")) == "hello from scother"
