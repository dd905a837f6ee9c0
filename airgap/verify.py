"""Re-hash a bundle after transfer and name every file that is missing, truncated, altered or unexpected.

Hashing runs in threads: hashlib releases the GIL while it digests a buffer, so N threads use N cores.
Files are handed out biggest first so one large model file does not start last and finish alone.
Memory stays flat: each thread reuses one buffer.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from airgap.bundle import covered_dirs, read_sums
from airgap.bundle_layout import PART_SUFFIX
from airgap.digests import sha256_file
from airgap.errors import BadInputError
from airgap.lock import Lock
from airgap.signing import PublicKey, SignatureError, check_bundle_signature

BUF = 1 << 20
KINDS = ("signature", "missing", "truncated", "altered", "unexpected", "unreadable")

HINTS = {
    "missing": "copy it again from the original bundle",
    "truncated": "the copy stopped early (drive removed, disk full): copy it again",
    "altered": "the bytes changed on the way (bad medium, or tampering): copy it again from the original",
    "unexpected": "not part of the bundle: remove it, or find out who put it there",
    "unreadable": "the medium failed while reading: copy it again, or try another drive",
    "signature": "do not install it: get an intact, signed copy from the collecting side",
}


@dataclass
class Problem:
    path: str
    kind: str
    detail: str


@dataclass
class VerifyReport:
    bundle: str
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    signature: dict[str, str] | None = None  # who signed SHA256SUMS, when checked with a public key

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["ok"] = self.ok
        d["counts"] = {k: sum(1 for p in self.problems if p.kind == k) for k in KINDS}
        return d


def verify_bundle(
    bundle: Path,
    jobs: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
    key: PublicKey | None = None,
    key_file: str = "",
) -> VerifyReport:
    if not bundle.is_dir():
        raise BadInputError(f"{bundle}: no such directory.", "Give the path of the bundle's top directory.")
    start = time.monotonic()
    sums = read_sums(bundle)
    report = VerifyReport(bundle=str(bundle))
    if key is not None:
        try:
            info = check_bundle_signature(bundle, key)
            report.signature = {
                "key_id": info.key_id,
                "public_key_file": key_file,
                "trusted_comment": info.trusted_comment,
                "valid": "yes",
            }
        except SignatureError as exc:
            report.signature = {"key_id": key.key_id_hex, "public_key_file": key_file, "valid": "no"}
            report.problems.append(Problem("SHA256SUMS.sig", "signature", f"{exc.message} {exc.hint or ''}".strip()))
    sizes: dict[str, int] = {}
    try:
        lock = Lock.read(bundle)
    except BadInputError:
        # A missing or damaged lock is itself a SHA256SUMS entry that fails below; sizes are then unknown,
        # so a short file shows as altered rather than truncated.
        lock = None
    if lock is not None:
        for f in lock.tool_files():
            sizes[f.path] = f.size
        for art in lock.artifacts:
            if art.in_base:
                continue
            for stored in art.stored_files():
                sizes[stored.path] = stored.size
                listed = sums.get(stored.path)
                if listed is None:
                    report.problems.append(Problem(stored.path, "altered", "in the lock but not in SHA256SUMS"))
                elif listed != stored.sha256:
                    report.problems.append(
                        Problem(stored.path, "altered", "SHA256SUMS and airgap.lock.json disagree on its digest")
                    )

    todo: list[tuple[str, Path, int]] = []
    for rel, _digest in sums.items():
        if rel.startswith("/") or ".." in Path(rel).parts:
            report.problems.append(Problem(rel, "unexpected", "SHA256SUMS names a path outside the bundle"))
            continue
        path = bundle / rel
        try:
            st = path.stat()
        except FileNotFoundError:
            report.problems.append(Problem(rel, "missing", HINTS["missing"]))
            continue
        except OSError as exc:
            report.problems.append(Problem(rel, "unreadable", f"{exc.strerror}; {HINTS['unreadable']}"))
            continue
        want = sizes.get(rel)
        if want is not None and st.st_size < want:
            report.problems.append(Problem(rel, "truncated", f"{st.st_size} of {want} bytes; {HINTS['truncated']}"))
            continue
        if want is not None and st.st_size > want:
            report.problems.append(Problem(rel, "altered", f"{st.st_size} bytes, expected {want}; {HINTS['altered']}"))
            continue
        todo.append((rel, path, st.st_size))

    report.problems += _unexpected(bundle, set(sums))
    report.problems += _hash_all(todo, sums, jobs, on_bytes)
    report.files = len(sums)
    report.bytes = sum(size for _, _, size in todo)
    report.problems.sort(key=lambda p: (KINDS.index(p.kind), p.path))
    report.seconds = time.monotonic() - start
    return report


def _hash_all(
    todo: list[tuple[str, Path, int]],
    sums: dict[str, str],
    jobs: int | None,
    on_bytes: Callable[[int], None] | None,
) -> list[Problem]:
    todo = sorted(todo, key=lambda t: t[2], reverse=True)
    jobs = max(1, jobs or os.cpu_count() or 1)
    local = threading.local()

    def check(item: tuple[str, Path, int]) -> Problem | None:
        rel, path, size = item
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = bytearray(BUF)
        try:
            actual = sha256_file(path, buf)
        except OSError as exc:
            return Problem(rel, "unreadable", f"{exc.strerror}; {HINTS['unreadable']}")
        finally:
            if on_bytes:
                on_bytes(size)
        if actual != sums[rel]:
            return Problem(rel, "altered", f"sha256 {actual}, expected {sums[rel]}; {HINTS['altered']}")
        return None

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="verify") as pool:
        return [p for p in pool.map(check, todo) if p is not None]


def _unexpected(bundle: Path, listed: set[str]) -> list[Problem]:
    problems = []
    for top in covered_dirs():
        root = bundle / top
        if not root.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                rel = Path(dirpath, name).relative_to(bundle).as_posix()
                if rel not in listed:
                    why = (
                        "leftover of an interrupted download; re-run collect, or delete it"
                        if name.endswith(PART_SUFFIX)
                        else HINTS["unexpected"]
                    )
                    problems.append(Problem(rel, "unexpected", why))
    return problems


def write_report(report: VerifyReport, path: Path) -> None:
    """Evidence for a security officer: what was checked, when, where, by which key, and the outcome."""
    import json
    import socket

    from airgap import __version__
    from airgap.bundle_layout import LOCK_NAME, SUMS_NAME
    from airgap.fsutil import write_atomic
    from airgap.units import now_utc

    bundle = Path(report.bundle)
    sums = bundle / SUMS_NAME
    data = {
        "tool": f"airgap {__version__}",
        "checked_at": now_utc(),
        "host": socket.gethostname(),
        "bundle": str(bundle.resolve()),
        "sha256sums_sha256": hashlib.sha256(sums.read_bytes()).hexdigest() if sums.is_file() else None,
        "lock_sha256": hashlib.sha256((bundle / LOCK_NAME).read_bytes()).hexdigest()
        if (bundle / LOCK_NAME).is_file()
        else None,
        **report.to_dict(),
    }
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())
