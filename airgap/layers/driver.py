"""NVIDIA driver `.run` installer: collected from NVIDIA's download server, run silently on the server."""

from __future__ import annotations

import tempfile

from airgap.artifacts import Artifact, Digest
from airgap.errors import InstallError, RebootRequired
from airgap.install_context import InstallContext
from airgap.layers.base import Layer
from airgap.manifest import Manifest
from airgap.probes import nouveau_loaded
from airgap.sources.http import file_name_from_url
from airgap.target import arch_of

BASE = "https://us.download.nvidia.com"
BLACKLIST = "/etc/modprobe.d/blacklist-nouveau.conf"
INSTALLER_LOG = "/var/log/airgap/nvidia-installer.log"


class DriverLayer(Layer):
    name = "driver"
    section = "driver"
    by_hand_file = (
        "sh {path} --silent --dkms      (needs gcc, make and the kernel headers; reboot if it "
        "blacklisted nouveau, then run it again)"
    )
    installable = True
    preflight = frozenset({"gpu", "nouveau", "secure_boot", "kernel_headers", "disk", "ram_vram"})

    def plan(self, manifest: Manifest) -> list[Artifact]:
        spec = manifest.driver
        assert spec is not None
        pinned = Digest("sha256", spec.sha256, "manifest") if spec.sha256 else None
        reason = "NVIDIA publishes no checksum for driver .run files; pin `driver.sha256` to check one"
        if spec.url:
            return [
                Artifact(
                    self.name,
                    file_name_from_url(spec.url),
                    [spec.url],
                    ("driver", "url"),
                    pinned=pinned,
                    no_digest_reason=reason,
                )
            ]
        arch_names = arch_of(manifest.target.arch)
        xfree_dir, arch = arch_names.driver_dir, arch_names.machine
        name = f"NVIDIA-Linux-{arch}-{spec.version}.run"
        # GeForce/workstation builds live under XFree86/, datacenter builds under tesla/: same file name,
        # and a version exists in one or both, so try them in that order.
        urls = [f"{BASE}/XFree86/{xfree_dir}/{spec.version}/{name}", f"{BASE}/tesla/{spec.version}/{name}"]
        return [Artifact(self.name, name, urls, ("driver", "version"), pinned=pinned, no_digest_reason=reason)]

    def installed(self, ctx: InstallContext) -> str | None:
        version = _driver_version(ctx)
        return f"driver {version} is already loaded" if reported_driver_version(ctx) == version else None

    def install(self, ctx: InstallContext) -> str:
        host = ctx.host
        version = _driver_version(ctx)
        ((_art, runfile),) = ctx.artifacts(self.name)
        if nouveau_loaded(ctx.host):
            # The installer would do the same and then abort; doing it here lets us say exactly what is next.
            host.write_file(BLACKLIST, "blacklist nouveau\noptions nouveau modeset=0\n")
            for tool in (["update-initramfs", "-u"], ["dracut", "-f"]):
                path = host.which(tool[0])
                if path:
                    host.run([path, *tool[1:]])
                    break
            raise RebootRequired(
                "nouveau was loaded: it is now blacklisted and the initramfs rebuilt.",
                "Reboot, then run the same command again: the install continues with the driver.",
            )
        host.makedirs("/var/log/airgap")
        argv = ["sh", str(runfile), "--silent", f"--log-file-name={host.path(INSTALLER_LOG)}"]
        if host.which("dkms"):
            argv.append("--dkms")  # rebuilds the module on kernel updates: no second trip for a kernel patch
        if host.dry_run:
            res = host.run(argv, check=False, timeout=3600)
        else:
            # A makeself archive: it unpacks into $TMPDIR/selfgz<pid>, which a run killed mid-unpack may have
            # left behind under a pid now reused. A fresh private directory beside the staged copy (chosen
            # with room for it) never collides.
            with tempfile.TemporaryDirectory(dir=runfile.parent, prefix="airgap-unpack-") as unpack:
                res = host.run(argv, check=False, timeout=3600, env={"TMPDIR": unpack})
        if res.returncode != 0:
            raise InstallError(
                f"the NVIDIA installer failed (exit {res.returncode}).",
                f"See {INSTALLER_LOG}. Usual causes: no compiler or kernel headers for the running kernel "
                "(bring the prereqs layer), 'Failed CC version check' on HWE kernels (needs gcc-12), "
                "Secure Boot refusing the unsigned module.",
                res,
            )
        if host.dry_run:
            return f"NVIDIA driver {version} would be installed"
        got = reported_driver_version(ctx)
        if got != version:
            raise InstallError(
                f"the installer finished, but the loaded driver reports {got or 'nothing'}, not {version}.",
                "Reboot to load the new module, then run the same command again.",
                res,
            )
        return f"NVIDIA driver {version} installed"


def reported_driver_version(ctx: InstallContext) -> str | None:
    """The loaded driver's version: nvidia-smi, else /proc/driver/nvidia/version."""
    smi = ctx.host.which("nvidia-smi")
    if smi:
        res = ctx.host.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"], check=False, changes=False, timeout=60
        )
        if res.returncode == 0 and res.output.strip():
            return res.output.strip().splitlines()[0].strip()
    text = ctx.host.read_text("/proc/driver/nvidia/version") or ""
    for word in text.split():
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    return None


def _driver_version(ctx: InstallContext) -> str:
    if ctx.manifest.driver is None:
        raise InstallError(
            "the bundle's lock records no driver section, but holds the driver.",
            "Get a new bundle collected on the connected PC.",
        )
    return ctx.manifest.driver.version
