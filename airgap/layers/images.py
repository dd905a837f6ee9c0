"""Container images: pulled from registries without a Docker daemon, stored once, loaded on the server.

On disk, `layers/07-images/` is both an OCI image layout and a `docker save` (Docker >= 25) archive,
unpacked:

    oci-layout                {"imageLayoutVersion": "1.0.0"}
    index.json                OCI index: one entry per image reference, named by annotations
    manifest.json             docker-archive index: Config, RepoTags and Layers of each image
    blobs/sha256/<hex>        every manifest, config and layer, stored once however many images share it

Why this form (docs/images.md has the numbers): blobs shared by images (CUDA base layers under vLLM)
are stored and carried once; every file is named by its own digest, so SHA256SUMS and the registry agree
on it; nothing has to be unpacked or re-packed on the server: `install` streams one image at a time into
the daemon's load API as a docker-archive built on the fly from these files, so airgap writes no second
copy of an image on the server. By hand, `tar -C layers/07-images -cf - . | docker load` loads them all.
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from airgap.artifact_meta import ImageMeta, read_meta
from airgap.artifacts import Artifact, Digest
from airgap.errors import AirgapError, BadInputError, CombinedError, InstallError, UpstreamError
from airgap.layers.base import Layer, ResolveContext
from airgap.lock import LockedArtifact
from airgap.manifest import ImageSpec, Manifest
from airgap.sources.registry import (
    OCI_INDEX,
    AccessDenied,
    DaemonExport,
    ImageNotFound,
    ImageRef,
    RegistryAuth,
    RegistryClient,
    ResolvedImage,
    daemon_client,
    parse_ref,
    platform_of,
)
from airgap.sources.request import redact
from airgap.units import human_size

if TYPE_CHECKING:
    from airgap.install_context import InstallContext

BLOBS = "blobs/sha256"
CHUNK = 1 << 20


def _daemon_export(ctx: ResolveContext) -> DaemonExport:
    """The run's staging area for images exported from a local daemon: made on first use, removed when the
    run ends (collect has copied the blobs into the bundle by then)."""

    def make() -> DaemonExport:
        export = DaemonExport()
        ctx.on_close(export.close)
        return export

    return ctx.memo(DaemonExport, make)


class ImagesLayer(Layer):
    name = "images"
    section = "images"
    by_hand_dir = "airgap install . --only images   (loads them into dockerd; see {dir}/)"
    installable = True
    preflight = frozenset({"disk"})

    # --- collect ------------------------------------------------------------------------------------------

    def plan(self, manifest: Manifest) -> list[Artifact]:
        """Offline (`plan --no-head`): the digests are only known once the registry is asked."""
        return [
            Artifact(
                self.name,
                f"{spec.ref} (resolved at collect)",
                [],
                ("images", i, "ref"),
                no_digest_reason="its blobs' digests come from the registry's manifest, read at collect time",
                meta={"unresolved": "the registry is asked for this image's manifest at collect time"},
            )
            for i, spec in enumerate(manifest.images)
        ]

    def resolve(self, manifest: Manifest, ctx: ResolveContext) -> list[Artifact]:
        source = ctx.source
        if source is None:
            return self.plan(manifest)
        client = RegistryClient(source, manifest.insecure_registries)
        resolved: list[tuple[int, ResolvedImage]] = []
        errors: list[AirgapError] = []
        for i, spec in enumerate(manifest.images):
            try:
                resolved.append((i, self._resolve_one(manifest, i, spec, client, ctx)))
            except AirgapError as exc:
                errors.append(exc)
        if errors:
            raise _combine(errors)
        return build_artifacts(self.name, resolved, client.auth)

    def _resolve_one(
        self, manifest: Manifest, i: int, spec: ImageSpec, client: RegistryClient, ctx: ResolveContext
    ) -> ResolvedImage:
        try:
            ref = parse_ref(spec.ref)
        except ValueError as exc:
            raise manifest.error(("images", i, "ref"), f"{spec.ref!r}: {exc}") from None
        platform = platform_of(spec.platform, manifest.target.arch)
        if spec.local:
            return self._from_daemon(ref, platform, ctx, why="it is marked `local: true`")
        try:
            return client.resolve(ref, platform)
        except (ImageNotFound, AccessDenied) as exc:
            # An image built on this PC and never pushed: no registry has it, the local daemon may.
            daemon = daemon_client()
            if daemon is None or not _daemon_has(daemon, ref.written):
                exc.hint = (exc.hint or "") + (
                    " No local Docker daemon has it either (mark it `local: true` to take it from one)."
                )
                raise
            return self._from_daemon(ref, platform, ctx, why="no registry has it", client=daemon)

    def _from_daemon(
        self, ref: ImageRef, platform: str, ctx: ResolveContext, why: str, client: Any | None = None
    ) -> ResolvedImage:
        daemon = client or daemon_client()
        if daemon is None:
            raise UpstreamError(
                f"image {ref.written}: {why}, so it must come from the local Docker daemon, and none answers "
                f"(DOCKER_HOST={redact(os.environ.get('DOCKER_HOST', '')) or 'unset, /var/run/docker.sock'}).",
                "Start Docker on this PC (or point DOCKER_HOST at it) and run the same command again, or push "
                "the image to a registry and drop `local: true`.",
            )
        # Collect copies the staged blobs into the bundle (ResolvedImage.blob_file): nothing is served.
        return _daemon_export(ctx).export(daemon, ref, platform)

    # --- install ------------------------------------------------------------------------------------------

    def installed(self, ctx: InstallContext) -> str | None:
        images = bundled_images(ctx)
        if not images:
            return "the bundle holds no images"
        daemon = daemon_client(ctx.host.env())
        if daemon is None:
            return None
        if all(_present(daemon, img) == "tagged" for img in images):
            return f"all {len(images)} image(s) already loaded with the bundle's IDs"
        return None

    def install(self, ctx: InstallContext) -> str:

        host = ctx.host
        images = bundled_images(ctx)
        daemon = daemon_client(host.env(), timeout=3600)
        if daemon is None and not host.dry_run:
            raise InstallError(
                "images: no Docker daemon answers (DOCKER_HOST="
                f"{redact(host.env().get('DOCKER_HOST', '')) or 'unset, /var/run/docker.sock'}), so the images "
                "cannot be loaded.",
                "Install and start Docker first (the docker layer of this bundle does it; or "
                "`systemctl start docker`), then run the same command again.",
            )
        loaded = retagged = present = 0
        loaded_bytes = 0
        started = time.monotonic()
        for img in images:
            state = _present(daemon, img) if daemon is not None else "absent"
            names = ", ".join(img.tags)
            if state == "tagged":
                host.note(f"images: {names} already loaded as {img.config_digest}; skipped")
                present += 1
                continue
            if state == "untagged":
                host.announce(f"tag: {img.config_digest} as {names}")
                if not host.dry_run:
                    _tag(daemon, img)
                retagged += 1
                continue
            host.announce(
                f"load image: {names} ({human_size(img.size)}, ID {img.config_digest}) into the "
                "Docker daemon, from the bundle",
            )
            loaded += 1
            loaded_bytes += img.size
            if host.dry_run:
                continue
            t0 = time.monotonic()
            load_image(daemon, img, ctx.open_artifact)
            host.note(
                f"images: loaded {names} ({human_size(img.size)}) as {img.config_digest} "
                f"in {time.monotonic() - t0:.1f} s"
            )
        took = time.monotonic() - started
        if host.dry_run:
            # Counted against the daemon that answers now; with none yet (the docker layer would start
            # it), every image counts as one to load.
            asked = "" if daemon is not None else " (no Docker daemon answers yet: all counted as to load)"
            retag = f", {retagged} to re-tag" if retagged else ""
            return (
                f"images: would load {loaded} of {len(images)} ({human_size(loaded_bytes)}){retag}, "
                f"{present} already present{asked}"
            )
        extra = f", {retagged} re-tagged" if retagged else ""
        return (
            f"images: loaded {loaded} of {len(images)} ({human_size(loaded_bytes)} in {took:.1f} s)"
            f"{extra}, {present} already present"
        )


# --- collect: artifacts -------------------------------------------------------------------------------------


# One image as the bundle stores it: what was resolved, every reference naming it, its manifest's artifact.
_Stored = tuple[ResolvedImage, list[str], Artifact]


@dataclass
class _Blob:
    art: Artifact
    refs: list[str] = field(default_factory=list)


def build_artifacts(layer: str, resolved: list[tuple[int, ResolvedImage]], auth: RegistryAuth | None) -> list[Artifact]:
    """Every blob once (content-addressed), the small documents as generated files, and the layout files
    that make the directory both an OCI layout and a docker-archive."""
    blobs: dict[str, _Blob] = {}
    manifests: dict[str, _Stored] = {}
    image_bytes = 0

    def add(art: Artifact, ref: str) -> None:
        have = blobs.get(art.path)
        if have is None:
            blobs[art.path] = have = _Blob(art)
        elif art.urls:
            have.art.urls += [u for u in art.urls if u not in have.art.urls]  # another repo serving it
        if ref not in have.refs:
            have.refs.append(ref)
            have.art.meta["images"] = list(have.refs)

    for i, img in resolved:
        field_ = ("images", i, "ref")
        source = img.manifest_url
        ref = img.ref.written
        for d in img.layers:
            add(
                Artifact(
                    layer,
                    f"{BLOBS}/{d.hex}",
                    img.blob_urls(d),
                    field_,
                    pinned=Digest("sha256", d.hex, source),
                    size=d.size,
                    auth=auth if img.source == "registry" else None,
                    local=img.blob_file(d) if img.blob_file is not None else None,
                    meta={"role": "layer", "media_type": d.media_type},
                ),
                ref,
            )
        cfg = img.config_descriptor
        add(
            Artifact(
                layer,
                f"{BLOBS}/{cfg.hex}",
                img.blob_urls(cfg),
                field_,
                pinned=Digest("sha256", cfg.hex, source),
                size=cfg.size,
                content=img.config,
                meta={"role": "config"},
            ),
            ref,
        )
        m_hex = img.manifest_digest.split(":", 1)[1]
        if img.manifest_digest in manifests:
            _img, refs, art = manifests[img.manifest_digest]
            if ref not in refs:
                refs.append(ref)
            continue
        image_bytes += img.size
        art = Artifact(
            layer,
            f"{BLOBS}/{m_hex}",
            [img.manifest_url],
            field_,
            pinned=Digest("sha256", m_hex, source),
            size=len(img.manifest),
            content=img.manifest,
            meta={},
        )
        manifests[img.manifest_digest] = (img, [ref], art)
        blobs[art.path] = _Blob(art, [ref])

    for img, refs, art in manifests.values():
        art.meta = image_meta(img, refs)
    stored = sum(b.art.size or 0 for b in blobs.values())
    index = oci_index(manifests.values())
    archive = docker_archive_manifest(manifests.values())
    first_field = ("images", resolved[0][0], "ref") if resolved else ("images",)
    stats = {
        "role": "index",
        "images": len(manifests),
        "blobs": len(blobs),
        "image_bytes": image_bytes,  # what the images weigh one by one (what `docker save` of each would hold)
        "stored_bytes": stored,
        "saved_bytes": image_bytes - stored,
    }
    why = "written by airgap from the image manifests it checked (nothing downloaded)"
    layout = [
        Artifact(
            layer,
            "oci-layout",
            [],
            first_field,
            content=b'{"imageLayoutVersion": "1.0.0"}\n',
            no_digest_reason=why,
            meta={"role": "oci-layout"},
        ),
        Artifact(layer, "index.json", [], first_field, content=index, no_digest_reason=why, meta=stats),
        Artifact(
            layer,
            "manifest.json",
            [],
            first_field,
            content=archive,
            no_digest_reason=why,
            meta={"role": "docker-archive"},
        ),
    ]
    return [b.art for b in blobs.values()] + layout


def image_meta(img: ResolvedImage, refs: list[str]) -> dict[str, Any]:
    """The lock's record of one image: what install loads, tags and checks. No secret in here."""
    return ImageMeta(
        ref=refs[0],
        refs=refs,
        tags=[parse_ref(r).docker_tag for r in refs],
        pinned=img.ref.pinned(img.manifest_digest) if img.source == "registry" else None,
        manifest_digest=img.manifest_digest,
        index_digest=img.index_digest,
        config_digest=img.config_digest,
        platform=img.platform,
        media_type=img.manifest_media_type,
        layers=len(img.layers),
        size=img.size,
        source=img.source,
    ).model_dump(mode="json")


def _platform_json(platform: str) -> dict[str, str]:
    os_, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    out = {"architecture": arch, "os": os_}
    if variant:
        out["variant"] = variant
    return out


def oci_index(images: Iterable[_Stored]) -> bytes:
    entries = []
    for img, refs, _art in images:
        for ref in refs:
            parsed = parse_ref(ref)
            tag = parsed.docker_tag.rsplit(":", 1)[1]
            entries.append(
                {
                    "mediaType": img.manifest_media_type,
                    "digest": img.manifest_digest,
                    "size": len(img.manifest),
                    "platform": _platform_json(img.platform),
                    "annotations": {
                        # What containerd (and Docker's containerd image store) names the image on load.
                        "io.containerd.image.name": f"{parsed.domain}/{parsed.repository}:{tag}",
                        "org.opencontainers.image.ref.name": tag,
                    },
                }
            )
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return (json.dumps(doc, indent=2) + "\n").encode()


def docker_archive_manifest(images: Iterable[_Stored]) -> bytes:
    entries = [
        archive_entry(img.config_descriptor.hex, [d.hex for d in img.layers], [parse_ref(r).docker_tag for r in refs])
        for img, refs, _art in images
    ]
    return (json.dumps(entries, indent=2) + "\n").encode()


def archive_entry(config_hex: str, layer_hexes: list[str], tags: list[str]) -> dict[str, Any]:
    return {"Config": f"{BLOBS}/{config_hex}", "RepoTags": tags, "Layers": [f"{BLOBS}/{h}" for h in layer_hexes]}


def _combine(errors: list[AirgapError]) -> AirgapError:
    if len(errors) == 1:
        return errors[0]
    return CombinedError(
        f"{len(errors)} images could not be resolved:\n" + "\n".join(f"  - {e}" for e in errors), errors
    )


def _daemon_has(daemon: Any, name: str) -> bool:
    try:
        daemon.images.get(name)
        return True
    except Exception:  # not found, or the daemon failed: either way it cannot supply the image
        return False


# --- install ------------------------------------------------------------------------------------------------


@dataclass
class BundledImage:
    tags: list[str]
    manifest_digest: str
    config_digest: str
    manifest_media_type: str
    platform: str
    size: int
    manifest: LockedArtifact
    config: LockedArtifact
    layers: list[LockedArtifact]


def bundled_images(ctx: InstallContext) -> list[BundledImage]:
    """The images of the bundle, from the lock and each image's manifest blob. Lock entries are used
    as they are (not `ctx.artifacts`, which joins a blob split into parts onto disk): blobs are read
    through `ctx.open_artifact`, straight from their parts."""

    arts = [a for a in ctx.lock.artifacts if a.layer == "images"]
    blobs = {a.name: a for a in arts if a.name.startswith(BLOBS + "/")}
    out = []
    for art in arts:
        if art.meta.get("role") != "manifest":
            continue
        try:
            meta = read_meta(ImageMeta, art.meta, art.path)
        except BadInputError as exc:
            raise InstallError(exc.message, exc.hint) from None
        name = meta.ref
        try:
            with ctx.open_artifact(art) as f:
                doc = json.loads(f.read())
            wanted = [doc["config"]["digest"], *(d["digest"] for d in doc["layers"])]
            wanted = [f"{BLOBS}/{str(d).split(':', 1)[1]}" for d in wanted]
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise InstallError(
                f"images: the bundle's manifest of {name} ({art.path}) cannot be read ({type(exc).__name__}: {exc}).",
                "Run `airgap verify` on the bundle and copy what it names again.",
            ) from None
        missing = [w for w in wanted if w not in blobs]
        if missing:
            raise InstallError(
                f"images: {name} needs {missing[0]}, which the bundle's lock does not list"
                + (f" ({len(missing) - 1} more missing)" if len(missing) > 1 else "")
                + ".",
                "The bundle is incomplete or was edited: copy it again from the original, or get a new bundle "
                "collected on the connected PC.",
            )
        config, layers = blobs[wanted[0]], [blobs[w] for w in wanted[1:]]
        out.append(
            BundledImage(
                tags=meta.tags,
                manifest_digest=meta.manifest_digest,
                config_digest=meta.config_digest,
                manifest_media_type=meta.media_type,
                platform=meta.platform,
                size=meta.size,
                manifest=art,
                config=config,
                layers=layers,
            )
        )
    return out


Opener = Callable[[LockedArtifact], BinaryIO]


def archive_stream(img: BundledImage, open_blob: Opener) -> Iterator[bytes]:
    """A docker-archive (`docker save` layout, OCI layout included) of one image, built from the bundle's
    blobs as they are read: nothing is written to disk. Blobs are read in 1 MiB pieces."""
    tags = img.tags
    entry = archive_entry(img.config.name.rsplit("/", 1)[1], [a.name.rsplit("/", 1)[1] for a in img.layers], tags)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": img.manifest_media_type,
                "digest": img.manifest_digest,
                "size": img.manifest.size,
                "platform": _platform_json(img.platform),
                "annotations": {
                    "io.containerd.image.name": _qualified(tags[0]),
                    "org.opencontainers.image.ref.name": tags[0].rsplit(":", 1)[1],
                }
                if tags
                else {},
            }
        ],
    }
    yield _dir_header("blobs/")
    yield _dir_header(BLOBS + "/")
    yield from _member("oci-layout", b'{"imageLayoutVersion": "1.0.0"}\n')
    yield from _member("index.json", (json.dumps(index) + "\n").encode())
    yield from _member("manifest.json", (json.dumps([entry]) + "\n").encode())
    seen: set[str] = set()
    for art in [img.manifest, img.config, *img.layers]:
        if art.name in seen:
            continue  # an image may list the same layer twice; the archive holds it once
        seen.add(art.name)
        yield from _blob_member(art, open_blob)
    yield b"\0" * 1024  # two zero blocks end a tar archive


def _qualified(tag: str) -> str:
    ref = parse_ref(tag)
    return f"{ref.domain}/{ref.repository}:{ref.tag}"


def _header(name: str, size: int, kind: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 0
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _dir_header(name: str) -> bytes:
    return _header(name, 0, tarfile.DIRTYPE)


def _member(name: str, data: bytes) -> Iterator[bytes]:
    yield _header(name, len(data), tarfile.REGTYPE)
    yield data + b"\0" * (-len(data) % 512)


def _blob_member(art: LockedArtifact, open_blob: Opener) -> Iterator[bytes]:

    yield _header(art.name, art.size, tarfile.REGTYPE)
    sent = 0
    with open_blob(art) as f:
        while chunk := f.read(min(CHUNK, art.size - sent)):
            sent += len(chunk)
            yield chunk
            if sent == art.size:
                break
    if sent != art.size:
        # The header promised the lock's size; anything else would corrupt the rest of the stream.
        raise InstallError(
            f"images: {art.path} is shorter than the {art.size} bytes the lock records.",
            "Run `airgap verify` on the bundle and copy what it names again.",
        )
    if art.size % 512:
        yield b"\0" * (512 - art.size % 512)


def _present(daemon: Any, img: BundledImage) -> str:
    """'tagged' (the ID is there and every tag points at it), 'untagged' (the ID is there), or 'absent'."""
    image = _get(daemon, img.config_digest)
    if image is None:
        return "absent"
    for tag in img.tags:
        named = _get(daemon, tag)
        if named is None or named.id != image.id:
            return "untagged"
    return "tagged"


def _get(daemon: Any, name: str) -> Any | None:
    import docker.errors as derr

    try:
        return daemon.images.get(name)
    except derr.ImageNotFound:
        return None
    except derr.APIError as exc:
        if getattr(exc, "status_code", None) in (400, 404):
            return None  # e.g. a tag that is not a valid reference for this daemon
        raise


def _tag(daemon: Any, img: BundledImage) -> None:
    for tag in img.tags:
        repo, _, name = tag.rpartition(":")
        daemon.api.tag(img.config_digest, repo, name, force=True)


def load_image(daemon: Any, img: BundledImage, open_blob: Opener) -> None:
    """Stream one image into the daemon, then check what it loaded: the ID must be the config digest the
    lock recorded (Docker's containerd image store reports the manifest digest instead: accepted too)."""
    import docker.errors as derr
    import requests

    names = ", ".join(img.tags) or img.config_digest
    messages: list[str] = []
    try:
        for msg in daemon.api.load_image(archive_stream(img, open_blob)):
            if isinstance(msg, dict) and msg.get("error"):
                raise InstallError(
                    f"images: Docker refused to load {names}: {msg['error'].strip()}.",
                    "Run `airgap verify` on the bundle; if it passes, the daemon's storage may be full or "
                    "its storage driver unable to hold this image (see `docker info` and the daemon's log).",
                )
            if isinstance(msg, dict) and msg.get("stream"):
                messages.append(str(msg["stream"]).strip())
    except (derr.APIError, requests.RequestException, OSError) as exc:
        raise InstallError(
            f"images: loading {names} into the Docker daemon failed: {str(exc).splitlines()[0][:300]}.",
            "Check that the daemon is running and has space (`docker info`, `df -h /var/lib/docker`), "
            "then run the same command again: images already loaded are skipped.",
        ) from None
    loaded = _get(daemon, img.config_digest) or (_get(daemon, img.tags[0]) if img.tags else None)
    if loaded is None or loaded.id not in (img.config_digest, img.manifest_digest):
        got = loaded.id if loaded is not None else "nothing (" + "; ".join(messages[-2:]) + ")"
        raise InstallError(
            f"images: after loading {names}, the daemon holds {got}, not the image ID {img.config_digest} "
            "recorded in the bundle's lock.",
            "Run `airgap verify` on the bundle; if it passes, report this as a bug with `docker version`.",
        )
    _tag(daemon, img)
