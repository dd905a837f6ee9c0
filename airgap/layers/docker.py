"""Docker engine as Docker's static binaries tgz (no distribution packages needed on the server)."""

from __future__ import annotations

from airgap.artifacts import Artifact, Digest
from airgap.layers.base import Layer
from airgap.manifest import Manifest
from airgap.sources.http import file_name_from_url

BASE = "https://download.docker.com/linux/static/stable"
ARCH = {"amd64": "x86_64", "arm64": "aarch64"}


class DockerLayer(Layer):
    name = "docker"
    section = "docker"

    def plan(self, manifest: Manifest) -> list[Artifact]:
        spec = manifest.docker
        assert spec is not None
        pinned = Digest("sha256", spec.sha256, "manifest") if spec.sha256 else None
        reason = "Docker publishes no checksum for its static tgz; pin `docker.sha256` to check one"
        url = spec.url or f"{BASE}/{ARCH[manifest.target.arch]}/docker-{spec.version}.tgz"
        field = ("docker", "url") if spec.url else ("docker", "version")
        return [Artifact(self.name, file_name_from_url(url), [url], field, pinned=pinned,
                         no_digest_reason=reason)]
