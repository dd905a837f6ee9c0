"""The doctor's checks of the machine around the GPU: disk space, RAM against VRAM, the OOM killer in the
kernel log, models readable by the containers' uid, and the OS, kernel and mismatches the bundle expects."""

from __future__ import annotations

import re
from collections.abc import Iterator

from airgap.compat import tables
from airgap.doctor.facts import DEFAULT_MODEL_DIRS, ServerFacts
from airgap.probes import RAM_PER_VRAM
from airgap.units import human_size
from airgap.verdict import Check, Status

DISK_WARN = 0.90  # the usual alert threshold for a disk
DISK_FAIL = 0.98
OOM_RE = re.compile(r"out of memory|oom-kill|invoked oom-killer|killed process", re.IGNORECASE)


def disk(f: ServerFacts) -> Iterator[Check]:
    system = f.system
    worst = Status.PASS
    parts = []
    for d in system.disks:
        u = d.usage
        label = d.paths[0] + (f" (also {', '.join(d.paths[1:])})" if len(d.paths) > 1 else "")
        parts.append(f"{label}: {u.share_used:.0%} used, {human_size(u.free)} free of {human_size(u.size)}")
        if u.share_used >= DISK_FAIL:
            worst = Status.FAIL
        elif u.share_used >= DISK_WARN and worst is not Status.FAIL:
            worst = Status.WARN
    fix = ""
    if worst is not Status.PASS:
        fix = (
            "free space: `docker system prune` (unused images), old models, logs (journalctl "
            "--vacuum-size=500M); images and models need room to unpack"
        )
    need = 2 * f.expect.models_bytes
    free = system.models_free
    if need and system.model_dirs and free is not None and free < need:
        worst = Status.FAIL if worst is Status.FAIL else Status.WARN
        parts.append(
            f"{system.model_dirs[0].path}: {human_size(free)} free, less than twice the bundle's models "
            f"({human_size(need)})"
        )
        fix = (fix + "; " if fix else "") + "keep free space at least twice the models' size"
    yield Check("disk", worst, "; ".join(parts) or "no file system could be read", fix)


def ram_vs_vram(f: ServerFacts) -> Iterator[Check]:
    ram = f.system.ram
    if ram is None:
        yield Check("ram-vs-vram", Status.SKIP, "/proc/meminfo cannot be read")
        return
    gpus = f.gpu.gpus
    vram = sum(g.memory_total_mib or 0 for g in gpus) * 2**20
    source = f"{len(gpus)} GPU(s)"
    if not vram and f.expect.gpus:
        for entry in f.expect.gpus:
            count, name = tables.parse_gpu_entry(entry)
            gpu = tables.find_gpu(name)
            vram += count * gpu.vram_gib * 2**30 if gpu else 0
        source = "the bundle's target.gpus"
    if not vram:
        yield Check("ram-vs-vram", Status.SKIP, f"RAM {human_size(ram)}; the GPUs' memory is unknown")
        return
    ratio = ram / vram
    what = f"RAM {human_size(ram)} for {human_size(vram)} of VRAM ({source}): {ratio:.1f}x"
    fix = "add RAM (or swap): loading a model passes through host memory, the OOM killer strikes otherwise"
    if ratio < 1.0:
        yield Check("ram-vs-vram", Status.FAIL, f"{what}, less than the VRAM", fix)
    elif ratio < RAM_PER_VRAM:
        yield Check("ram-vs-vram", Status.WARN, f"{what}, under the {RAM_PER_VRAM}x advised", fix)
    else:
        yield Check("ram-vs-vram", Status.PASS, what)


def oom_killer(f: ServerFacts) -> Iterator[Check]:
    log = f.system.kernel_log
    if log is None:
        yield Check(
            "oom-killer",
            Status.SKIP,
            "the kernel log cannot be read (dmesg needs root, no /var/log/kern.log)",
            "run it with sudo",
        )
        return
    text, source = log
    hits = [line.strip() for line in text.splitlines() if OOM_RE.search(line)]
    if hits:
        yield Check(
            "oom-killer",
            Status.WARN,
            f"{len(hits)} OOM-killer line(s) in {source}, the last: {hits[-1][-200:]}",
            "host RAM ran out (vLLM loading a model is the usual victim): add RAM or swap, or load a smaller model",
        )
    else:
        yield Check("oom-killer", Status.PASS, f"no OOM-killer lines in {source}")


def models_owner(f: ServerFacts) -> Iterator[Check]:
    dirs = f.system.model_dirs
    if not dirs:
        yield Check(
            "models-owner",
            Status.SKIP,
            f"no models directory (looked at {', '.join(DEFAULT_MODEL_DIRS)}; --bundle gives the bundle's)",
        )
        return
    for d in dirs:
        if not d.exists:
            yield Check(
                "models-owner", Status.WARN, f"{d.path} does not exist yet", "airgap install BUNDLE --only models"
            )
            continue
        fix = f"chown -R {d.uid}:{d.uid} {d.path}"
        if d.unreadable:
            yield Check(
                "models-owner",
                Status.FAIL,
                f"{d.path}: {d.unreadable} of {d.seen} entries cannot be read by uid {d.uid}, the containers' "
                f'user (e.g. {d.first_unreadable}): "Permission denied" in vLLM',
                fix,
            )
        elif d.foreign:
            yield Check(
                "models-owner",
                Status.WARN,
                f"{d.path}: owned by {d.owner}, not uid {d.uid}; readable, but the "
                "containers cannot write there (caches, locks)",
                fix,
            )
        else:
            yield Check("models-owner", Status.PASS, f"{d.path}: owned by uid {d.uid}, the containers' user")


def os_kernel(f: ServerFacts) -> Iterator[Check]:
    want_os, want_kernel = f.expect.os, f.expect.kernel
    if not (want_os or want_kernel):
        return
    have_os, kernel = f.system.os_name, f.system.kernel
    problems = []
    if want_os and have_os != want_os:
        problems.append(f"this machine runs {have_os}, the bundle was made for {want_os}")
    if want_kernel and kernel != want_kernel:
        problems.append(
            f"the running kernel is {kernel}, the bundle brings headers for {want_kernel} "
            "(the driver module is built against them)"
        )
    if problems:
        yield Check(
            "os-kernel",
            Status.WARN,
            "; ".join(problems),
            "boot the bundle's kernel, or collect again with this machine's target.os and target.kernel",
        )
    else:
        yield Check("os-kernel", Status.PASS, f"{have_os}, kernel {kernel}, as the bundle's target")


def bundle_mismatches(f: ServerFacts) -> Iterator[Check]:
    accepted = f.expect.allowed_mismatches
    if accepted:
        what = "; ".join(f"{a.get('field')}: {a.get('message')}" for a in accepted)
        yield Check(
            "bundle-mismatches",
            Status.WARN,
            f"the bundle was collected with --allow-mismatch: {what}",
            "expect the failures those mismatches cause; fix the manifest and collect again if they bite",
        )
