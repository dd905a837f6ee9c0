"""The bundle on disk: lock file, SHA256SUMS, README.txt, written atomically.

A bundle must stay usable by a person with nothing but coreutils: `sha256sum -c SHA256SUMS` checks it,
README.txt explains it, and files keep the names their publishers gave them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from airgap.bundle_layout import DOSSIER_DIR, LAYERS_DIR, LOCK_NAME, README_NAME, SIG_NAME, SUMS_NAME
from airgap.errors import BadInputError
from airgap.fsutil import fsync_dir, write_atomic
from airgap.journal import JOURNAL_NAME, Journal, read_journal
from airgap.lock import Lock, LockedArtifact
from airgap.sums import format_sums, parse_sums_bytes
from airgap.units import human_size


def load_base(
    path: Path, inventory_key: Path | None = None, warn: Callable[[str], None] | None = None
) -> tuple[Lock, str]:
    """A full bundle's lock (given the bundle directory or its lock file) and the lock file's sha256. A
    fleet inventory (`airgap fleet status --write`) gives its fleet's lock, less what some host lacks; its
    signature is checked with `inventory_key` when given."""
    if path.is_file() and path.name != LOCK_NAME and path.suffix == ".json":
        from airgap.fleet.status import read_inventory

        return read_inventory(path, inventory_key, warn)
    if inventory_key is not None:
        raise BadInputError(
            f"--since-key checks a fleet inventory's signature, and {path} is a bundle, not an inventory.",
            "Leave --since-key out (a bundle's own signature is checked by `airgap verify`).",
        )
    lock_file = path / LOCK_NAME if path.is_dir() else path
    if lock_file.name != LOCK_NAME:
        raise BadInputError(
            f"{path}: not a bundle directory or an {LOCK_NAME}.",
            "Give the old bundle's directory, or its airgap.lock.json.",
        )
    lock, digest = Lock.read_with_digest(lock_file.parent)
    if lock.base:
        raise BadInputError(
            f"{path}: is itself a delta bundle (based on '{lock.base.name}').",
            "Make deltas against a full bundle: merge the old delta with its base first.",
        )
    return lock, digest


def write_lock(bundle: Path, lock: Lock) -> bytes:
    data = lock.to_json()
    write_atomic(bundle / LOCK_NAME, data)
    return data


# --- SHA256SUMS ----------------------------------------------------------------------------------------


def read_sums(bundle: Path) -> dict[str, str]:
    """SHA256SUMS of `bundle`, parsed (one read, no link followed). Verify and install use
    `airgap.custody.Snapshot`, which also keeps the bytes and judges the signature."""
    from airgap.bundle_layout import MAX_SUMS_BYTES
    from airgap.digests import read_bundle_file

    data = read_bundle_file(bundle, SUMS_NAME, MAX_SUMS_BYTES)
    if data is None:
        if (bundle / LOCK_NAME).exists():
            raise BadInputError(
                f"{bundle}: {SUMS_NAME} is missing; the collection did not finish or the file was lost.",
                "Run `airgap collect` again into the same directory: it resumes and writes it.",
            )
        raise BadInputError(
            f"{bundle}: no {SUMS_NAME} here; this is not an airgap bundle.",
            "Point at the bundle's top directory, the one holding SHA256SUMS and README.txt.",
        )
    return parse_sums_bytes(data, SUMS_NAME)


def finalize(
    bundle: Path,
    lock: Lock,
    by_hand: Sequence[str] = (),
    journal: Journal | None = None,
    keep: Mapping[str, str] | None = None,
) -> None:
    """Write README, the complete lock, then SHA256SUMS last: its presence marks a finished bundle.
    `by_hand` are the layers' own lines for installing without airgap (`layers.by_hand_lines`). The run's
    `journal` is removed just before SHA256SUMS: the complete lock now holds all it did, and a finished
    bundle must not hold it. `keep` are verified SHA256SUMS lines of files the lock does not list that stay
    true (the dossier, when `split` only changes how files are stored)."""
    lock.status = "complete"
    lock_bytes = write_lock(bundle, lock)
    readme = render_readme(lock, by_hand).encode()
    write_atomic(bundle / README_NAME, readme)
    entries: dict[str, str] = dict(keep or {})
    for a in lock.artifacts:
        if a.in_base:
            continue  # not carried: checked in the base bundle at install time
        entries.update({f.path: f.sha256 for f in a.stored_files()})
    entries.update({f.path: f.sha256 for f in lock.tool_files()})
    entries[LOCK_NAME] = hashlib.sha256(lock_bytes).hexdigest()
    entries[README_NAME] = hashlib.sha256(readme).hexdigest()
    if journal is not None:
        journal.remove()
    write_atomic(bundle / SUMS_NAME, format_sums(entries))


# --- README.txt ----------------------------------------------------------------------------------------


def render_readme(lock: Lock, by_hand: Sequence[str] = ()) -> str:
    from airgap.totals import bundle_totals

    target = lock.target
    totals = bundle_totals(lock)
    lines = [
        f"airgap bundle: {lock.name}",
        "=" * (15 + len(lock.name)),
        "",
        f"Made by airgap {lock.airgap_version} on {lock.created} for {target.get('os')} "
        f"{target.get('arch')} (python {target.get('python')}).",
        f"In all: {totals.text()}.",
        "",
        "CHECK IT after every copy (USB drive, DVD, network share):",
        "    airgap verify .                 (names each missing, truncated, altered or extra file)",
        "    sha256sum -c SHA256SUMS         (the same check with coreutils alone)",
        "",
        "INSTALL IT on the server:",
        *(
            ["    sudo sh install.sh              (sets up airgap from tool/, then installs every layer)"]
            if lock.tool
            else []
        ),
        "    airgap install .                (every layer in order, offline)",
        "",
        "or by hand, in this order:",
    ]
    lines += [f"    {line}" for line in by_hand]
    if any(a.parts for a in lock.artifacts):
        lines += [
            "",
            "Files stored in numbered parts (NAME.001, NAME.002, ...) for the medium's file size limit:",
            "rebuild one by hand with   cat NAME.0?? > NAME   (airgap install reads the parts itself).",
        ]
    if lock.base:
        lines += [
            "",
            f"DELTA BUNDLE: carries {totals.files} of {totals.files + totals.in_base_files} files of its layers; the",
            f"rest are in the bundle '{lock.base.name}' of {lock.base.created}. Install with",
            "    airgap install . --base /path/of/that/bundle",
        ]
    if lock.skipped_layers:
        lines += ["", f"NOT IN THIS BUNDLE (skipped when collecting): {', '.join(lock.skipped_layers)}."]
    lines += ["", "CONTENTS", ""]
    tool_row = "tool/, install.sh"
    width = max([len(a.path) for a in lock.artifacts] + [len(tool_row)] * bool(totals.tool_files), default=10)
    for a in lock.artifacts:
        if a.in_base:
            lines.append(f"    {a.path:<{width}}  {human_size(a.size):>10}  in the base bundle (unchanged)")
            continue
        checked = (
            f"checked against {a.upstream_digest.algorithm} from {a.upstream_digest.source}"
            if a.upstream_digest
            else "no publisher digest: sha256 recorded at download"
        )
        lines.append(f"    {a.path:<{width}}  {human_size(a.size):>10}  {checked}")
    if totals.tool_files:
        tool_size = human_size(totals.tool_bytes or 0)
        lines.append(f"    {tool_row:<{width}}  {tool_size:>10}  airgap itself, {totals.tool_files} files")
    lines += [
        "",
        f"{LOCK_NAME} lists every file with its size, sha256, source URL and the upstream digest it was",
        f"checked against. {SUMS_NAME} covers every file here, the lock included.",
        "",
    ]
    return "\n".join(lines)


# --- writing a bundle ----------------------------------------------------------------------------------


def prepare_output(out: Path) -> bool:
    """Refuse to write into anything that is not a new, empty or earlier bundle directory (finished, or in
    progress: a journal, or a lock). Makes the directory; True when it made it."""
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out}: exists and is not a directory.", "Choose another output with -o.")
    if out.is_dir() and any(out.iterdir()) and not (out / LOCK_NAME).exists() and not (out / JOURNAL_NAME).exists():
        raise BadInputError(
            f"{out}: the directory is not empty and is not an airgap bundle; collect will not write into it.",
            "Choose a new or empty directory with -o (an existing bundle is fine: it is updated in place).",
        )
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    return made


def existing_name(out: Path) -> str | None:
    """The name of the bundle (finished or in progress) in `out`, None when there is none or it is unreadable."""
    state = read_journal(out)
    if state is not None and state.name is not None:
        return state.name
    if not (out / LOCK_NAME).exists():
        return None
    try:
        return Lock.read(out).name
    except BadInputError:
        return None


def previous_entries(out: Path) -> dict[str, LockedArtifact]:
    """What earlier (possibly interrupted) runs recorded, by path: the lock of the last finished run, then
    the journal of unfinished ones over it. A damaged lock or journal line only costs re-hashing."""
    entries: dict[str, LockedArtifact] = {}
    if (out / LOCK_NAME).exists():
        with contextlib.suppress(BadInputError):
            entries.update(Lock.read(out).by_path())
    state = read_journal(out)
    if state is not None:
        entries.update(state.entries)
    return entries


def mark_in_progress(out: Path, on_remove: Callable[[str, str], None]) -> None:
    """A run is about to change the bundle: its SHA256SUMS (and signature) go first, so a bundle half
    changed is never presented as finished (verify then says the collection did not finish, not that
    something was altered). The journal must exist before this: it is what says "in progress"."""
    for name in (SIG_NAME, SUMS_NAME):
        path = out / name
        if os.path.lexists(path):
            path.unlink()
            on_remove(name, "the bundle is being changed; it is written again when this run finishes")
    dossier = out / DOSSIER_DIR
    if dossier.is_dir() and not dossier.is_symlink():
        for entry in sorted(dossier.iterdir()):
            if entry.is_file() or entry.is_symlink():
                entry.unlink()
                on_remove(
                    f"{DOSSIER_DIR}/{entry.name}",
                    "it describes the bundle before this run; make it again with `airgap dossier`",
                )
        with contextlib.suppress(OSError):
            dossier.rmdir()
    fsync_dir(out)


class BundleWriter:
    """The bundle protocol on the collect side, in one place: each finished file is appended to the
    run's journal (so an interrupted run loses nothing, at a cost that does not grow with the bundle), and
    `finalize` writes README, the complete lock and SHA256SUMS once, at the end. Thread-safe: downloads
    finish in parallel."""

    def __init__(self, out: Path, lock: Lock, journal: Journal) -> None:
        self.out = out
        self.lock = lock
        self.journal = journal
        self._mutex = threading.Lock()
        # By path: replacing an entry is O(1), where a list search made a run of n files cost n².
        self._entries: dict[str, LockedArtifact] = {a.path: a for a in lock.artifacts}

    def record(self, entry: LockedArtifact) -> None:
        """`entry` is finished and verified: it replaces any earlier entry for its path."""
        with self._mutex:
            self._entries.pop(entry.path, None)
            self._entries[entry.path] = entry
            self.journal.append(entry)

    def save(self) -> None:
        """Make what was recorded so far durable (the journal's pending batch)."""
        with self._mutex:
            self.journal.sync()

    def order(self, paths: Sequence[str]) -> None:
        """Artifacts in plan order (parallel downloads finish in any order)."""
        rank = {p: i for i, p in enumerate(paths)}
        with self._mutex:
            self.lock.artifacts = sorted(self._entries.values(), key=lambda a: rank.get(a.path, len(rank)))

    def finalize(self, by_hand: Sequence[str] = ()) -> None:
        finalize(self.out, self.lock, by_hand, self.journal)


def remove_unlisted(
    out: Path,
    keep: set[str],
    is_part_of_kept: Callable[[str], bool],
    on_remove: Callable[[str, str], None] | None = None,
) -> list[str]:
    """Delete files under layers/ that the bundle no longer lists (an earlier manifest's), so verify does
    not fail on them; empty directories go too. Each removal is told to `on_remove` as it happens (so it
    is shown even when the run fails later); returns what was removed."""
    removed: list[str] = []
    root = out / LAYERS_DIR
    if not root.is_dir():
        return removed
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            rel = Path(dirpath, name).relative_to(out).as_posix()
            if rel in keep or is_part_of_kept(rel):
                continue
            Path(dirpath, name).unlink()
            removed.append(rel)
            if on_remove is not None:
                on_remove(rel, "no longer in the manifest")
        if dirpath != str(root) and not os.listdir(dirpath):
            os.rmdir(dirpath)
    return sorted(removed)
