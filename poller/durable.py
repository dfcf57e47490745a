"""Durable small-file writes: a reader sees the old file or the new one, whole.

The data goes to a temporary file in the destination directory (created 0600
by mkstemp, then set to the final mode, never wider), is fsynced, and is moved
into place with os.replace; the directory is fsynced too where the file system
allows it, so the rename survives a crash.

>>> atomic_write(Path("/var/lib/poller/crl-state.json"), b"{}", 0o600)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write data to path atomically with the given permission bits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # mkstemp made it 0600; never wider than asked
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # durability of the rename; not all file systems allow it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
