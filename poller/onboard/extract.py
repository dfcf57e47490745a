"""Unpack a verified onboarding package into a directory, and nowhere else.

Nothing is written before the whole package has been verified. The files are
then written by name from the fixed member list (never by a path taken from
the archive), into a target directory that must be new or empty and is not
a symlink, so neither a hostile member name nor a planted link can send a
write outside it. The key is written 0600.

>>> extract_package(Path("agent-001.tar.gz"), Path("/etc/serviceradar"), trust=snapshot)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

from poller.identity.reasons import PollerError
from poller.onboard.members import CERTS_DIR, MEMBERS
from poller.onboard.verify import VerifiedPackage, verify_package
from poller.pki.files import atomic_write
from poller.trust.store import TrustSnapshot


class ExtractError(PollerError, OSError):
    """The target directory cannot safely receive the package."""


def extract_package(path: Path, target: Path, *, trust: TrustSnapshot | None = None) -> VerifiedPackage:
    """Verify the package at path, then write its files under target.

    Raises PackageRefused / IdentityRefused (nothing written) or ExtractError.
    """
    verified = verify_package(path, trust=trust)
    write_verified(verified, target)
    return verified


def write_verified(verified: VerifiedPackage, target: Path) -> None:
    """Write a verified package's files under target (new or empty directory)."""
    if target.is_symlink():
        raise ExtractError(f"{target} is a symlink; refusing to extract through it")
    if target.exists():
        if not target.is_dir():
            raise ExtractError(f"{target} exists and is not a directory")
        if any(target.iterdir()):
            raise ExtractError(f"{target} is not empty; extract into a new or empty directory")
    else:
        target.mkdir(parents=True, mode=0o755)
    certs = target / CERTS_DIR
    certs.mkdir(mode=0o755)  # fails if it appeared meanwhile: never write through someone else's entry
    for name, mode in MEMBERS.items():
        destination = target.joinpath(*name.split("/"))
        if os.path.commonpath([destination.resolve(), target.resolve()]) != str(target.resolve()):  # pragma: no cover
            raise ExtractError(f"{name} would land outside {target}")
        atomic_write(destination, verified.files[name].data, mode)
