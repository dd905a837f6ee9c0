"""GPU smoke test: NVML, nvidia-smi, a CUDA container with --gpus, torch in the installed venv.

Each failure carries the troubleshooting hint FIELD.md gives for its symptom. No GPU is a clear failure,
never a crash.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from airgap.bundle import Lock
from airgap.host import Host

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
DEFAULT_VENV = "/opt/airgap/venv"

TORCH_PROBE = """
import json
try:
    import torch
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    raise SystemExit(0)
info = {"version": torch.__version__, "cuda": torch.version.cuda, "available": torch.cuda.is_available()}
if info["available"]:
    a = torch.randn(256, 256, device="cuda")
    info["matmul"] = float((a @ a).sum().item()) == float((a @ a).sum().item())
    info["device"] = torch.cuda.get_device_name(0)
print(json.dumps(info))
"""


@dataclass
class SmokeCheck:
    name: str
    status: str
    message: str
    fix: str = ""


@dataclass
class SmokeReport:
    checks: list[SmokeCheck] = field(default_factory=list)
    gpus: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def _bundle_cuda(lock: Lock | None) -> str | None:
    cuda = (lock.manifest.get("cuda") or {}) if lock else {}
    return cuda.get("version") if isinstance(cuda, dict) else None


def check_nvml(report: SmokeReport, lock: Lock | None) -> None:
    try:
        import pynvml
    except ImportError:
        report.checks.append(
            SmokeCheck(
                "nvml",
                FAIL,
                "the nvidia-ml-py package is missing",
                "reinstall airgap (pip install airgap pulls nvidia-ml-py)",
            )
        )
        return
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        report.checks.append(
            SmokeCheck(
                "nvml",
                FAIL,
                f"NVML cannot talk to a driver: {exc}",
                "no NVIDIA driver is loaded: install the driver layer (airgap install --only driver); if it is "
                "installed, reboot, and check `lsmod | grep nvidia`, Secure Boot (mokutil --sb-state) and that "
                "nouveau is blacklisted",
            )
        )
        return
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda_int = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        cuda_max = f"{cuda_int // 1000}.{(cuda_int % 1000) // 10}"
        report.checks.append(SmokeCheck("driver", PASS, f"driver {driver}, supports CUDA up to {cuda_max}"))
        want = _bundle_cuda(lock)
        if want:
            have_t = tuple(int(x) for x in cuda_max.split("."))
            want_t = tuple(int(x) for x in want.split(".")[:2])
            if have_t < want_t:
                report.checks.append(
                    SmokeCheck(
                        "cuda_vs_driver",
                        FAIL,
                        f"the driver supports CUDA {cuda_max}, the bundle's toolkit is {want}",
                        "install the bundle's driver layer (a newer driver), or collect a bundle with an older CUDA",
                    )
                )
            else:
                report.checks.append(SmokeCheck("cuda_vs_driver", PASS, f"CUDA {want} runs on this driver"))
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            gpu = {
                "index": i,
                "name": _text(pynvml.nvmlDeviceGetName(h)),
                "memory_total_mib": mem.total // (1 << 20),
                "memory_used_mib": mem.used // (1 << 20),
                "temperature_c": _try(lambda h=h: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
                "power_w": _try(lambda h=h: pynvml.nvmlDeviceGetPowerUsage(h) / 1000),
                "ecc_errors": _try(
                    lambda h=h: pynvml.nvmlDeviceGetTotalEccErrors(
                        h, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
                    )
                ),
            }
            report.gpus.append(gpu)
            temp = gpu["temperature_c"]
            status = WARN if isinstance(temp, int) and temp >= 78 else PASS
            report.checks.append(
                SmokeCheck(
                    f"gpu{i}",
                    status,
                    f"{gpu['name']}, {gpu['memory_total_mib']} MiB, {temp} C, {gpu['power_w']} W, "
                    f"ECC errors {gpu['ecc_errors']}",
                    "check cooling: at 80 C and above the GPU throttles" if status == WARN else "",
                )
            )
    finally:
        pynvml.nvmlShutdown()


def check_nvidia_smi(host: Host, report: SmokeReport) -> None:
    smi = host.which("nvidia-smi")
    if smi is None:
        report.checks.append(
            SmokeCheck(
                "nvidia-smi",
                FAIL,
                "nvidia-smi is not installed",
                "install the driver layer: airgap install BUNDLE --only driver",
            )
        )
        return
    res = host.run([smi], check=False, changes=False, timeout=60)
    if res.returncode == 0:
        report.checks.append(SmokeCheck("nvidia-smi", PASS, "nvidia-smi runs"))
    else:
        report.checks.append(
            SmokeCheck(
                "nvidia-smi",
                FAIL,
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
        report.checks.append(SmokeCheck("container-gpu", SKIP, f"skipped: {why}"))
        return
    res = host.run(
        [docker, "run", "--rm", "--gpus", "all", cuda_images[0], "nvidia-smi"], check=False, changes=False, timeout=300
    )
    if res.returncode == 0:
        report.checks.append(SmokeCheck("container-gpu", PASS, f"{cuda_images[0]} sees the GPU"))
    else:
        report.checks.append(
            SmokeCheck(
                "container-gpu",
                FAIL,
                f"docker run --gpus all {cuda_images[0]} failed: {res.tail(3)}",
                "nvidia-smi works but the container sees no GPU: is nvidia-container-toolkit installed, the nvidia "
                "runtime in /etc/docker/daemon.json (nvidia-ctk runtime configure --runtime=docker), and dockerd "
                "restarted since?",
            )
        )


def check_torch(host: Host, report: SmokeReport, lock: Lock | None) -> None:
    py = (lock.manifest.get("python") or {}) if lock else {}
    venv = (py.get("venv") if isinstance(py, dict) else None) or DEFAULT_VENV
    python = host.path(f"{venv}/bin/python")
    if not python.exists():
        report.checks.append(SmokeCheck("torch", SKIP, f"skipped: no Python environment at {venv}"))
        return
    res = host.run([str(python), "-c", TORCH_PROBE], check=False, changes=False, timeout=300)
    try:
        info = json.loads(res.output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        report.checks.append(SmokeCheck("torch", FAIL, f"the torch probe failed: {res.tail(3)}"))
        return
    if "error" in info:
        report.checks.append(SmokeCheck("torch", SKIP, f"skipped: torch is not importable ({info['error']})"))
    elif not info.get("cuda"):
        report.checks.append(
            SmokeCheck(
                "torch",
                FAIL,
                f"torch {info['version']} is a CPU-only build",
                "install the CUDA build: its version carries +cuXYZ; collect with the PyTorch index for your CUDA "
                "(e.g. https://download.pytorch.org/whl/cu124)",
            )
        )
    elif not info.get("available"):
        report.checks.append(
            SmokeCheck(
                "torch",
                FAIL,
                f"torch {info['version']} (CUDA {info['cuda']}) sees no GPU",
                "torch.cuda.is_available() is False: check the driver supports that CUDA (nvidia-smi's CUDA Version)",
            )
        )
    else:
        report.checks.append(SmokeCheck("torch", PASS, f"torch {info['version']} on {info.get('device')}: matmul ok"))


def run_smoke(host: Host, lock: Lock | None = None) -> SmokeReport:
    report = SmokeReport()
    check_nvml(report, lock)
    check_nvidia_smi(host, report)
    check_container(host, report, lock)
    check_torch(host, report, lock)
    return report


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _try(fn: Any) -> Any:
    try:
        return fn()
    except Exception:  # NVML raises NotSupported on consumer cards for ECC and power: show "n/a"
        return "n/a"
