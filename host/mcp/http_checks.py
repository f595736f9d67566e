"""Checks on an HTTP request before it reaches MCP: framing, Host, Origin, media types.

Pure functions over header values; each returns ``None`` when the request passes, else
the status and a one-line reason for the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from urllib.parse import urlsplit

__all__ = [
    "LOOPBACK_NAMES",
    "Refusal",
    "check_accept",
    "check_content_type",
    "check_framing",
    "check_host",
    "check_origin",
    "header",
    "host_name",
    "is_loopback",
]

Headers = Sequence[tuple[bytes, bytes]]
Refusal = tuple[int, str]
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def header(headers: Headers, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), decoded as Latin-1."""
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The host part of a Host header (``name``, ``name:port``, ``[v6]:port``), lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def check_framing(headers: Headers) -> Refusal | None:
    """A request with both Content-Length and Transfer-Encoding is how requests are
    smuggled past proxies (RFC 9112 §6.1): refuse it."""
    names = {k for k, _ in headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        return 400, "a request may not have both Content-Length and Transfer-Encoding"
    return None


def check_host(headers: Headers, allowed: Collection[str] | None) -> Refusal | None:
    """DNS rebinding protection: the Host header must name this server. ``allowed`` is
    the set of host names it answers to (None: any, for a wildcard bind with no list)."""
    if allowed is None:
        return None
    value = header(headers, b"host")
    if value is None or host_name(value) not in allowed:
        return 421, (
            f"Host {value!r} is not a name of this server (DNS rebinding protection); "
            "allow it with --allow-host NAME"
        )
    return None


def check_origin(
    headers: Headers, allowed: Collection[str], *, loopback_ok: bool = True
) -> Refusal | None:
    """Browser pages may call only from an allowed origin (or localhost's, when
    ``loopback_ok``); an origin with userinfo (``http://localhost:1@evil.example``) or
    anything beyond scheme://host[:port] is refused outright."""
    origin = header(headers, b"origin")
    if origin is None:
        return None
    refused = (
        403,
        f"Origin {origin!r} may not call this server; allow it with --allow-origin",
    )
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        return refused
    if (
        parts.scheme not in ("http", "https")
        or "@" in parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or not parts.hostname
    ):
        return refused
    if origin in allowed or origin.rstrip("/") in allowed:
        return None
    if loopback_ok and parts.hostname in LOOPBACK_NAMES:
        return None
    return refused


def check_content_type(headers: Headers) -> Refusal | None:
    """A POST body must be ``application/json`` exactly (parameters such as charset aside)."""
    value = header(headers, b"content-type") or ""
    if value.split(";", 1)[0].strip().lower() != "application/json":
        return 415, "POST a JSON-RPC message with Content-Type: application/json"
    return None


def _media_types(value: str) -> set[str]:
    return {part.split(";", 1)[0].strip().lower() for part in value.split(",")}


def check_accept(headers: Headers, *, stream_only: bool = False) -> Refusal | None:
    """The client must say what it accepts: a POST's Accept lists application/json and
    text/event-stream (the spec's requirement; ``*/*`` covers both); a GET's lists
    text/event-stream."""
    value = header(headers, b"accept")
    wanted = "text/event-stream" if stream_only else "application/json and text/event-stream"
    if value is None:
        return 406, f"missing Accept header: accept {wanted}"
    types = _media_types(value)
    if "*/*" in types:
        return None
    if stream_only:
        ok = "text/event-stream" in types or "text/*" in types
    else:
        ok = "application/json" in types or "text/event-stream" in types
    if not ok:
        return 406, f"Accept {value!r} does not allow the answer: accept {wanted}"
    return None
