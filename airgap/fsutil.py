"""Writing files so that nothing half-written is ever taken for finished.

The ground floor every side of airgap stands on: a reader (a person, `sha256sum -c`, the next run) sees
the old file or the new one, never half of one, even after a power cut or a full disk.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from airgap.errors import DiskFullError


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write via a temp file in the same directory and rename, with fsync before the rename and of the
    directory after it. `mode` None keeps what the umask gives a new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"{path}: no space left on the device to write it; the previous version is unchanged.",
                "Free space or choose another output directory with -o, then run the same command again.",
            ) from None
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every entry directly in `path`, then `path` itself: people pull the drive when we return."""
    for p in [*path.iterdir(), path]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
