"""The software inside each image, read from the image's layers in the bundle (what Syft does): dpkg's
status database, the Python distributions' `*.dist-info/METADATA`, the Debian `copyright` files and
`/etc/os-release`. Layers are applied in order, so a later layer's file replaces an earlier one and an
OCI whiteout (`.wh.NAME`, `.wh..wh..opq`) removes what lower layers had."""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debian.deb822 import Deb822

from airgap.dossier.archives import MAX_TEXT, NotRead, layer_tar
from airgap.dossier.licences import Licence, from_debian_copyright, from_wheel_metadata, unknown
from airgap.lock import Lock, LockedArtifact
from airgap.parts import open_artifact

BLOBS = "blobs/sha256/"
DPKG_STATUS = "var/lib/dpkg/status"
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
_COPYRIGHT = re.compile(r"^usr/share/doc/([^/]+)/copyright$")
_METADATA = re.compile(r"^(?:.*/)?[^/]+\.dist-info/METADATA$")
LICENSE_LABEL = "org.opencontainers.image.licenses"


@dataclass
class ImagePackage:
    kind: str  # "deb" or "pypi"
    name: str
    version: str
    arch: str = ""
    source: str = ""  # a deb's source package (what Debian's advisories name)
    licence: Licence = field(default_factory=lambda: unknown("not looked up"))
    where: str = ""  # the file it was read from, inside the image

    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "arch": self.arch,
            "source": self.source,
            "licence": self.licence.to_dict(),
            "where": self.where,
        }


@dataclass
class ImageContents:
    ref: str
    path: str  # the manifest blob's path in the bundle
    manifest_digest: str
    config_digest: str
    platform: str
    licence: Licence
    os_id: str = ""  # "debian", "ubuntu", ... from os-release
    os_version: str = ""
    packages: list[ImagePackage] = field(default_factory=list)
    packages_read: bool = True
    notes: list[str] = field(default_factory=list)  # what could not be read, plainly

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "path": self.path,
            "manifest_digest": self.manifest_digest,
            "config_digest": self.config_digest,
            "platform": self.platform,
            "licence": self.licence.to_dict(),
            "os": {"id": self.os_id, "version": self.os_version},
            "packages": [p.to_dict() for p in self.packages],
            "packages_read": self.packages_read,
            "notes": self.notes,
        }


def images_from_lock(lock: Lock) -> list[ImageContents]:
    """The images as the lock alone records them: no layer read, so no packages (said in a note)."""
    out = []
    for art in lock.artifacts:
        if art.layer == "images" and art.meta.get("role") == "manifest":
            img = ImageContents(
                ref=str(art.meta.get("ref", art.name)),
                path=art.path,
                manifest_digest=str(art.meta.get("manifest_digest", "")),
                config_digest=str(art.meta.get("config_digest", "")),
                platform=str(art.meta.get("platform", "")),
                licence=unknown("only the lock was given, the image was not read"),
                packages_read=False,
            )
            img.notes.append("only the lock was given: the image's packages were not read")
            out.append(img)
    return out


def read_images(bundle: Path, lock: Lock) -> list[ImageContents]:
    arts = [a for a in lock.artifacts if a.layer == "images" and not a.in_base]
    blobs = {a.name: a for a in arts if a.name.startswith(BLOBS)}
    out = []
    for art in arts:
        if art.meta.get("role") != "manifest":
            continue
        out.append(_read_image(bundle, art, blobs))
    return out


def _read_json(bundle: Path, art: LockedArtifact) -> Any:
    with open_artifact(bundle, art) as f:
        return json.loads(f.read(MAX_TEXT))


def _read_image(bundle: Path, art: LockedArtifact, blobs: dict[str, LockedArtifact]) -> ImageContents:
    meta = art.meta
    ref = str(meta.get("ref", art.name))
    img = ImageContents(
        ref=ref,
        path=art.path,
        manifest_digest=str(meta.get("manifest_digest", "")),
        config_digest=str(meta.get("config_digest", "")),
        platform=str(meta.get("platform", "")),
        licence=unknown(f"the image config has no {LICENSE_LABEL} label"),
    )
    try:
        doc = _read_json(bundle, art)
        config_name = BLOBS + str(doc["config"]["digest"]).split(":", 1)[1]
        layer_names = [BLOBS + str(d["digest"]).split(":", 1)[1] for d in doc["layers"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        img.notes.append(f"its manifest cannot be read ({type(exc).__name__}); contents not listed")
        return img
    if config_name in blobs:
        try:
            config = _read_json(bundle, blobs[config_name])
            labels = (config.get("config") or {}).get("Labels") or {}
            if lic := labels.get(LICENSE_LABEL):
                img.licence = Licence(str(lic), f"image label {LICENSE_LABEL}")
        except (OSError, ValueError, AttributeError) as exc:
            img.notes.append(f"its config cannot be read ({type(exc).__name__})")
    files: dict[str, bytes] = {}  # the merged view of the files the dossier reads
    for name in layer_names:
        blob = blobs.get(name)
        if blob is None:
            img.notes.append(f"layer {name} is not in this bundle (a delta's base holds it?); not read")
            continue
        try:
            _apply_layer(bundle, blob, files)
        except NotRead as exc:
            img.notes.append(f"layer {name}: {exc}")
    _fill(img, files)
    return img


def _wanted(path: str) -> bool:
    return path == DPKG_STATUS or path in OS_RELEASE or bool(_COPYRIGHT.match(path) or _METADATA.match(path))


def _apply_layer(bundle: Path, blob: LockedArtifact, files: dict[str, bytes]) -> None:
    with open_artifact(bundle, blob) as f, layer_tar(f) as tar:
        for m in tar:
            path = posixpath.normpath(m.name.removeprefix("./")).lstrip("/")
            base = posixpath.basename(path)
            parent = posixpath.dirname(path)
            if base == ".wh..wh..opq":  # opaque directory: nothing from lower layers stays under it
                prefix = f"{parent}/" if parent else ""
                for k in [k for k in files if k.startswith(prefix)]:
                    del files[k]
                continue
            if base.startswith(".wh."):
                gone = posixpath.join(parent, base[4:])
                for k in [k for k in files if k == gone or k.startswith(gone + "/")]:
                    del files[k]
                continue
            if not _wanted(path):
                continue
            if m.isfile() and m.size <= MAX_TEXT:
                data = tar.extractfile(m)
                if data is not None:
                    files[path] = data.read()
            else:
                files.pop(path, None)  # replaced by a link or a directory: not a file we can read


def _fill(img: ImageContents, files: dict[str, bytes]) -> None:
    for rel in OS_RELEASE:
        if rel in files:
            fields = dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', files[rel].decode("utf-8", "replace"), re.M))
            img.os_id = fields.get("ID", "")
            img.os_version = fields.get("VERSION_ID", "")
            break
    copyrights = {m.group(1): rel for rel in files if (m := _COPYRIGHT.match(rel))}
    if DPKG_STATUS in files:
        for para in Deb822.iter_paragraphs(files[DPKG_STATUS].decode("utf-8", "replace")):
            name = para.get("Package", "")
            if not name or "installed" not in para.get("Status", "").split():
                continue
            source = str(para.get("Source") or name).split(" ")[0]
            doc = copyrights.get(name) or copyrights.get(source)
            lic = (
                from_debian_copyright(files[doc].decode("utf-8", "replace"), doc)
                if doc
                else unknown(f"no usr/share/doc/{name}/copyright in the image")
            )
            img.packages.append(
                ImagePackage(
                    "deb", name, para.get("Version", ""), para.get("Architecture", ""), source, lic, DPKG_STATUS
                )
            )
    for rel in sorted(r for r in files if _METADATA.match(r)):
        import email.parser

        text = files[rel].decode("utf-8", "replace")
        msg = email.parser.Parser().parsestr(text, headersonly=True)
        if not msg.get("Name"):
            continue
        img.packages.append(
            ImagePackage("pypi", str(msg["Name"]), str(msg.get("Version", "")), "", "", from_wheel_metadata(text), rel)
        )
    img.packages.sort(key=lambda p: (p.kind, p.name.lower(), p.version))
    if not img.packages and not img.notes:
        img.notes.append("no dpkg status database and no Python dist-info found in its layers")
