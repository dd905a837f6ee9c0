"""The OCI image documents airgap reads: media types, descriptors, one resolved image, platform matching,
and the checks `docker load` would otherwise make on the server (layer count, platform, digests)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airgap.errors import BadInputError, IntegrityError
from airgap.sources.registry.errors import RegistryError
from airgap.sources.registry.reference import DIGEST_RE, ImageRef
from airgap.sources.request import redact

# --- media types (OCI image spec, Docker distribution) -------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


@dataclass
class ResolvedImage:
    """One image for one platform, everything needed to store it content-addressed."""

    ref: ImageRef
    platform: str
    manifest: bytes
    manifest_digest: str
    manifest_media_type: str
    config: bytes
    config_descriptor: Descriptor
    layers: list[Descriptor]
    blob_urls: Callable[[Descriptor], list[str]]  # canonical URLs to download a layer from
    source: str = "registry"  # or "docker-daemon"
    index_digest: str | None = None  # the index (manifest list) the tag pointed at, when there was one
    manifest_url: str = ""
    # Where a layer's bytes already are on this machine (a local daemon's export), to copy, not download.
    blob_file: Callable[[Descriptor], Path] | None = None

    @property
    def config_digest(self) -> str:
        return self.config_descriptor.digest

    @property
    def size(self) -> int:
        return len(self.manifest) + self.config_descriptor.size + sum(d.size for d in self.layers)


def descriptor(raw: Any, what: str) -> Descriptor:
    try:
        digest, size = str(raw["digest"]), int(raw["size"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{what} has no digest/size") from None
    if not DIGEST_RE.match(digest):
        raise ValueError(f"{what} has digest {digest!r}; only sha256 is supported")
    return Descriptor(str(raw.get("mediaType", "")), digest, size)


def platform_str(p: Mapping[str, Any]) -> str:
    parts = [str(p.get("os", "")), str(p.get("architecture", ""))]
    if p.get("variant"):
        parts.append(str(p["variant"]))
    return "/".join(parts)


def matches(entry: Mapping[str, Any], want: str) -> bool:
    os_, _, rest = want.partition("/")
    arch, _, variant = rest.partition("/")
    if entry.get("os") != os_ or entry.get("architecture") != arch:
        return False
    have = entry.get("variant") or ""
    if not variant:
        return True
    # Docker treats arm64 and arm64/v8 as the same platform.
    return have == variant or (arch == "arm64" and variant == "v8" and not have)


def pick_platform(index: Mapping[str, Any], want: str, image: str) -> Descriptor:
    """The index entry for `want` (linux/amd64, linux/arm64/v8); an error listing what exists otherwise."""
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
    # Build attestations sit in indexes as platform unknown/unknown: not images.
    images = [m for m in entries if (m.get("platform") or {}).get("os") not in (None, "unknown")]
    for m in images:
        if matches(m.get("platform") or {}, want):
            return descriptor(m, f"{image}: the index entry for {want}")
    available = sorted({platform_str(m["platform"]) for m in images})
    raise BadInputError(
        f"image {image}: no {want} variant; the registry has {', '.join(available) or 'no platform entries'}.",
        f"Set `target.arch` (or this image's `platform:`) to one of those, or choose an image built for {want}.",
    )


def check_digest(data: bytes, digest: str, what: str, url: str) -> None:
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise IntegrityError(
            f"{what}: the bytes from {redact(url)} do not match the digest {digest} (got {actual}).",
            "The registry or a mirror in between serves a corrupt or stale copy; try again later or another mirror.",
        )


def check_config(cfg: bytes, layers: list[Descriptor], platform: str, image: str, pinned_platform: bool) -> None:
    """What `docker load` would refuse on the server, refused now: a layer count the config disagrees
    with, or (for a single-platform image) the wrong platform."""
    doc = parse_json(cfg, image, "config")
    diff_ids = (doc.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        raise RegistryError(
            f"image {image}: its config lists {len(diff_ids)} layers but its manifest {len(layers)}; "
            "`docker load` would refuse it.",
            "The image is malformed in the registry; push it again.",
        )
    if pinned_platform and doc.get("architecture"):
        have = platform_str(doc)
        if not matches(doc, platform):
            raise BadInputError(
                f"image {image}: it is built for {have} only (no multi-platform index), but {platform} is wanted.",
                f"Set `target.arch` (or this image's `platform: {have}`) to match, or use a {platform} image.",
            )


def parse_json(data: bytes, image: str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise RegistryError(f"image {image}: the registry sent a {what} that is not a JSON object.")
    return doc


def media_type(doc: Mapping[str, Any], content_type: str) -> str:
    media = str(doc.get("mediaType") or content_type.split(";", 1)[0].strip())
    if media in INDEX_TYPES | MANIFEST_TYPES:
        return media
    # OCI allows mediaType to be left out of the document; the shape says what it is.
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc and "config" in doc:
        return OCI_MANIFEST
    return media
