"""The doctor's GPU checks: the card on the PCI bus, nouveau, nvidia-smi, NVML, the bundle's driver, and
the GPUs' health (temperature, throttling, ECC, memory) from NVML or, without it, nvidia-smi."""

from __future__ import annotations

from collections.abc import Iterator

from airgap.doctor.facts import ServerFacts
from airgap.probes import TEMP_ALERT_C, NvmlFailure
from airgap.verdict import Check, Status

# The usual alert thresholds: temperature >= 78 C (probes.TEMP_ALERT_C), VRAM >= 95%, disk >= 90%; healthy
# VRAM is under 90%.
VRAM_WARN = 0.90
# NVML clock-event reasons worth a warning (nvml.h): SW/HW thermal slowdown, HW slowdown, power brake.
THROTTLE_BAD = {
    0x20: "software thermal slowdown",
    0x40: "hardware thermal slowdown",
    0x8: "hardware slowdown",
    0x80: "power brake (external power)",
}
THROTTLE_INFO = {0x4: "at its power cap (normal under full load)", 0x2: "application clocks set", 0x10: "sync boost"}
NO_GPU_DATA = "no GPU data (neither NVML nor nvidia-smi answered)"


def gpu_pci(f: ServerFacts) -> Iterator[Check]:
    gpus = f.gpu.pci
    if gpus:
        yield Check("gpu-pci", Status.PASS, f"{len(gpus)} NVIDIA GPU(s) on the PCI bus: {', '.join(gpus)}")
    else:
        yield Check(
            "gpu-pci",
            Status.FAIL,
            "no NVIDIA GPU on the PCI bus (sysfs: no device with vendor 0x10de and a display class 0x03xxxx)",
            "check the card is seated and powered (lspci | grep -i nvidia); in a VM, pass the GPU through to it",
        )


def nouveau(f: ServerFacts) -> Iterator[Check]:
    if f.gpu.nouveau:
        yield Check(
            "nouveau",
            Status.FAIL,
            "the nouveau driver is loaded: the NVIDIA driver cannot take the GPU",
            "blacklist it (blacklist nouveau / options nouveau modeset=0 in /etc/modprobe.d), "
            "update-initramfs -u, reboot; `airgap install --only driver` does this",
        )
    else:
        yield Check("nouveau", Status.PASS, "nouveau is not loaded")


def nvidia_smi(f: ServerFacts) -> Iterator[Check]:
    gpu = f.gpu
    smi = gpu.smi
    if smi.path is None:
        yield Check(
            "nvidia-smi",
            Status.FAIL,
            "nvidia-smi is not installed: no NVIDIA driver",
            "install the driver (airgap install BUNDLE --only driver), then reboot",
        )
        return
    if smi.returncode != 0:
        causes = []
        if not gpu.pci:
            causes.append("no GPU on the PCI bus")
        if gpu.nouveau:
            causes.append("nouveau is loaded")
        if gpu.secure_boot:
            causes.append("Secure Boot is on (an unsigned nvidia module will not load)")
        found = f" ({'; '.join(causes)})" if causes else ""
        tail = " ".join(smi.output.strip().splitlines()[-2:])[:300]
        yield Check(
            "nvidia-smi",
            Status.FAIL,
            f"nvidia-smi failed (exit {smi.returncode}){found}: {tail}",
            "reboot if the driver was just installed; check `mokutil --sb-state` (Secure Boot), "
            "`lsmod | grep nouveau`, `lspci | grep -i nvidia`, and `dmesg | grep -i nvrm`",
        )
        return
    what = f"driver {gpu.driver or '?'}"
    if gpu.driver_cuda:
        what += f', "CUDA Version: {gpu.driver_cuda}" (the newest CUDA this driver runs, not the toolkit)'
    yield Check("nvidia-smi", Status.PASS, f"nvidia-smi works: {what}")


def nvml(f: ServerFacts) -> Iterator[Check]:
    result = f.gpu.nvml
    if result is None or (isinstance(result, NvmlFailure) and result.kind == "no-package"):
        why = (
            "NVML reads the running machine's driver, not the --root tree"
            if f.rooted
            else "the nvidia-ml-py package is missing (pip install nvidia-ml-py)"
        )
        yield Check("nvml", Status.SKIP, f"not checked: {why}")
    elif isinstance(result, NvmlFailure):
        yield _nvml_failure(result)
    else:
        names = ", ".join(f"{g.name} ({(g.memory_total_mib or 0) // 1024} GiB)" for g in result.gpus) or "no GPU"
        yield Check("nvml", Status.PASS, f"NVML: driver {result.driver}, CUDA up to {f.gpu.driver_cuda}; {names}")


def _nvml_failure(failure: NvmlFailure) -> Check:
    if failure.kind == "no-library":
        return Check(
            "nvml",
            Status.FAIL,
            "no NVIDIA driver library (libnvidia-ml.so.1 is not installed): the driver is missing",
            "install the driver (airgap install BUNDLE --only driver), then reboot",
        )
    if failure.kind == "no-driver":
        return Check(
            "nvml",
            Status.FAIL,
            f"NVML cannot talk to the driver: {failure.detail}",
            "the driver library is there but the kernel module is not loaded: reboot after "
            "installing, check `lsmod | grep nvidia`, Secure Boot and nouveau",
        )
    return Check(
        "nvml",
        Status.WARN,
        f"this check could not run: {failure.detail}",
        "a bug in airgap's doctor; the other checks still stand",
    )


def bundle_driver(f: ServerFacts) -> Iterator[Check]:
    want = f.expect.driver
    if want is None:
        return
    have = f.gpu.driver
    if have is None:
        yield Check(
            "bundle-driver",
            Status.FAIL,
            f"the bundle brings driver {want}; no running driver was found",
            "airgap install BUNDLE --only driver, then reboot",
        )
    elif have != want:
        yield Check(
            "bundle-driver",
            Status.WARN,
            f"the bundle brings driver {want}; the running driver is {have}",
            "airgap install BUNDLE --only driver (and reboot) to run the bundle's driver",
        )
    else:
        yield Check("bundle-driver", Status.PASS, f"driver {have}, as the bundle")


# --- health (NVML or nvidia-smi) ------------------------------------------------------------------------


def gpu_temperature(f: ServerFacts) -> Iterator[Check]:
    gpus = f.gpu.gpus
    if not gpus:
        yield Check("gpu-temperature", Status.SKIP, NO_GPU_DATA)
        return
    hot = [g for g in gpus if isinstance(g.temperature_c, int) and g.temperature_c >= TEMP_ALERT_C]
    temps = ", ".join(f"GPU{g.index} {g.temperature_c} C" for g in gpus)
    if hot:
        yield Check(
            "gpu-temperature",
            Status.WARN,
            f"{temps}: at or above {TEMP_ALERT_C} C (80 C and up throttles, and halves throughput unnoticed)",
            "check airflow, fans and the room's cooling; alert on it (DCGM exporter + Prometheus)",
        )
    else:
        yield Check("gpu-temperature", Status.PASS, temps)


def gpu_throttle(f: ServerFacts) -> Iterator[Check]:
    gpus = f.gpu.gpus
    if not gpus:
        yield Check("gpu-throttle", Status.SKIP, NO_GPU_DATA)
        return
    if not any(isinstance(g.throttle_reasons, int) for g in gpus):
        yield Check("gpu-throttle", Status.SKIP, f"throttle reasons need NVML ({f.gpu.gpu_source} gave none)")
        return
    bad, info = [], []
    for g in gpus:
        reasons = g.throttle_reasons
        if not isinstance(reasons, int):
            continue
        bad += [f"GPU{g.index}: {text}" for bit, text in THROTTLE_BAD.items() if reasons & bit]
        info += [f"GPU{g.index}: {text}" for bit, text in THROTTLE_INFO.items() if reasons & bit]
    if bad:
        yield Check(
            "gpu-throttle",
            Status.WARN,
            "clocks held down: " + "; ".join(bad),
            "thermal: check cooling; power brake: check the PSU and power cables",
        )
    else:
        extra = f" ({'; '.join(info)})" if info else ""
        yield Check("gpu-throttle", Status.PASS, f"no thermal or hardware slowdown{extra}")


def gpu_ecc(f: ServerFacts) -> Iterator[Check]:
    gpus, source = f.gpu.gpus, f.gpu.gpu_source
    if not gpus:
        yield Check("gpu-ecc", Status.SKIP, NO_GPU_DATA)
        return
    if not any(isinstance(g.ecc_uncorrected, int) for g in gpus):
        if source == "NVML":
            yield Check("gpu-ecc", Status.PASS, "ECC is not reported (GeForce cards have none)")
        else:
            yield Check("gpu-ecc", Status.SKIP, f"ECC counters need NVML ({source} gave none)")
        return
    bad = [f"GPU{g.index}: {u} uncorrected" for g in gpus if isinstance(u := g.ecc_uncorrected, int) and u > 0]
    soft = [f"GPU{g.index}: {c} corrected" for g in gpus if isinstance(c := g.ecc_corrected, int) and c > 0]
    if bad:
        yield Check(
            "gpu-ecc",
            Status.FAIL,
            "ECC errors since the driver loaded: " + ", ".join(bad + soft),
            "drain the GPU, look at `nvidia-smi -q -d ECC,PAGE_RETIREMENT`, reset it (nvidia-smi -r); "
            "if it comes back, the card needs replacing",
        )
    elif soft:
        yield Check(
            "gpu-ecc",
            Status.WARN,
            "corrected ECC errors: " + ", ".join(soft),
            "watch the count; a rising one precedes uncorrected errors",
        )
    else:
        yield Check("gpu-ecc", Status.PASS, "no ECC errors")


def gpu_memory(f: ServerFacts) -> Iterator[Check]:
    gpus = f.gpu.gpus
    if not gpus:
        yield Check("gpu-memory", Status.SKIP, NO_GPU_DATA)
        return
    lines, full = [], False
    for g in gpus:
        total, used = g.memory_total_mib, g.memory_used_mib
        if total is None or used is None or total <= 0:
            continue
        share = used / total
        full = full or share >= VRAM_WARN
        lines.append(f"GPU{g.index} {used / 1024:.1f} of {total / 1024:.1f} GiB in use ({share:.0%})")
    if not lines:
        yield Check("gpu-memory", Status.SKIP, "no memory figures")
    elif full:
        yield Check(
            "gpu-memory",
            Status.WARN,
            "; ".join(lines) + f": {VRAM_WARN:.0%} or more",
            "expected while vLLM runs (--gpu-memory-utilization 0.90 takes 90%); otherwise nvidia-smi "
            "lists the processes holding it",
        )
    else:
        yield Check("gpu-memory", Status.PASS, "; ".join(lines))
