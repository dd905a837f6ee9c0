"""The bundle's materials list: one record per artifact of the lock (what it is, where it came from, what
it was checked against, its licence from its real source), the software inside each image, and the model
files that can run code. Read only from the bundle's own bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airgap.dossier.archives import NotRead, deb_files, seekable, wheel_metadata
from airgap.dossier.image_packages import ImageContents, images_from_lock, read_images
from airgap.dossier.licences import (
    Licence,
    for_runfile,
    from_debian_copyright,
    from_model_card,
    from_wheel_metadata,
    unknown,
)
from airgap.dossier.pickles import check_safetensors, is_pickle_name, scan_pickle
from airgap.lock import Lock, LockedArtifact
from airgap.parts import open_artifact

_LICENCE_FILES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "COPYING")
_VERSION_IN_NAME = re.compile(r"(\d+\.\d+(?:\.\d+)*)")


@dataclass
class Record:
    layer: str
    kind: str  # wheel, deb, model-file, image, image-blob, runfile, file
    name: str
    version: str
    path: str
    size: int
    sha256: str
    url: str
    upstream_digest: dict[str, str] | None
    upstream_digest_note: str
    licence: Licence
    purl: str = ""
    in_base: bool = False
    notes: list[str] = field(default_factory=list)

    def key(self) -> str:
        """What identifies "the same thing" across two bundles (for the diff): a project, a package and
        architecture, a model file, an image reference, otherwise the path."""
        return f"{self.layer}:{self.kind}:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "url": self.url,
            "upstream_digest": self.upstream_digest,
            "upstream_digest_note": self.upstream_digest_note,
            "licence": self.licence.to_dict(),
            "purl": self.purl,
            "in_base": self.in_base,
            "notes": self.notes,
        }


@dataclass
class CodeFile:
    """A model file checked for code: a pickle's globals, or a safetensors header."""

    path: str
    sha256: str
    repo: str
    kind: str  # "pickle" or "safetensors"
    allowed: bool  # the manifest's allow_pickle for its model (always True for safetensors)
    result: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "repo": self.repo,
            "kind": self.kind,
            "allowed": self.allowed,
            **self.result,
        }


@dataclass
class Inventory:
    records: list[Record]
    images: list[ImageContents]
    code_files: list[CodeFile]


def purl_for(kind: str, **parts: Any) -> str:
    try:
        from packageurl import PackageURL
    except ImportError:
        from airgap.dossier.sbom import missing_libraries

        raise missing_libraries() from None

    return str(PackageURL(type=kind, **parts).to_string())


def _digest(art: LockedArtifact) -> dict[str, str] | None:
    d = art.upstream_digest
    return {"algorithm": d.algorithm, "value": d.value, "source": d.source} if d else None


def _base_record(art: LockedArtifact, kind: str, name: str, version: str, licence: Licence) -> Record:
    return Record(
        layer=art.layer,
        kind=kind,
        name=name,
        version=version,
        path=art.path,
        size=art.size,
        sha256=art.sha256,
        url=art.url,
        upstream_digest=_digest(art),
        upstream_digest_note=art.upstream_digest_note,
        licence=licence,
        in_base=art.in_base,
    )


def build_inventory(bundle: Path | None, lock: Lock) -> Inventory:
    """The inventory of `lock`'s bundle; `bundle` None: from the lock alone (an old bundle's lock given to
    --against), so nothing inside a file is read and licences are unknown."""
    if bundle is None:
        gone = unknown("only the lock was given, the files were not read")
        return Inventory([_record(None, a, {}, gone) for a in lock.artifacts], images_from_lock(lock), [])
    model_licences = _model_licences(bundle, lock)
    allow_pickle = _allowed_pickles(lock)
    records: list[Record] = []
    code: list[CodeFile] = []
    for art in lock.artifacts:
        records.append(_record(bundle, art, model_licences))
        if art.layer == "models" and not art.in_base:
            repo = str(art.meta.get("repo", ""))
            if is_pickle_name(art.path):
                with seekable(bundle, art) as f:
                    scan = scan_pickle(f)
                code.append(CodeFile(art.path, art.sha256, repo, "pickle", repo in allow_pickle, scan.to_dict()))
            elif art.path.endswith(".safetensors"):
                with open_artifact(bundle, art) as f:
                    check = check_safetensors(f, art.size)
                code.append(CodeFile(art.path, art.sha256, repo, "safetensors", True, check.to_dict()))
    images = read_images(bundle, lock)
    by_path = {img.path: img for img in images}
    for rec in records:
        if rec.kind == "image" and rec.path in by_path:
            rec.licence = by_path[rec.path].licence  # the image's own label (or why there is none)
    return Inventory(records, images, code)


def _allowed_pickles(lock: Lock) -> set[str]:
    return {
        str(m.get("repo")) for m in lock.manifest.get("models") or [] if isinstance(m, dict) and m.get("allow_pickle")
    }


def _record(
    bundle: Path | None, art: LockedArtifact, model_licences: dict[str, Licence], unread: Licence | None = None
) -> Record:
    meta = art.meta
    fallback = unread or unknown("not read")
    if art.in_base:
        rec = _base_record(art, "file", art.name, "", unknown("carried by the base bundle; see its dossier"))
    elif art.name.endswith(".whl"):
        rec = _base_record(
            art,
            "wheel",
            str(meta.get("project", art.name)),
            str(meta.get("version", "")),
            _wheel_licence(bundle, art) if bundle else fallback,
        )
        from airgap.dossier.osv import normalise_pypi

        rec.purl = purl_for("pypi", name=normalise_pypi(rec.name), version=rec.version)
    elif art.name.endswith(".deb") and meta.get("package"):
        pkg = str(meta["package"])
        rec = _base_record(
            art, "deb", pkg, str(meta.get("version", "")), _deb_licence(bundle, art, pkg) if bundle else fallback
        )
        distro = "ubuntu" if "ubuntu" in art.url else "debian"
        arch = str(meta.get("architecture", ""))
        rec.purl = purl_for(
            "deb", namespace=distro, name=pkg, version=rec.version, qualifiers={"arch": arch} if arch else None
        )
    elif art.layer == "models":
        repo = str(meta.get("repo", ""))
        owner, _, name = repo.partition("/")
        in_repo = str(meta.get("path_in_repo", art.name))
        commit = str(meta.get("commit", ""))
        rec = _base_record(
            art,
            "model-file",
            f"{repo}/{in_repo}",
            commit,
            model_licences.get(repo, fallback if bundle is None else unknown("no model card")),
        )
        rec.purl = purl_for("huggingface", namespace=owner, name=name, version=commit, subpath=in_repo)
    elif art.layer == "images":
        role = meta.get("role")
        if role == "manifest":
            ref = str(meta.get("ref", art.name))
            rec = _base_record(art, "image", ref, str(meta.get("manifest_digest", "")), unknown("see the image below"))
            repo_part = ref.rsplit("@", 1)[0]
            last = repo_part.rsplit("/", 1)[-1]
            tag = last.split(":", 1)[1] if ":" in last else ""
            repo_url = repo_part[: len(repo_part) - len(tag) - 1] if tag else repo_part
            rec.purl = purl_for(
                "oci",
                name=repo_url.rsplit("/", 1)[-1].lower(),
                version=rec.version,
                qualifiers={"repository_url": repo_url, **({"tag": tag} if tag else {})},
            )
        else:
            rec = _base_record(
                art, "image-blob", art.name, str(role or ""), unknown("part of an image (see the image)")
            )
    else:
        version = str(meta.get("version", ""))
        if not version and (m := _VERSION_IN_NAME.search(art.name)):
            version = m.group(1)
        licence = for_runfile(art.layer) or unknown("no licence information published with this file")
        rec = _base_record(
            art, "runfile" if art.layer in ("driver", "cuda", "cudnn") else "file", art.name, version, licence
        )
        rec.purl = purl_for(
            "generic", name=art.name, version=version or None, qualifiers={"download_url": art.url} if art.url else None
        )
    return rec


def _wheel_licence(bundle: Path, art: LockedArtifact) -> Licence:
    try:
        return from_wheel_metadata(wheel_metadata(bundle, art))
    except NotRead as exc:
        return unknown(f"wheel METADATA not read: {exc}")


def _deb_licence(bundle: Path, art: LockedArtifact, pkg: str) -> Licence:
    rel = f"usr/share/doc/{pkg}/copyright"
    try:
        files = deb_files(bundle, art, {rel})
    except NotRead as exc:
        return unknown(f"copyright not read: {exc}")
    if rel not in files:
        return unknown(f"the .deb has no /{rel}")
    return from_debian_copyright(files[rel].decode("utf-8", "replace"), f"/{rel} in the .deb")


def _model_licences(bundle: Path, lock: Lock) -> dict[str, Licence]:
    """Each model's licence: the card's `license` (README.md front matter), and its LICENSE file named."""
    cards: dict[str, str | None] = {}
    licence_files: dict[str, str] = {}
    for art in lock.artifacts:
        if art.layer != "models" or art.in_base:
            continue
        repo = str(art.meta.get("repo", ""))
        in_repo = str(art.meta.get("path_in_repo", ""))
        if in_repo == "README.md" and art.size < (4 << 20):
            with open_artifact(bundle, art) as f:
                cards[repo] = from_model_card(f.read().decode("utf-8", "replace"))
        elif in_repo in _LICENCE_FILES:
            licence_files[repo] = in_repo
    out: dict[str, Licence] = {}
    for repo in {str(a.meta.get("repo", "")) for a in lock.artifacts if a.layer == "models"}:
        card = cards.get(repo)
        lf = licence_files.get(repo)
        also = f"; licence text in {lf}" if lf else ""
        if card:
            out[repo] = Licence(card, f"model card (README.md) license{also}")
        elif lf:
            out[repo] = Licence(f"see {lf}", f"the repo's {lf} (the model card names no licence)")
        else:
            why = "no README.md in the bundle" if repo not in cards else "the model card names no license"
            out[repo] = unknown(f"{why} and no LICENSE file")
    return out
