"""The wheel archive, read defensively: members, METADATA, entry points, RECORD.

Only what signing and verification need. Every member name is checked (relative, no
``..``, no backslash, no duplicates, no symlinks) before anything is read, and member
sizes are capped so a small archive cannot expand into endless data.
"""

from __future__ import annotations

import base64
import configparser
import csv
import hashlib
import io
import stat
import struct
import zipfile
import zlib
from email.parser import BytesHeaderParser

from mcphost.sdk.errors import VerificationError
from mcphost.security.manifest import MAX_FILE_SIZE, MAX_FILES, check_member_path

__all__ = [
    "RECORD_NAME",
    "WheelArchive",
    "parse_entry_points",
    "record_hash",
    "render_record",
]

RECORD_NAME = "RECORD"
#: What the zip and zlib modules raise on damaged or hostile archives (found by fuzzing).
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    struct.error,
    OverflowError,
    UnicodeError,
)
_MAX_META_FILE = 1024 * 1024


def record_hash(data: bytes) -> str:
    """The ``sha256=<urlsafe base64, no padding>`` form RECORD uses."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def render_record(rows: list[tuple[str, str, str]]) -> bytes:
    """RECORD as CSV: path, hash, size (hash and size empty for unhashed files)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow(row)
    return buf.getvalue().encode("utf-8")


def parse_entry_points(text: str, source: str = "entry_points.txt") -> dict[str, dict[str, str]]:
    """Entry-point group -> name -> value, as in the wheel's ``entry_points.txt``."""
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise VerificationError(
            f"{source} is not a valid entry-points file: {exc}",
            data={"reason": "bad_wheel", "file": source},
        ) from None
    return {
        group: {name: value.strip() for name, value in parser.items(group)}
        for group in parser.sections()
    }


class WheelArchive:
    """A wheel opened from bytes, with its member names checked and its dist-info found.

    ``source`` names the wheel in error messages.
    """

    def __init__(self, data: bytes, *, source: str = "wheel") -> None:
        self.source = source
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
            infos = self.zip.infolist()
        except _ZIP_ERRORS as exc:
            raise self._fail(f"{source} is not a valid wheel (zip) file: {exc}") from None
        if len(infos) > MAX_FILES + 16:
            raise self._fail(f"{source} has {len(infos)} members, over the cap of {MAX_FILES}")
        self.infos: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename
            if name.endswith("/"):
                continue  # directory entries carry no content
            why = check_member_path(name)
            if why is not None:
                raise self._fail(f"{source}: member {name!r} is {why}", file=name)
            if name in self.infos:
                raise self._fail(f"{source}: member {name!r} appears twice", file=name)
            mode = info.external_attr >> 16
            if mode and not (stat.S_ISREG(mode) or stat.S_IFMT(mode) == 0):
                raise self._fail(
                    f"{source}: member {name!r} is a symlink or special file", file=name
                )
            if info.flag_bits & 0x1:
                raise self._fail(f"{source}: member {name!r} is encrypted", file=name)
            self.infos[name] = info
        tops = {n.split("/", 1)[0] for n in self.infos if "/" in n}
        dist_infos = sorted(t for t in tops if t.endswith(".dist-info"))
        if len(dist_infos) != 1:
            raise self._fail(
                f"{source} has {len(dist_infos)} .dist-info directories "
                f"({', '.join(dist_infos) or 'none'}); a wheel has exactly one"
            )
        self.dist_info = dist_infos[0]
        meta = self.read(f"{self.dist_info}/METADATA", limit=_MAX_META_FILE)
        headers = BytesHeaderParser().parsebytes(meta)
        meta_name, meta_version = headers.get("Name"), headers.get("Version")
        if not meta_name or not meta_version:
            raise self._fail(f"{source}: {self.dist_info}/METADATA has no Name or Version")
        self.name: str = str(meta_name).strip()
        self.version: str = str(meta_version).strip()

    def _fail(self, message: str, **data: str) -> VerificationError:
        return VerificationError(
            message, data={"reason": "bad_wheel", "wheel": self.source, **data}
        )

    def dist_path(self, name: str) -> str:
        """The archive path of ``name`` inside the dist-info directory."""
        return f"{self.dist_info}/{name}"

    def has(self, name: str) -> bool:
        return name in self.infos

    def size(self, name: str) -> int:
        return self.infos[name].file_size

    def read(self, name: str, *, limit: int = MAX_FILE_SIZE) -> bytes:
        """A member's bytes; more than ``limit`` bytes (declared or actual) is refused."""
        info = self.infos.get(name)
        if info is None:
            raise self._fail(f"{self.source} has no member {name!r}", file=name)
        if info.file_size > limit:
            raise self._fail(
                f"{self.source}: member {name!r} is {info.file_size} bytes, "
                f"over the cap of {limit}",
                file=name,
            )
        try:
            with self.zip.open(info) as f:
                data = f.read(limit + 1)
        except _ZIP_ERRORS as exc:
            raise self._fail(
                f"{self.source}: cannot read member {name!r}: {exc}", file=name
            ) from None
        if len(data) > limit:
            raise self._fail(
                f"{self.source}: member {name!r} holds more than {limit} bytes", file=name
            )
        return data

    def entry_points(self) -> dict[str, dict[str, str]]:
        path = self.dist_path("entry_points.txt")
        if path not in self.infos:
            return {}
        text = self.read(path, limit=_MAX_META_FILE).decode("utf-8", "replace")
        return parse_entry_points(text, source=f"{self.source}: {path}")
