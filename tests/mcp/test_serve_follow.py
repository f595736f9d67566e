"""A follower home on another machine (here: another home on this one) keeps in step with
a primary's registry and configuration: `serve --http --publish-registry` on the
primary, `serve --http --follow URL` on the follower (docs/cluster.md).

Real processes, real signed wheels, real SQLite homes; the follower checks every wheel
against its own trust store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from http_helpers import ServedProcess, http_client, serve_http_process
from support.cli import mcphost_command, run_mcphost, run_mcphost_ok_async
from support.waiting import wait_until
from support.wheels import build_wheel

from mcphost.host import Home
from mcphost.host.examples import copy_example
from mcphost.security import Permissions, PrivateKey, TrustStore, generate_key, sign_wheel
from mcphost.security.tokens import create_token

TEXTKIT = Path(__file__).resolve().parents[2] / "example_plugins" / "textkit"
#: How often the follower polls in these tests (seconds).
INTERVAL = "0.1"
#: The bound on a change reaching the follower (it installs, learns tools, swaps).
REACH = 60.0
CALLERS = 3


@pytest.fixture(scope="module")
def keys() -> dict[str, PrivateKey]:
    return {"publisher": generate_key(), "stranger": generate_key()}


@pytest.fixture(scope="module")
def textkits(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, PrivateKey]) -> dict:
    """textkit 1.0.0 (echo as shipped) and 1.1.0 (appends " [1.1]") signed by the
    publisher; 1.2.0 (appends " [1.2]") signed by a key followers do not trust."""
    out: dict[str, Path] = {}
    for version, suffix, key in (
        ("1.0.0", "", "publisher"),
        ("1.1.0", " [1.1]", "publisher"),
        ("1.2.0", " [1.2]", "stranger"),
    ):
        project = tmp_path_factory.mktemp("src") / f"textkit-{version}"
        copy_example(TEXTKIT, project, version=version, echo_suffix=suffix)
        raw = build_wheel(project, tmp_path_factory.mktemp("raw"))
        out[version] = sign_wheel(
            raw, keys[key], permissions=Permissions(), out=tmp_path_factory.mktemp("signed")
        )
    return out


def _home(root: Path, *trusted: PrivateKey) -> Home:
    home = Home(root).ensure()
    for i, key in enumerate(trusted):
        TrustStore(home.keys_dir).trust(key.public_key.pem(), f"key {i}")
    return home


def _install(home: Home, wheel: Path, *flags: str) -> None:
    proc = run_mcphost("plugin", "install", str(wheel), "--yes", *flags, home=home)
    assert proc.returncode == 0, proc.stderr


def _serve(home: Home) -> list[str]:
    return [*mcphost_command(), "--home", str(home.root), "serve", "--no-environment"]


def _follow_token(primary: Home, where: Path) -> Path:
    secret, _ = create_token(primary.tokens_file, f"follower-{where.name}", follow=True)
    where.write_text(secret + "\n")
    where.chmod(0o600)
    return where


@contextmanager
def _pair(
    tmp_path: Path, primary: Home, follower: Home, token_file: Path
) -> Iterator[tuple[ServedProcess, ServedProcess]]:
    with ExitStack() as stack:
        p = stack.enter_context(
            serve_http_process(_serve(primary), primary.root, "--publish-registry")
        )
        f = stack.enter_context(
            serve_http_process(
                _serve(follower),
                follower.root,
                "--follow",
                p.url,
                "--follow-token-file",
                str(token_file),
                "--follow-interval",
                INTERVAL,
            )
        )
        yield p, f


async def _echo(s: ServedProcess, text: str) -> str:
    async with http_client(s.url, s.token) as client:
        res = await client.call_tool("textkit.echo", {"text": text})
        assert not res.is_error, res.content
        assert res.structured_content is not None
        return str(res.structured_content["result"])


async def _serves(f: ServedProcess, suffix: str) -> None:
    """Wait (bounded) until ``f``'s textkit.echo answers with ``suffix``."""
    deadline = time.monotonic() + REACH
    while True:
        try:
            if await _echo(f, "x") == "x" + suffix:
                return
        except Exception:  # before its first sync the follower has no textkit
            pass
        assert time.monotonic() < deadline, f"never served {suffix!r}: {f.log[-5:]}"
        await asyncio.sleep(0.1)


def _status(home: Home) -> str:
    proc = run_mcphost("status", home=home)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


async def test_a_swap_and_a_rollback_on_the_primary_reach_the_follower_without_a_failed_call(
    tmp_path: Path, keys: dict[str, PrivateKey], textkits: dict[str, Path]
) -> None:
    primary = _home(tmp_path / "primary", keys["publisher"])
    follower = _home(tmp_path / "follower", keys["publisher"])
    _install(primary, textkits["1.0.0"])
    _install(primary, textkits["1.1.0"], "--no-activate")
    token_file = _follow_token(primary, tmp_path / "follow.token")

    with _pair(tmp_path, primary, follower, token_file) as (p, f):
        # The follower installs 1.0.0 from the primary and serves it.
        await _serves(f, "")
        answers: list[tuple[str, str]] = []
        failures: list[str] = []
        stop = asyncio.Event()

        async def hammer(caller: int) -> None:
            n = 0
            async with http_client(f.url, f.token) as client:
                while not stop.is_set():
                    text = f"c{caller}n{n}"
                    n += 1
                    try:
                        res = await client.call_tool("textkit.echo", {"text": text})
                    except Exception as exc:
                        failures.append(f"{type(exc).__name__}: {exc}")
                        continue
                    if res.is_error or res.structured_content is None:
                        failures.append(str(res.content))
                        continue
                    answers.append((text, res.structured_content["result"]))

        def answered(suffix: str) -> bool:
            return any(a == t + suffix for t, a in answers[-CALLERS:])

        tasks = [asyncio.ensure_future(hammer(c)) for c in range(CALLERS)]
        try:
            await wait_until(lambda: answered(""), REACH, "the follower serves textkit 1.0.0")
            await run_mcphost_ok_async("plugin", "swap", "textkit", "1.1.0", home=primary)
            await wait_until(lambda: answered(" [1.1]"), REACH, "the swap reached the follower")
            await run_mcphost_ok_async("plugin", "rollback", "textkit", home=primary)
            await wait_until(lambda: answered(""), REACH, "the rollback reached the follower")
            mark = len(answers)
            await wait_until(lambda: len(answers) > mark + 20, REACH, "calls after the rollback")
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert failures == [], f"{len(failures)} calls failed: {failures[:3]}"
        assert {a[len(t) :] for t, a in answers} == {"", " [1.1]"}

        # The follower's registry recorded the changes, as the primary's CLI made them.
        proc = run_mcphost("plugin", "info", "textkit", "--json", home=follower)
        assert proc.returncode == 0, proc.stderr
        info = json.loads(proc.stdout)
        assert info["active"] == "1.0.0", info
        assert [(h["action"], h["to_version"]) for h in info["history"][-2:]] == [
            ("swap", "1.1.0"),
            ("rollback", "1.0.0"),
        ]

        # The configuration travels too: a rename set on the primary reaches the follower.
        await run_mcphost_ok_async(
            "config", "set", "plugins.textkit.tools.echo.name", "say", home=primary
        )
        async with http_client(f.url, f.token) as client:

            async def renamed() -> bool:
                return "say" in {t.name for t in (await client.list_tools()).tools}

            deadline = time.monotonic() + REACH
            while not await renamed():
                assert time.monotonic() < deadline, "the rename did not reach the follower"
                await asyncio.sleep(0.1)

        # A removal on the primary removes the plugin from the follower too.
        await run_mcphost_ok_async("plugin", "remove", "textkit", "--force", home=primary)
        async with http_client(f.url, f.token) as client:
            deadline = time.monotonic() + REACH
            while "say" in {t.name for t in (await client.list_tools()).tools}:
                assert time.monotonic() < deadline, "the removal did not reach the follower"
                await asyncio.sleep(0.1)

        # status on the follower says whom it follows.
        out = _status(follower)
        assert f"following {p.url}: in step" in out, out

        # A change on the follower itself is refused, naming the primary.
        for args in (
            ("plugin", "swap", "textkit", "1.1.0"),
            ("plugin", "install", str(textkits["1.1.0"]), "--yes"),
            ("config", "set", "limits.memory_mb", "512"),
        ):
            proc = run_mcphost(*args, home=follower)
            assert proc.returncode != 0
            assert "error [following_home]" in proc.stderr, proc.stderr
            assert p.url in proc.stderr and "on the primary" in proc.stderr, proc.stderr

    # Stopped, the follower's home still follows; doctor says its server is not running.
    proc = run_mcphost("doctor", home=follower)
    assert proc.returncode == 0, proc.stderr
    assert f"following   {p.url}: in step" in proc.stdout, proc.stdout
    assert "is not running" in proc.stdout, proc.stdout


async def test_an_untrusted_wheel_is_refused_and_a_lost_primary_leaves_the_follower_serving(
    tmp_path: Path, keys: dict[str, PrivateKey], textkits: dict[str, Path]
) -> None:
    primary = _home(tmp_path / "primary", keys["publisher"], keys["stranger"])
    follower = _home(tmp_path / "follower", keys["publisher"])  # not the stranger
    _install(primary, textkits["1.0.0"])
    token_file = _follow_token(primary, tmp_path / "follow.token")

    with _pair(tmp_path, primary, follower, token_file) as (p, f):
        await _serves(f, "")
        # The primary trusts the stranger's key; the follower does not.
        await run_mcphost_ok_async(
            "plugin", "install", str(textkits["1.2.0"]), "--yes", "--allow-key-change",
            home=primary,
        )  # fmt: skip
        await _serves(p, " [1.2]")

        def refused() -> bool:
            return any("not trusted" in line or "untrusted" in line for line in f.log)

        await wait_until(refused, REACH, "the follower logged the refusal")
        assert await _echo(f, "y") == "y"  # still the old version
        out = _status(follower)
        assert "NOT in step" in out, out
        assert "textkit 1.2.0 (sha256 " in out and "from the primary is refused: key" in out, out
        assert "is not trusted" in out, out
        assert sum("is not trusted" in line for line in f.log) == 1  # logged once

        # Once the follower's operator trusts the key, the follower catches up.
        pub = tmp_path / "stranger.pub"
        pub.write_bytes(keys["stranger"].public_key.pem())
        await run_mcphost_ok_async("keys", "trust", str(pub), "--name", "stranger", home=follower)
        await _serves(f, " [1.2]")

        # The primary goes away: the follower keeps serving what it has, and says so.
        p.proc.terminate()
        p.proc.wait(timeout=20)
        await wait_until(
            lambda: any("cannot be reached" in line for line in f.log),
            REACH,
            "the follower noticed the primary is gone",
        )
        assert await _echo(f, "z") == "z [1.2]"
        assert "cannot be reached" in _status(follower)
        assert sum("cannot be reached" in line for line in f.log) == 1  # logged once


def test_a_token_the_primary_refuses_stops_the_follower_with_what_to_do(
    tmp_path: Path, keys: dict[str, PrivateKey], textkits: dict[str, Path]
) -> None:
    primary = _home(tmp_path / "primary", keys["publisher"])
    follower = _home(tmp_path / "follower", keys["publisher"])
    _install(primary, textkits["1.0.0"])
    with serve_http_process(_serve(primary), primary.root, "--publish-registry") as p:
        # An MCP client's token (not --follow) reads no registry, a follower's calls no tool.
        (tmp_path / "client.token").write_text(p.token)
        proc = run_mcphost(
            "serve", "--http", "127.0.0.1:0", "--follow", p.url,
            "--follow-token-file", tmp_path / "client.token",
            home=follower, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert "refused the follow token (403" in proc.stderr, proc.stderr
        assert "tokens create NAME --follow" in proc.stderr

        proc = run_mcphost(
            "serve", "--http", "127.0.0.1:0", "--follow", p.url, home=follower,
            extra_env={"MCPHOST_FOLLOW_TOKEN": "mcph_not-a-token"}, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert "refused the follow token (401" in proc.stderr, proc.stderr

        follow_secret = _follow_token(primary, tmp_path / "f.token").read_text().strip()
        req = urllib.request.Request(
            p.url,
            data=b"{}",
            headers={"Authorization": f"Bearer {follow_secret}"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(req, timeout=30)
        assert denied.value.code == 403
        assert "follower's token" in denied.value.read().decode()

        # The published state: an ETag, 304 when unchanged; wheels by digest only.
        def get(path: str, secret: str, **headers: str) -> tuple[int, bytes, str | None]:
            req = urllib.request.Request(
                f"{p.url}/registry/{path}", headers={"Authorization": f"Bearer {secret}", **headers}
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return resp.status, resp.read(), resp.headers.get("ETag")
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read(), exc.headers.get("ETag")

        status, body, etag = get("state", follow_secret)
        assert status == 200 and etag, body
        state = json.loads(body)
        active = state["plugins"]["textkit"]["active"]
        assert active["version"] == "1.0.0" and len(active["sha256"]) == 64
        assert get("state", follow_secret, **{"If-None-Match": etag})[0] == 304
        status, wheel, _ = get(f"wheels/{active['sha256']}", follow_secret)
        assert status == 200 and hashlib.sha256(wheel).hexdigest() == active["sha256"]
        assert get("wheels/" + "0" * 64, follow_secret)[0] == 404
        assert get("state", p.token)[0] == 403  # an MCP client's token reads no registry

        # No token in the environment or a file: refused before anything starts.
        proc = run_mcphost(
            "serve", "--http", "127.0.0.1:0", "--follow", p.url, home=follower,
            extra_env={"MCPHOST_FOLLOW_TOKEN": ""}, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2 and "MCPHOST_FOLLOW_TOKEN" in proc.stderr, proc.stderr
    assert not (follower.root / "following.json").exists()


async def test_a_wheel_whose_bytes_are_not_the_published_digest_is_refused(
    tmp_path: Path, keys: dict[str, PrivateKey], textkits: dict[str, Path]
) -> None:
    primary = _home(tmp_path / "primary", keys["publisher"])
    follower = _home(tmp_path / "follower", keys["publisher"])
    _install(primary, textkits["1.0.0"])
    # The wheel kept by the primary changes after its install (a damaged disk, a
    # tampered store, a proxy in between): its bytes no longer have the published digest.
    (kept,) = primary.store_dir.glob("*.whl")
    kept.chmod(0o644)
    kept.write_bytes(kept.read_bytes() + b"\0")
    token_file = _follow_token(primary, tmp_path / "follow.token")
    with _pair(tmp_path, primary, follower, token_file) as (_p, f):
        await wait_until(
            lambda: any("not the one published" in line for line in f.log),
            REACH,
            "the follower refused the wheel",
        )
        assert "NOT in step" in _status(follower)
        async with http_client(f.url, f.token) as client:
            assert (await client.list_tools()).tools == []
