"""Daemonless pull of an image's manifest and config from an OCI / Docker registry (Registry HTTP API v2).

Only manifests, indexes and image configs (small JSON documents, checked against their digests here) are
fetched by this module. Layer blobs are downloaded by `HttpSource` like any other file, with `RegistryAuth`
handed to it: resume, retries, parallelism and hash-while-streaming stay in one place.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from urllib.parse import urlsplit

import requests

from airgap.errors import IntegrityError
from airgap.sources.http import HttpSource
from airgap.sources.registry.auth import RegistryAuth
from airgap.sources.registry.errors import RegistryError, registry_kinds
from airgap.sources.registry.oci import (
    ACCEPT,
    INDEX_TYPES,
    MANIFEST_TYPES,
    Descriptor,
    ResolvedImage,
    check_config,
    check_digest,
    descriptor,
    media_type,
    parse_json,
    pick_platform,
)
from airgap.sources.registry.reference import ImageRef
from airgap.sources.request import redact, request

# Registries refuse manifests over 4 MiB; configs of real images are tens of KiB. The caps only stop a
# broken server from filling memory.
MAX_MANIFEST = 4 << 20
MAX_CONFIG = 64 << 20


class RegistryClient:
    """Reads manifests and configs of images; layer blobs are left to HttpSource (see module doc)."""

    def __init__(self, source: HttpSource, insecure: Iterable[str] = (), auth: RegistryAuth | None = None) -> None:
        self.source = source
        self.insecure = list(insecure)
        self.auth = auth or RegistryAuth(policy=source.policy)

    def _get(
        self, url: str, image: str, what: str, accept: str | None = None, limit: int = MAX_MANIFEST
    ) -> requests.Response:
        real = self.source.resolve(url)
        r = request(
            self.source.session,
            "GET",
            real,
            policy=self.source.policy,
            what=f"image {image}",
            thing=what,
            kinds=registry_kinds(urlsplit(real).netloc),
            headers={"Accept": accept} if accept else {},
            auth=self.auth,
        )
        if len(r.content) > limit:
            raise RegistryError(f"image {image}: {what} from {redact(real)} is larger than {limit} bytes.")
        return r

    def resolve(self, ref: ImageRef, platform: str) -> ResolvedImage:
        base = ref.base_url(self.insecure)
        image = ref.written
        url = f"{base}/manifests/{ref.reference}"
        r = self._get(url, image, f"manifest {ref.repository}:{ref.reference}", ACCEPT)
        body = r.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if ref.digest:
            check_digest(body, ref.digest, f"image {image}: manifest", url)
        else:
            served = r.headers.get("Docker-Content-Digest", "")
            if served.startswith("sha256:") and served != digest:
                raise IntegrityError(
                    f"image {image}: the manifest from {redact(self.source.resolve(url))} hashes to {digest}, "
                    f"but the registry says {served}.",
                    "A proxy or mirror altered it on the way; try again, or without the mirror.",
                )
        doc = parse_json(body, image, "manifest")
        media = media_type(doc, r.headers.get("Content-Type", ""))
        index_digest = None
        if media in INDEX_TYPES:
            index_digest = digest
            entry = pick_platform(doc, platform, image)
            url = f"{base}/manifests/{entry.digest}"
            r = self._get(url, image, f"manifest {ref.repository}@{entry.digest} ({platform})", ACCEPT)
            body = r.content
            check_digest(body, entry.digest, f"image {image}: {platform} manifest", url)
            digest = entry.digest
            doc = parse_json(body, image, "manifest")
            media = media_type(doc, r.headers.get("Content-Type", "") or entry.media_type)
        if media not in MANIFEST_TYPES:
            raise RegistryError(
                f"image {image}: the registry sent a manifest of type {media or 'unknown'}, which airgap cannot "
                "store (Docker schema 1 and nested indexes are not supported).",
                "Push the image again with a current Docker or skopeo, which write schema 2 / OCI manifests.",
            )
        try:
            config = descriptor(doc.get("config"), "the manifest's config")
            layers = [descriptor(layer, f"layer {i}") for i, layer in enumerate(doc.get("layers") or [])]
        except ValueError as exc:
            raise RegistryError(f"image {image}: malformed manifest: {exc}.") from None
        for layer in doc.get("layers") or []:
            if layer.get("urls"):
                raise RegistryError(
                    f"image {image}: it has foreign layers (fetched from {redact(str(layer['urls'][0]))}, "
                    "Windows images); airgap collects Linux images only."
                )
        cfg_url = f"{base}/blobs/{config.digest}"
        cfg = self._get(cfg_url, image, f"config blob {config.digest}", limit=MAX_CONFIG).content
        check_digest(cfg, config.digest, f"image {image}: config", cfg_url)
        check_config(cfg, layers, platform, image, pinned_platform=index_digest is None)

        def blob_urls(d: Descriptor) -> list[str]:
            return [f"{base}/blobs/{d.digest}"]

        return ResolvedImage(
            ref=ref,
            platform=platform,
            manifest=body,
            manifest_digest=digest,
            manifest_media_type=media,
            config=cfg,
            config_descriptor=config,
            layers=layers,
            blob_urls=blob_urls,
            index_digest=index_digest,
            manifest_url=f"{base}/manifests/{digest}",
        )
