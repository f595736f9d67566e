"""The audit log: appended line by line, synced, readable, safe under concurrent writers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from mcphost.security import AuditLog


def test_entries_are_appended_as_json_lines_and_read_back_in_order(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    assert log.read() == []
    log.append("key.trust", key_id="ed25519:0123456789abcdef", detail="alice")
    log.append(
        "plugin.install",
        plugin="textkit",
        version="1.0.0",
        hashes={"wheel": "ab" * 32},
        outcome="refused",
        actor="ops",
    )
    first, second = log.read()
    assert first["action"] == "key.trust" and first["outcome"] == "ok"
    assert first["key_id"] == "ed25519:0123456789abcdef" and "plugin" not in first
    assert second["hashes"] == {"wheel": "ab" * 32} and second["actor"] == "ops"
    assert second["time"].endswith("+00:00") and second["unix"] >= first["unix"]
    assert len((tmp_path / "audit.jsonl").read_bytes().splitlines()) == 2


def test_audit_log_is_private_to_its_owner(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append("key.generate")
    assert stat.S_IMODE(os.stat(log.path).st_mode) == 0o600


def test_a_damaged_line_is_reported_and_the_rest_still_read(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append("a")
    with open(log.path, "ab") as f:
        f.write(b"{torn\n")
    log.append("b")
    actions = [e["action"] for e in log.read()]
    assert actions == ["a", "audit.unreadable", "b"]


def test_concurrent_writers_never_interleave_within_a_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from mcphost.security import AuditLog\n"
        "log = AuditLog(Path(sys.argv[1]))\n"
        "for i in range(50):\n"
        "    log.append('test.write', detail=sys.argv[2] * 2000 + str(i))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), letter]) for letter in "abcd"
    ]
    for p in procs:
        assert p.wait(timeout=60) == 0
    entries = AuditLog(path).read()
    assert len(entries) == 200
    assert all(e["action"] == "test.write" for e in entries)
    for e in entries:
        body = e["detail"].rstrip("0123456789")
        assert body == body[0] * 2000
