"""Bearer tokens for ``mcphost serve --http``: shown once, kept only as hashes.

A token is ``mcph_`` and 32 random bytes (URL-safe base64). The token file (JSON, mode
0600) keeps, per token, its name, the sha256 of the secret, the tool patterns it may use
(shell-style, over ``<plugin>.<tool>`` names; none means every tool), when it was made,
when it expires, and whether it is a follower's (it reads a published registry and calls
no tool). Checking a presented token hashes it and compares every stored hash in
constant time. These are pure functions over the file; the CLI audits what they change.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from pathlib import Path

import msgspec

from mcphost.sdk.errors import ConfigError

from ._files import atomic_write

__all__ = [
    "TOKEN_PREFIX",
    "Token",
    "TokenError",
    "create_token",
    "find_token",
    "hash_secret",
    "load_tokens",
    "revoke_token",
]

TOKEN_PREFIX = "mcph_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class TokenError(ConfigError):
    """A token could not be made, found or revoked; the message says what to do."""

    code = "token_error"


class Token(msgspec.Struct, frozen=True):
    """One stored token: never the secret, only its sha256 (hex)."""

    name: str
    sha256: str
    tools: tuple[str, ...] = ()
    created: float = 0.0
    expires: float | None = None
    #: A follower's token (``tokens create --follow``): it may read the registry a
    #: primary publishes (``serve --publish-registry``) and call no tool.
    follow: bool = False

    def allows(self, tool: str) -> bool:
        """Whether this token may see and call ``tool`` (a ``<plugin>.<tool>`` name)."""
        return not self.tools or any(fnmatchcase(tool, p) for p in self.tools)

    def expired(self, now: float | None = None) -> bool:
        return self.expires is not None and (time.time() if now is None else now) >= self.expires


class _File(msgspec.Struct):
    tokens: list[Token] = msgspec.field(default_factory=list)


_decoder = msgspec.json.Decoder(_File)
_encoder = msgspec.json.Encoder()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def load_tokens(path: Path) -> list[Token]:
    """Every stored token; none when the file does not exist yet."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise TokenError(f"cannot read the token file {path}: {exc.strerror or exc}") from exc
    try:
        return _decoder.decode(data).tokens
    except msgspec.DecodeError as exc:
        raise TokenError(
            f"the token file {path} is damaged ({exc}); revoke by hand or move it away "
            "and create new tokens with `mcphost tokens create`"
        ) from None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time (two `tokens create` at once must not lose one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _save(path: Path, tokens: list[Token]) -> None:
    atomic_write(path, _encoder.encode(_File(tokens)) + b"\n", mode=0o600)


def create_token(
    path: Path,
    name: str,
    *,
    tools: Iterable[str] = (),
    expires: float | None = None,
    now: float | None = None,
    follow: bool = False,
) -> tuple[str, Token]:
    """Make a token called ``name``; returns (the secret, to show once, and its record)."""
    if not _NAME.fullmatch(name):
        raise TokenError(
            f"token name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    patterns = tuple(tools)
    for p in patterns:
        if not p or any(c.isspace() for c in p):
            raise TokenError(f"tool pattern {p!r} is empty or has spaces; e.g. 'textkit.*'")
    made = time.time() if now is None else now
    if expires is not None and expires <= made:
        raise TokenError("the expiry is in the past; give a duration such as 30d or a date")
    with _locked(path):
        tokens = load_tokens(path)
        if any(t.name == name for t in tokens):
            raise TokenError(
                f"a token called {name!r} exists already; revoke it first "
                f"(`mcphost tokens revoke {name}`) or choose another name"
            )
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = Token(
            name=name,
            sha256=hash_secret(secret),
            tools=patterns,
            created=made,
            expires=expires,
            follow=follow,
        )
        _save(path, [*tokens, token])
    return secret, token


def revoke_token(path: Path, name: str) -> Token:
    """Remove the token called ``name``; a running server refuses it from its next request."""
    with _locked(path):
        tokens = load_tokens(path)
        kept = [t for t in tokens if t.name != name]
        if len(kept) == len(tokens):
            raise TokenError(f"no token called {name!r}; `mcphost tokens list` shows them")
        _save(path, kept)
    return next(t for t in tokens if t.name == name)


def find_token(tokens: Iterable[Token], secret: str, now: float | None = None) -> Token | None:
    """The unexpired token whose hash matches ``secret`` (every hash is compared, in
    constant time each, so timing does not tell which prefix matched)."""
    digest = hash_secret(secret)
    found: Token | None = None
    for t in tokens:
        if hmac.compare_digest(digest, t.sha256) and found is None:
            found = t
    if found is None or found.expired(now):
        return None
    return found
