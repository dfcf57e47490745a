"""Reading and writing the package's tar.gz, defensively (no extraction here).

read_archive() never writes anything: it reads each member's header, refuses
whatever is not a plain file at an expected path (absolute or `..` names,
links, devices, duplicates, unknown names, oversize members) and only then
reads the member's bytes into memory, within fixed bounds. An archive is
hostile input until it has been verified.

>>> files = read_archive(Path("acme.tar.gz"))  # doctest: +SKIP
>>> sorted(files)[0]                            # doctest: +SKIP
'certs/ca-chain.pem'
"""

from __future__ import annotations

import gzip
import io
import posixpath
import tarfile
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from poller.identity.reasons import PollerError, Reason
from poller.onboard.members import DIRECTORIES, MEMBERS

#: Bounds: a package is a few kilobytes of PEM and JSON.
MAX_ARCHIVE_BYTES = 1 << 20
MAX_TAR_BYTES = 4 << 20  # decompressed: a gzip bomb stops here, before tarfile sees it
MAX_MEMBER_BYTES = 256 << 10
MAX_MEMBERS = 64


class PackageRefused(PollerError):
    """An onboarding package is not acceptable; `reason` says why, `detail` names the member.

    (A certificate in the package that does not prove its tenant is an
    IdentityRefused instead, with the same reasons the dialer uses.)

    >>> PackageRefused(Reason.UNSAFE_MEMBER, "../evil: path leaves the package").reason.value
    'unsafe_member'
    """

    reason: Reason

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class MemberFile:
    """One regular file of the archive (data kept out of repr: it may be a key)."""

    name: str
    mode: int
    data: bytes = field(repr=False)


def _normalise(raw: str) -> str:
    """The member's path inside the package, or PackageRefused(UNSAFE_MEMBER)."""
    if not raw or "\x00" in raw or "\\" in raw:
        raise PackageRefused(Reason.UNSAFE_MEMBER, f"{raw!r}: not a plain relative path")
    if raw.startswith("/"):
        raise PackageRefused(Reason.UNSAFE_MEMBER, f"{raw!r}: absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PackageRefused(Reason.UNSAFE_MEMBER, f"{raw!r}: path leaves the package ('..')")
    name = "/".join(parts)
    if posixpath.normpath(name or ".") != (name or "."):  # pragma: no cover - defensive
        raise PackageRefused(Reason.UNSAFE_MEMBER, f"{raw!r}: not a normal path")
    return name


def read_archive(path: Path) -> dict[str, MemberFile]:
    """Every member of the package at `path`, checked; PackageRefused otherwise.

    OSError (missing, unreadable file) is left to the caller: that is bad
    input, not a bad package.
    """
    with path.open("rb") as handle:
        blob = handle.read(MAX_ARCHIVE_BYTES + 1)
    if len(blob) > MAX_ARCHIVE_BYTES:
        raise PackageRefused(Reason.BAD_PACKAGE, f"larger than {MAX_ARCHIVE_BYTES} bytes; not an onboarding package")
    return read_archive_bytes(blob)


def read_archive_bytes(blob: bytes) -> dict[str, MemberFile]:
    """read_archive for an archive already in memory."""
    files: dict[str, MemberFile] = {}
    seen: set[str] = set()
    tar_bytes = _gunzip(blob)
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            count = 0
            while (member := tar.next()) is not None:
                count += 1
                if count > MAX_MEMBERS:
                    raise PackageRefused(Reason.BAD_PACKAGE, f"more than {MAX_MEMBERS} members")
                name = _normalise(member.name)
                if name in seen:
                    raise PackageRefused(Reason.UNSAFE_MEMBER, f"{member.name!r} appears more than once")
                seen.add(name)
                _check_type(member, name)
                if member.isdir():
                    continue
                if name not in MEMBERS:
                    raise PackageRefused(Reason.UNEXPECTED_MEMBER, f"{member.name!r} is not part of an onboarding package")
                if member.size > MAX_MEMBER_BYTES:
                    raise PackageRefused(Reason.BAD_PACKAGE, f"{name} is {member.size} bytes, more than {MAX_MEMBER_BYTES}")
                extracted = tar.extractfile(member)
                if extracted is None:  # pragma: no cover - regular files always have data
                    raise PackageRefused(Reason.BAD_PACKAGE, f"{name} has no data")
                data = extracted.read(member.size + 1)
                if len(data) != member.size:
                    raise PackageRefused(Reason.BAD_PACKAGE, f"{name} is truncated")
                files[name] = MemberFile(name=name, mode=member.mode & 0o7777, data=data)
    except PackageRefused:
        raise
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise PackageRefused(Reason.BAD_PACKAGE, f"not a readable tar archive inside the gzip ({type(exc).__name__})") from None
    missing = sorted(set(MEMBERS) - set(files))
    if missing:
        raise PackageRefused(Reason.INCOMPLETE_PACKAGE, f"missing {', '.join(missing)}")
    return files


def _gunzip(blob: bytes) -> bytes:
    """The tar inside the gzip layer(s), never more than MAX_TAR_BYTES of it."""
    out = bytearray()
    rest = blob
    try:
        while rest:
            unpack = zlib.decompressobj(wbits=31)  # gzip header and trailer required
            out += unpack.decompress(rest, MAX_TAR_BYTES + 1 - len(out))
            if len(out) > MAX_TAR_BYTES or unpack.unconsumed_tail:
                raise PackageRefused(Reason.BAD_PACKAGE, f"decompresses to more than {MAX_TAR_BYTES} bytes")
            if not unpack.eof:
                raise PackageRefused(Reason.BAD_PACKAGE, "the gzip data is truncated")
            rest = unpack.unused_data  # a further gzip member (concatenated .gz files are one file)
    except zlib.error:
        raise PackageRefused(Reason.BAD_PACKAGE, "not a gzip file") from None
    if not out:
        raise PackageRefused(Reason.BAD_PACKAGE, "empty archive")
    return bytes(out)


def _check_type(member: tarfile.TarInfo, name: str) -> None:
    if member.issym() or member.islnk():
        raise PackageRefused(Reason.UNSAFE_MEMBER, f"{member.name!r} is a link (to {member.linkname!r}); links are refused")
    if member.isdir():
        if name not in DIRECTORIES:
            raise PackageRefused(Reason.UNEXPECTED_MEMBER, f"directory {member.name!r} is not part of an onboarding package")
        return
    if not member.isreg() or member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise PackageRefused(Reason.UNSAFE_MEMBER, f"{member.name!r} is not a regular file (tar type {member.type!r})")


def write_archive(files: Mapping[str, bytes], *, mtime: float | None = None) -> bytes:
    """A tar.gz of `files` (name -> data) with the modes of MEMBERS, owned by root:root."""
    stamp = int(time.time() if mtime is None else mtime)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = MEMBERS[name]
            info.mtime = stamp
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=stamp)
