"""Checks before `install` changes anything, each a `Check` with its fix.

Every check reads the machine through the probes (and so through the Host), so tests point them at a
prepared root (a fake `/proc/modules`, sysfs PCI entries, `/etc/os-release`). Layers name the checks
they need: loading images needs no GPU, so `install --only images` does not ask for one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from airgap import probes
from airgap.install_context import InstallContext
from airgap.probes import NvmlSession
from airgap.units import human_size
from airgap.verdict import Check, Status

# Where each layer puts its bytes, and how much room it needs per byte in the bundle (installers unpack).
DESTINATIONS: dict[str, tuple[str, float]] = {
    "driver": ("/usr", 2.0),
    "cuda": ("/usr/local", 3.0),
    "docker": ("/usr/bin", 3.0),
    "images": ("/var/lib/docker", 2.5),
    "python": ("/opt", 2.0),
    "models": ("/data", 1.0),
}

PreflightCheck = Callable[[InstallContext, list[str]], list[Check]]


def check_root(ctx: InstallContext, layers: list[str]) -> list[Check]:
    if os.geteuid() == 0:
        return [Check("root", Status.PASS, "running as root")]
    if ctx.host.dry_run or probes.is_rooted(ctx.host):
        return [
            Check(
                "root",
                Status.WARN,
                "not root; fine for a dry run or a scratch --root",
                "run the real install with sudo",
            )
        ]
    return [
        Check(
            "root",
            Status.FAIL,
            "not running as root: installers, /usr and systemd need it",
            "run it again with sudo (sudo sh install.sh, or sudo airgap install ...)",
        )
    ]


def check_os(ctx: InstallContext, layers: list[str]) -> list[Check]:
    target = ctx.lock.target
    results = []
    want_arch = target.get("arch", "amd64")
    have_arch = probes.machine_arch()
    if want_arch != have_arch:
        results.append(
            Check(
                "arch",
                Status.FAIL,
                f"this machine is {have_arch}, the bundle was made for {want_arch}",
                f"get a bundle collected with target.arch: {have_arch} on the connected PC",
            )
        )
    else:
        results.append(Check("arch", Status.PASS, f"{have_arch}, as the bundle's target"))
    want = target.get("os", "?")
    if not probes.os_release(ctx.host):
        where = f" under {ctx.host.root}" if probes.is_rooted(ctx.host) else ""
        results.append(
            Check(
                "os",
                Status.WARN,
                f"the release is unknown: no {' or '.join(probes.OS_RELEASE_FILES)}{where}; the bundle was made "
                f"for {want}",
                "check that this is the server the bundle was made for (and, with --root, that the tree holds "
                "its /etc)",
            )
        )
        return results
    have = probes.os_name(ctx.host)
    if have == want:
        results.append(Check("os", Status.PASS, f"{have}, as the bundle's target"))
    else:
        results.append(
            Check(
                "os",
                Status.WARN,
                f"this machine runs {have}, the bundle was made for {want}",
                f"packages and kernel headers may not fit; if a layer fails, get a bundle collected for {have} "
                "on the connected PC",
            )
        )
    return results


def check_gpu(ctx: InstallContext, layers: list[str]) -> list[Check]:
    gpus = probes.pci_gpus(ctx.host)
    if gpus:
        return [Check("gpu", Status.PASS, f"{len(gpus)} NVIDIA GPU(s) on the PCI bus: {', '.join(gpus)}")]
    # Only what this install would run: a bundle without a driver layer has none to leave out.
    gpu_layers = layers_needing("gpu", layers)
    without = f"; or install without the layers that need it: --skip {','.join(gpu_layers)}" if gpu_layers else ""
    return [
        Check(
            "gpu",
            Status.FAIL,
            "no NVIDIA GPU on the PCI bus (sysfs vendor 0x10de, class 0x03)",
            "check the card is seated and powered (lspci | grep -i nvidia); in a VM, check the PCI "
            f"passthrough{without}",
        )
    ]


def check_nouveau(ctx: InstallContext, layers: list[str]) -> list[Check]:
    if probes.nouveau_loaded(ctx.host):
        return [
            Check(
                "nouveau",
                Status.WARN,
                "the nouveau driver is loaded",
                "the driver layer will blacklist it, rebuild the initramfs and ask for a reboot; "
                "then run the same command again",
            )
        ]
    return [Check("nouveau", Status.PASS, "nouveau is not loaded")]


def check_secure_boot(ctx: InstallContext, layers: list[str]) -> list[Check]:
    enabled = probes.secure_boot(ctx.host)
    if enabled is None:
        return [Check("secure_boot", Status.PASS, "mokutil not installed; Secure Boot state unknown (often off)")]
    if enabled:
        return [
            Check(
                "secure_boot",
                Status.WARN,
                "Secure Boot is enabled: an unsigned nvidia module will not load",
                "sign the module with a MOK key (the installer offers it) or disable Secure Boot in the firmware",
            )
        ]
    return [Check("secure_boot", Status.PASS, "Secure Boot is disabled")]


def check_headers(ctx: InstallContext, layers: list[str]) -> list[Check]:
    kernel = probes.running_kernel(ctx.host)
    if probes.kernel_headers_installed(ctx.host, kernel):
        return [Check("kernel_headers", Status.PASS, f"headers for {kernel} are installed")]
    in_bundle = [a for a in ctx.lock.artifacts if a.layer == "prereqs" and f"linux-headers-{kernel}" in a.name]
    if in_bundle:
        return [Check("kernel_headers", Status.PASS, f"headers for {kernel} are in the bundle (prereqs)")]
    return [
        Check(
            "kernel_headers",
            Status.FAIL,
            f"no headers for the running kernel {kernel}: the driver cannot build its module",
            f"get a bundle collected with target.kernel: {kernel} on the connected PC (it then brings "
            f"linux-headers-{kernel}), or boot the kernel the bundle was made for",
        )
    ]


def check_disk(ctx: InstallContext, layers: list[str]) -> list[Check]:
    results = []
    for layer in layers:
        if layer not in DESTINATIONS:
            continue
        dest, factor = DESTINATIONS[layer]
        need = int(sum(a.size for a in ctx.lock.artifacts if a.layer == layer) * factor)
        if not need:
            continue
        usage = probes.disk_usage(ctx.host.path(dest))
        free = usage.free if usage is not None else 0
        name = f"disk:{layer}"
        if free < need:
            results.append(
                Check(
                    name,
                    Status.FAIL,
                    f"{dest}: {human_size(free)} free, the {layer} layer needs about {human_size(need)}",
                    f"free space on the filesystem holding {dest}",
                )
            )
        else:
            results.append(Check(name, Status.PASS, f"{dest}: {human_size(free)} free, needs about {human_size(need)}"))
    return results


def check_ram_vram(ctx: InstallContext, layers: list[str], nvml: NvmlSession | None = None) -> list[Check]:
    """Host RAM >= 1.5x total VRAM, since model loading passes through host RAM. Before the
    driver is installed NVML usually has nothing to say; then `airgap doctor` checks it afterwards."""
    reading = nvml.read() if nvml is not None else None
    vram = 0
    if isinstance(reading, probes.NvmlReading):
        vram = sum(g.memory_total_mib or 0 for g in reading.gpus) * 2**20
    ram = probes.total_ram(ctx.host) or 0
    if not vram or not ram:
        return [
            Check(
                "ram_vram",
                Status.PASS,
                "VRAM not known before the driver is installed; `airgap doctor` checks RAM against VRAM afterwards",
            )
        ]
    if ram < probes.RAM_PER_VRAM * vram:
        return [
            Check(
                "ram_vram",
                Status.WARN,
                f"RAM {human_size(ram)} is less than {probes.RAM_PER_VRAM}x the GPUs' "
                f"{human_size(vram)} of VRAM: loading a large model may hit the OOM killer",
                "add RAM or swap (RAM >= 1.5-2x total VRAM is advised)",
            )
        ]
    return [Check("ram_vram", Status.PASS, f"RAM {human_size(ram)} >= {probes.RAM_PER_VRAM}x VRAM {human_size(vram)}")]


def check_compat(ctx: InstallContext, layers: list[str]) -> list[Check]:
    """The connected side's version checks once more, on the lock: a bundle collected with
    --allow-mismatch keeps those as warnings; anything else wrong stops the install before it starts."""
    from airgap.compat.rules import check_lock, summary

    try:
        findings = check_lock(ctx.lock)
    except Exception as exc:  # a lock from another airgap version may not validate: say so, do not crash
        return [Check("compat", Status.WARN, f"could not re-check versions from the lock: {exc}")]
    results = [
        Check(f"compat:{f.code}", f.status, f.message, f.fix)
        for f in findings
        if f.status in (Status.FAIL, Status.WARN, Status.SKIP)
    ]
    if any(c.status in (Status.FAIL, Status.WARN) for c in results):
        return results
    # Name only what was checked: a bundle of plain files has no torch to vouch for.
    checked = summary(findings)
    if not checked:
        return results or [
            Check(
                "compat",
                Status.SKIP,
                "nothing to check: the bundle has no driver, CUDA, Python wheels, target GPUs, models or CUDA images",
            )
        ]
    return [Check("compat", Status.PASS, f"these versions fit together: {checked}"), *results]


# In the order they run and print; the names are what layers list in their `preflight`.
CHECKS: dict[str, PreflightCheck] = {
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


def layers_needing(check: str, layers: list[str]) -> list[str]:
    """Of `layers` (the steps this install runs, all in the bundle), those that ask for `check`; the
    smoke test asks for the GPU."""
    from airgap.layers import LAYERS

    wanted = {layer.name for layer in LAYERS if check in layer.preflight} | ({"smoke"} if check == "gpu" else set())
    return [name for name in layers if name in wanted]


def skippable(check_name: str, layers: list[str]) -> list[str]:
    """The layers of `layers` that leaving out (--skip) would spare a failed check of this name; none for
    the checks every install runs (root, os and arch, compat)."""
    if check_name.startswith("disk:"):
        layer = check_name.split(":", 1)[1]
        return [layer] if layer in layers else []
    key = check_name.split(":", 1)[0]
    if key in ALWAYS or key == "arch":
        return []
    return layers_needing(key, layers)


def run_preflight(
    ctx: InstallContext, layers: list[str], needs: set[str], nvml: NvmlSession | None = None
) -> list[Check]:
    """The checks in ALWAYS and `needs`, in order. NVML (for ram_vram) is the caller's session, or one
    opened here on the running machine: a scratch --root says nothing about this machine's GPUs."""
    wanted = [name for name in CHECKS if name in ALWAYS or name in needs]
    results: list[Check] = []
    with contextlib.ExitStack() as stack:
        if nvml is None and "ram_vram" in wanted and not probes.is_rooted(ctx.host):
            nvml = stack.enter_context(NvmlSession(probes.pynvml_library()))
        for name in wanted:
            if name == "ram_vram":
                results.extend(check_ram_vram(ctx, layers, nvml))
            else:
                results.extend(CHECKS[name](ctx, layers))
    return results
