"""NVIDIA driver `.run` installer."""

from __future__ import annotations

from airgap.artifacts import Artifact, Digest
from airgap.layers.base import Layer
from airgap.manifest import Manifest
from airgap.sources.http import file_name_from_url

BASE = "https://us.download.nvidia.com"
ARCH_DIRS = {"amd64": ("Linux-x86_64", "x86_64"), "arm64": ("aarch64", "aarch64")}


class DriverLayer(Layer):
    name = "driver"
    section = "driver"

    def plan(self, manifest: Manifest) -> list[Artifact]:
        spec = manifest.driver
        assert spec is not None
        pinned = Digest("sha256", spec.sha256, "manifest") if spec.sha256 else None
        reason = "NVIDIA publishes no checksum for driver .run files; pin `driver.sha256` to check one"
        if spec.url:
            return [Artifact(self.name, file_name_from_url(spec.url), [spec.url], ("driver", "url"),
                             pinned=pinned, no_digest_reason=reason)]
        xfree_dir, arch = ARCH_DIRS[manifest.target.arch]
        name = f"NVIDIA-Linux-{arch}-{spec.version}.run"
        # GeForce/workstation builds live under XFree86/, datacenter builds under tesla/: same file name,
        # and a version exists in one or both, so try them in that order.
        urls = [f"{BASE}/XFree86/{xfree_dir}/{spec.version}/{name}", f"{BASE}/tesla/{spec.version}/{name}"]
        return [Artifact(self.name, name, urls, ("driver", "version"), pinned=pinned, no_digest_reason=reason)]
