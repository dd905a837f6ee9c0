"""GPU smoke test: NVML, nvidia-smi, a CUDA container with --gpus, torch in the installed venv.

Each failure carries the usual cause of its symptom and the fix. No GPU is a clear failure,
never a crash. The facts come from `airgap.probes`; this module only judges them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airgap import probes
from airgap.host import Host
from airgap.lock import Lock
from airgap.probes import GpuReading, NvmlFailure, NvmlSession
from airgap.verdict import Check, Status, all_passed


@dataclass
class SmokeReport:
    checks: list[Check] = field(default_factory=list)
    gpus: list[GpuReading] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all_passed(self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"checks": [c.to_dict() for c in self.checks], "gpus": [_gpu_dict(g) for g in self.gpus], "ok": self.ok}


def _gpu_dict(g: GpuReading) -> dict[str, Any]:
    return {
        "index": g.index,
        "name": g.name,
        "memory_total_mib": g.memory_total_mib,
        "memory_used_mib": g.memory_used_mib,
        "temperature_c": g.temperature_c,
        "power_w": g.power_w,
        "ecc_errors": g.ecc_uncorrected,
    }


def _bundle_cuda(lock: Lock | None) -> str | None:
    cuda = (lock.manifest.get("cuda") or {}) if lock else {}
    return cuda.get("version") if isinstance(cuda, dict) else None


def _bundle_venv(lock: Lock | None) -> str:
    py = (lock.manifest.get("python") or {}) if lock else {}
    return (py.get("venv") if isinstance(py, dict) else None) or probes.DEFAULT_VENV


def check_nvml(nvml: NvmlSession, report: SmokeReport, lock: Lock | None, expect_gpus: int | None = None) -> None:
    reading = nvml.read()
    if isinstance(reading, NvmlFailure):
        report.checks.append(_nvml_failure(reading))
        return
    if expect_gpus is not None:
        report.checks.append(gpu_count_check(len(reading.gpus), expect_gpus))
    cuda_max = reading.cuda_max or "?"
    report.checks.append(Check("driver", Status.PASS, f"driver {reading.driver}, supports CUDA up to {cuda_max}"))
    want = _bundle_cuda(lock)
    if want and reading.cuda_max:
        have_t = tuple(int(x) for x in reading.cuda_max.split("."))
        want_t = tuple(int(x) for x in want.split(".")[:2])
        if have_t < want_t:
            report.checks.append(
                Check(
                    "cuda_vs_driver",
                    Status.FAIL,
                    f"the driver supports CUDA {reading.cuda_max}, the bundle's toolkit is {want}",
                    "install the bundle's driver layer (a newer driver), or have a bundle with an older CUDA "
                    "collected on the connected PC",
                )
            )
        else:
            report.checks.append(Check("cuda_vs_driver", Status.PASS, f"CUDA {want} runs on this driver"))
    for gpu in reading.gpus:
        report.gpus.append(gpu)
        temp = gpu.temperature_c
        status = Status.WARN if isinstance(temp, int) and temp >= probes.TEMP_ALERT_C else Status.PASS
        report.checks.append(
            Check(
                f"gpu{gpu.index}",
                status,
                f"{gpu.name}, {gpu.memory_total_mib} MiB, {temp} C, {gpu.power_w} W, ECC errors {gpu.ecc_uncorrected}",
                "check cooling: at 80 C and above the GPU throttles" if status is Status.WARN else "",
            )
        )


def gpu_count_check(found: int, expected: int) -> Check:
    """This server's GPU count against the one it should have (`--expect-gpus`, a fleet's `airgap_gpus`): a
    GPU the driver no longer lists is a failed or loose card, which nothing else in the smoke test notices."""
    if found == expected:
        return Check("gpu_count", Status.PASS, f"{found} GPU(s), as expected")
    if found > expected:
        return Check(
            "gpu_count",
            Status.WARN,
            f"{found} GPU(s), more than the {expected} expected",
            "correct the expected count (--expect-gpus, airgap_gpus in the fleet inventory)",
        )
    return Check(
        "gpu_count",
        Status.FAIL,
        f"{found} GPU(s) answer, {expected} expected: {expected - found} missing",
        "a GPU the driver does not list has usually fallen off the bus or failed: look at "
        "`dmesg | grep -iE 'NVRM|Xid|fallen off the bus'` and `lspci | grep -i nvidia` (is it still on the PCI "
        "bus?); reseat or replace it, then reboot; or correct the expected count",
    )


def _nvml_failure(failure: NvmlFailure) -> Check:
    if failure.kind == "no-package":
        return Check(
            "nvml",
            Status.FAIL,
            "the nvidia-ml-py package is missing",
            "reinstall airgap (pip install airgap pulls nvidia-ml-py)",
        )
    if failure.kind == "broken":
        return Check("nvml", Status.FAIL, f"NVML failed: {failure.detail}", "run `airgap doctor` for the details")
    return Check(
        "nvml",
        Status.FAIL,
        f"NVML cannot talk to a driver: {failure.detail}",
        "no NVIDIA driver is loaded: install the driver layer (airgap install --only driver); if it is "
        "installed, reboot, and check `lsmod | grep nvidia`, Secure Boot (mokutil --sb-state) and that "
        "nouveau is blacklisted",
    )


def check_nvidia_smi(host: Host, report: SmokeReport) -> None:
    smi = host.which("nvidia-smi")
    if smi is None:
        report.checks.append(
            Check(
                "nvidia-smi",
                Status.FAIL,
                "nvidia-smi is not installed",
                "install the driver layer: airgap install BUNDLE --only driver",
            )
        )
        return
    res = host.run([smi], check=False, changes=False, timeout=60)
    if res.returncode == 0:
        report.checks.append(Check("nvidia-smi", Status.PASS, "nvidia-smi runs"))
    else:
        report.checks.append(
            Check(
                "nvidia-smi",
                Status.FAIL,
                f"nvidia-smi failed: {res.tail(3)}",
                "reboot if the driver was just installed; check Secure Boot and nouveau",
            )
        )


def check_container(host: Host, report: SmokeReport, lock: Lock | None) -> None:
    images = [a.meta.get("ref", "") for a in (lock.artifacts if lock else []) if a.layer == "images"]
    cuda_images = sorted({r for r in images if "cuda" in r})
    docker = host.which("docker")
    if not cuda_images or docker is None:
        why = "no CUDA image in the bundle" if not cuda_images else "docker is not installed"
        report.checks.append(Check("container-gpu", Status.SKIP, f"skipped: {why}"))
        return
    res = host.run(
        [docker, "run", "--rm", "--gpus", "all", cuda_images[0], "nvidia-smi"], check=False, changes=False, timeout=300
    )
    if res.returncode == 0:
        report.checks.append(Check("container-gpu", Status.PASS, f"{cuda_images[0]} sees the GPU"))
    else:
        report.checks.append(
            Check(
                "container-gpu",
                Status.FAIL,
                f"docker run --gpus all {cuda_images[0]} failed: {res.tail(3)}",
                "nvidia-smi works but the container sees no GPU: is nvidia-container-toolkit installed, the nvidia "
                "runtime in /etc/docker/daemon.json (nvidia-ctk runtime configure --runtime=docker), and dockerd "
                "restarted since?",
            )
        )


def check_torch(host: Host, report: SmokeReport, lock: Lock | None) -> None:
    venv = _bundle_venv(lock)
    torch = probes.probe_torch(host, venv, matmul=True, timeout=300)
    if torch is None:
        report.checks.append(Check("torch", Status.SKIP, f"skipped: no Python environment at {venv}"))
    elif not torch.answered:
        tail = "\n".join(torch.output.rstrip().splitlines()[-3:])
        report.checks.append(Check("torch", Status.FAIL, f"the torch probe failed: {tail}"))
    elif torch.import_error is not None:
        report.checks.append(Check("torch", Status.SKIP, f"skipped: torch is not importable ({torch.import_error})"))
    elif not torch.cuda:
        report.checks.append(
            Check(
                "torch",
                Status.FAIL,
                f"torch {torch.version} is a CPU-only build",
                "install the CUDA build: its version carries +cuXYZ; on the connected PC, collect with the "
                "PyTorch index for your CUDA "
                "(e.g. https://download.pytorch.org/whl/cu124)",
            )
        )
    elif torch.available_error is not None:
        report.checks.append(Check("torch", Status.FAIL, f"the torch probe failed: {torch.available_error}"))
    elif not torch.available:
        report.checks.append(
            Check(
                "torch",
                Status.FAIL,
                f"torch {torch.version} (CUDA {torch.cuda}) sees no GPU",
                "torch.cuda.is_available() is False: check the driver supports that CUDA (nvidia-smi's CUDA Version)",
            )
        )
    else:
        report.checks.append(Check("torch", Status.PASS, f"torch {torch.version} on {torch.device}: matmul ok"))


def run_smoke(
    host: Host, lock: Lock | None = None, nvml: NvmlSession | None = None, expect_gpus: int | None = None
) -> SmokeReport:
    """The smoke test of the machine `host` runs on. NVML is the caller's session, or one opened here:
    unlike doctor, the smoke test always asks the running kernel's driver, --root or not. With
    `expect_gpus`, the count NVML lists must be that."""
    report = SmokeReport()
    if nvml is None:
        with NvmlSession(probes.pynvml_library()) as session:
            check_nvml(session, report, lock, expect_gpus)
    else:
        check_nvml(nvml, report, lock, expect_gpus)
    check_nvidia_smi(host, report)
    check_container(host, report, lock)
    check_torch(host, report, lock)
    return report
