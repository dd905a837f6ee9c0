"""`airgap plan`: what a collection would fetch, from where, how big, checked against what; no download."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from airgap.artifacts import Artifact
from airgap.layers import plan_artifacts, wanted_layers
from airgap.manifest import Manifest
from airgap.sources.http import HttpSource, redact


@dataclass
class PlanRow:
    layer: str
    path: str
    url: str  # canonical upstream URL
    fetch_url: str  # after mirrors
    size: int | None
    digest: str  # what the download will be checked against
    status: str = "ok"  # "ok", "unknown" (no HEAD, or HEAD failed) or "missing" (404)


@dataclass
class PlanReport:
    name: str
    rows: list[PlanRow] = field(default_factory=list)
    pending_layers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(r.size or 0 for r in self.rows)

    @property
    def missing(self) -> list[PlanRow]:
        return [r for r in self.rows if r.status == "missing"]


def make_plan(
    manifest: Manifest, source: HttpSource, skip: set[str] | None = None, head: bool = True, jobs: int = 8
) -> PlanReport:
    skip = skip or set()
    artifacts = plan_artifacts(manifest, skip, source if head else None)
    _, pending = wanted_layers(manifest, skip)
    report = PlanReport(name=manifest.name, pending_layers=[p.name for p in pending])
    for name in report.pending_layers:
        report.warnings.append(
            f"layer {name}: in the manifest, but this version of airgap cannot collect it yet "
            f"(collect needs --skip {name})"
        )

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
        if art.pinned:
            digest = "sha256 pinned in the manifest"
        elif art.published:
            digest = f"publisher {art.published.algorithm} ({art.published.list_url.rsplit('/', 1)[-1]})"
        else:
            digest = "none published"
            report.warnings.append(f"{art.path}: {art.no_digest_reason}")
        row_status = "ok" if size is not None else "unknown"
        if status in (404, 410):
            row_status = "missing"
        report.rows.append(
            PlanRow(art.layer, art.path, redact(url), redact(source.resolve(url)), size, digest, row_status)
        )
    return report
