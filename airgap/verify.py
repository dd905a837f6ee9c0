"""Re-hash a bundle after transfer and name every file that is missing, truncated, altered, unexpected or
not a regular file, and say what the signature does (and does not) vouch for.

Decisions come from a `custody.Snapshot`: SHA256SUMS, its signature and the lock as read once. The bundle
tree is walked without following links (`bundle_walk`): every entry must be listed; a listed path that is
a link, FIFO, device or directory is reported and never opened. Each listed regular file is opened without
following links (`digests.BeneathOpener`) and hashed.

Hashing runs in threads: hashlib releases the GIL while it digests a buffer, so N threads use N cores.
Files are handed out biggest first so one large model file does not start last and finish alone.
Memory stays flat: each thread reuses one buffer.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from airgap.bundle_layout import LOCK_NAME, SIG_NAME, SPLIT_MARKER_NAME, SUMS_NAME
from airgap.bundle_walk import check_listing, litter_note, walk_bundle
from airgap.custody import Snapshot
from airgap.digests import BeneathOpener, NotRegularFile, hash_fd

if TYPE_CHECKING:
    from airgap.signing import PublicKey

BUF = 1 << 20
_BYTES_PER_THREAD = 64 << 20
KINDS = ("signature", "not-a-file", "missing", "truncated", "altered", "unexpected", "unreadable")


def _hint(path: str, kind: str) -> str:
    if kind == "unexpected" and path == SPLIT_MARKER_NAME:
        # Killed right at the start or the end of `airgap split`: the files are whole, the record is left.
        return "left by an interrupted `airgap split`: run the same split again, which finishes and removes it"
    return HINTS[kind]


HINTS = {
    "missing": "copy it again from the original bundle",
    "truncated": "the copy stopped early (drive removed, disk full): copy it again",
    "altered": "the bytes changed on the way (bad medium, or tampering): copy it again from the original",
    "unexpected": "not part of the bundle: remove it, or find out who put it there",
    "unreadable": "the medium failed while reading: copy it again, or try another drive",
    "signature": "do not install it: get an intact copy, signed by a trusted key, from the collecting side",
    "not-a-file": "someone replaced it on the medium: copy the real file again from the original bundle",
}


@dataclass
class Problem:
    path: str  # relative to the bundle; names found on disk are escaped so they print safely
    kind: str
    detail: str


@dataclass
class VerifyReport:
    bundle: str
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    # The signature verdict (custody.SignatureVerdict.to_dict): status valid/invalid/unchecked/unsigned.
    signature: dict[str, object] = field(default_factory=dict)
    litter: list[str] = field(default_factory=list)  # OS litter left alone (bundle_walk), never read
    notes: list[str] = field(default_factory=list)  # sentences for the reader that do not fail the check
    sha256sums_sha256: str = ""  # of the SHA256SUMS bytes the verdict was made on
    lock_sha256: str = ""  # of the lock bytes read (once), "" if they could not be read

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["ok"] = self.ok
        d["counts"] = {k: sum(1 for p in self.problems if p.kind == k) for k in KINDS}
        return d


def verify_bundle(
    snapshot: Snapshot | Path,
    jobs: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
    *,
    key: PublicKey | None = None,
    key_file: str = "",
) -> VerifyReport:
    """Check the bundle against its snapshot. `report.ok` is False when the signature is not acceptable
    (a "signature" problem) or any file has a problem.

    Given a Path (older callers: `airgap split`), the snapshot is read here with `key` as the only trusted
    key (none: an unsigned or signed bundle is judged by its sums alone, the signature "unchecked")."""
    start = time.monotonic()
    if isinstance(snapshot, Path):
        if key is not None and key_file and not key.source:
            key = replace(key, source=key_file)
        snapshot = Snapshot.read(snapshot, [key] if key is not None else [])
    bundle = snapshot.bundle
    sums = snapshot.sums
    report = VerifyReport(
        bundle=str(bundle),
        signature=snapshot.signature.to_dict(),
        sha256sums_sha256=snapshot.sums_sha256,
        lock_sha256=snapshot.lock_sha256,
    )
    if not snapshot.signature.acceptable:
        report.problems.append(Problem(SIG_NAME, "signature", f"{snapshot.signature.detail}; {HINTS['signature']}"))

    walk = walk_bundle(bundle, sums)
    findings, regular = check_listing(walk, sums)
    report.problems += [
        Problem(f.path, f.kind, f.detail if f.says_what_to_do else f"{f.detail}; {_hint(f.path, f.kind)}")
        for f in findings
    ]
    report.litter = walk.litter
    if note := litter_note(walk.litter):
        report.notes.append(note)

    todo = [(rel, entry.size) for rel, entry in regular.items() if rel != LOCK_NAME]
    # Hashing starts now, in threads; the lock (typed in its own thread since the snapshot was read) is
    # waited for only below, so its parse overlaps the hashing instead of preceding it.
    hashing = _HashJob(bundle, todo, sums, jobs, on_bytes)
    try:
        if LOCK_NAME in regular and snapshot.lock_sha256 != sums[LOCK_NAME]:
            # Judged on the bytes the snapshot read (once); a lock swapped in after that read is not looked at.
            why = snapshot.lock_problem or f"sha256 {snapshot.lock_sha256}, expected {sums[LOCK_NAME]}"
            report.problems.append(Problem(LOCK_NAME, "altered", f"{why}; {HINTS['altered']}"))
        if LOCK_NAME not in sums:
            report.problems.append(
                Problem(
                    SUMS_NAME,
                    "altered",
                    f"it does not list {LOCK_NAME}, which every airgap bundle has; {HINTS['altered']}",
                )
            )
        sizes = _check_lock_against_sums(snapshot, report)
        off_size = {
            rel: (size, sizes[rel]) for rel, size in todo if rel in sizes and size != sizes[rel]
        }  # judged after hashing
    finally:
        hashed = hashing.result()
    report.problems += _judge_sizes(hashed, off_size)
    report.files = len(sums)
    report.bytes = sum(size for _, size in todo)
    report.problems.sort(key=lambda p: (KINDS.index(p.kind), p.path))
    report.seconds = time.monotonic() - start
    return report


def _check_lock_against_sums(snapshot: Snapshot, report: VerifyReport) -> dict[str, int]:
    """Every file the lock lists must carry the same digest in SHA256SUMS (problems go to `report`); returns
    the lock's size of each, to tell a short file from an altered one. Waits for the lock's parse."""
    sizes: dict[str, int] = {}
    sums = snapshot.sums
    lock = snapshot.lock
    if lock is not None:
        for f in lock.tool_files():
            sizes[f.path] = f.size
            _agree(report, sums, f.path, f.sha256)
        for art in lock.artifacts:
            if art.in_base:
                continue
            for stored in art.stored_files():
                sizes[stored.path] = stored.size
                _agree(report, sums, stored.path, stored.sha256)
    elif snapshot.lock_error is not None:
        from airgap.lock import LockDamaged

        # The lock's bytes are the listed ones, but this airgap cannot read it: every file is still checked;
        # sizes are unknown, so a short file shows as altered rather than truncated. A newer format is this
        # airgap's limit (a note with the upgrade hint); a damaged lock makes the bundle uninstallable, so
        # it fails even when SHA256SUMS was rewritten to match it.
        if isinstance(snapshot.lock_error, LockDamaged):
            report.problems.append(Problem(LOCK_NAME, "altered", f"{snapshot.lock_error.message} {HINTS['altered']}"))
        else:
            report.notes.append(f"{LOCK_NAME}: {snapshot.lock_error.message}")
    return sizes


def _judge_sizes(hashed: list[Problem], off_size: dict[str, tuple[int, int]]) -> list[Problem]:
    """A file whose size is not the lock's: short or long if its bytes are not SHA256SUMS' either; if they
    are, the file is good and the lock's size is what changed (an edited lock, whose SHA256SUMS line was
    rewritten to match), which is said of the lock, not blamed on the file."""
    out: list[Problem] = []
    by_path = {p.path: p for p in hashed}
    for p in hashed:
        if p.path in off_size and p.kind == "altered":
            size, want = off_size[p.path]
            if size < want:
                out.append(Problem(p.path, "truncated", f"{size} of {want} bytes; {HINTS['truncated']}"))
            else:
                out.append(Problem(p.path, "altered", f"{size} bytes, expected {want}; {HINTS['altered']}"))
        else:
            out.append(p)
    for path, (size, want) in sorted(off_size.items()):
        if path not in by_path:
            out.append(
                Problem(
                    LOCK_NAME,
                    "altered",
                    f"it records {want} bytes for {path}, which has {size} and matches SHA256SUMS: the lock was "
                    f"edited; {HINTS['altered']}",
                )
            )
    return out


def _agree(report: VerifyReport, sums: dict[str, str], path: str, sha256: str) -> None:
    """The lock and SHA256SUMS must name the same digest for a file: whoever swaps a file and fixes its
    SHA256SUMS line cannot fix the lock without changing the lock's own line."""
    listed = sums.get(path)
    if listed is None:
        report.problems.append(Problem(path, "altered", "in the lock but not in SHA256SUMS"))
    elif listed != sha256:
        report.problems.append(Problem(path, "altered", "SHA256SUMS and airgap.lock.json disagree on its digest"))


class _HashJob:
    """Hash `todo` (path, size) against `sums` in threads started at once; result() waits and gives the
    problems found. Files go biggest first, and each worker takes the next file itself: one future per file
    cost more than hashing a 4 KiB file."""

    def __init__(
        self,
        bundle: Path,
        todo: list[tuple[str, int]],
        sums: dict[str, str],
        jobs: int | None,
        on_bytes: Callable[[int], None] | None,
    ) -> None:
        self._bundle = bundle
        self._sums = sums
        self._on_bytes = on_bytes
        self._items = iter(sorted(todo, key=lambda t: t[1], reverse=True))
        self._take = threading.Lock()
        # Directory fds kept for the run: a file then costs a probe, an fstat and a reopen, not a walk.
        self._opener = BeneathOpener(bundle)
        # A thread more pays only where hashing (which runs without the GIL) outweighs the Python around each
        # file: on thousands of small files two threads took twice as long as one, fighting over the GIL.
        by_size = 1 + sum(size for _, size in todo) // _BYTES_PER_THREAD
        jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo) or 1, by_size))
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="verify")
        self._running = [self._pool.submit(self._worker) for _ in range(jobs)]

    def result(self) -> list[Problem]:
        try:
            return [p for future in self._running for p in future.result()]
        finally:
            self._pool.shutdown()
            self._opener.close()

    def _worker(self) -> list[Problem]:
        buf = bytearray(BUF)  # one per thread, reused for every file it hashes
        found: list[Problem] = []
        while True:
            with self._take:
                item = next(self._items, None)
            if item is None:
                return found
            if (problem := self._check(*item, buf)) is not None:
                found.append(problem)

    def _check(self, rel: str, size: int, buf: bytearray) -> Problem | None:
        try:
            fd = self._opener.open(rel)
            try:
                actual = hash_fd(fd, "sha256", buf)
            finally:
                os.close(fd)
        except NotRegularFile as exc:
            # Replaced between the walk and this open (a local user at work): still never followed.
            where = f"lies under {exc.path}, which is" if exc.within else "is"
            return Problem(rel, "not-a-file", f"{where} {exc.what}; airgap does not open it; {HINTS['not-a-file']}")
        except FileNotFoundError:
            return Problem(rel, "missing", HINTS["missing"])
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                return Problem(rel, "not-a-file", f"replaced while being checked; {HINTS['not-a-file']}")
            return Problem(rel, "unreadable", f"{exc.strerror}; {HINTS['unreadable']}")
        finally:
            if self._on_bytes:
                self._on_bytes(size)
        if actual != self._sums[rel]:
            return Problem(rel, "altered", f"sha256 {actual}, expected {self._sums[rel]}; {HINTS['altered']}")
        return None


def write_report(report: VerifyReport, path: Path) -> None:
    """Evidence for a security officer: what was checked, when, where, by which key, and the outcome.
    The digests of SHA256SUMS and the lock are those of the bytes the verdict was made on, not a re-read."""
    import json
    import socket

    from airgap import __version__
    from airgap.fsutil import write_atomic
    from airgap.units import now_utc

    data = {
        "tool": f"airgap {__version__}",
        "checked_at": now_utc(),
        "host": socket.gethostname(),
        "bundle": str(Path(report.bundle).resolve()),
        **report.to_dict(),
    }
    data["lock_sha256"] = report.lock_sha256 or None
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())
