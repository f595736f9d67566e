"""The status page of ``serve --metrics``: behind the HTTP front end's tokens (``/metrics``
stays open to scrapers), signed in once with ``/?token=``, and, loaded in headless
Chromium, showing the numbers ``mcphost status --json`` gives. The screenshot is kept
under the test's tmp path (the test prints where), and copied into
``$MCPHOST_TEST_ARTEFACTS`` when that is set. Chromium missing: a skip, a failure in CI
(``CI`` or ``MCPHOST_REQUIRE_BWRAP`` set; ``.ci/run`` installs it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from bwrap_check import bwrap_required
from support.cli import run_mcphost
from test_metrics_serve import Served, kill_worker
from test_status_serve import status, wait_status

from mcphost.host import Home
from mcphost.security.tokens import create_token


class Page:
    def __init__(self, served: Served, token: str) -> None:
        self.served = served
        self.base = served.url.removesuffix("/metrics")
        self.token = token


@pytest.fixture
def page(home: Home, wheels: dict[str, Path]) -> Iterator[Page]:
    for args in (
        ["plugin", "install", str(wheels["1.0"]), "--yes"],
        ["plugin", "install", str(wheels["1.1"]), "--yes", "--no-activate"],
    ):
        proc = run_mcphost(*args, home=home)
        assert proc.returncode == 0, proc.stderr
    token, _ = create_token(home.tokens_file, "page")
    s = Served(home)
    try:
        yield Page(s, token)
    finally:
        s.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, _lower(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, _lower(err.headers), err.read()


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_the_page_and_its_data_need_the_front_ends_token_and_metrics_do_not(
    home: Home, page: Page
) -> None:
    base, token = page.base, page.token
    assert get(base + "/metrics")[0] == 200  # scrapers send no token, as before
    for path in ("/", "/status.json", "/?token=not-a-token"):
        code, headers, body = get(base + path)
        assert code == 401, path
        assert b"/?token=" in body and b"mcphost tokens create" in body
    page.served.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}})
    page.served.request("tools/list", {})  # answered once the host has started
    code, _, body = get(base + "/status.json", {"Authorization": f"Bearer {token}"})
    assert code == 200 and json.loads(body)["pid"] == page.served.proc.pid
    limited, _ = create_token(home.tokens_file, "limited", tools=["textkit.*"])
    code, _, body = get(base + "/status.json", {"Authorization": f"Bearer {limited}"})
    assert code == 401 and b"limited with --tools" in body
    assert get(f"{base}/?token={limited}")[0] == 401

    code, headers, _ = get(f"{base}/?token={token}")
    assert code == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert token not in cookie  # the cookie holds a key of the listener's, not the token
    jar = cookie.split(";", 1)[0]
    code, headers, body = get(base + "/", {"Cookie": jar})
    assert code == 200 and headers["content-type"].startswith("text/html")
    assert "script-src 'nonce-" in headers["content-security-policy"]
    assert b"<script" in body and b"src=" not in body.split(b"<script", 1)[1].split(b">")[0]
    code, _, body = get(base + "/status.json", {"Cookie": jar})
    assert code == 200 and json.loads(body)["plugins"][0]["plugin"] == "textkit"

    done = run_mcphost("tokens", "revoke", "page", home=home)
    assert done.returncode == 0, done.stderr
    assert get(base + "/status.json", {"Cookie": jar})[0] == 401  # revoked: signed out


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    why = "Chromium is not installed (Debian: apt-get install chromium)"
    if bwrap_required():
        pytest.fail(f"{why}; the page test needs it in CI (MCPHOST_REQUIRE_BWRAP)")
    pytest.skip(why)


def browse(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=3000",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


class Cells(HTMLParser):
    """The rendered page's plugin rows (``data-field`` -> ``data-value``), its event rows
    and the texts of elements with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.events: list[str] = []
        self.ids: dict[str, str] = {}
        self._row: dict[str, str] | None = None
        self._id: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "tr" and "data-plugin" in a and a["data-plugin"] not in self.rows:
            self._row = self.rows[a["data-plugin"]] = {}
        elif tag == "tr" and "data-event" in a:
            self.events.append(a["data-event"])
        if tag == "td" and self._row is not None and "data-field" in a:
            self._row[a["data-field"]] = a.get("data-value", "")
        if "id" in a:
            self._id = a["id"]
            self.ids[self._id] = ""

    def handle_endtag(self, tag: str) -> None:
        self._id = None
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._id is not None:
            self.ids[self._id] += data
            self._id = None


def test_the_page_in_headless_chromium_shows_what_status_json_shows(
    no_leftover_workers: None, home: Home, page: Page, tmp_path: Path
) -> None:
    s = page.served
    s.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}})
    for i in range(4):
        s.call("textkit.echo", {"text": f"t{i}"})
    assert s.call("textkit.echo", {"text": 5})["isError"] is True
    kill_worker(s.proc.pid)
    wait_status(home, lambda h: [e["kind"] for e in h["events"]] == ["crash"], "the crash")
    s.call("textkit.echo", {"text": "again"})
    done = run_mcphost("plugin", "swap", "textkit", "1.1", home=home)
    assert done.returncode == 0, done.stderr
    wait_status(home, lambda h: h["plugins"][0]["version"] == "1.1.0", "the swap")

    url = f"{page.base}/?token={page.token}"
    dom = browse(url, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    after = status(home)  # nothing was called in between: the same numbers
    cells = Cells()
    cells.feed(dom.stdout)
    assert cells.ids["pid"] == str(after["pid"]) == str(s.proc.pid)
    assert cells.ids["transport"] == "stdio" and cells.ids["clients"] == "1"
    assert cells.ids["problem"] == ""
    shown = cells.rows["textkit"]
    (p,) = after["plugins"]
    for field in ("plugin", "version", "state", "pid", "restarts", "in_flight", "calls"):
        assert shown[field] == str(p[field]), field
    assert (p["version"], p["restarts"], p["calls"]) == ("1.1.0", 1, 6)
    assert shown["errors"] == "1"
    for field in ("p50_ms", "p99_ms"):
        assert float(shown[field]) == p[field], field
    assert float(shown["calls_per_second"]) >= 0 and float(shown["memory_mb"]) > 0
    assert cells.events[:2] == ["swap", "crash"]  # newest first

    shot = tmp_path / "status-page.png"
    done = browse(url, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,900")
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000
    print(f"status page screenshot: {shot}")
    keep = os.environ.get("MCPHOST_TEST_ARTEFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
