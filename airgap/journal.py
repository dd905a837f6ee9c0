"""A collect run's state on disk while it runs: the journal, and the lock on the bundle directory.

The journal (`.airgap-journal.jsonl` in the bundle) is created before the first byte is downloaded and
gets one JSON line per finished file, appended (never rewritten), so recording a file costs the same at
the 4,000th file as at the first. Lines are fsynced in batches and at the end: a kill loses at most the
last batch, and a lost line only costs re-hashing (or, for a file no digest names, downloading) again.
Its first line of each run names the bundle and the run (pid, start time).

A directory holding a journal is a bundle in progress, whatever else it holds (`.part` files, an older
finished bundle's files): the next run resumes it. The journal is removed just before SHA256SUMS is
written, so a finished bundle never holds one.

The directory lock is an flock on the bundle directory itself: nothing to create, nothing left behind,
and the kernel drops it when the process dies, however it dies.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from airgap.bundle_layout import LOCK_NAME, README_NAME, SIG_NAME, SPLIT_MARKER_NAME, SUMS_NAME
from airgap.errors import EXIT_CHECK_FAILED, AirgapError, BadInputError
from airgap.lock import Lock, LockedArtifact

JOURNAL_NAME = ".airgap-journal.jsonl"
JOURNAL_FORMAT = 1
# Batches bound what a power cut can lose; a kill (-9 or Ctrl-C) loses nothing, the lines are written.
SYNC_EVERY = 256
SYNC_SECONDS = 1.0
# Temp files of write_atomic for the bundle's top-level files: `.airgap.lock.json.k3j2h1.tmp`.
_TOP_FILES = (LOCK_NAME, README_NAME, SUMS_NAME, SIG_NAME, JOURNAL_NAME)


@dataclass(frozen=True)
class RunInfo:
    """Who started a run: the journal's header line."""

    name: str
    pid: int
    started: str

    def describe(self) -> str:
        return f"pid {self.pid}, started {self.started}"


@dataclass
class JournalState:
    """What a journal left by an earlier run holds."""

    runs: list[RunInfo]
    entries: dict[str, LockedArtifact]  # by path, the last line for a path wins

    @property
    def name(self) -> str | None:
        return self.runs[-1].name if self.runs else None


def read_journal(bundle: Path) -> JournalState | None:
    """The journal of `bundle`, or None when there is none. A torn or damaged line (the run was killed
    while writing it) is skipped: what it named is re-hashed or fetched again."""
    try:
        data = (bundle / JOURNAL_NAME).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return JournalState([], {})
    runs: list[RunInfo] = []
    entries: dict[str, LockedArtifact] = {}
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            if "run" in raw:
                r = raw["run"]
                runs.append(RunInfo(str(r["name"]), int(r["pid"]), str(r["started"])))
            elif "artifact" in raw:
                entry = LockedArtifact.model_validate(raw["artifact"])
                entries[entry.path] = entry
        except (ValueError, TypeError, KeyError):
            continue
    return JournalState(runs, entries)


class Journal:
    """The append-only record of one run. Thread-safety is the caller's (BundleWriter holds a mutex)."""

    def __init__(self, bundle: Path, run: RunInfo) -> None:
        self.path = bundle / JOURNAL_NAME
        existed = self.path.exists()
        # O_APPEND: a line is one write at the end, whatever an earlier, killed run left there.
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
        self._unsynced = 0
        self._last_sync = time.monotonic()
        if existed:
            self._write_raw(b"\n")  # a torn last line of a killed run must not swallow this one's start
        self._write({"run": {"name": run.name, "pid": run.pid, "started": run.started, "format": JOURNAL_FORMAT}})
        self.sync()
        if not existed:
            _fsync_dir(bundle)

    def _write(self, obj: object) -> None:
        if self._fd is None:
            return
        self._write_raw(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def _write_raw(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def append(self, entry: LockedArtifact) -> None:
        self._write({"artifact": entry.model_dump(mode="json")})
        self._unsynced += 1
        if self._unsynced >= SYNC_EVERY or time.monotonic() - self._last_sync >= SYNC_SECONDS:
            self.sync()

    def sync(self) -> None:
        if self._fd is None:
            return
        os.fsync(self._fd)
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        """The run finished: the complete lock now holds everything the journal did."""
        self.close()
        self.path.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_temp_files(bundle: Path) -> list[str]:
    """Temp files a killed run left beside the bundle's top-level files (write_atomic's
    `.airgap.lock.json.XXXX.tmp`): never part of a bundle, always safe to remove."""
    removed = []
    for p in bundle.iterdir():
        n = p.name
        if n.endswith(".tmp") and any(n.startswith(f".{top}.") for top in _TOP_FILES) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(n)
    return sorted(removed)


# --- the lock on the bundle directory ------------------------------------------------------------------


class DirectoryLock:
    """An exclusive flock on the bundle directory, held for the whole run of a command that writes the
    bundle (`collect`, `split`). A second one on the same directory is refused at once (BadInputError)
    naming the holder: its pid as the kernel tells it, and for a collect its start as its journal records it.
    `command` is the name of the command taking the lock, for the advice given when it is refused."""

    def __init__(self, bundle: Path, command: str = "collect") -> None:
        self.bundle = bundle
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        try:
            fd = os.open(self.bundle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return self  # nothing to guard: the command's own check names what is wrong with the path
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return self  # a filesystem without flock (some network mounts): run unguarded, as before
            raise BadInputError(
                _held_by(self.bundle),
                "Wait for it to finish (or stop it), then run this command again"
                + ("; or choose another output with -o." if self.command == "collect" else "."),
            ) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _held_by(bundle: Path) -> str:
    """Who holds the lock on `bundle`, in a sentence: the holder's pid from /proc/locks (Linux) and its
    command from its command line; a collect's start from its journal, which only a collect keeps."""
    pid = _lock_holder(bundle)
    state = read_journal(bundle)
    run = state.runs[-1] if state and state.runs else None
    command = _command_of(pid) if pid is not None else ("collect" if run is not None else None)
    if command in _REWRITERS:
        return (
            f"{bundle}: `airgap {command}` is rewriting this bundle (pid {pid}); changing it meanwhile would "
            f"overwrite its {_REWRITERS[command]}."
        )
    if command == "collect" or pid is None:
        if run is not None and (pid is None or run.pid == pid):
            who = run.describe()
        else:
            who = "pid unknown" if pid is None else f"pid {pid}"
        return (
            f"{bundle}: another `airgap collect` is writing this bundle ({who}); two runs would overwrite each "
            "other's files."
        )
    return f"{bundle}: another process (pid {pid}) holds the lock on this bundle; it may be writing it."


def _lock_holder(bundle: Path) -> int | None:
    """The pid holding an flock on the directory `bundle`, from /proc/locks; None where that cannot be told."""
    try:
        st = os.stat(bundle)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    exact: list[int] = []
    same_inode: list[int] = []
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2203730 0 EOF"; a waiter's line has "->" where FLOCK is.
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
            if int(inode) != st.st_ino:
                continue
            same_inode.append(pid)
            if (int(major, 16), int(minor, 16)) == (os.major(st.st_dev), os.minor(st.st_dev)):
                exact.append(pid)
        except ValueError:
            continue
    # Some filesystems (overlays) show another device there than stat does: the inode alone then, if unique.
    found = exact or (same_inode if len(set(same_inode)) == 1 else [])
    return found[0] if found else None


# The commands besides collect that take the lock, and what of the bundle they rewrite.
_REWRITERS = {"split": "files and lock", "dossier": "dossier and SHA256SUMS"}


def _command_of(pid: int) -> str | None:
    """The airgap command (`collect`, `split`, `dossier`) process `pid` runs, from its command line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    for arg in argv:
        if arg.decode(errors="replace") in ("collect", *_REWRITERS):
            return arg.decode()
    return None


# --- telling an unfinished bundle from a damaged one ------------------------------------------------------


class CollectionUnfinished(AirgapError):
    """The directory is a bundle whose collection has not finished: not damage, nothing to distrust."""

    exit_code = EXIT_CHECK_FAILED


def _split_size(marker: Path) -> str | None:
    """The size the interrupted split was asked for, as typed; None when the record does not say."""
    try:
        size = json.loads(marker.read_bytes()).get("max_file_size")
    except (OSError, ValueError, AttributeError):
        return None
    return size if isinstance(size, str) and size and size.isprintable() and len(size) < 40 else None


def unfinished(bundle: Path) -> CollectionUnfinished | None:
    """The error to give instead of checking `bundle`, when it is a bundle in progress (no SHA256SUMS, and a
    journal or a lock not marked complete); None otherwise."""
    if os.path.lexists(bundle / SUMS_NAME):
        return None
    if os.path.lexists(bundle / SPLIT_MARKER_NAME):
        size = _split_size(bundle / SPLIT_MARKER_NAME) or "SIZE"
        return CollectionUnfinished(
            f"{bundle}: a split of this bundle did not finish (no {SUMS_NAME} yet): it is a bundle being split, "
            "not a damaged one.",
            f"Run the same `airgap split {shlex.quote(str(bundle))} --max-file-size {size}` again: it resumes, "
            f"checks every file and writes {SUMS_NAME}.",
        )
    in_progress = os.path.lexists(bundle / JOURNAL_NAME)
    if not in_progress and os.path.isfile(bundle / LOCK_NAME):
        try:
            in_progress = Lock.read(bundle).status != "complete"
        except AirgapError:
            in_progress = False
    if not in_progress:
        return None
    return CollectionUnfinished(
        f"{bundle}: this collection did not finish (no {SUMS_NAME} yet): it is a bundle in progress, not a "
        "damaged one.",
        "On the connected PC, run `airgap collect` again with the same manifest and -o: it resumes and "
        "finishes the bundle; then copy the finished bundle over.",
    )
