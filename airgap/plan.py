"""`airgap plan`: what a collection would fetch, from where, how big, checked against what; no download.

Also the compatibility verdict (airgap/compat/rules.py) and, with `--media SIZE`, whether the bundle fits the
drive that will carry it, FAT32's 4 GiB-per-file limit included.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airgap.artifacts import Artifact
from airgap.compat.rules import ERROR, Finding, check_manifest, resolved_versions
from airgap.errors import ManifestError
from airgap.layers import ResolveContext, plan_artifacts
from airgap.manifest import Manifest
from airgap.redact import redact, scrub
from airgap.sources.apt import read_status_file
from airgap.sources.http import HttpSource
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


@dataclass
class MediaVerdict:
    size: int  # bytes the drive holds
    total: int  # bytes of the bundle (known sizes)
    unknown: int  # artifacts of unknown size
    fits: bool | None  # None: the known part fits, but some sizes are unknown
    tight: bool
    fat32: bool  # whether the FAT32 limit applies
    fat32_reason: str  # "--fat32", "drive of 32 GB or less", or "" when it does not apply
    fat32_strict: bool  # --fat32 given: a too-big file is a failure, not a warning
    too_big: list[str] = field(default_factory=list)  # artifacts over 4 GiB - 1 byte

    @property
    def ok(self) -> bool:
        return self.fits is not False and not (self.fat32_strict and self.too_big)

    def lines(self) -> list[str]:
        """What `plan` says about the drive, a line each."""
        out = []
        size = f"{human_size(self.size)} ({self.size / 1e9:g} GB)"
        known = human_size(self.total) + (f" + {self.unknown} file(s) of unknown size" if self.unknown else "")
        if self.fits is False:
            out.append(
                f"media {size}: does NOT fit: the bundle is {known}, {human_size(self.total - self.size)} "
                "too much; use a bigger drive, split it with --skip LAYER, or collect twice"
            )
        elif self.fits is None:
            out.append(
                f"media {size}: the known part ({known}) fits, but sizes are missing; run plan without "
                "--no-head to know"
            )
        elif self.tight:
            out.append(
                f"media {size}: fits, but tight: {known}, {human_size(self.size - self.total)} left "
                "(file systems keep some room for themselves)"
            )
        else:
            out.append(f"media {size}: fits: {known}, {human_size(self.size - self.total)} left")
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

    @property
    def total(self) -> int:
        return sum(r.size or 0 for r in self.rows)

    @property
    def missing(self) -> list[PlanRow]:
        return [r for r in self.rows if r.status == "missing"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": not self.blocking and not self.missing and (self.media is None or self.media.ok),
            "resolved": self.resolved,
            "findings": [f.to_dict() for f in self.findings],
            "rows": [r.__dict__ for r in self.rows],
            "total_bytes": self.total,
            "unknown_size": sum(1 for r in self.rows if r.size is None),
            "media": None
            if self.media is None
            else {**{k: v for k, v in self.media.__dict__.items()}, "ok": self.media.ok, "lines": self.media.lines()},
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
) -> PlanReport:
    """The plan, with the compatibility verdict. Compatibility errors do not raise here: they are in
    `findings` and `blocking`, so the CLI shows the whole verdict before it exits 2."""
    with ResolveContext(source if head else None, target_status=target_status) as ctx:
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
    try:
        artifacts = plan_artifacts(manifest, skip, ctx)
    except ManifestError as exc:
        # A mismatch often explains why a layer cannot be planned (CUDA 11.7 with no runfile in the table):
        # report both, the mismatches first.
        raise ManifestError([f.text() for f in early if f.level == ERROR] + exc.problems) from None
    findings = check_manifest(manifest, artifacts)
    errors = [f for f in findings if f.level == ERROR]
    report = PlanReport(name=manifest.name, findings=findings, resolved=resolved_versions(manifest, artifacts))
    if allow_mismatch:
        for f in errors:
            f.accept()
    else:
        report.blocking = [f"{f.text()} (or accept it with --allow-mismatch)" for f in errors]

    def head_of(art: Artifact) -> tuple[int, int | None, str]:
        if art.size is not None or not art.urls:  # the layer already knows (hub metadata, registry manifest)
            return 200, art.size, art.urls[0] if art.urls else ""
        info = source.head(art.urls)
        return info.status, info.size, info.url

    heads = [(0, a.size, a.urls[0] if a.urls else "") for a in artifacts]
    if head and artifacts:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            heads = list(pool.map(head_of, artifacts))
    for art, (status, size, url) in zip(artifacts, heads, strict=True):
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
        if status in (404, 410):
            row_status = "missing"
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
            )
        )
    if media is not None:
        report.media = media_verdict(report.rows, media, fat32)
    return report


def media_verdict(rows: list[PlanRow], media: int, fat32: bool | None) -> MediaVerdict:
    """Whether the artifacts fit a drive of `media` bytes. `fat32`: True (--fat32: the drive is FAT32, a
    file over 4 GiB is a failure), False (--no-fat32: it is not), None (decide by size: a drive of 32 GB or
    less usually is FAT32, so a file over 4 GiB is a warning)."""
    total = sum(r.size or 0 for r in rows)
    unknown = sum(1 for r in rows if r.size is None)
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
    )
