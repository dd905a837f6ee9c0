"""Known vulnerabilities from an OSV-format export: the per-ecosystem archives OSV publishes
(`<ecosystem>/all.zip`: one JSON advisory per file), a directory of such files, or a zip of them.

Matching follows the OSV schema: an advisory affects a package version when the version is listed in
`affected[].versions`, or falls in a range of type ECOSYSTEM or SEMVER (events `introduced`, `fixed`,
`last_affected`, evaluated in order). Versions compare as their ecosystem does: PEP 440 for PyPI, dpkg's
rules for Debian and Ubuntu. GIT ranges need the source history and are not evaluated (said so)."""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airgap.errors import BadInputError

MAX_ADVISORY = 16 << 20


@dataclass
class Target:
    """One thing to match: a wheel, a .deb, or a package inside an image."""

    ecosystem: str  # "PyPI" or "Debian" (Debian also matches Ubuntu's advisories when the image is Ubuntu)
    name: str
    version: str
    where: str  # the bundle path or "image REF"
    names: tuple[str, ...] = ()  # other names advisories may use (a deb's source package)
    os_id: str = ""  # "debian" / "ubuntu" for image packages; "" for .debs in the bundle (both are tried)


@dataclass
class Finding:
    id: str
    ecosystem: str
    package: str
    version: str
    where: str
    summary: str
    aliases: list[str]
    fixed: list[str]

    def key(self) -> str:
        return f"{self.id}|{self.ecosystem}|{self.package}|{self.where}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ecosystem": self.ecosystem,
            "package": self.package,
            "version": self.version,
            "where": self.where,
            "summary": self.summary,
            "aliases": self.aliases,
            "fixed": self.fixed,
        }


@dataclass
class Export:
    source: str
    advisories: list[dict[str, Any]] = field(default_factory=list)
    date: str = ""  # the newest `modified` of its advisories (what the export is as recent as)
    file_date: str = ""  # the newest file time in it
    ecosystems: set[str] = field(default_factory=set)  # the base ecosystems it holds ("PyPI", "Debian", ...)
    unreadable: list[str] = field(default_factory=list)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_export(path: Path) -> Export:
    """Every advisory of the export at `path` (a directory, searched recursively, or a zip)."""
    exp = Export(str(path))
    docs: list[tuple[str, bytes]] = []
    newest = 0.0
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.suffix == ".zip" and p.is_file():
                sub = load_export(p)
                exp.advisories += sub.advisories
                exp.unreadable += sub.unreadable
                newest = max(newest, p.stat().st_mtime)
            elif p.suffix == ".json" and p.is_file() and p.stat().st_size <= MAX_ADVISORY:
                docs.append((str(p.relative_to(path)), p.read_bytes()))
                newest = max(newest, p.stat().st_mtime)
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename.endswith(".json") and info.file_size <= MAX_ADVISORY:
                    docs.append((info.filename, z.read(info)))
                    newest = max(newest, datetime(*info.date_time, tzinfo=timezone.utc).timestamp())
    elif path.is_file() and path.suffix == ".json":
        docs.append((path.name, path.read_bytes()))
        newest = path.stat().st_mtime
    else:
        raise BadInputError(
            f"{path}: not an OSV export (a directory of OSV .json files, or a zip of them such as OSV's "
            "<ecosystem>/all.zip).",
            "Download e.g. https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip on the connected PC "
            "and pass that file (or a directory holding several) with --osv.",
        )
    for name, data in docs:
        try:
            doc = json.loads(data)
        except ValueError:
            exp.unreadable.append(name)
            continue
        if isinstance(doc, dict) and "id" in doc:
            exp.advisories.append(doc)
    if newest:
        exp.file_date = _iso(newest)
    mods = [str(a.get("modified", "")) for a in exp.advisories if a.get("modified")]
    exp.date = max(mods) if mods else ""
    for a in exp.advisories:
        for aff in a.get("affected") or []:
            eco = str((aff.get("package") or {}).get("ecosystem", ""))
            if eco:
                exp.ecosystems.add(eco.split(":", 1)[0])
    return exp


# --- versions -------------------------------------------------------------------------------------------


def _pypi_cmp(a: str, b: str) -> int:
    from packaging.version import InvalidVersion, Version

    try:
        va, vb = Version(a), Version(b)
    except InvalidVersion:
        return (a > b) - (a < b)
    return (va > vb) - (va < vb)


def _deb_cmp(a: str, b: str) -> int:
    from debian.debian_support import version_compare

    return int(version_compare(a, b))


def _semver_cmp(a: str, b: str) -> int:
    def key(v: str) -> list[int]:
        return [int(x) if x.isdigit() else -1 for x in re.split(r"[.+-]", v.lstrip("v"))[:3]]

    ka, kb = key(a), key(b)
    return (ka > kb) - (ka < kb)


def normalise_pypi(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _affected(version: str, aff: dict[str, Any], cmp: Callable[[str, str], int]) -> bool:
    if version in (aff.get("versions") or []):
        return True
    for rng in aff.get("ranges") or []:
        kind = rng.get("type")
        if kind not in ("ECOSYSTEM", "SEMVER"):
            continue
        c = _semver_cmp if kind == "SEMVER" else cmp
        inside = False
        for ev in rng.get("events") or []:
            if "introduced" in ev:
                intro = str(ev["introduced"])
                if intro == "0" or c(version, intro) >= 0:
                    inside = True
            elif inside and (
                ("fixed" in ev and c(version, str(ev["fixed"])) >= 0)
                or ("last_affected" in ev and c(version, str(ev["last_affected"])) > 0)
            ):
                inside = False
        if inside:
            return True
    return False


def match(export: Export, targets: Iterable[Target]) -> list[Finding]:
    by_name: dict[tuple[str, str], list[Target]] = {}
    for t in targets:
        for n in (t.name, *t.names):
            by_name.setdefault((t.ecosystem, normalise_pypi(n) if t.ecosystem == "PyPI" else n), []).append(t)
    out: dict[str, Finding] = {}
    key: tuple[str, str]
    for adv in export.advisories:
        for aff in adv.get("affected") or []:
            pkg = aff.get("package") or {}
            eco_full = str(pkg.get("ecosystem", ""))
            base = eco_full.split(":", 1)[0]
            if base == "PyPI":
                key = ("PyPI", normalise_pypi(str(pkg.get("name", ""))))
                cmp = _pypi_cmp
            elif base in ("Debian", "Ubuntu"):
                key = ("Debian", str(pkg.get("name", "")))
                cmp = _deb_cmp
            else:
                continue
            for t in by_name.get(key, []):
                if t.os_id and base.lower() != t.os_id:
                    continue  # an Ubuntu advisory says nothing about Debian's package of the same name
                if not _affected(t.version, aff, cmp):
                    continue
                fixed = [
                    str(ev["fixed"]) for r in aff.get("ranges") or [] for ev in r.get("events") or [] if "fixed" in ev
                ]
                f = Finding(
                    id=str(adv["id"]),
                    ecosystem=eco_full,
                    package=t.name,
                    version=t.version,
                    where=t.where,
                    summary=str(adv.get("summary") or adv.get("details", ""))[:200],
                    aliases=[str(a) for a in adv.get("aliases") or []],
                    fixed=fixed,
                )
                out.setdefault(f.key(), f)
    return sorted(out.values(), key=lambda f: (f.where, f.package, f.id))


def export_summary(export: Export) -> dict[str, Any]:
    return {
        "source": os.path.basename(export.source.rstrip("/")) or export.source,
        "advisories": len(export.advisories),
        "newest_modified": export.date,
        "newest_file_time": export.file_date,
        "ecosystems": sorted(export.ecosystems),
        "unreadable_files": export.unreadable,
    }
