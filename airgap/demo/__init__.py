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
from airgap.collect import collect
from airgap.errors import EXIT_CHECK_FAILED, EXIT_OK
from airgap.host import Host
from airgap.installer import install_bundle
from airgap.localserver import LocalHTTPServer
from airgap.lock import Lock
from airgap.smoke import run_smoke
from airgap.sources.http import HttpSource
from airgap.ui import Output
from airgap.units import human_size
from airgap.verify import verify_bundle

SMOKE_SCRIPT = b"""#!/bin/sh
# Stand-in for the test scripts worth bringing along to the server.
nvidia-smi && docker run --rm --gpus all nvidia/cuda:12.4.0-base-ubuntu22.04 nvidia-smi
"""


def _installer(name: str, payload_mib: int, seed: int, body: str) -> bytes:
    """A shell installer with a binary payload after `exit`, shaped like a makeself .run, so sizes feel
    real. It takes the options NVIDIA's installers take and installs stubs under $AIRGAP_ROOT only."""
    head = (
        f"#!/bin/sh\n# airgap demo stand-in for {name}\n"
        'root="${AIRGAP_ROOT:-/}"\n'
        'if [ "$root" = "/" ]; then echo "demo stand-in: refusing to install into /" >&2; exit 3; fi\n'
        f"{body}\nexit 0\n"
    )
    rng = random.Random(seed)
    return head.encode() + rng.randbytes(payload_mib << 20)


DRIVER_BODY = """for a in "$@"; do
  case "$a" in --silent|--dkms|--log-file-name=*) ;; *) echo "bad option $a" >&2; exit 2;; esac
done
mkdir -p "$root/usr/bin"
printf '#!/bin/sh\\necho 550.90.07\\n' > "$root/usr/bin/nvidia-smi"; chmod 755 "$root/usr/bin/nvidia-smi"
echo "demo: NVIDIA driver 550.90.07 'installed' (a stub nvidia-smi)"
"""
CUDA_BODY = """path=""; for a in "$@"; do case "$a" in --toolkitpath=*) path="${a#*=}";; esac; done
mkdir -p "$path/bin" "$path/lib64"
printf '#!/bin/sh\\necho "Cuda compilation tools, release 12.4, V12.4.99"\\n' > "$path/bin/nvcc"
chmod 755 "$path/bin/nvcc"; echo "demo: CUDA 12.4 toolkit 'installed' in $path (a stub nvcc)"
"""
DOCKER_STUBS = {
    # The daemon stand-in exits at once; the client stand-in answers the version check the layer makes.
    "dockerd": "#!/bin/sh\necho 'demo stand-in for dockerd'\n",
    "docker": "#!/bin/sh\ncase \"$*\" in *Server.Version*) echo 25.0.3 ;; *) echo 'demo stand-in for docker' ;; esac\n",
}


def _docker_tgz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in (
            "docker",
            "dockerd",
            "containerd",
            "ctr",
            "containerd-shim-runc-v2",
            "docker-init",
            "docker-proxy",
            "runc",
        ):
            data = DOCKER_STUBS.get(name, f"#!/bin/sh\necho 'demo stand-in for {name}'\n").encode()
            info = tarfile.TarInfo(f"docker/{name}")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def prepare_server_root(root: Path) -> None:
    """What the isolated server looks like to preflight: Ubuntu 22.04 with one NVIDIA GPU on PCI."""
    files = {
        "etc/os-release": 'ID=ubuntu\nVERSION_ID="22.04"\n',
        "etc/group": "root:x:0:\n",
        "proc/modules": "nvme 61440 3 - Live 0x0\n",
        "proc/sys/kernel/osrelease": "5.15.0-122-generic\n",
        "sys/bus/pci/devices/0000:01:00.0/vendor": "0x10de\n",
        "sys/bus/pci/devices/0000:01:00.0/class": "0x030000\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "lib/modules/5.15.0-122-generic/build").mkdir(parents=True, exist_ok=True)
    (root / "var/tmp").mkdir(parents=True, exist_ok=True)


def build_upstream(root: Path) -> dict[str, str]:
    """Lay out the upstream servers' trees under `root`; return mirrors from real prefixes to local paths."""
    files = {
        "nvidia-us/XFree86/Linux-x86_64/550.90.07/NVIDIA-Linux-x86_64-550.90.07.run": _installer(
            "NVIDIA driver 550.90.07", 6, 1, DRIVER_BODY
        ),
        "nvidia-dev/compute/cuda/12.4.0/local_installers/cuda_12.4.0_550.54.14_linux.run": _installer(
            "CUDA 12.4.0", 12, 2, CUDA_BODY
        ),
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
    with LocalHTTPServer(upstream) as upstream_server:
        out.heading("1. The connected PC: upstream servers")
        out.info(f"   Sample artifacts served on {upstream_server.url} stand in for NVIDIA's and Docker's servers;")
        out.info("   the manifest's `mirrors:` send the real URLs there (as an Artifactory mirror would).")
        manifest_path = work / "demo-manifest.yaml"
        manifest_path.write_text(demo_manifest_text(upstream_server.url, mirrors))
        manifest = manifest_mod.load(manifest_path)

        out.heading(f"2. airgap collect {manifest_path.name}")
        bundle = work / "connected-pc" / "bundle"
        collected = collect(manifest, bundle, HttpSource(manifest.mirrors, backoff=0.2), warn=out.warn)
        for f in collected.files:
            out.info(f"   {f.status:<10} {f.path}  ({human_size(f.size)})")
        out.info(
            f"   bundle written: {len(collected.files)} files, {human_size(collected.total_size)}, "
            "with airgap.lock.json, SHA256SUMS and README.txt"
        )

    out.heading("3. The transfer: the bundle is copied to the 'USB drive'")
    usb = work / "usb-drive" / "bundle"
    if usb.exists():
        shutil.rmtree(usb)
    shutil.copytree(bundle, usb)
    out.info(f"   {usb}")

    out.heading("4. The isolated server: airgap verify")
    good = verify_bundle(usb)
    out.info(
        f"   {'OK' if good.ok else 'FAILED'}: {good.files} files, {human_size(good.bytes)} re-hashed "
        f"in {good.seconds:.2f}s"
    )
    if not good.ok:
        for p in good.problems:
            out.info(f"   {p.kind.upper():<10} {p.path}: {p.detail}")
        return EXIT_CHECK_FAILED

    out.heading("5. The isolated server: airgap install (into a scratch root, never touching the network)")
    server = work / "server-root"
    if server.exists():
        shutil.rmtree(server)
    prepare_server_root(server)
    host = Host(root=server)
    report = install_bundle(usb, host, skip={"smoke"}, say=lambda _: None, warn=out.warn)
    for step in report.steps:
        out.info(f"   {step.step:<8} {step.status:<10} {step.detail}")
    out.info(f"   state: {server}/var/lib/airgap/state.json; log: {server}{report.log}")
    again = install_bundle(usb, Host(root=server), skip={"smoke"}, say=lambda _: None, warn=out.warn)
    out.info(f"   run again: {', '.join(f'{s.step} {s.status}' for s in again.steps)} (nothing to redo)")

    out.heading("6. airgap smoke: the GPU smoke test")
    smoke = run_smoke(Host(root=server), Lock.read(usb))
    for c in smoke.checks:
        out.info(f"   {c.name:<14} {c.status:<5} {c.message}")
    out.info("   (no real GPU or NVIDIA driver here, so NVML fails: on the server this is the final proof.)")

    out.heading("7. What a bad transfer looks like: one byte flipped in the CUDA installer")
    victim = usb / "layers/03-cuda/cuda_12.4.0_550.54.14_linux.run"
    with open(victim, "r+b") as medium:
        medium.seek(os.path.getsize(victim) // 2)
        byte = medium.read(1)
        medium.seek(-1, os.SEEK_CUR)
        medium.write(bytes([byte[0] ^ 0xFF]))
    bad = verify_bundle(usb)
    for p in bad.problems:
        out.info(f"   {p.kind.upper():<10} {p.path}")
        out.info(f"              {p.detail}")
    out.info("   (`airgap verify` exits 1 here, and `airgap install` refuses the bundle: copy that one file again.)")
    out.heading("Done.")
    out.info("   Next: write a manifest (see manifests/ in the project), `airgap plan` it, `airgap collect` it.")
    ok = good.ok and not bad.ok and all(s.status in ("installed", "skipped") for s in report.steps)
    return EXIT_OK if ok else EXIT_CHECK_FAILED
