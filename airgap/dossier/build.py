"""The dossier of one verified bundle: built, written into the bundle, listed in SHA256SUMS.

Files written (all under `dossier/` in the bundle):
    dossier.html        the reviewer's page: self-contained (inline CSS, no script, no font, no link fetched)
    dossier.json        the same facts, for machines (and the `--against` of the next review)
    sbom.cdx.json       CycloneDX 1.6
    sbom.spdx.json      SPDX 2.3
SHA256SUMS is rewritten to list them (the lock and README are untouched); a signature over the old
SHA256SUMS no longer matches, so it is removed (or made again with --sign-key)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airgap.bundle_layout import DOSSIER_DIR, LOCK_NAME, SIG_NAME, SUMS_NAME
from airgap.custody import TRUSTED_KEYS_DIR
from airgap.dossier import diff as diffmod
from airgap.dossier import osv
from airgap.dossier.inventory import Inventory, build_inventory
from airgap.errors import BadInputError, IntegrityError
from airgap.lock import Lock

if TYPE_CHECKING:
    from airgap.signing import PublicKey

FILES = ("dossier.html", "dossier.json", "sbom.cdx.json", "sbom.spdx.json")
DOSSIER_FORMAT = 1


@dataclass
class Written:
    files: dict[str, bytes]  # path in the bundle -> bytes
    data: dict[str, Any]
    signature_removed: bool = False
    signed: bool = False
    warnings: list[str] = field(default_factory=list)


def dossier_data(
    bundle: Path | None, lock: Lock, lock_sha256: str, inv: Inventory, verified: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "format": DOSSIER_FORMAT,
        "bundle": lock.name,
        "created": lock.created,
        "airgap_version": lock.airgap_version,
        "lock_sha256": lock_sha256,
        "target": lock.target,
        "delta_of": lock.base.name if lock.base else None,
        "verified": verified,
        "artifacts": [r.to_dict() for r in inv.records],
        "images": [i.to_dict() for i in inv.images],
        "code_files": [c.to_dict() for c in inv.code_files],
    }


def targets(d: dict[str, Any]) -> list[osv.Target]:
    out = []
    for r in d.get("artifacts", []):
        if r["kind"] == "wheel":
            out.append(osv.Target("PyPI", r["name"], r["version"], r["path"]))
        elif r["kind"] == "deb":
            out.append(osv.Target("Debian", r["name"], r["version"], r["path"]))
    for img in d.get("images", []):
        os_id = img.get("os", {}).get("id", "")
        for p in img.get("packages", []):
            where = f"image {img['ref']}"
            if p["kind"] == "pypi":
                out.append(osv.Target("PyPI", p["name"], p["version"], where))
            else:
                names = (p["source"],) if p.get("source") and p["source"] != p["name"] else ()
                out.append(
                    osv.Target(
                        "Debian", p["name"], p["version"], where, names, os_id if os_id in ("debian", "ubuntu") else ""
                    )
                )
    return out


def vulnerabilities(d: dict[str, Any], export: osv.Export | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ts = targets(d)
    counts = {
        "PyPI": sum(1 for t in ts if t.ecosystem == "PyPI"),
        "Debian": sum(1 for t in ts if t.ecosystem == "Debian"),
    }
    section: dict[str, Any]
    if export is None:
        section = {
            "export": None,
            "checked": {},
            "not_checked": {
                k: f"{n} package(s): not checked (no advisory export given: --osv)" for k, n in counts.items() if n
            },
            "findings": [],
        }
        return section, []
    have = {"PyPI": "PyPI" in export.ecosystems, "Debian": bool(export.ecosystems & {"Debian", "Ubuntu"})}
    findings = [f.to_dict() for f in osv.match(export, [t for t in ts if have[t.ecosystem]])]
    section = {
        "export": osv.export_summary(export),
        "checked": {k: n for k, n in counts.items() if n and have[k]},
        "not_checked": {
            k: f"{n} package(s): not checked (the export holds no {k} advisories)"
            for k, n in counts.items()
            if n and not have[k]
        },
        "findings": findings,
    }
    return section, findings


def load_old(against: Path, export: osv.Export | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The old bundle's dossier (its own, or built from its lock and files) and its findings against the
    same export, so "new advisories" compares like with like."""
    bundle_dir = against if against.is_dir() else against.parent
    if not (bundle_dir / LOCK_NAME).is_file() or (against.is_file() and against.name != LOCK_NAME):
        raise BadInputError(
            f"{against}: not a bundle directory or an {LOCK_NAME}.",
            "Give --against the last approved bundle's directory, or its airgap.lock.json.",
        )
    own = bundle_dir / DOSSIER_DIR / "dossier.json"
    if against.is_dir() and own.is_file():
        try:
            old = json.loads(own.read_bytes())
        except ValueError:
            raise BadInputError(
                f"{own}: not valid JSON.", "Give the old bundle's lock instead, or repair the bundle."
            ) from None
    else:
        lock, digest = Lock.read_with_digest(bundle_dir)
        inv = build_inventory(bundle_dir if against.is_dir() else None, lock)
        old = dossier_data(None, lock, digest, inv, None)
    _, found = vulnerabilities(old, export)
    return old, found


def build(
    bundle: Path,
    lock: Lock,
    lock_sha256: str,
    verified: dict[str, Any],
    *,
    against: Path | None = None,
    osv_paths: list[Path] | None = None,
    scanner_result: Path | None = None,
) -> Written:
    from airgap.dossier import html, sbom

    sbom.require_libraries()
    export = load_exports(osv_paths or [])
    inv = build_inventory(bundle, lock)
    data = dossier_data(bundle, lock, lock_sha256, inv, verified)
    data["generated"] = sbom.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    data["vulnerabilities"], findings = vulnerabilities(data, export)
    if scanner_result is not None:
        data["scanner"] = read_scanner_result(scanner_result)
    if against is not None:
        old, old_findings = load_old(against, export)
        data["diff"] = diffmod.diff(data, old, findings, old_findings)
    data["sboms"] = {"cyclonedx": f"{DOSSIER_DIR}/sbom.cdx.json", "spdx": f"{DOSSIER_DIR}/sbom.spdx.json"}
    created = sbom.now()
    namespace = f"https://airgap.invalid/spdx/{lock.name}/{lock_sha256}"
    files = {
        f"{DOSSIER_DIR}/sbom.cdx.json": sbom.cyclonedx_json(lock.name, inv, created).encode(),
        f"{DOSSIER_DIR}/sbom.spdx.json": sbom.spdx_json(lock.name, inv, created, namespace).encode(),
        f"{DOSSIER_DIR}/dossier.json": (json.dumps(data, indent=2, sort_keys=False) + "\n").encode(),
        f"{DOSSIER_DIR}/dossier.html": html.render(data).encode(),
    }
    return Written(files, data)


def load_exports(paths: list[Path]) -> osv.Export | None:
    """Several exports (PyPI's and Debian's archives) as one."""
    if not paths:
        return None
    parts = [osv.load_export(p) for p in paths]
    merged = osv.Export(", ".join(p.source for p in parts))
    for p in parts:
        merged.advisories += p.advisories
        merged.ecosystems |= p.ecosystems
        merged.unreadable += p.unreadable
    merged.date = max((p.date for p in parts), default="")
    merged.file_date = max((p.file_date for p in parts), default="")
    return merged


def run(
    bundle: Path,
    *,
    against: Path | None = None,
    osv_paths: list[Path] | None = None,
    scanner_result: Path | None = None,
    sign_key: Path | None = None,
    keys: Sequence[PublicKey] = (),
    keys_dir: str = TRUSTED_KEYS_DIR,
) -> Written:
    """Verify `bundle`, build its dossier and write it in, holding the bundle's directory lock throughout
    (a collect or another dossier writing it at the same time is refused). With trusted `keys` (from
    `keys_dir` and --key), a valid signature by one of them is required, as for verify and install: the
    gate's dossier is never written for a bundle its signature policy refuses."""
    from airgap.custody import Snapshot
    from airgap.dossier.sbom import require_libraries
    from airgap.journal import DirectoryLock
    from airgap.verify import verify_bundle

    require_libraries()  # refused before the bundle is re-hashed, not after
    if sign_key is not None:
        from airgap.signing import load_secret

        load_secret(sign_key)  # a wrong key file is refused before any work, not after
    with DirectoryLock(bundle, "dossier"):
        snapshot = Snapshot.read(bundle, keys, keys_dir=keys_dir)
        report = verify_bundle(snapshot)
        if not report.ok:
            first = report.problems[0]
            raise IntegrityError(
                f"{bundle}: fails verification ({len(report.problems)} problem(s); first: {first.path}: {first.kind}, "
                f"{first.detail}); no dossier is made for a bundle that is not as collected.",
                "Run `airgap verify` on it and repair it (copy it again from the original) first.",
            )
        lock = snapshot.require_lock()
        verified = {
            "files": report.files,
            "bytes": report.bytes,
            "sha256sums_sha256": report.sha256sums_sha256,
            "signature": report.signature,
        }
        written = build(
            bundle,
            lock,
            snapshot.lock_sha256,
            verified,
            against=against,
            osv_paths=osv_paths,
            scanner_result=scanner_result,
        )
        return write_into_bundle(bundle, snapshot.sums, written, sign_key)


def read_scanner_result(path: Path) -> dict[str, Any]:
    """A site scanner's result folded in: Grype's JSON (`grype sbom:dossier/sbom.cdx.json -o json`), read
    for its matches. Other formats are refused with the name of the one read."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise BadInputError(
            f"{path}: cannot read the scanner result ({exc}).", "Give Grype's JSON output (-o json)."
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("matches"), list):
        raise BadInputError(
            f"{path}: not a Grype JSON result (no 'matches' list).",
            "Run the scanner on dossier/sbom.cdx.json with JSON output, "
            "e.g. `grype sbom:sbom.cdx.json -o json > r.json`.",
        )
    found = []
    for m in doc["matches"]:
        vuln = m.get("vulnerability") or {}
        art = m.get("artifact") or {}
        found.append(
            {
                "id": str(vuln.get("id", "")),
                "severity": str(vuln.get("severity", "")),
                "package": str(art.get("name", "")),
                "version": str(art.get("version", "")),
                "purl": str(art.get("purl", "")),
                "fixed": [str(v) for v in (vuln.get("fix") or {}).get("versions") or []],
            }
        )
    desc = doc.get("descriptor") or {}
    db = (desc.get("db") or {}).get("built") or (desc.get("db") or {}).get("status", {}).get("built", "")
    return {
        "tool": str(desc.get("name", "scanner")),
        "version": str(desc.get("version", "")),
        "db_built": str(db),
        "matches": found,
    }


def write_into_bundle(bundle: Path, sums: dict[str, str], written: Written, sign_key: Path | None) -> Written:
    """The dossier's files into `bundle/dossier/`, then SHA256SUMS rewritten (atomically) from `sums` (the
    verified ones) with the dossier's entries replaced. The caller holds the bundle's DirectoryLock."""
    from airgap.digests import sha256_bytes
    from airgap.fsutil import write_atomic
    from airgap.sums import format_sums

    directory = bundle / DOSSIER_DIR
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise IntegrityError(
            f"{directory}: not a directory; airgap will not write through it.", "Remove it and run again."
        )
    directory.mkdir(exist_ok=True)
    entries = {k: v for k, v in sums.items() if not k.startswith(DOSSIER_DIR + "/")}
    for stale in set(sums) - set(entries) - set(written.files):
        (bundle / stale).unlink(missing_ok=True)
    for rel, data in written.files.items():
        write_atomic(bundle / rel, data)
        entries[rel] = sha256_bytes(data)
    sig = bundle / SIG_NAME
    if os.path.lexists(sig):
        sig.unlink()  # it vouches for the old SHA256SUMS; removed before that is replaced
        written.signature_removed = True
    write_atomic(bundle / SUMS_NAME, format_sums(entries))
    if sign_key is not None:
        from airgap.signing import load_secret, sign_bundle

        sign_bundle(bundle, load_secret(sign_key), Lock.read(bundle).name)
        written.signed = True
    return written
