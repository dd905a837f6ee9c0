"""`airgap split`: store a bundle's large files as numbered parts (or join them back), so that a kill at any
moment loses nothing and the same command finishes the job.

The bundle is verified first. Then, in this order:
1. `.airgap-split.json` is written: the digest of the verified lock, the SHA256SUMS lines of files the lock
   does not list that stay true (the dossier), and the size asked for.
2. SHA256SUMS and its signature are removed: from here the bundle is "a split in progress", and `verify`
   says so (run the split again) instead of reporting a lock that no longer matches as tampering.
3. Each file's new form is written next to its old one (NAME.tmp, checked against the lock's sha256,
   renamed), the lock naming the new form is written (its digest recorded in the marker first), and only
   then the old form's files are removed. Parts of one size to another go through the whole file.
4. README.txt and SHA256SUMS are written, then the marker removed. (Killed in between, or between steps 1
   and 2, the bundle is whole with its SHA256SUMS; verify names the marker as unexpected, and the same
   command removes it.)

A run that finds the marker resumes: the lock on disk must be one the marker records (the verified one or
one this split wrote; anything else was changed meanwhile and is refused), every file keeps the form that
lock names, leftovers of the other form and *.tmp files are removed (each one said), SHA256SUMS is
written again from the lock and the kept lines, and the bundle is verified in full before splitting on.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from airgap.bundle_layout import DOSSIER_DIR, LOCK_NAME, SIG_NAME, SPLIT_MARKER_NAME, SUMS_NAME
from airgap.errors import IntegrityError
from airgap.fsutil import fsync_dir, write_atomic
from airgap.lock import Lock, LockedArtifact

MARKER = SPLIT_MARKER_NAME

Say = Callable[[str], None]


@dataclass
class SplitMarker:
    bundle: Path
    locks: list[str]  # sha256 of every lock this split may have left on disk
    keep: dict[str, str]  # SHA256SUMS lines that stay true (the dossier's)
    size: str

    def save(self) -> None:
        data = {"kind": "airgap-split", "locks": self.locks, "keep": self.keep, "max_file_size": self.size}
        write_atomic(self.bundle / MARKER, (json.dumps(data, indent=1) + "\n").encode())

    def remove(self) -> None:
        """Once SHA256SUMS is written: the bundle is a finished one again."""
        (self.bundle / MARKER).unlink(missing_ok=True)
        fsync_dir(self.bundle)

    @classmethod
    def read(cls, bundle: Path) -> SplitMarker | None:
        path = bundle / MARKER
        if not path.is_file() or path.is_symlink():
            return None
        try:
            data = json.loads(path.read_bytes())
            locks = [str(x) for x in data["locks"]]
            keep = {str(k): str(v) for k, v in dict(data["keep"]).items()}
            return cls(bundle, locks, keep, str(data.get("max_file_size", "")))
        except (OSError, ValueError, KeyError, TypeError):
            raise IntegrityError(
                f"{path}: the record of an interrupted split is unreadable; the split cannot be resumed safely.",
                "Copy the bundle again from the original (or the last good copy).",
            ) from None


@dataclass
class SplitResult:
    changed: list[LockedArtifact] = field(default_factory=list)
    signature_removed: bool = False
    resumed: bool = False


def resume(bundle: Path, say: Say) -> bool:
    """Finish the cleanup of an interrupted split, leaving a bundle with SHA256SUMS that the caller then
    verifies in full. False when there was nothing to resume."""
    from airgap.bundle import finalize
    from airgap.layers import by_hand_lines
    from airgap.parts import leftovers

    marker = SplitMarker.read(bundle)
    if marker is None:
        return False
    if (bundle / SUMS_NAME).exists():
        # Killed before SHA256SUMS was removed: the bundle is still the verified one.
        marker.remove()
        return True
    lock_bytes = (bundle / LOCK_NAME).read_bytes()
    if hashlib.sha256(lock_bytes).hexdigest() not in marker.locks:
        raise IntegrityError(
            f"{bundle}: an interrupted split is to be resumed, and {LOCK_NAME} is neither the verified lock nor "
            "one the split wrote: the bundle was changed meanwhile.",
            "Copy the bundle again from the original (or the last good copy); do not use this one.",
        )
    lock = Lock.parse(lock_bytes, str(bundle / LOCK_NAME))
    real = os.path.realpath(bundle)
    for art in lock.artifacts:
        if art.in_base:
            continue
        where = os.path.dirname(art.path)
        if os.path.realpath(bundle / where) != os.path.join(real, where).rstrip(os.sep):
            # Leftovers are removed by name: through a directory swapped for a link, that could be anyone's file.
            raise IntegrityError(
                f"{bundle}: resuming an interrupted split, {where}/ is a link or lies outside the bundle; "
                "nothing was removed.",
                "Copy the bundle again from the original (or the last good copy); do not use this one.",
            )
        missing = [p.path for p in art.stored_files() if not (bundle / p.path).is_file()]
        if missing:
            raise IntegrityError(
                f"{bundle}: resuming an interrupted split, {', '.join(missing)} (named by the lock) is missing.",
                "Copy the bundle again from the original (or the last good copy).",
            )
        for extra in leftovers(bundle, art):
            extra.unlink()
            say(f"removed {extra.relative_to(bundle)}: left by the interrupted split")
    say(f"resuming an interrupted split of {bundle}: writing {SUMS_NAME} again from the lock")
    finalize(bundle, lock, by_hand_lines(lock), keep=marker.keep)
    marker.remove()
    return True


def split_bundle(bundle: Path, limit: int | None, size_text: str, say: Say) -> SplitResult:
    """Split (or join) every artifact of `bundle` to `limit`. The caller holds the bundle's DirectoryLock."""
    from airgap.bundle import finalize, write_lock
    from airgap.custody import Snapshot
    from airgap.layers import by_hand_lines
    from airgap.parts import in_form, stage_resplit
    from airgap.verify import verify_bundle

    result = SplitResult(resumed=resume(bundle, say))
    snapshot = Snapshot.read(bundle, [])
    report = verify_bundle(snapshot)
    if not report.ok:
        raise IntegrityError(
            f"{bundle}: fails verification ({len(report.problems)} problem(s)); not splitting it.",
            "Run `airgap verify` and repair the bundle first.",
        )
    lock = snapshot.require_lock()
    if all(a.in_base or in_form(a, limit) for a in lock.artifacts):
        return result
    # The dossier describes the artifacts, which a split leaves as they were: its verified lines stay.
    keep = {k: v for k, v in snapshot.sums.items() if k.startswith(f"{DOSSIER_DIR}/")}
    marker = SplitMarker(bundle, [snapshot.lock_sha256], keep, size_text)
    marker.save()
    for name in (SIG_NAME, SUMS_NAME):
        if (bundle / name).exists():
            (bundle / name).unlink()
            result.signature_removed |= name == SIG_NAME
    fsync_dir(bundle)
    changed: dict[str, LockedArtifact] = {}
    while True:
        old_files: list[Path] = []
        for art in lock.artifacts:
            if art.in_base:
                continue
            old = stage_resplit(bundle, art, limit)
            if old is not None:
                old_files += old
                changed[art.path] = art
        if not old_files:
            break
        for path in {p.parent for p in old_files}:
            fsync_dir(path)
        lock.status = "complete"
        marker.locks.append(hashlib.sha256(lock.to_json()).hexdigest())
        marker.save()
        write_lock(bundle, lock)
        for path in old_files:
            path.unlink(missing_ok=True)
    finalize(bundle, lock, by_hand_lines(lock), keep=keep)
    marker.remove()  # after SHA256SUMS: a kill between leaves a finished bundle and a marker resume() removes
    result.changed = list(changed.values())
    return result
