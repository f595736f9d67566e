"""A primary's registry, published to followers (``mcphost serve --http --publish-registry``).

Two read-only routes under the MCP endpoint's path, for tokens made with ``mcphost
tokens create --follow`` only:

* ``GET <path>/registry/state``: per plugin its active version and that wheel's sha256,
  the version it rolls back to (and its sha256), how it became active (``activate``,
  ``swap`` or ``rollback``), the key its name belongs to, and the text of
  ``config.toml``; the ``ETag`` is the body's
  sha256, and ``If-None-Match`` with it answers 304 (a poll that finds nothing new costs
  one small answer).
* ``GET <path>/registry/wheels/<sha256>``: the wheel kept under that digest in the
  home's content-addressed store, as it was installed (signed); the follower checks the
  digest and verifies the signature against its own trust store (:mod:`.follow`).

The state is what the registry says at the moment of the request; nothing here changes
it. Wheels not named by the published state are not served.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from .home import Home

__all__ = ["STATE_FORMAT", "PublishedPlugin", "PublishedState", "PublishedVersion", "Publisher"]

#: Bumped when the state document changes in a way an older follower cannot read.
STATE_FORMAT = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 256 * 1024

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class PublishedVersion(msgspec.Struct, frozen=True):
    version: str
    sha256: str


class PublishedPlugin(msgspec.Struct, frozen=True):
    active: PublishedVersion
    #: The version ``plugin rollback`` would go back to; ``None`` when there is none.
    previous: PublishedVersion | None = None
    #: How the active version became active: "activate", "swap" or "rollback".
    action: str = "activate"
    #: The key the name belongs to on the primary (it changes with --allow-key-change).
    owner_key: str | None = None


class PublishedState(msgspec.Struct, frozen=True):
    format: int
    #: The primary registry's generation (grows with every committed change).
    generation: int
    plugins: dict[str, PublishedPlugin]
    #: The text of the primary's config.toml ("" when it has none).
    config: str


_encoder = msgspec.json.Encoder(order="sorted")


def read_state(home: Home) -> PublishedState:
    """What the registry and config.toml of ``home`` say now."""
    from mcphost.registry import RegistryReader

    plugins: dict[str, PublishedPlugin] = {}
    generation = 0
    if home.registry_db.exists():
        with RegistryReader(
            db_path=home.registry_db, versions_dir=home.versions_dir, store_dir=home.store_dir
        ) as reg:
            generation = reg.generation()
            for rec in reg.active():
                previous: PublishedVersion | None = None
                try:
                    prev = reg.version(rec.plugin, reg.rollback_target(rec.plugin))
                    previous = PublishedVersion(prev.version, prev.wheel_sha256)
                except Exception:  # no version to roll back to: nothing to publish
                    previous = None
                action = next(
                    (
                        a.action
                        for a in reversed(reg.history(rec.plugin))
                        if a.action in ("activate", "swap", "rollback")
                    ),
                    "activate",
                )
                plugins[rec.plugin] = PublishedPlugin(
                    active=PublishedVersion(rec.version, rec.wheel_sha256),
                    previous=previous,
                    action=action,
                    owner_key=reg.plugin(rec.plugin).owner_key,
                )
    try:
        config = home.config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        config = ""
    return PublishedState(
        format=STATE_FORMAT, generation=generation, plugins=plugins, config=config
    )


class Publisher:
    """The two routes, answered from ``home``; ``prefix`` is ``<MCP path>/registry``."""

    def __init__(self, home: Home, mcp_path: str) -> None:
        self.home = home
        self.prefix = mcp_path.rstrip("/") + "/registry/"

    def owns(self, path: str) -> bool:
        return path.startswith(self.prefix)

    async def __call__(self, path: str, method: str, if_none_match: str | None, send: Send) -> None:
        import asyncio

        if method != "GET":
            await _plain(send, 405, "the published registry is read-only: use GET", allow=True)
            return
        rest = path[len(self.prefix) :]
        if rest == "state":
            state = await asyncio.to_thread(read_state, self.home)
            body = _encoder.encode(state)
            etag = '"' + hashlib.sha256(body).hexdigest() + '"'
            if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
                await _start(send, 304, [(b"etag", etag.encode())])
                await send({"type": "http.response.body", "body": b""})
                return
            await _start(
                send,
                200,
                [
                    (b"content-type", b"application/json"),
                    (b"etag", etag.encode()),
                    (b"cache-control", b"no-cache"),
                    (b"content-length", str(len(body)).encode()),
                ],
            )
            await send({"type": "http.response.body", "body": body})
            return
        if rest.startswith("wheels/"):
            digest = rest[len("wheels/") :]
            if not _SHA256.fullmatch(digest):
                await _plain(send, 400, "a wheel is asked for by its sha256: 64 hex digits")
                return
            await self._wheel(digest, send)
            return
        where = f"{self.prefix}state and {self.prefix}wheels/SHA256"
        await _plain(send, 404, f"not found: the registry routes are {where}")

    async def _wheel(self, digest: str, send: Send) -> None:
        import asyncio

        from mcphost.registry.store import wheel_path

        state = await asyncio.to_thread(read_state, self.home)
        named = {
            v.sha256
            for p in state.plugins.values()
            for v in (p.active, p.previous)
            if v is not None
        }
        path = wheel_path(self.home.store_dir, digest)
        if digest not in named or not path.is_file():
            await _plain(
                send, 404, f"no wheel {digest} among the active and previous versions published"
            )
            return
        size = path.stat().st_size
        await _start(
            send,
            200,
            [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(size).encode()),
            ],
        )
        with path.open("rb") as f:
            while True:
                chunk = await asyncio.to_thread(f.read, _CHUNK)
                more = len(chunk) == _CHUNK
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
                if not more:
                    return


async def _start(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _plain(send: Send, status: int, text: str, *, allow: bool = False) -> None:
    body = (text + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    if allow:
        headers.append((b"allow", b"GET"))
    await _start(send, status, headers)
    await send({"type": "http.response.body", "body": body})
