"""Settings of ``config.toml`` seen through the real product: each test writes the file
into a fresh home, installs or serves probekit (a real wheel) and watches a real Host
or the ``mcphost`` CLI do what the setting says."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from probe_plugin import build_probekit, trusting_home
from support.cli import invoke, run_mcphost_ok_async
from support.events import HostEvents
from support.wheels import pip, signed

from mcphost.host import Home, Host, HostEvent, load_config
from mcphost.sdk.errors import MCPHostError, PluginError, ToolError
from mcphost.security import Permissions, PrivateKey, generate_key


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Unsigned probekit wheels: 1.0.0, 1.1.0 and 1.2.0 (each answers ``version``)."""
    root = tmp_path_factory.mktemp("probekit")
    return {v: build_probekit(root, v) for v in ("1.0.0", "1.1.0", "1.2.0")}


@pytest.fixture(scope="module")
def probekit_dir(unsigned: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """probekit 1.0.0 installed with ``pip install --target`` (a plugin directory)."""
    # pip creates it world-readable (mktemp's own directories are private to root, and
    # a root host's workers run as another uid).
    target = tmp_path_factory.mktemp("probekit-dir") / "probekit"
    pip("install", "--no-deps", "--no-compile", "--target", str(target), str(unsigned["1.0.0"]))
    return target


def serve_dir(home: Path, plugin_dir: Path, config: str) -> Host:
    """A Host serving ``plugin_dir`` with ``config`` as the home's config.toml."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("allow_unsigned = true\n" + config)
    return Host(home, plugin_dirs=[plugin_dir], environment=False, registry=False)


# -- worker_threads and backoff_max ------------------------------------------------------


@pytest.mark.parametrize(("threads", "met"), [(3, True), (2, False)])
def test_worker_threads_is_how_many_sync_calls_one_worker_runs_at_once(
    tmp_path: Path, probekit_dir: Path, threads: int, met: bool
) -> None:
    """Three calls that each wait (up to a bound) until three of them run at once: they
    meet with three threads; with two the third call waits for a thread, so none meets."""

    async def scenario() -> list[Any]:
        async with serve_dir(tmp_path / "home", probekit_dir, f"worker_threads = {threads}\n") as h:
            calls = [h.call("probekit.meet", {"parties": 3, "bound": 5.0}) for _ in range(3)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(scenario())
    if met:
        assert results == ["met"] * 3
    else:
        assert all(isinstance(r, ToolError) and r.code == "alone" for r in results), results


def test_backoff_max_caps_the_wait_before_a_crashed_worker_restarts(
    tmp_path: Path, probekit_dir: Path
) -> None:
    """backoff_initial alone would hold the restart back for a minute; backoff_max caps it,
    so the call after a crash is answered by a new worker within the test's bound."""
    config = "backoff_initial = 60.0\nbackoff_max = 0.2\n"

    async def scenario() -> tuple[str, dict[str, Any]]:
        async with serve_dir(tmp_path / "home", probekit_dir, config) as host:
            with pytest.raises(PluginError) as info:
                await host.call("probekit.crash", {})
            assert info.value.code == "worker_crashed"
            answer = await asyncio.wait_for(host.call("probekit.version", {}), 20.0)
            return answer, host.stats()[0]

    answer, stats = asyncio.run(scenario())
    assert answer == "1.0.0"
    assert (stats["state"], stats["restarts"]) == ("running", 1)


# -- [policy] ------------------------------------------------------------------------

POLICY_CASES = [
    pytest.param(
        'network_allow = ["*.example.org:443"]',
        Permissions(network=["api.example.org:443"]),
        Permissions(network=["api.acme.com:443"]),
        "asks for network access to api.acme.com:443, which policy.network_allow does not include",
        id="network_allow",
    ),
    pytest.param(
        "filesystem = false",
        Permissions(),
        Permissions(read_paths=["/usr/share"]),
        "asks for filesystem paths /usr/share, which the configuration denies "
        "(policy.filesystem = false)",
        id="filesystem",
    ),
    pytest.param(
        'filesystem_allow = ["/srv/shared"]',
        Permissions(read_paths=["/srv/shared/dict"], write_paths=["/srv/shared/cache"]),
        Permissions(read_paths=["/srv/shared/dict", "/srv/sharedness"]),
        "asks for paths /srv/sharedness outside policy.filesystem_allow",
        id="filesystem_allow",
    ),
    pytest.param(
        'env_allow = ["LANG"]',
        Permissions(env=["LANG"]),
        Permissions(env=["LANG", "ACME_TOKEN"]),
        "asks for environment variables ACME_TOKEN, which policy.env_allow does not include",
        id="env_allow",
    ),
]


@pytest.mark.parametrize(("policy", "allowed", "denied", "message"), POLICY_CASES)
def test_policy_refuses_at_install_a_plugin_asking_for_more_than_it_allows(
    tmp_path: Path,
    key: PrivateKey,
    unsigned: dict[str, Path],
    policy: str,
    allowed: Permissions,
    denied: Permissions,
    message: str,
) -> None:
    home = trusting_home(tmp_path / "home", key, f"[policy]\n{policy}\n")
    refused = invoke("plugin", "install", "--yes", str(signed_as(unsigned, key, denied)), home=home)
    assert refused.exit_code == 1, refused.output
    assert "error [policy_denied]: plugin probekit 1.0.0 " + message in refused.output
    assert "no plugins installed" in invoke("plugin", "list", home=home).output
    # What the policy allows installs (and starts once, to learn its tools).
    ok = invoke("plugin", "install", "--yes", str(signed_as(unsigned, key, allowed)), home=home)
    assert ok.exit_code == 0, ok.output
    assert "active: probekit 1.0.0" in ok.output


def digest(perms: Permissions) -> str:
    return hashlib.sha256(msgspec.json.encode(perms)).hexdigest()[:12]


def signed_as(unsigned: dict[str, Path], key: PrivateKey, perms: Permissions) -> Path:
    """probekit 1.0.0 signed with ``perms``, in a directory of its own."""
    out = unsigned["1.0.0"].parent.parent / f"signed-{digest(perms)}"
    return signed(unsigned["1.0.0"], key, perms, out)


def test_policy_tightened_after_install_refuses_the_plugin_at_its_next_start(
    tmp_path: Path, key: PrivateKey, unsigned: dict[str, Path]
) -> None:
    home = trusting_home(tmp_path / "home", key)
    wheel = signed_as(unsigned, key, Permissions(read_paths=["/usr/share"]))
    assert invoke("plugin", "install", "--yes", str(wheel), home=home).exit_code == 0
    home.config_file.write_text("[policy]\nfilesystem = false\n")

    async def scenario() -> MCPHostError:
        async with Host(home, environment=False) as host:
            with pytest.raises(MCPHostError) as info:
                await host.call("probekit.version", {})
            return info.value

    error = asyncio.run(scenario())
    assert error.code == "policy_denied"
    assert "policy.filesystem = false" in error.message


# -- following the registry ----------------------------------------------------------


def install_versions(
    home: Home,
    key: PrivateKey,
    wheels: dict[str, Path],
    perms: dict[str, Permissions] | None = None,
) -> None:
    """Install 1.0.0 (active) and the other versions (inactive), signed with rising
    sequences; ``perms`` maps a version to the permissions it asks for (default none)."""
    for seq, (version, wheel) in enumerate(sorted(wheels.items()), start=1):
        p = (perms or {}).get(version, Permissions())
        out = wheel.parent.parent / f"signed-{version}-{digest(p)}"
        args = ["plugin", "install", "--yes", str(signed(wheel, key, p, out, sequence=seq))]
        if version != "1.0.0":
            args.append("--no-activate")
        res = invoke(*args, home=home)
        assert res.exit_code == 0, res.output


def test_hot_swap_off_keeps_a_running_host_on_its_version_across_registry_swaps(
    tmp_path: Path, key: PrivateKey, unsigned: dict[str, Path]
) -> None:
    """Two hosts on one home: one follows the registry; the other, with
    features.hot_swap = false, serves what it started with through two swaps."""
    home = trusting_home(tmp_path / "home", key, "[features]\nhot_swap = false\n")
    install_versions(home, key, unsigned)

    async def scenario() -> tuple[list[str], list[HostEvent]]:
        config = load_config(home.config_file)
        assert config.features.hot_swap is False
        features = config.features.model_copy(update={"hot_swap": True})
        on_config = config.model_copy(update={"features": features})
        async with (
            Host(home, environment=False) as still,
            Host(home, environment=False, config=on_config) as follows,
        ):
            still_swaps = HostEvents(still, "plugin_swapped")
            follows_swaps = HostEvents(follows, "plugin_swapped")
            answers = [await still.call("probekit.version", {})]
            await run_mcphost_ok_async("plugin", "swap", "probekit", "1.1.0", home=home)
            await follows_swaps.wait_count(1)
            assert await follows.call("probekit.version", {}) == "1.1.0"
            answers.append(await still.call("probekit.version", {}))
            await run_mcphost_ok_async("plugin", "swap", "probekit", "1.2.0", home=home)
            await follows_swaps.wait_count(2)
            answers.append(await still.call("probekit.version", {}))
            return answers, still_swaps.seen

    answers, swapped = asyncio.run(scenario())
    assert answers == ["1.0.0"] * 3
    assert swapped == []


class LogWatch(logging.Handler):
    """Records of one logger whose message contains ``text``, with a way to wait."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.INFO)
        self.text = text
        self.records: list[logging.LogRecord] = []
        self.arrived = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.records.append(record)
            self.arrived.set()


@pytest.fixture
def registry_log() -> Iterator[logging.Logger]:
    logger = logging.getLogger("mcphost.registry")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(level)


def test_a_swap_the_running_host_cannot_start_leaves_it_serving_the_old_version(
    tmp_path: Path, key: PrivateKey, unsigned: dict[str, Path], registry_log: logging.Logger
) -> None:
    """1.1.0 asks for network, which this host's policy denies (the policy was tightened
    after the install): the host keeps serving 1.0.0, says why (and retries with backoff),
    and follows the next swap it can start."""
    home = trusting_home(tmp_path / "home", key)
    install_versions(home, key, unsigned, {"1.1.0": Permissions(network=["*"])})
    home.config_file.write_text("[policy]\nnetwork = false\n")

    async def scenario() -> tuple[list[str], list[logging.LogRecord]]:
        refused = LogWatch("switch probekit to 1.1.0")
        registry_log.addHandler(refused)
        try:
            async with Host(home, environment=False) as host:
                swaps = HostEvents(host, "plugin_swapped")
                answers = [await host.call("probekit.version", {})]
                await run_mcphost_ok_async("plugin", "swap", "probekit", "1.1.0", home=home)
                await asyncio.wait_for(refused.arrived.wait(), 30.0)
                answers.append(await host.call("probekit.version", {}))
                # The next swap, to a version this host can start, is followed.
                await run_mcphost_ok_async("plugin", "swap", "probekit", "1.2.0", home=home)
                await swaps.wait_count(1)
                answers.append(await host.call("probekit.version", {}))
                return answers, refused.records
        finally:
            registry_log.removeHandler(refused)

    answers, records = asyncio.run(scenario())
    assert answers == ["1.0.0", "1.0.0", "1.2.0"]
    assert records, "the refused switch was never logged"
    message = records[0].getMessage()
    assert "could not apply a registry change" in message
    assert "keeps serving what it served" in message
    assert "policy.network = false" in message
