"""Bearer-token authentication of the HTTP endpoint (tokens from ``mcphost tokens``).

The token file is read again whenever it changes on disk, so a token made or revoked
while the server runs counts from the next request. A refused request gets 401 with a
``WWW-Authenticate: Bearer`` challenge as the MCP authorization section asks (RFC 6750
error codes, and ``resource_metadata`` naming the RFC 9728 metadata document, which says
that tokens go in the Authorization header and that no authorization server issues them:
the operator does, with ``mcphost tokens create``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mcphost.security.tokens import Token, find_token, load_tokens

__all__ = ["TokenBook", "challenge", "resource_metadata"]


class TokenBook:
    """The tokens a server accepts, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._tokens: list[Token] = []

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        if stamp != self._stamp:
            self._tokens = load_tokens(self.path) if stamp != (0, 0, 0) else []
            self._stamp = stamp

    def count(self) -> int:
        """How many tokens there are (expired ones included)."""
        self._refresh()
        return len(self._tokens)

    def authenticate(self, authorization: str | None) -> tuple[Token | None, str]:
        """The token an ``Authorization`` header presents, or None and why not."""
        if authorization is None:
            return None, "this endpoint needs a bearer token: send 'Authorization: Bearer <token>'"
        scheme, _, secret = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None, "the Authorization header must be 'Bearer <token>'"
        self._refresh()
        token = find_token(self._tokens, secret.strip())
        if token is None:
            return None, (
                "the bearer token is not valid (unknown, revoked or expired); "
                "make one with `mcphost tokens create NAME`"
            )
        return token, ""

    def current(self, token: Token) -> bool:
        """Whether ``token`` is still valid (not revoked or expired since it was seen)."""
        self._refresh()
        return any(t.sha256 == token.sha256 for t in self._tokens) and not token.expired()


def challenge(metadata_url: str, *, invalid: bool) -> bytes:
    """The ``WWW-Authenticate`` value of a 401."""
    parts = ['Bearer realm="mcphost"', f'resource_metadata="{metadata_url}"']
    if invalid:
        parts.append('error="invalid_token"')
    return ", ".join(parts).encode()


def resource_metadata(resource: str) -> dict[str, Any]:
    """The RFC 9728 protected-resource metadata of the endpoint."""
    return {
        "resource": resource,
        "authorization_servers": [],
        "bearer_methods_supported": ["header"],
        "resource_name": "mcphost",
    }
