"""CUDA toolkit runfile, checked against NVIDIA's md5sum.txt; installed toolkit-only, silently."""

from __future__ import annotations

import re
import tempfile

from airgap.artifacts import Artifact, Digest, PublishedDigest
from airgap.compat.tables import CUDA_RUNFILE_DRIVER, cuda_runfile_driver
from airgap.errors import InstallError
from airgap.install_context import InstallContext
from airgap.layers.base import Layer
from airgap.manifest import Manifest
from airgap.probes import disk_usage
from airgap.sources.http import file_name_from_url
from airgap.units import human_size

BASE = "https://developer.download.nvidia.com/compute/cuda"
# Written into the toolkit's directory once the runfile has succeeded: which runfile completed there.
MARKER = ".airgap-installed"


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
        # Done means every output is in place, not just nvcc: a run killed after the runfile, or during it
        # (nvcc may be unpacked long before the rest), must not look finished to the next one.
        short = _short(ctx)
        got = nvcc_release(ctx, f"{_prefix(short)}/bin/nvcc")
        if got != short:
            return None
        missing = _missing(ctx, short)
        if missing:
            ctx.host.note(f"CUDA {short}: nvcc is there, but not {'; '.join(missing)}")
            return None
        return f"CUDA {short} is already installed (nvcc reports {got})"

    def install(self, ctx: InstallContext) -> str:
        host = ctx.host
        short = _short(ctx)
        prefix = _prefix(short)
        ran = not (_runfile_completed(ctx, short) and nvcc_release(ctx, f"{prefix}/bin/nvcc") == short)
        if ran:
            _run_runfile(ctx, short)
        else:
            host.note(f"CUDA {short}: the runfile completed in an earlier run; writing only what is missing")
        # profile.d and ld.so.conf.d reach every login shell and every program, unlike a user's .bashrc.
        written = []
        for path, text in _config_files(short).items():
            if host.read_text(path) != text:
                host.write_file(path, text)
                written.append(path)
        on_root = str(host.root) == "/" and host.which("ldconfig") is not None
        if on_root and (ran or written or _ldconfig_due(ctx, short)):
            host.run(["ldconfig"])
        if host.dry_run:
            return f"CUDA {short} would be installed to {prefix}"
        if ran:
            return f"CUDA {short} toolkit installed to {prefix}; PATH via /etc/profile.d/cuda.sh"
        return f"CUDA {short} toolkit was in {prefix} already; wrote {', '.join(written) or 'the ld.so cache'}"


def _run_runfile(ctx: InstallContext, short: str) -> None:
    host = ctx.host
    prefix = _prefix(short)
    ((art, runfile),) = ctx.artifacts(CudaLayer.name)
    tmpdir = _roomy_tmpdir(ctx, art.size)
    argv = ["sh", str(runfile), "--silent", "--toolkit", f"--toolkitpath={host.path(prefix)}", f"--tmpdir={tmpdir}"]
    if host.dry_run:
        res = host.run(argv, check=False, timeout=3600)
    else:
        # The runfile is a makeself archive: it unpacks itself into $TMPDIR/selfgz<pid> before the installer
        # sees --tmpdir. A leftover directory of that name (an earlier run killed mid-unpack, its pid now
        # reused) stops it ("Cannot create target directory"); a fresh private directory never collides,
        # and lies on the roomy filesystem, not a small /tmp.
        with tempfile.TemporaryDirectory(dir=tmpdir, prefix="airgap-unpack-") as unpack:
            res = host.run(argv, check=False, timeout=3600, env={"TMPDIR": unpack})
    if res.returncode != 0:
        raise InstallError(
            f"the CUDA installer failed (exit {res.returncode}).",
            "See /var/log/cuda-installer.log on the server. A full /tmp is the usual cause (it unpacks "
            "several GB); a gcc the installer does not support is the next.",
            res,
        )
    if not host.dry_run:
        got = nvcc_release(ctx, f"{prefix}/bin/nvcc")
        if got != short:
            raise InstallError(
                f"the CUDA installer finished, but {prefix}/bin/nvcc reports {got or 'nothing'}.",
                "See /var/log/cuda-installer.log; run the installer by hand to see its questions.",
                res,
            )
    # The first thing written after the runfile succeeded: from here on, a run killed at any point is
    # finished by the next one writing only what is missing, without running the installer again.
    host.write_file(f"{prefix}/{MARKER}", _marker_text(ctx))


def _prefix(short: str) -> str:
    return f"/usr/local/cuda-{short}"


def _marker_text(ctx: InstallContext) -> str:
    (art,) = ctx.entries(CudaLayer.name)
    return f"{art.name} sha256 {art.sha256}\n"


def _config_files(short: str) -> dict[str, str]:
    """What the layer writes besides the toolkit, server path to content."""
    prefix = _prefix(short)
    return {
        "/etc/profile.d/cuda.sh": f'export PATH="{prefix}/bin${{PATH:+:${{PATH}}}}"\n'
        f'export LD_LIBRARY_PATH="{prefix}/lib64${{LD_LIBRARY_PATH:+:${{LD_LIBRARY_PATH}}}}"\n',
        _ld_conf(short): f"{prefix}/lib64\n",
    }


def _ld_conf(short: str) -> str:
    return f"/etc/ld.so.conf.d/cuda-{short.replace('.', '-')}.conf"


def _runfile_completed(ctx: InstallContext, short: str) -> bool:
    """Whether this bundle's runfile ran to its end into the toolkit's directory: the marker written after
    it says so. Without a marker, the configuration files an earlier airgap wrote only after a successful
    runfile say so too (toolkits installed before the marker existed are not installed again)."""
    host = ctx.host
    marker = host.read_text(f"{_prefix(short)}/{MARKER}")
    if marker is not None:
        return marker == _marker_text(ctx)
    return all(host.read_text(path) == text for path, text in _config_files(short).items())


def _ldconfig_due(ctx: InstallContext, short: str) -> bool:
    """Whether ld.so's cache predates the toolkit's ld.so.conf.d file (ldconfig has not run since it was
    written). Only on the real root, the one ldconfig acts on."""
    host = ctx.host
    if str(host.root) != "/" or not host.which("ldconfig"):
        return False
    try:
        conf = host.path(_ld_conf(short)).stat().st_mtime_ns
    except OSError:
        return False
    try:
        return host.path("/etc/ld.so.cache").stat().st_mtime_ns < conf
    except OSError:
        return True


def _missing(ctx: InstallContext, short: str) -> list[str]:
    """The outputs of the layer not (or not as this bundle's) in place, in words for the log."""
    missing = []
    if not _runfile_completed(ctx, short):
        missing.append(f"the record that this bundle's runfile completed ({_prefix(short)}/{MARKER})")
    missing += [path for path, text in _config_files(short).items() if ctx.host.read_text(path) != text]
    if _ldconfig_due(ctx, short):
        missing.append("an ld.so cache made after the toolkit's ld.so.conf.d file (ldconfig)")
    return missing


def _short(ctx: InstallContext) -> str:
    spec = ctx.manifest.cuda
    if spec is None:
        raise InstallError(
            "the bundle's lock records no cuda section, but holds CUDA files.",
            "Get a new bundle collected on the connected PC.",
        )
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
    host = ctx.host
    dirs = [host.path(d) for d in ("/var/tmp", "/tmp", "/root") if host.path(d).is_dir()]
    if not dirs:  # a bare --root tree (staging, tests): airgap's own directory, as for the staging copies
        own = host.path("/var/lib/airgap")
        if not host.dry_run:
            own.mkdir(parents=True, exist_ok=True, mode=0o700)
        dirs = [own]
    for path in dirs:
        usage = disk_usage(path)
        if usage is not None and usage.free > need:
            return str(path)
    raise InstallError(
        f"no directory with {human_size(need)} free to unpack the CUDA installer (tried {', '.join(map(str, dirs))}).",
        "Free space on one of them, then run again.",
    )
