"""CUDA toolkit runfile, checked against the md5sum.txt NVIDIA publishes next to it."""

from __future__ import annotations

from airgap.artifacts import Artifact, Digest, PublishedDigest
from airgap.compat import CUDA_RUNFILE_DRIVER, cuda_runfile_driver
from airgap.layers.base import Layer
from airgap.manifest import Manifest
from airgap.sources.http import file_name_from_url

BASE = "https://developer.download.nvidia.com/compute/cuda"


class CudaLayer(Layer):
    name = "cuda"
    section = "cuda"

    def plan(self, manifest: Manifest) -> list[Artifact]:
        spec = manifest.cuda
        assert spec is not None
        pinned = Digest("sha256", spec.sha256, "manifest") if spec.sha256 else None
        published_list = f"{BASE}/{spec.version}/docs/sidebar/md5sum.txt"
        if spec.url:
            name = file_name_from_url(spec.url)
            return [Artifact(self.name, name, [spec.url], ("cuda", "url"), pinned=pinned,
                             published=PublishedDigest("md5", published_list, name))]
        driver = cuda_runfile_driver(spec.version)
        if driver is None:
            known = ", ".join(CUDA_RUNFILE_DRIVER)
            raise manifest.error(
                ("cuda", "version"),
                f"CUDA {spec.version} is not in airgap's table of runfiles (known: {known}); "
                "use one of those, or pin the installer with `cuda.url:` (and `cuda.sha256:`)",
            )
        suffix = "_sbsa" if manifest.target.arch == "arm64" else ""
        name = f"cuda_{spec.version}_{driver}_linux{suffix}.run"
        url = f"{BASE}/{spec.version}/local_installers/{name}"
        return [Artifact(self.name, name, [url], ("cuda", "version"), pinned=pinned,
                         published=PublishedDigest("md5", published_list, name))]
