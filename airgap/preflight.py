"""Checks before `install` changes anything, each with pass/warn/fail and the fix.

Every check reads the machine through the Host, so tests point them at a prepared root (a fake
`/proc/modules`, sysfs PCI entries, `/etc/os-release`). Layers name the checks they need: loading images
needs no GPU, so `install --only images` does not ask for one.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from airgap.bundle import human_size
from airgap.host import Host
from airgap.install_context import InstallContext

PASS, WARN, FAIL = "pass", "warn", "fail"

# Where each layer puts its bytes, and how much room it needs per byte in the bundle (installers unpack).
DESTINATIONS: dict[str, tuple[str, float]] = {
    "driver": ("/usr", 2.0),
    "cuda": ("/usr/local", 3.0),
    "docker": ("/usr/bin", 3.0),
    "images": ("/var/lib/docker", 2.5),
    "python": ("/opt", 2.0),
    "models": ("/data", 1.0),
}
ARCH_NAMES = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "amd64": "amd64"}


@dataclass
class CheckResult:
    name: str
    status: str
    message: str
    fix: str = ""


Check = Callable[[InstallContext, list[str]], list[CheckResult]]


def nouveau_loaded(ctx: InstallContext) -> bool:
    modules = ctx.host.read_text("/proc/modules", "") or ""
    return any(line.split(" ", 1)[0] == "nouveau" for line in modules.splitlines())


def running_kernel(ctx: InstallContext) -> str:
    return (ctx.host.read_text("/proc/sys/kernel/osrelease") or platform.release()).strip()


def nvidia_gpus(host: Host) -> list[str]:
    """PCI addresses of NVIDIA display controllers (vendor 0x10de, class 0x03xxxx), from sysfs."""
    root = host.path("/sys/bus/pci/devices")
    found = []
    if root.is_dir():
        for dev in sorted(root.iterdir()):
            try:
                vendor = (dev / "vendor").read_text().strip().lower()
                klass = (dev / "class").read_text().strip().lower()
            except OSError:
                continue
            if vendor == "0x10de" and klass.startswith("0x03"):
                found.append(dev.name)
    return found


def check_root(ctx: InstallContext, layers: list[str]) -> list[CheckResult]:
    if os.geteuid() == 0:
        return [CheckResult("root", PASS, "running as root")]
    if ctx.host.dry_run or str(ctx.host.root) != "/":
        return [
            CheckResult(
                "root", WARN, "not root; fine for a dry run or a scratch --root", "run the real install with sudo"
            )
        ]
    return [
        CheckResult(
            "root",
            FAIL,
            "not running as root: installers, /usr and systemd need it",
            "run it again with sudo (sudo sh install.sh, or sudo airgap install ...)",
        )
    ]


def check_os(ctx: InstallContext, layers: list[str]) -> list[CheckResult]:
    target = ctx.lock.target
    results = []
    want_arch = target.get("arch", "amd64")
    have_arch = ARCH_NAMES.get(platform.machine(), platform.machine())
    if want_arch != have_arch:
        results.append(
            CheckResult(
                "arch",
                FAIL,
                f"this machine is {have_arch}, the bundle was made for {want_arch}",
                f"collect a bundle with target.arch: {have_arch}",
            )
        )
    else:
        results.append(CheckResult("arch", PASS, f"{have_arch}, as the bundle's target"))
    release = _os_release(ctx)
    have = f"{release.get('ID', '?')}-{release.get('VERSION_ID', '?')}"
    want = target.get("os", "?")
    if have == want:
        results.append(CheckResult("os", PASS, f"{have}, as the bundle's target"))
    else:
        results.append(
            CheckResult(
                "os",
                WARN,
                f"this machine runs {have}, the bundle was made for {want}",
                "packages and kernel headers may not fit; collect for this release if a layer fails",
            )
        )
    return results


def check_gpu(ctx: InstallContext, layers: list[str]) -> list[CheckResult]:
    gpus = nvidia_gpus(ctx.host)
    if gpus:
        return [CheckResult("gpu", PASS, f"{len(gpus)} NVIDIA GPU(s) on the PCI bus: {', '.join(gpus)}")]
    return [
        CheckResult(
            "gpu",
            FAIL,
            "no NVIDIA GPU on the PCI bus (sysfs vendor 0x10de, class 0x03)",
            "check the card is seated and powered (lspci | grep -i nvidia); in a VM, check the "
            "PCI passthrough; or install without the GPU layers: --skip driver,smoke",
        )
    ]


def check_nouveau(ctx: InstallContext, layers: list[str]) -> list[CheckResult]:
    if nouveau_loaded(ctx):
        return [
            CheckResult(
                "nouveau",
                WARN,
                "the nouveau driver is loaded",
                "the driver layer will blacklist it, rebuild the initramfs and ask for a reboot; "
                "then run the same command again",
            )
        ]
    return [CheckResult("nouveau", PASS, "nouveau is not loaded")]


def check_secure_boot(ctx: InstallContext, layers: list[str]) -> list[CheckResult]:
    mokutil = ctx.host.which("mokutil")
    if mokutil is None:
        return [CheckResult("secure_boot", PASS, "mokutil not installed; Secure Boot state unknown (often off)")]
    out = ctx.host.run([mokutil, "--sb-state"], check=False, changes=False).output.lower()
    if "enabled" in out:
        return [
            CheckResult(
                "secure_boot",
                WARN,
                "Secure Boot is enabled: an unsigned nvidia module will not load",
                "sign the module with a MOK key (the installer offers it) or disable Secure Boot in the firmware",
            )
        ]
    return [CheckResult("secure_boot", PASS, "Secure Boot is disabled")]


def check_headers(ctx: InstallContext, layers: list[str]) -> list[CheckResult]:
    kernel = running_kernel(ctx)
    if ctx.host.path(f"/lib/modules/{kernel}/build").exists():
        return [CheckResult("kernel_headers", PASS, f"headers for {kernel} are installed")]
    in_bundle = [a for a in ctx.lock.artifacts if a.layer == "prereqs" and f"linux-headers-{kernel}" in a.name]
    if in_bundle:
        return [CheckResult("kernel_headers", PASS, f"headers for {kernel} are in the bundle (prereqs)")]
    return [
        CheckResult(
            "kernel_headers",
            FAIL,
            f"no headers for the running kernel {kernel}: the driver cannot build its module",
            f"collect with target.kernel: {kernel} so the bundle brings linux-headers-{kernel}, "
            "or boot the kernel the bundle was made for",
        )
    ]


def check_disk(ctx: InstallContext, layers: list[str]) -> list[CheckResult]:
    results = []
    for layer in layers:
        if layer not in DESTINATIONS:
            continue
        dest, factor = DESTINATIONS[layer]
        need = int(sum(a.size for a in ctx.lock.artifacts if a.layer == layer) * factor)
        if not need:
            continue
        where = _existing_ancestor(ctx.host.path(dest))
        free = shutil.disk_usage(where).free
        name = f"disk:{layer}"
        if free < need:
            results.append(
                CheckResult(
                    name,
                    FAIL,
                    f"{dest}: {human_size(free)} free, the {layer} layer needs about {human_size(need)}",
                    f"free space on the filesystem holding {dest}",
                )
            )
        else:
            results.append(CheckResult(name, PASS, f"{dest}: {human_size(free)} free, needs about {human_size(need)}"))
    return results


def check_ram_vram(ctx: InstallContext, layers: list[str]) -> list[CheckResult]:
    """FIELD.md: host RAM >= 1.5x total VRAM, since model loading passes through host RAM."""
    vram = _total_vram(ctx)
    meminfo = ctx.host.read_text("/proc/meminfo", "") or ""
    ram_kib = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0)
    if not vram or not ram_kib:
        return [
            CheckResult(
                "ram_vram",
                PASS,
                "VRAM not known before the driver is installed; `airgap doctor` checks RAM against VRAM afterwards",
            )
        ]
    ram = ram_kib * 1024
    if ram < 1.5 * vram:
        return [
            CheckResult(
                "ram_vram",
                WARN,
                f"RAM {human_size(ram)} is less than 1.5x the GPUs' "
                f"{human_size(vram)} of VRAM: loading a large model may hit the OOM killer",
                "add RAM or swap (FIELD.md: RAM >= 1.5-2x total VRAM)",
            )
        ]
    return [CheckResult("ram_vram", PASS, f"RAM {human_size(ram)} >= 1.5x VRAM {human_size(vram)}")]


def _total_vram(ctx: InstallContext) -> int:
    if str(ctx.host.root) != "/":
        return 0  # a staging root says nothing about this machine's GPUs
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver yet, or no NVML library: the usual state before the driver layer
        return 0
    try:
        return sum(
            pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).total
            for i in range(pynvml.nvmlDeviceGetCount())
        )
    finally:
        pynvml.nvmlShutdown()


def check_compat(ctx: InstallContext, layers: list[str]) -> list[CheckResult]:
    """The connected side's version checks once more, on the lock: a bundle collected with
    --allow-mismatch keeps those as warnings; anything else wrong stops the install before it starts."""
    from airgap.checks import ERROR, WARNING, check_lock

    try:
        findings = check_lock(ctx.lock)
    except Exception as exc:  # a lock from another airgap version may not validate: say so, do not crash
        return [CheckResult("compat", WARN, f"could not re-check versions from the lock: {exc}")]
    results = []
    for f in findings:
        if f.level == ERROR:
            results.append(CheckResult(f"compat:{f.code}", FAIL, f.message, f.fix))
        elif f.level == WARNING:
            results.append(CheckResult(f"compat:{f.code}", WARN, f.message, f.fix))
    return results or [CheckResult("compat", PASS, "driver, CUDA, torch, vLLM and GPU versions fit together")]


CHECKS: dict[str, Check] = {
    "root": check_root,
    "os": check_os,
    "gpu": check_gpu,
    "nouveau": check_nouveau,
    "secure_boot": check_secure_boot,
    "kernel_headers": check_headers,
    "disk": check_disk,
    "ram_vram": check_ram_vram,
    "compat": check_compat,
}
ALWAYS = ("root", "os", "compat")


def run_preflight(ctx: InstallContext, layers: list[str], needs: set[str]) -> list[CheckResult]:
    results: list[CheckResult] = []
    for name in CHECKS:
        if name in ALWAYS or name in needs:
            results.extend(CHECKS[name](ctx, layers))
    return results


def _os_release(ctx: InstallContext) -> dict[str, str]:
    text = ctx.host.read_text("/etc/os-release", "") or ""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
