"""Images taken from a local Docker daemon: an image built on this PC and never pushed.

The daemon's `docker save` stream is unpacked into a staging directory, content-addressed, for one run:
the run's `ResolveContext` creates the `DaemonExport` and closes it (removing the staged copy) when the run
ends. The layer blobs reach the bundle by `HttpSource.copy_local` (hashed while copied, checked before
rename), never through a loopback HTTP server; the lock records them under `DAEMON_URL`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from airgap.errors import BadInputError, UpstreamError
from airgap.sources.registry.errors import ImageNotFound
from airgap.sources.registry.oci import (
    OCI_CONFIG,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    Descriptor,
    ResolvedImage,
    check_config,
    matches,
    platform_str,
)
from airgap.sources.registry.reference import ImageRef
from airgap.sources.request import first_line

# Canonical URLs of blobs exported from a local Docker daemon. `.invalid` can never resolve (RFC 2606),
# so such a URL in a lock can never be mistaken for, or fetched from, a real host.
DAEMON_URL = "http://docker-daemon.invalid"


def daemon_client(env: Mapping[str, str] | None = None, timeout: float = 600) -> Any | None:
    """A docker SDK client for the daemon DOCKER_HOST (or the default socket) names, or None when no
    daemon answers. Cheap when there is none: no socket, no wait."""
    env = dict(os.environ if env is None else env)
    host = env.get("DOCKER_HOST", "")
    if not host and not Path("/var/run/docker.sock").exists():
        return None
    if host.startswith("unix://") and not Path(host[len("unix://") :]).exists():
        return None
    try:
        import docker  # imported here: collect from a registry must not need it loaded
        import docker.errors

        # A short timeout for the probe: a DOCKER_HOST=tcp://... that does not answer must not hang collect.
        client = docker.from_env(environment=env, timeout=5)
        client.ping()
        client.api.timeout = int(timeout)
        return client
    except Exception:  # any failure to connect means: no usable daemon here
        return None


class _ChunkReader:
    """A file-like reader over an iterator of byte chunks (the SDK's export stream), for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            rest = self._buf[self._pos :]
            self._buf, self._pos = b"", 0
            return rest + b"".join(self._chunks)
        while len(self._buf) - self._pos < n:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            # Only the unread tail (shorter than n) is copied: reading stays linear in the stream size.
            self._buf, self._pos = self._buf[self._pos :] + chunk, 0
        out = self._buf[self._pos : self._pos + n]
        self._pos += len(out)
        return out


class DaemonExport:
    """Images exported from a local Docker daemon for one run, staged content-addressed in a temporary
    directory until `close()`; collect copies their blobs from there into the bundle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dir: Path | None = None

    def __enter__(self) -> DaemonExport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stage(self) -> Path:
        with self._lock:
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="airgap-docker-export-"))
            return self._dir

    def close(self) -> None:
        with self._lock:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def export(self, client: Any, ref: ImageRef, platform: str) -> ResolvedImage:
        import docker.errors

        image = ref.written
        try:
            img = client.images.get(image)
        except docker.errors.ImageNotFound:
            raise ImageNotFound(
                f"image {image}: the local Docker daemon has no such image.",
                "Build or pull it on this PC first (`docker images` lists what it has), or drop `local: true` "
                "to pull it from its registry.",
            ) from None
        except docker.errors.APIError as exc:
            raise UpstreamError(f"image {image}: the local Docker daemon failed: {first_line(exc)}.") from None
        attrs = img.attrs
        have = {
            "os": attrs.get("Os", ""),
            "architecture": attrs.get("Architecture", ""),
            "variant": attrs.get("Variant", ""),
        }
        if not matches(have, platform):
            raise BadInputError(
                f"image {image}: the local Docker daemon has it for {platform_str(have)}, not {platform}.",
                f"Build it for {platform} (`docker buildx build --platform {platform} --load ...`), or change "
                "`target.arch` / this image's `platform:`.",
            )
        key = img.id.replace(":", "-")
        blobs = self._stage() / key / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        files: dict[str, tuple[str, int]] = {}
        links: dict[str, str] = {}
        tar_manifest: Any = None
        try:
            reader = _ChunkReader(iter(client.api.get_image(img.id, chunk_size=1 << 20)))
            with tarfile.open(fileobj=reader, mode="r|", bufsize=1 << 20) as tar:  # type: ignore[call-overload]
                for member in tar:
                    if member.issym() or member.islnk():
                        target = (
                            member.linkname
                            if member.islnk()
                            else os.path.normpath(os.path.join(os.path.dirname(member.name), member.linkname))
                        )
                        links[member.name] = target
                    elif member.isfile():
                        src = tar.extractfile(member)
                        assert src is not None
                        if member.name == "manifest.json":
                            tar_manifest = json.loads(src.read())
                            continue
                        files[member.name] = _store_blob(src, blobs)
        except (docker.errors.APIError, tarfile.TarError, OSError, ValueError) as exc:
            raise UpstreamError(
                f"image {image}: exporting it from the local Docker daemon failed: {first_line(exc)}."
            ) from None

        def blob(name: str) -> tuple[str, int]:
            seen = 0
            while name in links and seen < 16:
                name, seen = links[name], seen + 1
            return files[name]

        try:
            entry = tar_manifest[0]
            cfg_hex, cfg_size = blob(entry["Config"])
            layer_blobs = [blob(name) for name in entry["Layers"]]
        except (TypeError, KeyError, IndexError):
            raise UpstreamError(
                f"image {image}: the local Docker daemon's export has no usable manifest.json."
            ) from None
        config = (blobs / cfg_hex).read_bytes()
        layers = [Descriptor(_layer_media_type(blobs / h), f"sha256:{h}", size) for h, size in layer_blobs]
        config_desc = Descriptor(OCI_CONFIG, f"sha256:{cfg_hex}", cfg_size)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_desc.digest, "size": cfg_size},
                "layers": [{"mediaType": d.media_type, "digest": d.digest, "size": d.size} for d in layers],
            },
            indent=2,
        ).encode()
        check_config(config, layers, platform, image, pinned_platform=True)

        def blob_urls(d: Descriptor) -> list[str]:
            return [f"{DAEMON_URL}/{key}/blobs/sha256/{d.hex}"]

        def blob_file(d: Descriptor) -> Path:
            return blobs / d.hex

        return ResolvedImage(
            ref=ref,
            platform=platform_str(have),
            manifest=manifest,
            manifest_digest="sha256:" + hashlib.sha256(manifest).hexdigest(),
            manifest_media_type=OCI_MANIFEST,
            config=config,
            config_descriptor=config_desc,
            layers=layers,
            blob_urls=blob_urls,
            source="docker-daemon",
            manifest_url=f"{DAEMON_URL}/{key}",
            blob_file=blob_file,
        )


def _store_blob(src: IO[bytes], blobs: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=blobs, prefix=".incoming-")
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(1 << 20):
            h.update(chunk)
            out.write(chunk)
            size += len(chunk)
    hexd = h.hexdigest()
    os.replace(tmp, blobs / hexd)
    return hexd, size


def _layer_media_type(path: Path) -> str:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b":
        return OCI_LAYER_TAR + "+gzip"
    if magic == b"\x28\xb5\x2f\xfd":
        return OCI_LAYER_TAR + "+zstd"
    return OCI_LAYER_TAR
