"""The bundle on disk: lock file, SHA256SUMS, README.txt, written atomically.

A bundle must stay usable by a person with nothing but coreutils: `sha256sum -c SHA256SUMS` checks it,
README.txt explains it, and files keep the names their publishers gave them.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from airgap import __version__
from airgap.bundle_layout import LAYER_ORDER, LAYERS_DIR, LOCK_NAME, README_NAME, SUMS_NAME, TOOL_DIR
from airgap.errors import BadInputError, DiskFullError, IntegrityError

LOCK_FORMAT = 1


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory and rename: readers see the old or the new file, never
    half of one, even after a power cut (fsync before the rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"{path}: no space left on the device to write it; the previous version is unchanged.",
                "Free space or choose another output directory with -o, then run the same command again.",
            ) from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass
class LockedArtifact:
    layer: str
    name: str
    path: str
    size: int
    sha256: str
    url: str  # canonical upstream URL, credentials removed
    upstream_digest: dict[str, str] | None = None  # {"algorithm", "value", "source"} it was checked against
    upstream_digest_note: str = ""  # why there is none, when there is none
    meta: dict[str, Any] = field(default_factory=dict)  # layer facts: model commit, image config digest...
    # When the file is stored as numbered parts (--max-file-size): [{"path", "size", "sha256"}, ...]
    parts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Lock:
    name: str
    target: dict[str, Any]
    status: str = "partial"  # "complete" once every artifact is in and SHA256SUMS is written
    created: str = ""
    airgap_version: str = __version__
    format: int = LOCK_FORMAT
    skipped_layers: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    # Compatibility errors accepted with --allow-mismatch (airgap/checks.py Finding.to_dict()), so the
    # server side knows the stack was knowingly mismatched and install's preflight keeps them warnings.
    allowed_mismatches: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[LockedArtifact] = field(default_factory=list)

    def by_path(self) -> dict[str, LockedArtifact]:
        return {a.path: a for a in self.artifacts}

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=False) + "\n").encode()

    @property
    def total_size(self) -> int:
        return sum(a.size for a in self.artifacts)


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def read_lock(bundle: Path) -> Lock:
    path = bundle / LOCK_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        arts = [LockedArtifact(**a) for a in raw.pop("artifacts", [])]
        return Lock(**raw, artifacts=arts)
    except FileNotFoundError:
        raise BadInputError(
            f"{bundle}: no {LOCK_NAME} here, so this is not an airgap bundle (or its collection never started).",
            "Point at the bundle's top directory, the one holding SHA256SUMS and README.txt.",
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise BadInputError(
            f"{path}: unreadable lock file ({exc}).",
            "Run `airgap verify` on the bundle, or `sha256sum -c SHA256SUMS` in it, to see what was damaged.",
        ) from None


def write_lock(bundle: Path, lock: Lock) -> bytes:
    data = lock.to_json()
    write_atomic(bundle / LOCK_NAME, data)
    return data


# --- SHA256SUMS ----------------------------------------------------------------------------------------


def format_sums(entries: dict[str, str]) -> bytes:
    """`sha256sum` text mode lines, sorted by path so two bundles diff cleanly."""
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(entries.items())).encode()


def parse_sums(text: str, source: str = SUMS_NAME) -> dict[str, str]:
    """Path -> sha256 from a SHA256SUMS file; a malformed line is reported, not guessed at."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rest = line.partition(" ")
        if not sep or len(digest) != 64 or not rest or rest[0] not in " *":
            raise IntegrityError(
                f"{source}:{n}: not a sha256sum line: {line[:80]!r}.",
                "The file was altered or damaged on the way; copy SHA256SUMS again from the original bundle.",
            )
        out[rest[1:]] = digest.lower()
    return out


def read_sums(bundle: Path) -> dict[str, str]:
    path = bundle / SUMS_NAME
    try:
        return parse_sums(path.read_text(encoding="utf-8"), SUMS_NAME)
    except FileNotFoundError:
        if (bundle / LOCK_NAME).exists():
            raise BadInputError(
                f"{bundle}: {SUMS_NAME} is missing; the collection did not finish or the file was lost.",
                "Run `airgap collect` again into the same directory: it resumes and writes it.",
            ) from None
        raise BadInputError(
            f"{bundle}: no {SUMS_NAME} here; this is not an airgap bundle.",
            "Point at the bundle's top directory, the one holding SHA256SUMS and README.txt.",
        ) from None


def finalize(bundle: Path, lock: Lock) -> None:
    """Write README, the complete lock, then SHA256SUMS last: its presence marks a finished bundle."""
    lock.status = "complete"
    lock_bytes = write_lock(bundle, lock)
    readme = render_readme(lock).encode()
    write_atomic(bundle / README_NAME, readme)
    entries: dict[str, str] = {}
    for a in lock.artifacts:
        if a.parts:
            entries.update({p["path"]: p["sha256"] for p in a.parts})
        else:
            entries[a.path] = a.sha256
    entries[LOCK_NAME] = hashlib.sha256(lock_bytes).hexdigest()
    entries[README_NAME] = hashlib.sha256(readme).hexdigest()
    write_atomic(bundle / SUMS_NAME, format_sums(entries))


def covered_dirs() -> tuple[str, ...]:
    """Top-level directories in which every file must be listed in SHA256SUMS."""
    return (LAYERS_DIR, TOOL_DIR)


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# --- README.txt ----------------------------------------------------------------------------------------

_BY_HAND = {
    "driver": "sh {path} --silent --dkms      (needs gcc, make and the kernel headers; reboot if it "
    "blacklisted nouveau, then run it again)",
    "cuda": "sh {path} --silent --toolkit    (toolkit only; then add /usr/local/cuda/bin to PATH)",
    "docker": "tar -xzf {path} && cp docker/* /usr/bin/ && dockerd &",
    "files": "cp {path} wherever you need it",
}


def render_readme(lock: Lock) -> str:
    target = lock.target
    lines = [
        f"airgap bundle: {lock.name}",
        "=" * (15 + len(lock.name)),
        "",
        f"Made by airgap {lock.airgap_version} on {lock.created} for {target.get('os')} "
        f"{target.get('arch')} (python {target.get('python')}).",
        f"{len(lock.artifacts)} files, {human_size(lock.total_size)} in all.",
        "",
        "CHECK IT after every copy (USB drive, DVD, network share):",
        "    airgap verify .                 (names each missing, truncated, altered or extra file)",
        "    sha256sum -c SHA256SUMS         (the same check with coreutils alone)",
        "",
        "INSTALL IT on the server:",
        "    airgap install .                (every layer in order, offline)",
        "",
        "or by hand, in this order:",
    ]
    by_layer: dict[str, list[LockedArtifact]] = {}
    for a in lock.artifacts:
        by_layer.setdefault(a.layer, []).append(a)
    for layer in LAYER_ORDER:
        for a in by_layer.get(layer, []):
            how = _BY_HAND.get(layer, "see the airgap documentation for this layer").format(path=a.path)
            lines.append(f"    {layer:<8} {how}")
    if lock.skipped_layers:
        lines += ["", f"NOT IN THIS BUNDLE (skipped when collecting): {', '.join(lock.skipped_layers)}."]
    lines += ["", "CONTENTS", ""]
    width = max((len(a.path) for a in lock.artifacts), default=10)
    for a in lock.artifacts:
        checked = (
            f"checked against {a.upstream_digest['algorithm']} from {a.upstream_digest['source']}"
            if a.upstream_digest
            else "no publisher digest: sha256 recorded at download"
        )
        lines.append(f"    {a.path:<{width}}  {human_size(a.size):>10}  {checked}")
    lines += [
        "",
        f"{LOCK_NAME} lists every file with its size, sha256, source URL and the upstream digest it was",
        f"checked against. {SUMS_NAME} covers every file here, the lock included.",
        "",
    ]
    return "\n".join(lines)
