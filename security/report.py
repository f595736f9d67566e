"""What a verification checked and what failed, one line per check."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Check", "VerificationReport"]


class Check(msgspec.Struct, frozen=True):
    """One check: what kind (``signature``, ``file``, ...), on what, and how it went."""

    check: str
    #: A file path (relative to the wheel or tree), a key id, or the plugin.
    subject: str
    ok: bool
    detail: str = ""


class VerificationReport(msgspec.Struct):
    """Every check of one verification in order, and the error that ended it, if any."""

    #: The wheel file or installed tree that was verified.
    target: str
    checks: list[Check] = []
    #: The message of the VerificationError raised, ``None`` when everything verified.
    error: str | None = None
    #: The error's ``data["reason"]``: unknown_key, revoked_key, expired, rollback, ...
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok for c in self.checks)

    def add(self, check: str, subject: str, ok: bool, detail: str = "") -> Check:
        item = Check(check=check, subject=subject, ok=ok, detail=detail)
        self.checks.append(item)
        return item

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, for ``--json`` output and error data."""
        return {
            "target": self.target,
            "ok": self.ok,
            "error": self.error,
            "reason": self.reason,
            "checks": [msgspec.structs.asdict(c) for c in self.checks],
        }

    def render(self) -> str:
        """The report as text, one check per line, failures marked ``FAIL``."""
        lines = [f"verifying {self.target}"]
        width = max((len(c.check) for c in self.checks), default=4)
        for c in self.checks:
            mark = "ok  " if c.ok else "FAIL"
            detail = f"  ({c.detail})" if c.detail else ""
            lines.append(f"  {mark}  {c.check:<{width}}  {c.subject}{detail}")
        if self.ok:
            lines.append(f"verified: {sum(1 for c in self.checks)} checks passed")
        else:
            lines.append(f"REFUSED: {self.error or 'some checks failed'}")
        return "\n".join(lines)
