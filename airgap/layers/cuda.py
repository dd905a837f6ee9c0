"""CUDA toolkit runfile, checked against NVIDIA's md5sum.txt; installed toolkit-only, silently."""

from __future__ import annotations

import re
import shutil

from airgap.artifacts import Artifact, Digest, PublishedDigest
from airgap.compat.tables import CUDA_RUNFILE_DRIVER, cuda_runfile_driver
from airgap.errors import InstallError
from airgap.install_context import InstallContext
from airgap.layers.base import Layer
from airgap.manifest import Manifest
from airgap.sources.http import file_name_from_url

BASE = "https://developer.download.nvidia.com/compute/cuda"


class CudaLayer(Layer):
    name = "cuda"
    section = "cuda"
    by_hand_file = "sh {path} --silent --toolkit    (toolkit only; then add /usr/local/cuda/bin to PATH)"
    installable = True
    preflight = frozenset({"disk"})

    def plan(self, manifest: Manifest) -> list[Artifact]:
        spec = manifest.cuda
        assert spec is not None
        pinned = Digest("sha256", spec.sha256, "manifest") if spec.sha256 else None
        published_list = f"{BASE}/{spec.version}/docs/sidebar/md5sum.txt"
        if spec.url:
            name = file_name_from_url(spec.url)
            return [
                Artifact(
                    self.name,
                    name,
                    [spec.url],
                    ("cuda", "url"),
                    pinned=pinned,
                    published=PublishedDigest("md5", published_list, name),
                )
            ]
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
        return [
            Artifact(
                self.name,
                name,
                [url],
                ("cuda", "version"),
                pinned=pinned,
                published=PublishedDigest("md5", published_list, name),
            )
        ]

    def installed(self, ctx: InstallContext) -> str | None:
        short = _short(ctx)
        got = nvcc_release(ctx, f"/usr/local/cuda-{short}/bin/nvcc")
        return f"CUDA {short} is already installed (nvcc reports {got})" if got == short else None

    def install(self, ctx: InstallContext) -> str:
        host = ctx.host
        short = _short(ctx)
        prefix = f"/usr/local/cuda-{short}"
        ((art, runfile),) = ctx.artifacts(self.name)
        tmpdir = _roomy_tmpdir(ctx, art.size)
        res = host.run(
            ["sh", str(runfile), "--silent", "--toolkit", f"--toolkitpath={host.path(prefix)}", f"--tmpdir={tmpdir}"],
            check=False,
            timeout=3600,
        )
        if res.returncode != 0:
            raise InstallError(
                f"the CUDA installer failed (exit {res.returncode}).",
                "See /var/log/cuda-installer.log on the server. A full /tmp is the usual cause (it unpacks "
                "several GB); a gcc the installer does not support is the next.",
                res,
            )
        # profile.d and ld.so.conf.d reach every login shell and every program, unlike a user's .bashrc.
        host.write_file(
            "/etc/profile.d/cuda.sh",
            f'export PATH="{prefix}/bin${{PATH:+:${{PATH}}}}"\n'
            f'export LD_LIBRARY_PATH="{prefix}/lib64${{LD_LIBRARY_PATH:+:${{LD_LIBRARY_PATH}}}}"\n',
        )
        host.write_file(f"/etc/ld.so.conf.d/cuda-{short.replace('.', '-')}.conf", f"{prefix}/lib64\n")
        if str(host.root) == "/" and host.which("ldconfig"):
            host.run(["ldconfig"])
        if host.dry_run:
            return f"CUDA {short} would be installed to {prefix}"
        got = nvcc_release(ctx, f"{prefix}/bin/nvcc")
        if got != short:
            raise InstallError(
                f"the CUDA installer finished, but {prefix}/bin/nvcc reports {got or 'nothing'}.",
                "See /var/log/cuda-installer.log; run the installer by hand to see its questions.",
                res,
            )
        return f"CUDA {short} toolkit installed to {prefix}; PATH via /etc/profile.d/cuda.sh"


def _short(ctx: InstallContext) -> str:
    spec = ctx.manifest.cuda
    if spec is None:
        raise InstallError("the bundle's lock records no cuda section, but holds CUDA files.", "Collect it again.")
    return ".".join(spec.version.split(".")[:2])


def nvcc_release(ctx: InstallContext, server_path: str) -> str | None:
    nvcc = ctx.host.path(server_path)
    if not nvcc.exists():
        return None
    res = ctx.host.run([str(nvcc), "--version"], check=False, changes=False, timeout=60)
    m = re.search(r"release (\d+\.\d+)", res.output)
    return m.group(1) if m else None


def _roomy_tmpdir(ctx: InstallContext, runfile_size: int) -> str:
    """The installer unpacks about three times its size: a small /tmp is the classic failure."""
    need = runfile_size * 3
    for candidate in ("/var/tmp", "/tmp", "/root"):
        path = ctx.host.path(candidate)
        if path.is_dir() and shutil.disk_usage(path).free > need:
            return str(path)
    raise InstallError(
        f"no directory with {need // (1 << 30) + 1} GiB free to unpack the CUDA installer "
        "(tried /var/tmp, /tmp, /root).",
        "Free space on one of them, then run again.",
    )
