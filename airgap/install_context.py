"""What a layer gets when it installs: the host, the verified bundle, and the lock that describes it.

Hash on use: the lock here is the one read once and checked against SHA256SUMS (and its signature) before
anything else happened, and no artifact is trusted by its path in the bundle after that. Whoever can write
to the bundle while root installs (a desktop-mounted drive, a user-owned copy, a share) could otherwise
swap a file between verification and use. So every byte a layer consumes is hashed on the read that
consumes it: `open_artifact` raises at the end of a stream whose bytes are not the lock's, and `artifacts`
hands out private copies, made while hashing into a root-only directory, for installers that need a real
file (a `.run`, a `.deb`, a wheel).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from airgap.digests import BUF
from airgap.errors import ChangedSinceVerify, DiskFullError, IntegrityError
from airgap.host import Host
from airgap.lock import Lock, LockedArtifact
from airgap.manifest import Manifest

T = TypeVar("T")

STAGING_CANDIDATES = ("/var/tmp", "/tmp", "/root")


@dataclass
class InstallOptions:
    move: bool = False  # models: move out of the bundle instead of copying (saves space, spends the bundle)
    model_dest: dict[str, str] = field(default_factory=dict)  # models: repo -> this server's dest (--model-dest)
    expect_gpus: int | None = None  # smoke: the GPU count this server must show (--expect-gpus)
    extra: dict[str, Any] = field(default_factory=dict)


def changed_since_verify(art: LockedArtifact, why: str) -> ChangedSinceVerify:
    return ChangedSinceVerify(
        f"{art.path} changed since the bundle was verified ({why}); it was not installed.",
        "Someone or something wrote to the bundle during the install, or the medium returns other bytes on "
        "a second read. Copy the bundle to a disk only root can write, run `airgap verify` on it, and install "
        "from there.",
    )


class CheckedReader(io.RawIOBase):
    """An artifact's bytes as one stream, hashed as they are read. Reading past the lock's size, or reaching
    the end with another size or digest, raises ChangedSinceVerify: a consumer that writes to a temporary
    name and renames only after the last read never places other bytes."""

    def __init__(self, art: LockedArtifact, raw: io.RawIOBase) -> None:
        self._art = art
        self._raw = raw
        self._hash = hashlib.sha256()
        self._seen = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            n = self._raw.readinto(b) or 0
        except IntegrityError as exc:  # a part replaced by a link, FIFO or device since verification
            raise changed_since_verify(self._art, exc.message) from None
        if n:
            self._seen += n
            if self._seen > self._art.size:
                raise changed_since_verify(self._art, f"more than the {self._art.size} bytes the lock records")
            self._hash.update(memoryview(b)[:n])
            return n
        if not self._checked:
            if self._seen != self._art.size:
                raise changed_since_verify(self._art, f"{self._seen} of {self._art.size} bytes")
            if self._hash.hexdigest() != self._art.sha256:
                raise changed_since_verify(
                    self._art, f"sha256 {self._hash.hexdigest()}, the lock says {self._art.sha256}"
                )
            self._checked = True
        return 0

    def close(self) -> None:
        # A consumer that stops early (tarfile before the end-of-archive padding) still gets its bytes
        # judged: read the rest, so a stream closed without error was the lock's, whole. (Not while an
        # exception is on its way out: it says what went wrong, and the bytes are not used.)
        try:
            if not self._checked and not self.closed and sys.exc_info()[0] is None:
                buf = bytearray(BUF)
                while self.readinto(buf):
                    pass
        finally:
            self._raw.close()
            super().close()


@dataclass
class InstallContext:
    host: Host
    bundle: Path
    lock: Lock  # read once, its digest checked against SHA256SUMS as read once: the only lock trusted
    options: InstallOptions = field(default_factory=InstallOptions)
    base: Path | None = None  # for a delta bundle: the bundle holding what it does not carry
    base_lock: Lock | None = None

    @property
    def manifest(self) -> Manifest:
        """The manifest as validated at collect time (credentials redacted), typed."""
        return self.lock.recorded_manifest()

    _staged: dict[str, Path] = field(default_factory=dict)
    _staging: Path | None = None
    _memo: dict[Hashable, Any] = field(default_factory=dict)

    def memo(self, key: Hashable, make: Callable[[], T]) -> T:
        """`make()` once per key for this install run, the same object after that: what a layer learns in
        `installed()` and needs again in `install()` (a model's file hashes) lives no longer than the run."""
        if key not in self._memo:
            self._memo[key] = make()
        value: T = self._memo[key]
        return value

    def entries(self, layer: str) -> list[LockedArtifact]:
        """The layer's lock entries, without touching their bytes."""
        return [a for a in self.lock.artifacts if a.layer == layer]

    def artifacts(self, layer: str) -> list[tuple[LockedArtifact, Path]]:
        """The layer's files: their lock entries and, for each, a private copy made while hashing it (split
        files joined on the way) in a directory only root can enter. An installer runs from that copy, so
        what it executes is what the lock lists, whatever happens to the bundle meanwhile. In a dry run,
        which reads no bytes, the paths are the bundle's."""
        return [(a, self.staged(a)) for a in self.entries(layer)]

    def staged(self, art: LockedArtifact) -> Path:
        if self.host.dry_run:
            return self.bundle / art.path
        if art.path not in self._staged:
            self._staged[art.path] = self._stage(art)
        return self._staged[art.path]

    def files(self, art: LockedArtifact) -> list[Path]:
        """Where the artifact's bytes are: its file or its parts, in this bundle or in the delta's base."""
        from airgap.parts import source_files

        if art.in_base and self.base is not None and self.base_lock is not None:
            return source_files(self.base, self.base_lock.by_path()[art.path])
        return source_files(self.bundle, art)

    def open_artifact(self, art: LockedArtifact) -> BinaryIO:
        """The artifact's bytes as one stream, straight from its parts when split, hashed as they are read:
        the last read raises ChangedSinceVerify if they are not the lock's. The caller closes it."""
        from airgap.parts import PartsReader

        return io.BufferedReader(CheckedReader(art, PartsReader(self.files(art))), buffer_size=BUF)

    def _stage(self, art: LockedArtifact) -> Path:
        if self._staging is None:
            self._staging = _staging_dir(self.host, art.size)
        # Name by position, not by the bundle's name alone: two layers may hold files of the same name.
        dest = self._staging / f"{len(self._staged):04d}-{art.name}"
        self.host.note(f"staging {art.path} in {self._staging} (hashed on the way)")
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o700)
        try:
            with self.open_artifact(art) as src, open(fd, "wb") as out:
                while chunk := src.read(BUF):
                    out.write(chunk)
        except BaseException as exc:
            dest.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno in (28, 122):  # ENOSPC, EDQUOT
                raise DiskFullError(
                    f"{self._staging} filled up while copying {art.path} for installation.",
                    "Free space in /var/tmp (or /tmp) and run the install again.",
                ) from None
            raise
        return dest

    def release_staged(self) -> None:
        """Delete the private copies made so far (after each layer: a CUDA runfile is 4 GB)."""
        for path in self._staged.values():
            path.unlink(missing_ok=True)
        self._staged.clear()

    def cleanup(self) -> None:
        self.release_staged()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None


def _staging_dir(host: Host, need: int) -> Path:
    """A fresh directory only root can enter (mkdtemp: 0700, a random name, created exclusively) on a disk
    with room for `need` bytes: what a local user cannot reach, they cannot swap."""
    from airgap.parts import roomy_dir

    candidates = [host.path(d) for d in STAGING_CANDIDATES if host.path(d).is_dir()]
    if not candidates:  # a bare --root tree (staging, tests): airgap's own state directory is root's
        own = host.path("/var/lib/airgap")
        own.mkdir(parents=True, exist_ok=True, mode=0o700)
        candidates = [own]
    where = roomy_dir(candidates, need + (64 << 20))
    return Path(tempfile.mkdtemp(prefix="airgap-staging-", dir=where))
