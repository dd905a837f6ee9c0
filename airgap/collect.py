"""`airgap collect`: turn a manifest into a checksummed, self-describing bundle.

A run holds an flock on the bundle directory (a second collect into it is refused at once) and keeps a
journal there from before the first download (airgap/journal.py): each finished file is one appended
line, so an interrupted run, even one killed before any file finished, loses nothing: the next run reuses
what the journal and the last lock record once it hashes right, resumes what is partial, and fetches the
rest. A run that changes a finished bundle removes its SHA256SUMS first; the complete lock, README.txt
and SHA256SUMS are written once, at the end, SHA256SUMS last: its presence marks a finished bundle.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from airgap.artifacts import Artifact, Digest
from airgap.bundle import (
    BundleWriter,
    existing_name,
    mark_in_progress,
    prepare_output,
    previous_entries,
    remove_unlisted,
)
from airgap.bundle_layout import LOCK_NAME, PART_SUFFIX
from airgap.compat.rules import WARNING, Finding, allowed, check_manifest, enforce
from airgap.digests import sha256_bytes, sha256_file
from airgap.errors import AirgapError, BadInputError, CombinedError, Interrupted, UpstreamError
from airgap.fsutil import current_umask, write_atomic
from airgap.journal import DirectoryLock, Journal, RunInfo, clean_temp_files
from airgap.layers import LAYERS, ResolveContext, by_hand_lines, plan_artifacts, wanted_layers
from airgap.lock import BaseRecord, Lock, LockedArtifact, Part, ToolRecord, UpstreamDigest
from airgap.manifest import Manifest
from airgap.parts import PART_RE, resplit
from airgap.progress import Progress
from airgap.redact import redact, scrub, scrub_data, scrub_error
from airgap.sources.apt import read_status_file
from airgap.sources.http import Cancelled, HttpSource
from airgap.target import Target
from airgap.totals import Totals, bundle_totals
from airgap.units import now_utc

Warn = Callable[[str], None]
# (path in the bundle, why): told as each removal happens, so it is shown whether the run succeeds or not.
OnRemove = Callable[[str, str], None]


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
    removed_stale: list[str] = field(default_factory=list)  # files of layers no longer in the manifest
    removed: list[str] = field(default_factory=list)  # every removal this run made, "PATH (why)"
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Count and size of the finished bundle, airgap itself included: the numbers verify and README.txt give.
    totals: Totals | None = None

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


@dataclass(frozen=True)
class CollectOptions:
    """What one collect run was asked for (the CLI's flags), handed down whole instead of flag by flag."""

    jobs: int = 4
    skip: frozenset[str] = frozenset()
    progress_mode: str = "auto"
    allow_mismatch: bool = False
    max_file_size: int | None = None
    since: tuple[Lock, str] | None = None
    tool: bool = False
    force: bool = False
    allow_unverified: bool = False


class CollectFailed(CombinedError):
    """Some artifacts failed; the others are in the bundle and a re-run fetches only what is missing."""

    def __init__(self, failures: list[AirgapError]) -> None:
        self.failures = failures
        lines = [f"{len(failures)} artifact(s) could not be collected:"]
        lines += [f"  - {f}" for f in failures]
        super().__init__(
            "\n".join(lines),
            failures,
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
    target_status: Path | None = None,
    force: bool = False,
    on_remove: OnRemove | None = None,
    allow_unverified: bool = False,
    status: Warn | None = None,
) -> CollectReport:
    """`force`: collect into a bundle made from a manifest of another name (its files not in this manifest
    are removed). `on_remove` hears of every file removed from the bundle, as it goes. `allow_unverified`:
    collect a file whose publisher digest cannot be had, warned about and recorded, instead of stopping.
    `status` hears one line as each phase starts (resolving, tool/, checking, downloading, writing), so a
    phase that takes minutes is never a blank screen."""
    if target_status is not None:
        read_status_file(target_status)  # a wrong file is refused before any download
    # The context lives as long as the downloads: an image exported from a local daemon is served from it.
    opts = CollectOptions(
        jobs=jobs,
        skip=frozenset(skip or ()),
        progress_mode=progress_mode,
        allow_mismatch=allow_mismatch,
        max_file_size=max_file_size,
        since=since,
        tool=tool,
        force=force,
        allow_unverified=allow_unverified,
    )
    # The context lives as long as the downloads: an image exported from a local daemon is served from it.
    with ResolveContext(source, target_status=target_status, say=status) as ctx:
        return _collect(manifest, out, ctx, source, opts, warn, on_remove)


def _collect(
    manifest: Manifest,
    out: Path,
    ctx: ResolveContext,
    source: HttpSource,
    opts: CollectOptions,
    warn: Warn | None,
    on_remove: OnRemove | None,
) -> CollectReport:
    started = time.monotonic()
    # Version mismatches first, before any network: a driver too old for the CUDA asked for is found here,
    # not on the isolated server. (ManifestError, exit 2, unless --allow-mismatch.)
    enforce(manifest, check_manifest(manifest), opts.allow_mismatch)
    made = prepare_output(out)
    try:
        with DirectoryLock(out):
            return _collect_locked(manifest, out, ctx, source, opts, warn, on_remove, started)
    finally:
        if made:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when still empty: a run that failed before writing anything leaves nothing


def _collect_locked(
    manifest: Manifest,
    out: Path,
    ctx: ResolveContext,
    source: HttpSource,
    opts: CollectOptions,
    warn: Warn | None,
    on_remove: OnRemove | None,
    started: float,
) -> CollectReport:
    # Never turn one bundle into another unasked: its files not in this manifest would be deleted.
    name = existing_name(out)
    if name is not None and name != manifest.name and not opts.force:
        raise BadInputError(
            f"{out}: holds the bundle '{name}', and the manifest makes '{manifest.name}'; collecting would "
            f"replace it, removing its files that '{manifest.name}' does not list.",
            f"Choose another output with -o, or add --force to turn '{name}' into '{manifest.name}'.",
        )
    layers = [layer.name for layer in wanted_layers(manifest, set(opts.skip))]
    if layers:
        ctx.say(f"resolving {', '.join(layers)} ...")
    artifacts = plan_artifacts(manifest, set(opts.skip), ctx)
    # Again with the resolved artifacts: the models layer adds each model's parameter count and dtype.
    findings = enforce(manifest, check_manifest(manifest, artifacts), opts.allow_mismatch)
    report = CollectReport(bundle=str(out))

    def note(msg: str) -> None:
        msg = scrub(msg)  # a warning may quote an upstream's error, and that its URL
        report.warnings.append(msg)
        if warn:
            warn(msg)

    for finding in findings:
        if finding.level == WARNING:
            note(("accepted with --allow-mismatch: " if finding.allowed else "") + finding.text())

    def removed(path: str, why: str) -> None:
        report.removed.append(f"{path} ({why})")
        if on_remove is not None:
            on_remove(path, why)

    previous = previous_entries(out)
    # From here on the directory is a bundle in progress: the journal says so before anything changes.
    journal = Journal(out, RunInfo(manifest.name, os.getpid(), now_utc()))
    try:
        return _run(
            manifest, out, source, opts, started, artifacts, findings, report, note, removed, previous, journal,
            ctx.say,
        )  # fmt: skip
    finally:
        journal.close()


def _run(
    manifest: Manifest,
    out: Path,
    source: HttpSource,
    opts: CollectOptions,
    started: float,
    artifacts: list[Artifact],
    findings: list[Finding],
    report: CollectReport,
    note: Warn,
    removed: OnRemove,
    previous: dict[str, LockedArtifact],
    journal: Journal,
    say: Warn,
) -> CollectReport:
    for leftover in clean_temp_files(out):
        removed(leftover, "a temporary file an interrupted run left")
    mark_in_progress(out, removed)
    _resolve_published_digests(artifacts, source, note, opts.allow_unverified)
    planned = {a.path for a in artifacts}
    report.removed_stale = remove_unlisted(
        out,
        planned | {a.path + suffix for a in artifacts for suffix in (PART_SUFFIX, PART_SUFFIX + ".meta")},
        # a numbered part of a planned file: resplit() decides whether it stays
        lambda rel: bool(PART_RE.search(rel)) and rel[:-4] in planned,
        removed,
    )

    lock = Lock(
        name=manifest.name,
        target=manifest.target.model_dump(mode="json"),
        created=now_utc(),
        skipped_layers=sorted(layer.name for layer in LAYERS if layer.name in opts.skip and layer.wanted(manifest)),
        manifest=_manifest_record(manifest),
        allowed_mismatches=allowed(findings),
    )
    # airgap itself for the server first: a target python with no wheels fails now, not after 60 GB.
    if opts.tool:
        lock.tool = _build_tool(out, manifest, say)
    else:
        _remove_tool(out, removed)
    if opts.since:
        lock.base = BaseRecord(name=opts.since[0].name, created=opts.since[0].created, lock_sha256=opts.since[1])
    run = _Collector(
        out, BundleWriter(out, lock, journal), source, report, opts.since[0].by_path() if opts.since else {}, removed
    )

    # Files already in place and verified (an earlier, possibly interrupted run) cost no transfer.
    on_disk = sum(1 for a in artifacts if a.content is None and (out / a.path).is_file())
    if on_disk:
        say(f"checking {on_disk} files already in the bundle ...")
    present = _already_present(out, artifacts, previous, opts.jobs)
    todo = []
    for art in artifacts:
        hit = present.get(art.path)
        old = run.base.get(art.path)
        if old is not None and (_known_unchanged(art, old) or (hit is not None and hit.sha256 == old.sha256)):
            run.in_base(art, old)
        elif hit is not None:
            run.record(art, hit.url, hit.size, hit.sha256, hit.parts)
            report.files.append(CollectedFile(art.path, art.layer, hit.size, "present", 0))
        else:
            todo.append(art)
    _remove_partials_of_finished(out, artifacts, {a.path for a in todo}, removed)

    # The sizes only feed the progress total: with no progress shown, a HEAD per file is a wasted round trip.
    fetches = sum(1 for a in todo if a.content is None)
    if opts.progress_mode != "off" and any(a.content is None and a.size is None for a in todo):
        say(f"asking the size of {fetches} files ...")
    sizes = _head_sizes(todo, source, opts.jobs) if opts.progress_mode != "off" else {}
    if fetches:
        say(f"downloading {fetches} files ...")
    total = sum(sizes.values()) if todo and all(sizes.get(a.path) for a in todo) else None
    with Progress("collect", total, mode=opts.progress_mode) as progress:
        pool = ThreadPoolExecutor(max_workers=max(1, opts.jobs), thread_name_prefix="collect")
        try:
            futures = [pool.submit(run.fetch, art, progress.advance) for art in todo]
            for fut in futures:
                fut.result()
        except (KeyboardInterrupt, Cancelled):
            source.cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise Interrupted(
                "Collection interrupted; finished files are recorded and partial ones kept as *.part.",
                "Run the same command again to resume where it stopped.",
            ) from None
        finally:
            pool.shutdown(wait=True)

    order = [a.path for a in artifacts]
    run.writer.order(order)
    rank = {path: i for i, path in enumerate(order)}
    report.files.sort(key=lambda f: rank[f.path])
    if run.failures:
        run.writer.save()
        raise CollectFailed(run.failures)
    # Split (or join back) files so none is larger than the medium allows; a no-op for files already right.
    # A changed entry goes to the journal again: a run killed now finds the file in its new form.
    for entry in lock.artifacts:
        if not entry.in_base and resplit(out, entry, opts.max_file_size):
            run.writer.record(entry)
    run.writer.order(order)
    say("writing the lock and SHA256SUMS ...")
    run.writer.finalize(by_hand_lines(lock))
    report.totals = bundle_totals(lock)
    report.seconds = time.monotonic() - started
    return report


class _Collector:
    """One collect run's moving parts: where finished files are recorded (the bundle writer), the delta's
    base, and the report. `fetch` runs in worker threads; the writer serialises what they record."""

    def __init__(
        self,
        out: Path,
        writer: BundleWriter,
        source: HttpSource,
        report: CollectReport,
        base: dict[str, LockedArtifact],
        removed: OnRemove,
    ) -> None:
        self.removed = removed
        self.out = out
        self.writer = writer
        self.source = source
        self.report = report
        self.base = base
        self.failures: list[AirgapError] = []
        self._mutex = threading.Lock()

    def record(self, art: Artifact, url: str, size: int, sha: str, parts: list[Part] | None = None) -> None:
        self.writer.record(
            LockedArtifact(
                layer=art.layer,
                name=art.name,
                path=art.path,
                size=size,
                sha256=sha,
                url=redact(url),
                upstream_digest=_digest_record(art.expected),
                upstream_digest_note="" if art.expected else scrub(art.no_digest_reason),
                # A layer's facts may quote where they came from (an index URL, a mirror): nothing secret
                # may reach the lock, so every string in them goes through the same redaction.
                meta=scrub_data(art.meta),
                parts=parts or [],
            )
        )

    def in_base(self, art: Artifact, old: LockedArtifact) -> None:
        """Delta bundles carry only what changed: reference the base's copy by its digest."""
        dest = self.out / art.path
        if dest.is_file():
            dest.unlink()
            self.removed(art.path, "unchanged since the base bundle, which holds it")
        with contextlib.suppress(OSError):
            dest.parent.rmdir()  # only when empty: a layer the delta carries nothing of leaves no directory
        self.writer.record(
            LockedArtifact(
                layer=art.layer,
                name=art.name,
                path=art.path,
                size=old.size,
                sha256=old.sha256,
                # The base may come from an airgap that redacted less: its entries are redacted again.
                url=redact(old.url),
                upstream_digest=_redacted_digest(old.upstream_digest),
                upstream_digest_note=scrub(old.upstream_digest_note),
                meta=scrub_data(art.meta),
                in_base=True,
            )
        )
        self._add(CollectedFile(art.path, art.layer, old.size, "in base", 0))

    def _add(self, row: CollectedFile) -> None:
        with self._mutex:
            self.report.files.append(row)

    def fetch(self, art: Artifact, on_bytes: Callable[[int], None]) -> None:
        dest = self.out / art.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            old = self.base.get(art.path)
            if art.content is not None:
                digest = sha256_bytes(art.content)
                if old is not None and old.sha256 == digest:
                    self.in_base(art, old)
                    return
                write_atomic(dest, art.content)
                self.record(art, art.urls[0] if art.urls else "", len(art.content), digest)
                self._add(CollectedFile(art.path, art.layer, len(art.content), "generated", 0))
                return
            res = self.source.fetch_artifact(art, dest, on_bytes)
            if old is not None and old.sha256 == res.sha256:
                # No digest told us beforehand (e.g. a driver .run): downloaded, found unchanged, not carried.
                self.in_base(art, old)
                return
            self.record(art, res.url, res.size, res.sha256)
        except Cancelled:
            raise
        except AirgapError as exc:
            with self._mutex:
                self.failures.append(scrub_error(exc))
            return
        status = "resumed" if res.resumed_from else "downloaded"
        self._add(CollectedFile(art.path, art.layer, res.size, status, res.transferred))


def _manifest_record(manifest: Manifest) -> dict[str, object]:
    """The manifest for the lock, every URL in it redacted: whatever field holds one (driver/cuda/docker
    `url`, `files[].url`, `python.index_urls`, `apt.repos[].url`, `mirrors` keys and values, a direct
    reference in a requirement), today's and any added later, as every string is scrubbed. A redacted URL
    keeps scheme, host and path, so the server still validates this copy as a manifest."""
    return scrub_data(manifest.model_dump(mode="json"))


def _digest_record(d: Digest | None) -> UpstreamDigest | None:
    return None if d is None else UpstreamDigest(algorithm=d.algorithm, value=d.value, source=redact(d.source))


def _redacted_digest(d: UpstreamDigest | None) -> UpstreamDigest | None:
    return None if d is None else d.model_copy(update={"source": redact(d.source)})


def _resolve_published_digests(
    artifacts: list[Artifact], source: HttpSource, note: Warn, allow_unverified: bool = False
) -> None:
    """Look up publisher checksum lists (CUDA's md5sum.txt) once each, for files with no pinned sha256.

    A file whose publisher digest cannot be had (the list cannot be read, or does not name the file) would
    travel checked against nothing but its own sha256: that stops the collection (UpstreamError, exit 3,
    naming the list and the cause) unless `allow_unverified`, which collects it with a loud warning and
    records why in the lock."""
    lists: dict[str, dict[str, str] | str] = {}  # list URL -> its table, or why it could not be read
    unverified: list[Artifact] = []
    for art in artifacts:
        pub = art.published
        if pub is None or art.pinned is not None:
            continue
        if pub.list_url not in lists:
            try:
                lists[pub.list_url] = _parse_checksum_list(source.get_text(pub.list_url, art.path))
            except UpstreamError as exc:
                lists[pub.list_url] = scrub(exc.message).removeprefix(f"{art.path}: ").rstrip(".")
        table = lists[pub.list_url]
        if isinstance(table, str):
            why = f"the publisher's checksum list {redact(pub.list_url)} could not be read ({table})"
        elif (value := table.get(pub.file_name)) is None:
            why = f"{pub.file_name} is not listed in the publisher's checksum list {redact(pub.list_url)}"
        else:
            art.upstream = Digest(pub.algorithm, value, pub.list_url)
            continue
        if allow_unverified:
            art.no_digest_reason = f"{why}; collected unverified (--allow-unverified)"
            note(
                f"UNVERIFIED: {art.path}: {why}. Collected anyway (--allow-unverified): nothing checks these "
                "bytes but their own sha256, and the lock says so."
            )
        else:
            art.no_digest_reason = why
            unverified.append(art)
    if unverified:
        pin = [f"`{a.field[0]}.sha256:`" for a in unverified if a.layer == "cuda"]
        raise UpstreamError(
            "; ".join(f"{a.path}: {a.no_digest_reason}" for a in unverified)
            + ". Without the publisher's digest the download could be checked against nothing but its own "
            "sha256, so the collection stopped before downloading.",
            "Fix the cause and run the same command again (a mirror must carry the publisher's checksum list "
            "too)"
            + (f"; or pin the file's sha256 in the manifest ({', '.join(pin)}) from a copy you trust" if pin else "")
            + "; or add --allow-unverified to collect it unchecked (the lock records why).",
        )


def _parse_checksum_list(text: str) -> dict[str, str]:
    """`<hex>  <name>` lines (md5sum/sha256sum style); names may carry a directory or a leading '*'."""
    table = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and all(c in "0123456789abcdefABCDEF" for c in parts[0]):
            table[parts[-1].lstrip("*").rsplit("/", 1)[-1]] = parts[0].lower()
    return table


@dataclass
class _Present:
    url: str
    size: int
    sha256: str
    parts: list[Part] = field(default_factory=list)


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
        # The lock holds URLs redacted, so they are compared redacted: a signed URL whose signature changed
        # since the earlier run still names the same file. (A URL that differs only in a redacted query
        # value is taken for the same file too; a pinned sha256 tells such files apart.)
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


def _remove_partials_of_finished(out: Path, artifacts: list[Artifact], fetching: set[str], removed: OnRemove) -> None:
    """A run killed between renaming a finished download into place and removing its `NAME.part.meta`
    leaves that record beside the complete file. Nothing fetches a complete file again, so nothing else
    would ever remove it, and verify would call the finished bundle unclean: it goes now."""
    for art in artifacts:
        if art.path in fetching:
            continue
        for suffix in (PART_SUFFIX, PART_SUFFIX + ".meta"):
            rel = art.path + suffix
            if (out / rel).is_file():
                (out / rel).unlink()
                removed(rel, "a partial download left by an interrupted run; the file itself is complete")


def _build_tool(out: Path, manifest: Manifest, say: Warn) -> ToolRecord:
    from airgap.bundle_layout import TOOL_DIR
    from airgap.selfinstall.tool import build_tool, reuse_tool, tool_target

    target = Target.of(manifest)
    # Rebuilding costs a `pip download` round (20 s and more) for the very same wheels: an unchanged tool/
    # (same airgap, same python/machine/glibc, every file hashing as recorded) is kept as it is.
    extras = ["fleet"] if manifest.fleet else []
    record = reuse_tool(out, target, _previous_tool(out), extras)
    if record is not None:
        say(f"tool/ unchanged: reused ({len(record.files) - 1} files)")
        return record
    t = tool_target(target)
    say(f"building tool/ for python {t.python} {t.machine} (glibc {t.glibc}) ...")
    record = build_tool(out, target, log=say, extras=extras)
    _follow_umask(out / TOOL_DIR)
    return record


def _previous_tool(out: Path) -> ToolRecord | None:
    """What the last lock written here says tool/ holds; a missing or damaged lock means: build it."""
    with contextlib.suppress(BadInputError):
        if (out / LOCK_NAME).is_file():
            return Lock.read(out).tool
    return None


def _follow_umask(root: Path) -> None:
    """tool/ is built in a mkdtemp directory (0700): give it, and what is in it, the modes the umask gives,
    so the person at the gate can read and check what they carry."""
    if not root.is_dir():
        return
    mask = current_umask()
    os.chmod(root, 0o777 & ~mask)
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            os.chmod(os.path.join(dirpath, d), 0o777 & ~mask)
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, 0o666 & ~mask)


def _remove_tool(out: Path, removed: OnRemove) -> None:
    """--no-tool: a tool/ from an earlier run would no longer be covered by SHA256SUMS."""
    import shutil

    from airgap.bundle_layout import TOOL_DIR

    why = "--no-tool: airgap itself is left out of this bundle"
    if (out / TOOL_DIR).exists():
        shutil.rmtree(out / TOOL_DIR, ignore_errors=True)
        removed(f"{TOOL_DIR}/", why)
    if (out / "install.sh").exists():
        (out / "install.sh").unlink()
        removed("install.sh", why)


def _known_unchanged(art: Artifact, old: LockedArtifact) -> bool:
    """Unchanged since the base, known without downloading: same pinned sha256, or the same publisher
    digest (CUDA's md5, a model file's LFS sha256 or git blob id, an image blob's digest)."""
    if art.content is not None:
        return False  # generated files are compared after they are made
    if art.pinned is not None:
        return art.pinned.algorithm == "sha256" and art.pinned.value == old.sha256
    up = art.upstream
    if up is not None and old.upstream_digest:
        return up.algorithm == old.upstream_digest.algorithm and up.value == old.upstream_digest.value
    return False


def _present_parts(out: Path, art: Artifact, prev: LockedArtifact) -> _Present | None:
    """An artifact an earlier run stored as parts is present when every part still hashes as recorded."""
    if art.pinned is not None and art.pinned.value != prev.sha256:
        return None
    if art.pinned is None and prev.url not in {redact(u) for u in art.urls}:
        return None
    for part in prev.parts:
        path = out / part.path
        if not path.is_file() or path.stat().st_size != part.size or sha256_file(path) != part.sha256:
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
