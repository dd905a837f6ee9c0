"""`airgap plan`: what a collection would fetch, from where, how big, checked against what; no download.

Also the compatibility verdict (airgap/compat/rules.py) and, with `--media SIZE`, whether the bundle fits the
drive that will carry it, FAT32's 4 GiB-per-file limit included.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from airgap.artifacts import Artifact
from airgap.compat.rules import ERROR, Finding, check_manifest, resolved_versions
from airgap.compat.tables import runfile_size
from airgap.errors import AirgapError, ManifestError
from airgap.layers import ResolveContext, plan_artifacts
from airgap.layers.models import bundle_folder
from airgap.manifest import Manifest
from airgap.redact import redact, scrub
from airgap.sources.apt import read_status_file
from airgap.sources.http import HttpSource
from airgap.sources.netcause import unreachable_cause
from airgap.sources.request import host_of
from airgap.totals import Totals, planned_totals, sizes, total_text
from airgap.units import FAT32_MAX_FILE, human_size

# Drives up to 32 GB are sold (and formatted by Windows) as FAT32; bigger ones come as exFAT or NTFS.
# 32 GiB covers "32 GB" however it is counted.
FAT32_SIZED = 32 * 2**30
# Above this share of the drive a plan is "tight": file systems keep some room for themselves
# (ext4 reserves 5% for root by default, every file system its tables).
TIGHT_SHARE = 0.95


@dataclass
class PlanRow:
    layer: str
    path: str
    url: str  # canonical upstream URL
    fetch_url: str  # after mirrors
    size: int | None
    digest: str  # what the download will be checked against
    status: str = "ok"  # "ok", "unknown" (no HEAD, or HEAD failed) or "missing" (404)
    too_big_for_fat32: bool = False
    # `size` is airgap's estimate (a runfile size from airgap/compat/tables.py), not what the server said.
    size_estimated: bool = False
    # Why the size is unknown, when something went wrong: "cannot reach HOST: CAUSE", "HOST answered HTTP N".
    problem: str = ""


@dataclass
class Unreachable:
    """A host `plan` could not talk to: no size from it, and `collect` would fail the same way."""

    host: str  # host[:port] as contacted (after `mirrors:`), without credentials
    cause: str  # "connection refused", "DNS: cannot resolve ...", "TLS error: ...", "proxy error: ...", "timed out ..."
    artifacts: int = 0  # rows that needed it

    def text(self) -> str:
        return f"cannot reach {self.host}: {self.cause} ({sizes(self.artifacts)} unknown)"


@dataclass
class HeadResult:
    url: str  # the canonical URL answered for (or the first tried)
    status: int  # HTTP status; 0 when no answer came
    size: int | None
    unreachable: Unreachable | None = None


@dataclass
class MediaVerdict:
    size: int  # bytes the drive holds
    total: int  # bytes of the bundle (known sizes, estimates included)
    unknown: int  # artifacts of unknown size
    fits: bool | None  # None: cannot tell; the known part fits, but some sizes are unknown
    tight: bool
    fat32: bool  # whether the FAT32 limit applies
    fat32_reason: str  # "--fat32", "drive of 32 GB or less", or "" when it does not apply
    fat32_strict: bool  # --fat32 given: a too-big file is a failure, not a warning
    too_big: list[str] = field(default_factory=list)  # artifacts over 4 GiB - 1 byte
    estimated: int = 0  # artifacts whose size is airgap's estimate
    why_unknown: str = ""  # what would make the unknown sizes known, for the "cannot tell" line

    @property
    def ok(self) -> bool:
        return self.fits is not False and not (self.fat32_strict and self.too_big)

    def lines(self) -> list[str]:
        """What `plan` says about the drive, a line each."""
        out = []
        size = f"{human_size(self.size)} ({self.size / 1e9:g} GB)"
        known = total_text(self.total, self.unknown, self.estimated)
        by_estimate = " by estimate" if self.estimated else ""
        if self.fits is False:
            out.append(
                f"media {size}: does NOT fit: the bundle is {known}, {human_size(self.total - self.size)} "
                "too much; use a bigger drive, split it with --skip LAYER, or collect twice"
            )
        elif self.fits is None:
            # Never "fits" on a partial sum: the unknown files may be the biggest (a model is tens of GB).
            known_part = f" (the known part is {human_size(self.total)})" if self.total else ""
            out.append(
                f"media {size}: cannot tell: {sizes(self.unknown)} unknown{known_part}"
                + (f"; {self.why_unknown}" if self.why_unknown else "")
            )
        elif self.tight:
            out.append(
                f"media {size}: fits{by_estimate}, but tight: {known}, {human_size(self.size - self.total)} left "
                "(file systems keep some room for themselves)"
            )
        else:
            out.append(f"media {size}: fits{by_estimate}: {known}, {human_size(self.size - self.total)} left")
        if self.fat32 and self.too_big:
            kind = "cannot be stored" if self.fat32_strict else "cannot be stored if the drive is FAT32"
            out.append(
                f"FAT32 ({self.fat32_reason}): {len(self.too_big)} file(s) over 4 GiB {kind}: "
                f"{', '.join(p.rsplit('/', 1)[-1] for p in self.too_big)}; format the drive exFAT or ext4, "
                "or collect with --max-file-size 4G (numbered parts)"
            )
        elif self.fat32 and self.unknown:
            out.append(f"FAT32 ({self.fat32_reason}): no file known to be over 4 GiB ({self.unknown} of unknown size)")
        elif self.fat32:
            out.append(f"FAT32 ({self.fat32_reason}): every file is under 4 GiB")
        return out


@dataclass
class PlanReport:
    name: str
    rows: list[PlanRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    resolved: dict[str, str] = field(default_factory=dict)
    media: MediaVerdict | None = None
    blocking: list[str] = field(default_factory=list)  # compatibility errors, as manifest problems (exit 2)
    unreachable: list[Unreachable] = field(default_factory=list)  # hosts that did not answer (exit 3)
    # Layers whose upstream failed while resolving (an index, a registry, the hub, an apt repository), each
    # (layer, message, fix): their artifacts are not in the table (exit 3).
    layer_failures: list[tuple[str, str, str]] = field(default_factory=list)
    head: bool = True  # False with --no-head: no server was asked

    @property
    def total(self) -> int:
        """Bytes of the known sizes, estimates included: a lower bound while `unknown` is not 0."""
        return sum(r.size or 0 for r in self.rows)

    @property
    def unknown(self) -> int:
        return sum(1 for r in self.rows if r.size is None)

    @property
    def estimated(self) -> int:
        return sum(1 for r in self.rows if r.size_estimated)

    def total_text(self) -> str:
        return total_text(self.total, self.unknown, self.estimated)

    def totals(self) -> Totals:
        """The count and size in the words collect, verify and README.txt use; airgap's own tool/ is not
        known before collect builds it, and is said to be so."""
        return planned_totals([r.size for r in self.rows], self.estimated)

    @property
    def missing(self) -> list[PlanRow]:
        return [r for r in self.rows if r.status == "missing"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": not self.blocking
            and not self.missing
            and not self.unreachable
            and not self.layer_failures
            and (self.media is None or self.media.ok),
            "resolved": self.resolved,
            "findings": [f.to_dict() for f in self.findings],
            "rows": [r.__dict__ for r in self.rows],
            # The sum of the known sizes (estimates included): exact only when unknown_size is 0.
            "total_bytes": self.total,
            "total_text": self.total_text(),
            "total_is_lower_bound": self.unknown > 0,
            "totals": self.totals().to_dict(),
            "unknown_size": self.unknown,
            "estimated_size": self.estimated,
            "media": None
            if self.media is None
            else {**{k: v for k, v in self.media.__dict__.items()}, "ok": self.media.ok, "lines": self.media.lines()},
            "unreachable": [u.__dict__ | {"text": u.text()} for u in self.unreachable],
            "layer_failures": [{"layer": la, "error": m, "fix": f} for la, m, f in self.layer_failures],
            "warnings": self.warnings,
        }


def make_plan(
    manifest: Manifest,
    source: HttpSource,
    skip: set[str] | None = None,
    head: bool = True,
    jobs: int = 8,
    allow_mismatch: bool = False,
    media: int | None = None,
    fat32: bool | None = None,
    target_status: Path | None = None,
    status: Callable[[str], None] | None = None,
) -> PlanReport:
    """The plan, with the compatibility verdict. Compatibility errors do not raise here: they are in
    `findings` and `blocking`, so the CLI shows the whole verdict before it exits 2. `status` hears what
    takes a while (pip resolving the wheels) as it starts."""
    with ResolveContext(source if head else None, target_status=target_status, say=status) as ctx:
        return _make_plan(manifest, ctx, source, skip or set(), head, jobs, allow_mismatch, media, fat32)


def _make_plan(
    manifest: Manifest,
    ctx: ResolveContext,
    source: HttpSource,
    skip: set[str],
    head: bool,
    jobs: int,
    allow_mismatch: bool,
    media: int | None,
    fat32: bool | None,
) -> PlanReport:
    if ctx.target_status is not None:
        read_status_file(ctx.target_status)  # a wrong file is refused before any request
    early = check_manifest(manifest)
    failed: list[tuple[str, AirgapError]] = []
    try:
        artifacts = plan_artifacts(manifest, skip, ctx, failed)
    except ManifestError as exc:
        # A mismatch often explains why a layer cannot be planned (CUDA 11.7 with no runfile in the table):
        # report both, the mismatches first.
        raise ManifestError([f.text() for f in early if f.level == ERROR] + exc.problems) from None
    findings = check_manifest(manifest, artifacts)
    errors = [f for f in findings if f.level == ERROR]
    report = PlanReport(name=manifest.name, findings=findings, resolved=resolved_versions(manifest, artifacts))
    report.layer_failures = [(layer, exc.message, exc.hint or "") for layer, exc in failed]
    if allow_mismatch:
        for f in errors:
            f.accept()
    else:
        report.blocking = [f"{f.text()} (or accept it with --allow-mismatch)" for f in errors]

    if not head and manifest.models and "models" not in skip:
        # The models layer lists a model's files only from the hub; offline each model is one row of unknown
        # size, so the total and --media cannot leave tens of GB out silently.
        artifacts = artifacts + [
            Artifact(
                "models",
                bundle_folder(spec.repo),
                [],
                ("models", i, "repo"),
                meta={"unresolved": "the hub lists this model's files and sizes at collect time"},
            )
            for i, spec in enumerate(manifest.models)
        ]
    report.head = head
    prober = _Prober(source)
    heads = [HeadResult(a.urls[0] if a.urls else "", 0, a.size) for a in artifacts]
    if head and artifacts:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            heads = list(pool.map(prober.head, artifacts))
    for art, info in zip(artifacts, heads, strict=True):
        size, url = info.size, info.url
        if art.meta.get("unresolved"):
            digest = "resolved at collect"  # e.g. an apt closure: offline, only its roots are known
        elif art.content is not None:
            digest = "generated by airgap"
        elif art.pinned:
            digest = (
                "sha256 pinned in the manifest"
                if art.pinned.source == "manifest"
                else (f"sha256 from the {art.pinned.source}")
            )
        elif art.upstream:
            digest = f"hub {art.upstream.algorithm}" if art.layer == "models" else f"upstream {art.upstream.algorithm}"
        elif art.published:
            digest = f"publisher {art.published.algorithm} ({redact(art.published.list_url).rsplit('/', 1)[-1]})"
        else:
            digest = "none published"
            report.warnings.append(scrub(f"{art.path}: {art.no_digest_reason}"))
        row_status = "ok" if size is not None else "unknown"
        problem = ""
        if info.status in (404, 410):
            row_status = "missing"
        elif info.unreachable is not None:
            problem = f"cannot reach {info.unreachable.host}: {info.unreachable.cause}"
        elif info.status and not 200 <= info.status < 300:
            problem = f"{host_of(redact(source.resolve(url)))} answered HTTP {info.status}"
            report.warnings.append(f"{art.path}: {problem} to a HEAD; its size is unknown")
        estimated = False
        if size is None and row_status != "missing" and art.layer in ("driver", "cuda"):
            size = runfile_size(art.name)
            estimated = size is not None
        report.rows.append(
            PlanRow(
                art.layer,
                art.path,
                redact(url),
                redact(source.resolve(url)),
                size,
                digest,
                row_status,
                too_big_for_fat32=size is not None and size > FAT32_MAX_FILE,
                size_estimated=estimated,
                problem=problem,
            )
        )
    report.unreachable = prober.unreachable()
    for u in report.unreachable:
        report.warnings.append(u.text())
    if media is not None:
        report.media = media_verdict(report.rows, media, fat32)
        if report.unreachable:
            report.media.why_unknown = "make " + ", ".join(u.host for u in report.unreachable) + " reachable"
        elif not head:
            report.media.why_unknown = "run plan without --no-head to know"
    return report


def media_verdict(rows: list[PlanRow], media: int, fat32: bool | None) -> MediaVerdict:
    """Whether the artifacts fit a drive of `media` bytes. `fat32`: True (--fat32: the drive is FAT32, a
    file over 4 GiB is a failure), False (--no-fat32: it is not), None (decide by size: a drive of 32 GB or
    less usually is FAT32, so a file over 4 GiB is a warning)."""
    total = sum(r.size or 0 for r in rows)
    unknown = sum(1 for r in rows if r.size is None)
    estimated = sum(1 for r in rows if r.size_estimated)
    if total > media:
        fits: bool | None = False
    elif unknown:
        fits = None
    else:
        fits = True
    if fat32 is True:
        applies, reason = True, "--fat32"
    elif fat32 is None and media <= FAT32_SIZED:
        applies, reason = True, "a drive of 32 GB or less usually is; --no-fat32 if it is not"
    else:
        applies, reason = False, ""
    too_big = [r.path for r in rows if r.too_big_for_fat32] if applies else []
    return MediaVerdict(
        media,
        total,
        unknown,
        fits,
        fits is not False and total > media * TIGHT_SHARE,
        applies,
        reason,
        fat32 is True,
        too_big,
        estimated,
    )


class _Prober:
    """HEADs for `plan`, one attempt each (a size is only informative, and plan must not wait out backoffs),
    that keep what a failure was: a host that cannot be reached is named with the cause, and is not asked
    again in this run (a dead host would cost a timeout per artifact)."""

    def __init__(self, source: HttpSource) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._dead: dict[str, Unreachable] = {}

    def unreachable(self) -> list[Unreachable]:
        with self._lock:
            return sorted(self._dead.values(), key=lambda u: u.host)

    def head(self, art: Artifact) -> HeadResult:
        if art.size is not None or not art.urls:  # the layer already knows (hub metadata, registry manifest)
            return HeadResult(art.urls[0] if art.urls else "", 200 if art.size is not None else 0, art.size)
        last = HeadResult(art.urls[0], 0, None)
        for url in art.urls:
            fetch_url = self.source.resolve(url)
            host = host_of(redact(fetch_url))
            with self._lock:
                dead = self._dead.get(host)
                if dead is not None:
                    dead.artifacts += 1
                    return HeadResult(url, 0, None, dead)
            try:
                r = self.source.session.request("HEAD", fetch_url, timeout=self.source.timeout, allow_redirects=True)
            except requests.RequestException as exc:
                cause = unreachable_cause(exc)
                if cause is None:  # a malformed URL, a redirect loop: the host answered, or was never asked
                    return HeadResult(url, 0, None)
                with self._lock:
                    dead = self._dead.setdefault(host, Unreachable(host, cause))
                    dead.artifacts += 1
                return HeadResult(url, 0, None, dead)
            r.close()
            length = r.headers.get("Content-Length")
            size = int(length) if length and length.isdigit() and r.ok else None
            last = HeadResult(url, r.status_code, size)
            if r.status_code != 404:
                return last
        return last
