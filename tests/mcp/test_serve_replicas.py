"""Several `mcphost serve --http` processes on one home: each follows the registry the
home holds, so a swap made with the CLI reaches all of them, and a client hammering
every one of them across the swap sees no failed call; a setting changed with
`mcphost config set` reaches all of them too (docs/cluster.md)."""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from http_helpers import ServedProcess, http_client, serve_http_process
from support.cli import mcphost_command, run_mcphost, run_mcphost_ok_async
from support.wheels import build_wheel

from mcphost.host import Home
from mcphost.host.examples import copy_example
from mcphost.security import Permissions, PrivateKey, TrustStore, generate_key, sign_wheel

TEXTKIT = Path(__file__).resolve().parents[2] / "example_plugins" / "textkit"
SERVERS = 2
#: Callers per server, each calling in a loop until told to stop.
CALLERS = 3


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def textkits(tmp_path_factory: pytest.TempPathFactory, key: PrivateKey) -> dict[str, Path]:
    """Signed textkit wheels: 1.0.0 as shipped, 1.1.0 whose echo appends " [1.1]"."""
    out: dict[str, Path] = {}
    for version, suffix in (("1.0.0", ""), ("1.1.0", " [1.1]")):
        project = tmp_path_factory.mktemp("src") / f"textkit-{version}"
        copy_example(TEXTKIT, project, version=version, echo_suffix=suffix)
        raw = build_wheel(project, tmp_path_factory.mktemp("raw"))
        out[version] = sign_wheel(
            raw, key, permissions=Permissions(), out=tmp_path_factory.mktemp("signed")
        )
    return out


async def test_a_cli_swap_reaches_every_serve_process_of_the_home_without_a_failed_call(
    tmp_path: Path, key: PrivateKey, textkits: dict[str, Path], no_leftover_workers: None
) -> None:
    home = Home(tmp_path / "home").ensure()
    TrustStore(home.keys_dir).trust(key.public_key.pem(), "test publisher")
    for args in (
        ["plugin", "install", str(textkits["1.0.0"]), "--yes"],
        ["plugin", "install", str(textkits["1.1.0"]), "--yes", "--no-activate"],
    ):
        proc = run_mcphost(*args, home=home)
        assert proc.returncode == 0, proc.stderr

    argv = [*mcphost_command(), "--home", str(home.root), "serve", "--no-environment"]
    with ExitStack() as stack:
        servers: list[ServedProcess] = [
            stack.enter_context(serve_http_process(argv, home.root)) for _ in range(SERVERS)
        ]
        # (server, text sent, answer, when the call started, when it was answered).
        answers: list[tuple[int, str, str, float, float]] = []
        failures: list[str] = []
        stop = asyncio.Event()

        async def hammer(server: int, caller: int) -> None:
            s = servers[server]
            async with http_client(s.url, s.token) as client:
                n = 0
                while not stop.is_set():
                    text = f"s{server}c{caller}n{n}"
                    started = time.monotonic()
                    try:
                        res = await client.call_tool("textkit.echo", {"text": text})
                    except Exception as exc:
                        failures.append(f"server {server}: {type(exc).__name__}: {exc}")
                    else:
                        if res.is_error or res.structured_content is None:
                            failures.append(f"server {server}: {res.content}")
                        else:
                            answer = res.structured_content["result"]
                            answers.append((server, text, answer, started, time.monotonic()))
                    n += 1

        def answered(server: int, suffix: str) -> bool:
            return any(a[0] == server and a[2] == a[1] + suffix for a in answers)

        async def until(check: object, what: str, timeout: float = 30.0) -> None:
            deadline = time.monotonic() + timeout
            while not check():  # type: ignore[operator]
                assert time.monotonic() < deadline, f"{what} within {timeout} s; {failures[:3]}"
                await asyncio.sleep(0.05)

        tasks = [
            asyncio.ensure_future(hammer(s, c)) for s in range(SERVERS) for c in range(CALLERS)
        ]
        try:
            await until(lambda: all(answered(s, "") for s in range(SERVERS)), "both serve 1.0")
            swapped_at = time.monotonic()
            await run_mcphost_ok_async("plugin", "swap", "textkit", "1.1.0", home=home)
            await until(
                lambda: all(answered(s, " [1.1]") for s in range(SERVERS)), "both serve 1.1"
            )
            # Go on hammering after both switched.
            await until(
                lambda: all(len(after_switch(answers, s)) >= 20 for s in range(SERVERS)),
                "calls after the switch",
            )
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        for s in servers:
            assert s.proc.poll() is None, "\n".join(s.log)

        # The configuration is shared too: a rename set with the CLI reaches both.
        await run_mcphost_ok_async(
            "config", "set", "plugins.textkit.tools.echo.name", "say", home=home
        )
        for s in servers:
            async with http_client(s.url, s.token) as client:
                deadline = time.monotonic() + 30
                # A rename gives the tool's whole name (docs/operators.md).
                while "say" not in {t.name for t in (await client.list_tools()).tools}:
                    assert time.monotonic() < deadline, "the rename did not reach a server"
                    await asyncio.sleep(0.1)
                res = await client.call_tool("say", {"text": "hi"})
                assert res.structured_content == {"result": "hi [1.1]"}

    assert failures == [], f"{len(failures)} calls failed: {failures[:3]}"
    for server in range(SERVERS):
        mine = [a for a in answers if a[0] == server]
        assert all(a[2] in (a[1], a[1] + " [1.1]") for a in mine)
        assert any(a[3] < swapped_at and a[2] == a[1] for a in mine)
        # Once a server answered with 1.1, every call started after that is 1.1's.
        later = after_switch(answers, server)
        assert later and all(a[2] == a[1] + " [1.1]" for a in later)


def after_switch(
    answers: list[tuple[int, str, str, float, float]], server: int
) -> list[tuple[int, str, str, float, float]]:
    """The calls to ``server`` started after its first answer from version 1.1."""
    mine = [a for a in answers if a[0] == server]
    switched = min((a[4] for a in mine if a[2] == a[1] + " [1.1]"), default=None)
    return [] if switched is None else [a for a in mine if a[3] > switched]
