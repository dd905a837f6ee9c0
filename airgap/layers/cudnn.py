"""cuDNN from NVIDIA's CUDA apt repository (`libcudnn9-cuda-12` and its -dev), with their dependencies."""

from __future__ import annotations

import re

from airgap.layers.debs import AptLayer
from airgap.manifest import Manifest
from airgap.sources.apt import Request


class CudnnLayer(AptLayer):
    name = "cudnn"
    section = "cudnn"
    by_hand_dir = "apt-get install ./{dir}/*.deb"
    extra_repos = ("cuda",)

    def requests(self, manifest: Manifest) -> list[Request]:
        spec = manifest.cudnn
        assert spec is not None
        major = spec.version.split(".")[0]
        cuda_major = spec.cuda_major or (int(manifest.cuda.version.split(".")[0]) if manifest.cuda else 12)
        where = f"{manifest.location(('cudnn', 'version'))} cudnn.version"
        if spec.packages is None:
            # What NVIDIA's cuDNN install guide installs: the runtime library and the headers to build against.
            names = [f"libcudnn{major}-cuda-{cuda_major}", f"libcudnn{major}-dev-cuda-{cuda_major}"]
            return [Request(n, version=spec.version, why=where) for n in names]
        out = []
        for i, text in enumerate(spec.packages):
            req = Request.parse(text, why=f"{manifest.location(('cudnn', 'packages', i))} cudnn.packages[{i}]")
            if req.version is None and req.relation is None and re.match(r"^(lib)?cudnn", req.name):
                # cudnn.version pins every cuDNN package named without a version of its own.
                req = Request(req.name, version=spec.version, why=req.why)
            out.append(req)
        return out
