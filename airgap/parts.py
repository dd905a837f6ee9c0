"""Files larger than the medium allows (FAT32: 4 GiB - 1; a DVD: 4.7 GB) stored as numbered parts.

`NAME.001`, `NAME.002`, ... like `split -d -a 3`, so `cat NAME.0?? > NAME` rebuilds a file by hand. Each
part has its own sha256 in SHA256SUMS and in the lock, so `verify` names the one bad part: the one DVD to
burn again. The lock keeps the whole file's size and sha256 too, checked again whenever parts are joined.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from airgap.digests import NotRegularFile, open_beneath
from airgap.errors import DiskFullError, IntegrityError
from airgap.lock import LockedArtifact, Part

BUF = 1 << 20
PART_RE = re.compile(r"\.\d{3}$")


def part_paths(art: LockedArtifact) -> list[str]:
    return [p.path for p in art.parts]


class PartsReader(io.RawIOBase):
    """Reads an artifact's parts as one stream: no joined copy on disk."""

    def __init__(self, files: list[Path]) -> None:
        self._files = files
        self._index = 0
        self._current: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._index < len(self._files):
            if self._current is None:
                self._current = open_regular(self._files[self._index])
            n = self._current.readinto(b)
            if n:
                return n
            self._current.close()
            self._current = None
            self._index += 1
        return 0

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
        super().close()


def open_regular(path: Path) -> io.BufferedReader:
    """Open a bundle file for reading only if it is a regular file itself (`digests.open_beneath`: no link
    followed, no FIFO or device opened), so a planted link or pipe is refused instead of followed."""
    try:
        fd = open_beneath(path.parent, path.name)
    except NotRegularFile as exc:
        raise IntegrityError(
            f"{path} is {exc.what}, not a file of the bundle; airgap does not follow or read it.",
            "Copy the bundle again from the original; run `airgap verify` on it first.",
        ) from None
    return io.BufferedReader(io.FileIO(fd, "rb"), buffer_size=BUF)


def source_files(bundle: Path, art: LockedArtifact) -> list[Path]:
    return [bundle / p for p in part_paths(art)] if art.parts else [bundle / art.path]


@contextmanager
def open_artifact(bundle: Path, art: LockedArtifact) -> Iterator[BinaryIO]:
    with io.BufferedReader(PartsReader(source_files(bundle, art)), buffer_size=BUF) as f:
        yield f


def wanted_sizes(art: LockedArtifact, max_size: int | None) -> list[int]:
    """The sizes of the files `art` is stored as at max_size: one (whole) or the parts'."""
    if max_size is not None and art.size > max_size:
        return [max_size] * (art.size // max_size) + ([art.size % max_size] if art.size % max_size else [])
    return [art.size]


def in_form(art: LockedArtifact, max_size: int | None) -> bool:
    sizes = wanted_sizes(art, max_size)
    return (len(sizes) == 1 and not art.parts) or (len(sizes) > 1 and [p.size for p in art.parts] == sizes)


def resplit(bundle: Path, art: LockedArtifact, max_size: int | None) -> bool:
    """Store `art` whole (max_size None or it fits) or as parts of at most max_size bytes, whatever form
    it has now. New files are written as *.tmp, checked against the whole-file sha256, then renamed; the
    old form is removed only then. Returns True when it changed. (collect's own use: a file lost to a kill
    here is fetched again; `airgap split`, with no upstream to fall back on, uses stage_resplit.)"""
    if in_form(art, max_size):
        return False
    sizes = wanted_sizes(art, max_size)
    names = [f"{art.path}.{i + 1:03d}" for i in range(len(sizes))] if len(sizes) > 1 else [art.path]
    old = source_files(bundle, art)
    new_parts = _write_form(bundle, art, names, sizes)
    for path in old:
        if path.exists() and path.name not in {Path(n).name for n in names}:
            path.unlink()
    for name in names:
        os.replace(bundle / f"{name}.tmp", bundle / name)
    remove_stale_parts(bundle, art.path, {n for n in names})
    art.parts = new_parts if len(sizes) > 1 else []
    return True


def stage_resplit(bundle: Path, art: LockedArtifact, max_size: int | None) -> list[Path] | None:
    """One step of `art` towards its form at max_size that destroys nothing: the new form is written next to
    the old one (*.tmp, checked, renamed) and `art` updated to name it; the old form's files are returned, to
    be removed only once a lock naming the new form is on disk. None when `art` is already in form.

    Parts of one size to parts of another would share names (NAME.001), so that goes through the whole
    file: the first step joins, a second one splits."""
    if in_form(art, max_size):
        return None
    sizes = wanted_sizes(art, max_size)
    if art.parts and len(sizes) > 1:
        sizes = [art.size]  # join first: the two sets of parts share names
    names = [f"{art.path}.{i + 1:03d}" for i in range(len(sizes))] if len(sizes) > 1 else [art.path]
    old = source_files(bundle, art)
    new_parts = _write_form(bundle, art, names, sizes)
    for name in names:
        os.replace(bundle / f"{name}.tmp", bundle / name)
    art.parts = new_parts if len(sizes) > 1 else []
    return old


def leftovers(bundle: Path, art: LockedArtifact) -> list[Path]:
    """Files an interrupted split or join of `art` may have left besides the form the lock names: the other
    form, stale parts, *.tmp."""
    kept = {bundle / p.path for p in art.stored_files()}
    target = bundle / art.path
    found = [c for c in target.parent.glob(target.name + ".[0-9][0-9][0-9]") if c not in kept]
    found += list(target.parent.glob(target.name + ".[0-9][0-9][0-9].tmp"))
    for extra in (target, target.with_name(target.name + ".tmp")):
        if extra not in kept and extra.exists():
            found.append(extra)
    return sorted(found)


def _write_form(bundle: Path, art: LockedArtifact, names: list[str], sizes: list[int]) -> list[Part]:
    """`art`'s bytes as NAME.tmp files of these sizes, each hashed; the whole checked against the lock."""
    whole = hashlib.sha256()
    new_parts: list[Part] = []
    try:
        with open_artifact(bundle, art) as src:
            for name, size in zip(names, sizes, strict=True):
                h = hashlib.sha256()
                tmp = bundle / f"{name}.tmp"
                with open(tmp, "wb") as out:
                    left = size
                    while left:
                        chunk = src.read(min(BUF, left))
                        if not chunk:
                            raise IntegrityError(
                                f"{art.path}: shorter than the {art.size} bytes the lock records.",
                                "Run `airgap verify` to see which file or part is damaged.",
                            )
                        h.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                        left -= len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                new_parts.append(Part(path=name, size=size, sha256=h.hexdigest()))
    except OSError as exc:
        for name in names:
            (bundle / f"{name}.tmp").unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"{bundle}: no space left while splitting {art.path}.",
                "Free space (splitting needs room for one more copy of that file) and run again.",
            ) from None
        raise
    if whole.hexdigest() != art.sha256:
        for name in names:
            (bundle / f"{name}.tmp").unlink(missing_ok=True)
        raise IntegrityError(
            f"{art.path}: its bytes no longer match the lock's sha256; nothing was changed.",
            "Run `airgap verify` to see which file or part is damaged.",
        )
    return new_parts


def remove_stale_parts(bundle: Path, path: str, keep: set[str]) -> None:
    """Parts of an earlier, finer split (NAME.004 when there are now three) must not linger."""
    target = bundle / path
    for candidate in target.parent.glob(target.name + ".[0-9][0-9][0-9]"):
        rel = candidate.relative_to(bundle).as_posix()
        if rel not in keep:
            candidate.unlink()


def roomy_dir(candidates: list[Path], need: int) -> Path:
    for c in candidates:
        if c.is_dir() and shutil.disk_usage(c).free > need:
            return c
    raise DiskFullError(
        f"no directory with {need >> 20} MiB free for a private copy of a file to install "
        f"(tried {', '.join(map(str, candidates))}).",
        "Free space on one of them and run again.",
    )
