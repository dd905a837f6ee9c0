"""`airgap demo`: the whole trip on one machine, with no internet and no GPU.

The artifacts are stand-ins generated here (shell scripts and a tgz with the real names and layout), served
by a local HTTP server; everything else (manifest, mirrors, collect, verify) is the real code path.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import tarfile
import tempfile
from importlib import resources
from pathlib import Path

from airgap import manifest as manifest_mod
from airgap.bundle import human_size
from airgap.collect import collect
from airgap.localserver import LocalHTTPServer
from airgap.sources.http import HttpSource
from airgap.ui import Output
from airgap.verify import verify_bundle

SMOKE_SCRIPT = b"""#!/bin/sh
# Stand-in for the test scripts FIELD.md says to bring along.
nvidia-smi && docker run --rm --gpus all nvidia/cuda:12.4.0-base-ubuntu22.04 nvidia-smi
"""


def _installer(name: str, payload_mib: int, seed: int) -> bytes:
    """A shell script with a binary payload, shaped like a makeself installer, so sizes feel real."""
    head = f"#!/bin/sh\n# airgap demo stand-in for {name}\necho 'demo installer: nothing to install'\nexit 0\n"
    rng = random.Random(seed)
    return head.encode() + rng.randbytes(payload_mib << 20)


def _docker_tgz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("docker", "dockerd", "containerd", "ctr", "containerd-shim-runc-v2", "docker-init",
                     "docker-proxy", "runc"):
            data = f"#!/bin/sh\necho 'demo stand-in for {name}'\n".encode()
            info = tarfile.TarInfo(f"docker/{name}")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_upstream(root: Path) -> dict[str, str]:
    """Lay out the upstream servers' trees under `root`; return mirrors from real prefixes to local paths."""
    files = {
        "nvidia-us/XFree86/Linux-x86_64/550.90.07/NVIDIA-Linux-x86_64-550.90.07.run":
            _installer("NVIDIA driver 550.90.07", 6, 1),
        "nvidia-dev/compute/cuda/12.4.0/local_installers/cuda_12.4.0_550.54.14_linux.run":
            _installer("CUDA 12.4.0", 12, 2),
        "docker/linux/static/stable/x86_64/docker-25.0.3.tgz": _docker_tgz(),
        "example/airgap-demo/gpu-smoke-test.sh": SMOKE_SCRIPT,
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    cuda = "cuda_12.4.0_550.54.14_linux.run"
    md5 = hashlib.md5(files[f"nvidia-dev/compute/cuda/12.4.0/local_installers/{cuda}"]).hexdigest()
    sidebar = root / "nvidia-dev/compute/cuda/12.4.0/docs/sidebar/md5sum.txt"
    sidebar.parent.mkdir(parents=True, exist_ok=True)
    sidebar.write_text(f"{md5}  local_installers/{cuda}\n")
    return {
        "https://us.download.nvidia.com": "nvidia-us",
        "https://developer.download.nvidia.com": "nvidia-dev",
        "https://download.docker.com": "docker",
        "https://example.com": "example",
    }


def demo_manifest_text(server_url: str, mirrors: dict[str, str]) -> str:
    text = resources.files("airgap.demo").joinpath("manifest.yaml").read_text()
    text = text.replace("SMOKE_SHA256", hashlib.sha256(SMOKE_SCRIPT).hexdigest())
    lines = ["mirrors:"] + [f"  {real}: {server_url}/{local}" for real, local in mirrors.items()]
    return text + "\n".join(lines) + "\n"


def run_demo(out: Output, workdir: Path | None) -> int:
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="airgap-demo-")
        workdir = Path(tmp.name)
    try:
        return _run(out, workdir)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _run(out: Output, work: Path) -> int:
    work.mkdir(parents=True, exist_ok=True)
    upstream = work / "upstream"
    mirrors = build_upstream(upstream)
    with LocalHTTPServer(upstream) as server:
        out.heading("1. The connected PC: upstream servers")
        out.info(f"   Sample artifacts served on {server.url} stand in for NVIDIA's and Docker's servers;")
        out.info("   the manifest's `mirrors:` send the real URLs there (as an Artifactory mirror would).")
        manifest_path = work / "demo-manifest.yaml"
        manifest_path.write_text(demo_manifest_text(server.url, mirrors))
        manifest = manifest_mod.load(manifest_path)

        out.heading(f"2. airgap collect {manifest_path.name}")
        bundle = work / "connected-pc" / "bundle"
        report = collect(manifest, bundle, HttpSource(manifest.mirrors, backoff=0.2), warn=out.warn)
        for f in report.files:
            out.info(f"   {f.status:<10} {f.path}  ({human_size(f.size)})")
        out.info(f"   bundle written: {len(report.files)} files, {human_size(report.total_size)}, "
                 "with airgap.lock.json, SHA256SUMS and README.txt")

    out.heading("3. The transfer: the bundle is copied to the 'USB drive'")
    usb = work / "usb-drive" / "bundle"
    if usb.exists():
        shutil.rmtree(usb)
    shutil.copytree(bundle, usb)
    out.info(f"   {usb}")

    out.heading("4. The isolated server: airgap verify")
    good = verify_bundle(usb)
    out.info(f"   {'OK' if good.ok else 'FAILED'}: {good.files} files, {human_size(good.bytes)} re-hashed "
             f"in {good.seconds:.2f}s")
    if not good.ok:
        for p in good.problems:
            out.info(f"   {p.kind.upper():<10} {p.path}: {p.detail}")
        return 1

    out.heading("5. What a bad transfer looks like: one byte flipped in the CUDA installer")
    victim = usb / "layers/03-cuda/cuda_12.4.0_550.54.14_linux.run"
    with open(victim, "r+b") as f:
        f.seek(os.path.getsize(victim) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    bad = verify_bundle(usb)
    for p in bad.problems:
        out.info(f"   {p.kind.upper():<10} {p.path}")
        out.info(f"              {p.detail}")
    out.info("   (`airgap verify` exits 1 here: copy that one file again.)")
    out.heading("Done.")
    out.info("   Next: write a manifest (see manifests/ in the project), `airgap plan` it, `airgap collect` it.")
    return 0 if good.ok and not bad.ok else 1
