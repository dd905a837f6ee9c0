"""`airgap collect`: turn a manifest into a checksummed, self-describing bundle.

The lock is rewritten (atomically) after every finished file, so an interrupted run loses nothing: the
next run skips what is already verified, resumes what is partial, and fetches the rest. SHA256SUMS is
written last; its presence marks a finished bundle.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

from airgap.artifacts import Artifact, Digest
from airgap.bundle import Lock, LockedArtifact, finalize, read_lock, write_lock
from airgap.bundle_layout import LAYERS_DIR, LOCK_NAME, PART_SUFFIX
from airgap.checks import WARNING, allowed, check_manifest, enforce
from airgap.digests import sha256_file
from airgap.errors import EXIT_INTERRUPTED, AirgapError, BadInputError, UpstreamError
from airgap.fsutil import write_atomic
from airgap.layers import LAYERS, plan_artifacts
from airgap.manifest import Manifest
from airgap.parts import PART_RE, resplit
from airgap.progress import Progress
from airgap.sources.http import Cancelled, HttpSource, redact
from airgap.units import now_utc

Warn = Callable[[str], None]


@dataclass
class CollectedFile:
    path: str
    layer: str
    size: int
    status: str  # "downloaded", "resumed" or "present" (already verified, nothing transferred)
    transferred: int


@dataclass
class CollectReport:
    bundle: str
    files: list[CollectedFile] = field(default_factory=list)
    removed_stale: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files if f.status != "in base")

    @property
    def transferred(self) -> int:
        return sum(f.transferred for f in self.files)

    @property
    def saved_by_base(self) -> int:
        """Bytes a delta bundle does not carry because its base has them."""
        return sum(f.size for f in self.files if f.status == "in base")


class CollectFailed(AirgapError):
    """Some artifacts failed; the others are in the bundle and a re-run fetches only what is missing."""

    def __init__(self, failures: list[AirgapError]) -> None:
        self.failures = failures
        self.exit_code = max(f.exit_code for f in failures)
        lines = [f"{len(failures)} artifact(s) could not be collected:"]
        lines += [f"  - {f}" for f in failures]
        super().__init__(
            "\n".join(lines),
            "Everything else is in the bundle; fix the cause and run the same command again to fetch "
            "only what is missing. The bundle has no SHA256SUMS until then.",
        )


def collect(
    manifest: Manifest,
    out: Path,
    source: HttpSource,
    jobs: int = 4,
    skip: set[str] | None = None,
    progress_mode: str = "auto",
    warn: Warn | None = None,
    allow_mismatch: bool = False,
    max_file_size: int | None = None,
    since: tuple[Lock, str] | None = None,
    tool: bool = False,
) -> CollectReport:
    started = time.monotonic()
    skip = skip or set()
    # Version mismatches first, before any network: a driver too old for the CUDA asked for is found here,
    # not on the isolated server. (ManifestError, exit 2, unless --allow-mismatch.)
    enforce(manifest, check_manifest(manifest), allow_mismatch)
    artifacts = plan_artifacts(manifest, skip, source)
    # Again with the resolved artifacts: the models layer adds each model's parameter count and dtype.
    findings = enforce(manifest, check_manifest(manifest, artifacts), allow_mismatch)
    report = CollectReport(bundle=str(out))

    def note(msg: str) -> None:
        report.warnings.append(msg)
        if warn:
            warn(msg)

    for finding in findings:
        if finding.level == WARNING:
            note(("accepted with --allow-mismatch: " if finding.allowed else "") + finding.text())

    _prepare_output(out)
    previous = _previous_lock(out)
    _resolve_published_digests(artifacts, source, note)
    report.removed_stale = _remove_stale(out, artifacts)

    lock = Lock(
        name=manifest.name,
        target=manifest.target.model_dump(mode="json"),
        created=now_utc(),
        skipped_layers=sorted(layer.name for layer in LAYERS if layer.name in skip and layer.wanted(manifest)),
        manifest=_manifest_record(manifest),
        allowed_mismatches=allowed(findings),
    )
    # airgap itself for the server first: a target python with no wheels fails now, not after 60 GB.
    lock.tool = _build_tool(out, manifest) if tool else _remove_tool(out)
    base = since[0].by_path() if since else {}
    if since:
        lock.base = {"name": since[0].name, "created": since[0].created, "lock_sha256": since[1]}
    lock_mutex = threading.Lock()

    def record(art: Artifact, url: str, size: int, sha: str, parts: list[dict[str, Any]] | None = None) -> None:
        entry = LockedArtifact(
            layer=art.layer,
            name=art.name,
            path=art.path,
            size=size,
            sha256=sha,
            url=redact(url),
            upstream_digest=_digest_record(art.expected),
            upstream_digest_note="" if art.expected else art.no_digest_reason,
            meta=art.meta,
            parts=parts or [],
        )
        with lock_mutex:
            lock.artifacts = [a for a in lock.artifacts if a.path != art.path] + [entry]
            write_lock(out, lock)

    def in_base(art: Artifact, old: LockedArtifact) -> None:
        """Delta bundles carry only what changed: reference the base's copy by its digest."""
        dest = out / art.path
        dest.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            dest.parent.rmdir()  # only when empty: a layer the delta carries nothing of leaves no directory
        entry = LockedArtifact(
            layer=art.layer,
            name=art.name,
            path=art.path,
            size=old.size,
            sha256=old.sha256,
            url=old.url,
            upstream_digest=old.upstream_digest,
            upstream_digest_note=old.upstream_digest_note,
            meta=art.meta,
            in_base=True,
        )
        with lock_mutex:
            lock.artifacts = [a for a in lock.artifacts if a.path != art.path] + [entry]
            write_lock(out, lock)
        report.files.append(CollectedFile(art.path, art.layer, old.size, "in base", 0))

    # Files already in place and verified (an earlier, possibly interrupted run) cost no transfer.
    present = _already_present(out, artifacts, previous, jobs)
    todo = []
    for art in artifacts:
        hit = present.get(art.path)
        old = base.get(art.path)
        if old is not None and (_known_unchanged(art, old) or (hit is not None and hit.sha256 == old.sha256)):
            in_base(art, old)
        elif hit is not None:
            record(art, hit.url, hit.size, hit.sha256, hit.parts)
            report.files.append(CollectedFile(art.path, art.layer, hit.size, "present", 0))
        else:
            todo.append(art)

    failures: list[AirgapError] = []
    sizes = _head_sizes(todo, source, jobs)
    total = sum(sizes.values()) if todo and all(sizes.get(a.path) for a in todo) else None
    with Progress("collect", total, mode=progress_mode) as progress:

        def fetch(art: Artifact) -> None:
            dest = out / art.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                old = base.get(art.path)
                if art.content is not None:
                    digest = sha256(art.content).hexdigest()
                    if old is not None and old.sha256 == digest:
                        in_base(art, old)
                        return
                    write_atomic(dest, art.content)
                    record(art, art.urls[0] if art.urls else "", len(art.content), digest)
                    report.files.append(CollectedFile(art.path, art.layer, len(art.content), "generated", 0))
                    return
                res = source.fetch(
                    art.urls,
                    dest,
                    what=art.path,
                    expected=art.expected,
                    on_bytes=progress.advance,
                    headers=art.headers,
                    auth=art.auth,
                )
                if old is not None and old.sha256 == res.sha256:
                    # No digest told us beforehand (e.g. a driver .run): downloaded, found unchanged, not carried.
                    in_base(art, old)
                    return
                record(art, res.url, res.size, res.sha256)
            except Cancelled:
                raise
            except AirgapError as exc:
                failures.append(exc)
                return
            status = "resumed" if res.resumed_from else "downloaded"
            report.files.append(CollectedFile(art.path, art.layer, res.size, status, res.transferred))

        pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="collect")
        try:
            futures = [pool.submit(fetch, art) for art in todo]
            for fut in futures:
                fut.result()
        except (KeyboardInterrupt, Cancelled):
            source.cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            err = AirgapError(
                "Collection interrupted; finished files are recorded and partial ones kept as *.part.",
                "Run the same command again to resume where it stopped.",
            )
            err.exit_code = EXIT_INTERRUPTED
            raise err from None
        finally:
            pool.shutdown(wait=True)

    order = {a.path: i for i, a in enumerate(artifacts)}
    lock.artifacts.sort(key=lambda a: order[a.path])
    report.files.sort(key=lambda f: order[f.path])
    if failures:
        write_lock(out, lock)
        raise CollectFailed(failures)
    # Split (or join back) files so none is larger than the medium allows; a no-op for files already right.
    for art in lock.artifacts:
        if not art.in_base and resplit(out, art, max_file_size):
            write_lock(out, lock)
    finalize(out, lock)
    report.seconds = time.monotonic() - started
    return report


def _prepare_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out}: exists and is not a directory.", "Choose another output with -o.")
    if out.is_dir() and any(out.iterdir()) and not (out / LOCK_NAME).exists():
        raise BadInputError(
            f"{out}: the directory is not empty and is not an airgap bundle; collect will not write into it.",
            "Choose a new or empty directory with -o (an existing bundle is fine: it is updated in place).",
        )
    out.mkdir(parents=True, exist_ok=True)


def _previous_lock(out: Path) -> dict[str, LockedArtifact]:
    if not (out / LOCK_NAME).exists():
        return {}
    try:
        return read_lock(out).by_path()
    except BadInputError:
        return {}  # a damaged lock only costs re-hashing: every present file is checked again


def _manifest_record(manifest: Manifest) -> dict[str, object]:
    data = manifest.model_dump(mode="json")
    data["mirrors"] = {redact(k): redact(v) for k, v in manifest.mirrors.items()}
    return data


def _digest_record(d: Digest | None) -> dict[str, str] | None:
    return None if d is None else {"algorithm": d.algorithm, "value": d.value, "source": redact(d.source)}


def _resolve_published_digests(artifacts: list[Artifact], source: HttpSource, note: Warn) -> None:
    """Look up publisher checksum lists (CUDA's md5sum.txt) once each, for files with no pinned sha256."""
    lists: dict[str, dict[str, str] | None] = {}
    for art in artifacts:
        pub = art.published
        if pub is None or art.pinned is not None:
            continue
        if pub.list_url not in lists:
            try:
                lists[pub.list_url] = _parse_checksum_list(source.get_text(pub.list_url, art.path))
            except UpstreamError as exc:
                note(
                    f"{art.path}: could not read the publisher's checksum list: {exc.message} "
                    "It will be recorded with its sha256 only; pin a sha256 in the manifest to check it."
                )
                lists[pub.list_url] = None
        table = lists[pub.list_url]
        if table is None:
            art.no_digest_reason = f"publisher checksum list {redact(pub.list_url)} could not be read"
            continue
        value = table.get(pub.file_name)
        if value is None:
            note(
                f"{art.path}: {pub.file_name} is not listed in {redact(pub.list_url)}; "
                "nothing to check it against but its own sha256."
            )
            art.no_digest_reason = f"not listed in {redact(pub.list_url)}"
            continue
        art.upstream = Digest(pub.algorithm, value, pub.list_url)


def _parse_checksum_list(text: str) -> dict[str, str]:
    """`<hex>  <name>` lines (md5sum/sha256sum style); names may carry a directory or a leading '*'."""
    table = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and all(c in "0123456789abcdefABCDEF" for c in parts[0]):
            table[parts[-1].lstrip("*").rsplit("/", 1)[-1]] = parts[0].lower()
    return table


def _remove_stale(out: Path, artifacts: list[Artifact]) -> list[str]:
    """Files an earlier manifest put in layers/ that this one no longer wants would make verify fail."""
    planned = {a.path for a in artifacts}
    keep = planned | {a.path + PART_SUFFIX for a in artifacts}
    removed = []
    root = out / LAYERS_DIR
    if not root.is_dir():
        return removed
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            rel = Path(dirpath, name).relative_to(out).as_posix()
            if PART_RE.search(rel) and rel[:-4] in planned:
                continue  # a numbered part of a planned file: resplit() decides whether it stays
            if rel not in keep:
                Path(dirpath, name).unlink()
                removed.append(rel)
        if dirpath != str(root) and not os.listdir(dirpath):
            os.rmdir(dirpath)
    return sorted(removed)


@dataclass
class _Present:
    url: str
    size: int
    sha256: str
    parts: list[dict[str, Any]] = field(default_factory=list)


def _already_present(
    out: Path, artifacts: list[Artifact], previous: dict[str, LockedArtifact], jobs: int
) -> dict[str, _Present]:
    def check(art: Artifact) -> tuple[str, _Present | None]:
        dest = out / art.path
        prev = previous.get(art.path)
        if art.content is None and prev is not None and prev.parts and not dest.exists():
            return art.path, _present_parts(out, art, prev)
        if art.content is not None or not dest.is_file():
            return art.path, None
        # What the file must hash to: a pin, or what an earlier run recorded for the same URL.
        want = art.pinned.value if art.pinned else None
        if want is None and art.upstream is not None and art.upstream.algorithm == "sha256":
            want = art.upstream.value  # e.g. a model's LFS sha256: same bytes even when its branch moved
        if want is None and prev is not None and prev.url in {redact(u) for u in art.urls}:
            want = prev.sha256
        if want is None:
            return art.path, None
        if sha256_file(dest) != want:
            return art.path, None
        url = prev.url if prev is not None else art.urls[0]
        return art.path, _Present(url, dest.stat().st_size, want)

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, os.cpu_count() or 1))) as pool:
        return {path: hit for path, hit in pool.map(check, artifacts) if hit is not None}


def _build_tool(out: Path, manifest: Manifest) -> dict[str, Any]:
    from airgap import __version__
    from airgap.install_sh import write_install_sh
    from airgap.selfinstall import DEFAULT_GLIBC, build_tool_dir

    try:
        from airgap.sources.apt import DISTROS

        glibc = DISTROS[manifest.target.os].glibc
    except (ImportError, KeyError):
        glibc = DEFAULT_GLIBC
    t = manifest.target
    files = build_tool_dir(out, t.python, t.arch, glibc=glibc)
    files.append(write_install_sh(out, __version__, t.python))
    return {
        "python": t.python,
        "arch": t.arch,
        "glibc": glibc,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
    }


def _remove_tool(out: Path) -> None:
    """--no-tool: a tool/ from an earlier run would no longer be covered by SHA256SUMS."""
    import shutil

    from airgap.bundle_layout import TOOL_DIR

    shutil.rmtree(out / TOOL_DIR, ignore_errors=True)
    (out / "install.sh").unlink(missing_ok=True)


def _known_unchanged(art: Artifact, old: LockedArtifact) -> bool:
    """Unchanged since the base, known without downloading: same pinned sha256, or the same publisher
    digest (CUDA's md5, a model file's LFS sha256 or git blob id, an image blob's digest)."""
    if art.content is not None:
        return False  # generated files are compared after they are made
    if art.pinned is not None:
        return art.pinned.algorithm == "sha256" and art.pinned.value == old.sha256
    up = art.upstream
    if up is not None and old.upstream_digest:
        return up.algorithm == old.upstream_digest.get("algorithm") and up.value == old.upstream_digest.get("value")
    return False


def _present_parts(out: Path, art: Artifact, prev: LockedArtifact) -> _Present | None:
    """An artifact an earlier run stored as parts is present when every part still hashes as recorded."""
    if art.pinned is not None and art.pinned.value != prev.sha256:
        return None
    if art.pinned is None and prev.url not in {redact(u) for u in art.urls}:
        return None
    for part in prev.parts:
        path = out / part["path"]
        if not path.is_file() or path.stat().st_size != part["size"] or sha256_file(path) != part["sha256"]:
            return None
    return _Present(prev.url, prev.size, prev.sha256, list(prev.parts))


def _head_sizes(artifacts: list[Artifact], source: HttpSource, jobs: int) -> dict[str, int]:
    """Sizes for the progress total; a HEAD that fails just leaves the total unknown."""
    if not artifacts:
        return {}

    def size_of(a: Artifact) -> tuple[str, int | None]:
        if a.content is not None:
            return a.path, len(a.content)
        if a.size is not None:
            return a.path, a.size
        return a.path, source.head(a.urls).size

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        heads = list(pool.map(size_of, artifacts))
    return {path: size for path, size in heads if size}
