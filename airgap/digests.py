"""Hashing files: one reader for every digest airgap computes over a file on disk.

hashlib releases the GIL while it digests a buffer, so callers may hash in threads; each call reuses one
buffer (or the caller's), so memory stays flat whatever the file's size.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

BUF = 1 << 20


def hash_file(path: Path, algorithm: str = "sha256", buf: bytearray | None = None) -> str:
    """Hex digest of a file's bytes with any hashlib algorithm (sha256, md5, sha512, ...)."""
    h = hashlib.new(algorithm)
    buf = buf if buf is not None else bytearray(BUF)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def sha256_file(path: Path, buf: bytearray | None = None) -> str:
    return hash_file(path, "sha256", buf)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
