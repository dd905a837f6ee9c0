"""`airgap doctor`: FIELD.md's readiness checklist, run on the server, as named checks with the fix.

No bundle is needed; `--bundle` adds what the bundle expects (driver, CUDA, cuDNN, torch build, model
directories and owners, target OS and kernel). Every check reads the machine through a Host, so
`--root DIR` (and the tests) point them at a prepared tree: sysfs, /proc, /etc, commands under usr/bin.
NVML reads the running kernel's driver, not a tree, so under `--root` its checks are skipped (tests
hand in a stand-in NVML). A machine with no GPU gets clear failures, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from airgap import compat
from airgap.bundle import Lock, human_size
from airgap.host import SYSTEM_PATH, Host

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"

DEFAULT_VENV = "/opt/airgap/venv"
# Where people keep models when the bundle does not say (FIELD.md's compose files mount /models; the
# install preflight plans for /data).
DEFAULT_MODEL_DIRS = ("/data/models", "/models", "/srv/models", "/opt/airgap/models")
CONTAINER_UID = 1000  # vLLM's and most serving images' user (FIELD.md: "the container runs as uid 1000")
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
DAEMON_JSON = "/etc/docker/daemon.json"
CDI_SPEC = "/etc/cdi/nvidia.yaml"
CUDNN_HEADERS = (
    "/usr/include/cudnn_version.h",
    "/usr/include/x86_64-linux-gnu/cudnn_version_v9.h",
    "/usr/include/aarch64-linux-gnu/cudnn_version_v9.h",
    "/usr/include/x86_64-linux-gnu/cudnn_version_v8.h",
    "/usr/local/cuda/include/cudnn_version.h",
)
COMPOSE_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
)
# Thresholds from FIELD.md: "Alerts: temperature >= 78 C, VRAM >= 95%, disk >= 90%"; healthy VRAM is under 90%.
TEMP_WARN_C = 78
VRAM_WARN = 0.90
DISK_WARN = 0.90
DISK_FAIL = 0.98
RAM_PER_VRAM = 1.5  # "RAM >= total VRAM, better 1.5-2x"; the checklist asks 1.5x
# dockerd's start time comes from /proc in clock ticks after a boot time in whole seconds.
START_SLACK_S = 2.0
# NVML clock-event reasons worth a warning (nvml.h): SW/HW thermal slowdown, HW slowdown, power brake.
THROTTLE_BAD = {
    0x20: "software thermal slowdown",
    0x40: "hardware thermal slowdown",
    0x8: "hardware slowdown",
    0x80: "power brake (external power)",
}
THROTTLE_INFO = {0x4: "at its power cap (normal under full load)", 0x2: "application clocks set", 0x10: "sync boost"}
OOM_RE = re.compile(r"out of memory|oom-kill|invoked oom-killer|killed process", re.IGNORECASE)

TORCH_PROBE = """
import json
try:
    import torch
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    raise SystemExit(0)
info = {"version": str(torch.__version__), "cuda": getattr(getattr(torch, "version", None), "cuda", None)}
try:
    info["available"] = bool(torch.cuda.is_available())
except Exception as exc:
    info["available_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(info))
"""


@dataclass
class DoctorCheck:
    name: str
    status: str  # pass, warn, fail, skip
    message: str
    fix: str = ""


@dataclass
class DoctorReport:
    root: str
    bundle: str | None
    checks: list[DoctorCheck] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def counts(self) -> dict[str, int]:
        out = {PASS: 0, WARN: 0, FAIL: 0, SKIP: 0}
        for c in self.checks:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["summary"] = self.counts()
        return d


@dataclass
class Expectations:
    """What a bundle's lock says the server should have."""

    driver: str | None = None
    cuda: str | None = None
    cudnn: str | None = None
    torch: str | None = None  # version from python.requirements
    torch_build: str | None = None  # "cu124" from the PyTorch index or the pin
    venv: str | None = None
    python_layer: bool = False
    os: str | None = None
    kernel: str | None = None
    docker: bool = False
    container_toolkit: bool = False
    gpus: list[str] = field(default_factory=list)
    models: list[tuple[str, int]] = field(default_factory=list)  # (dest dir, uid)
    models_bytes: int = 0
    allowed_mismatches: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_lock(cls, lock: Lock) -> Expectations:
        m = lock.manifest or {}
        e = cls()
        e.driver = (m.get("driver") or {}).get("version")
        e.cuda = (m.get("cuda") or {}).get("version")
        e.cudnn = str((m.get("cudnn") or {}).get("version") or "") or None
        target = m.get("target") or lock.target or {}
        e.os, e.kernel, e.gpus = target.get("os"), target.get("kernel"), list(target.get("gpus") or [])
        e.docker, e.container_toolkit = bool(m.get("docker")), bool(m.get("container_toolkit"))
        py = m.get("python") or {}
        if py:
            e.python_layer = True
            e.venv = py.get("venv")
            for req in py.get("requirements") or []:
                mt = re.match(r"^\s*torch\s*===?\s*([0-9][^\s;,+]*)(?:\+(\w+))?", str(req))
                if mt:
                    e.torch, e.torch_build = mt.group(1), mt.group(2)
            for url in py.get("index_urls") or []:
                mb = re.search(r"/whl/(cu\d{3})/?$", str(url))
                if mb and e.torch_build is None:
                    e.torch_build = mb.group(1)
        for spec in m.get("models") or []:
            if isinstance(spec, dict) and spec.get("dest"):
                uid = int(str(spec.get("owner") or f"{CONTAINER_UID}:{CONTAINER_UID}").split(":")[0])
                e.models.append((str(spec["dest"]), uid))
        e.models_bytes = sum(a.size for a in lock.artifacts if a.layer == "models")
        e.allowed_mismatches = list(getattr(lock, "allowed_mismatches", []) or [])
        return e


_AUTO = object()


class Doctor:
    def __init__(self, host: Host, lock: Lock | None = None, nvml: Any = _AUTO) -> None:
        self.host = host
        self.lock = lock
        self.expect = Expectations.from_lock(lock) if lock is not None else Expectations()
        self.rooted = host.root != Path("/")
        if nvml is _AUTO:
            nvml = None if self.rooted else _import_nvml()
        self.nvml = nvml
        self.report = DoctorReport(str(host.root), None)
        self.driver: str | None = None  # from nvidia-smi or NVML
        self.driver_cuda: str | None = None  # the driver's maximum CUDA, "12.4"
        self.toolkit: str | None = None  # nvcc's release, "12.4"
        self.gpus: list[dict[str, Any]] = []
        self.gpu_source = ""

    # --- plumbing ---------------------------------------------------------------------------------------

    def add(self, name: str, status: str, message: str, fix: str = "") -> None:
        self.report.checks.append(DoctorCheck(name, status, message, fix))

    def which(self, name: str, extra_dirs: tuple[str, ...] = ()) -> str | None:
        """On the real machine: PATH (what a user's shell finds). Under --root: only the tree's own
        system directories, so the machine running the doctor never answers for the tree."""
        if not self.rooted:
            return self.host.which(name)
        for d in (*SYSTEM_PATH, *extra_dirs):
            candidate = self.host.path(d) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        return None

    def run(self, argv: list[str], timeout: float = 30) -> tuple[int, str]:
        res = self.host.run(argv, check=False, changes=False, timeout=timeout)
        return res.returncode, res.output

    def read(self, path: str) -> str | None:
        return self.host.read_text(path)

    def run_all(self) -> DoctorReport:
        steps: list[Callable[[], None]] = [
            self.check_gpu_pci,
            self.check_nouveau,
            self.check_nvidia_smi,
            self.check_nvml,
            self.check_bundle_driver,
            self.check_toolkit,
            self.check_cudnn,
            self.check_torch,
            self.check_docker_daemon,
            self.check_nvidia_runtime,
            self.check_dockerd_restarted,
            self.check_compose,
            self.check_docker_group,
            self.check_gpu_temperature,
            self.check_gpu_throttle,
            self.check_gpu_ecc,
            self.check_gpu_memory,
            self.check_disk,
            self.check_ram_vs_vram,
            self.check_oom,
            self.check_models_owner,
            self.check_os_kernel,
            self.check_bundle_mismatches,
        ]
        for step in steps:
            try:
                step()
            except Exception as exc:  # one broken probe must not hide the rest of the report
                name = step.__name__.removeprefix("check_").replace("_", "-")
                self.add(
                    name,
                    WARN,
                    f"this check could not run: {type(exc).__name__}: {exc}",
                    "a bug in airgap's doctor; the other checks still stand",
                )
        self.report.facts = {
            "driver": self.driver,
            "driver_cuda_max": self.driver_cuda,
            "toolkit": self.toolkit,
            "gpus": self.gpus,
            "gpu_source": self.gpu_source,
        }
        return self.report

    # --- GPU and driver -----------------------------------------------------------------------------------

    def pci_gpus(self) -> list[str]:
        from airgap.preflight import nvidia_gpus

        return nvidia_gpus(self.host)

    def check_gpu_pci(self) -> None:
        gpus = self.pci_gpus()
        if gpus:
            self.add("gpu-pci", PASS, f"{len(gpus)} NVIDIA GPU(s) on the PCI bus: {', '.join(gpus)}")
        else:
            self.add(
                "gpu-pci",
                FAIL,
                "no NVIDIA GPU on the PCI bus (sysfs: no device with vendor 0x10de and a display class 0x03xxxx)",
                "check the card is seated and powered (lspci | grep -i nvidia); in a VM, pass the GPU through to it",
            )

    def nouveau_loaded(self) -> bool:
        modules = self.read("/proc/modules") or ""
        return any(line.split(" ", 1)[0] == "nouveau" for line in modules.splitlines())

    def check_nouveau(self) -> None:
        if self.nouveau_loaded():
            self.add(
                "nouveau",
                FAIL,
                "the nouveau driver is loaded: the NVIDIA driver cannot take the GPU",
                "blacklist it (blacklist nouveau / options nouveau modeset=0 in /etc/modprobe.d), "
                "update-initramfs -u, reboot; `airgap install --only driver` does this",
            )
        else:
            self.add("nouveau", PASS, "nouveau is not loaded")

    def secure_boot(self) -> bool | None:
        efivars = self.host.path("/sys/firmware/efi/efivars")
        with contextlib.suppress(OSError):
            for entry in efivars.glob("SecureBoot-*"):
                data = entry.read_bytes()
                return bool(data) and data[-1] == 1
        return None

    def check_nvidia_smi(self) -> None:
        smi = self.which("nvidia-smi")
        if smi is None:
            self.add(
                "nvidia-smi",
                FAIL,
                "nvidia-smi is not installed: no NVIDIA driver",
                "install the driver (airgap install BUNDLE --only driver), then reboot",
            )
            return
        rc, out = self.run([smi], timeout=60)
        if rc != 0:
            causes = []
            if not self.pci_gpus():
                causes.append("no GPU on the PCI bus")
            if self.nouveau_loaded():
                causes.append("nouveau is loaded")
            if self.secure_boot():
                causes.append("Secure Boot is on (an unsigned nvidia module will not load)")
            found = f" ({'; '.join(causes)})" if causes else ""
            tail = " ".join(out.strip().splitlines()[-2:])[:300]
            self.add(
                "nvidia-smi",
                FAIL,
                f"nvidia-smi failed (exit {rc}){found}: {tail}",
                "reboot if the driver was just installed; check `mokutil --sb-state` (Secure Boot), "
                "`lsmod | grep nouveau`, `lspci | grep -i nvidia`, and `dmesg | grep -i nvrm`",
            )
            return
        m = re.search(r"Driver Version:\s*([\d.]+)", out)
        c = re.search(r"CUDA Version:\s*([\d.]+)", out)
        self.driver = m.group(1) if m else self.driver
        self.driver_cuda = c.group(1) if c else self.driver_cuda
        if not self.gpus:
            self._gpus_from_smi(smi)
        what = f"driver {self.driver or '?'}"
        if self.driver_cuda:
            what += f', "CUDA Version: {self.driver_cuda}" (the newest CUDA this driver runs, not the toolkit)'
        self.add("nvidia-smi", PASS, f"nvidia-smi works: {what}")

    def _gpus_from_smi(self, smi: str) -> None:
        rc, out = self.run(
            [smi, "--query-gpu=index,name,memory.total,memory.used,temperature.gpu", "--format=csv,noheader,nounits"]
        )
        if rc != 0:
            return
        gpus = []
        for line in out.strip().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) < 5:
                continue
            gpus.append(
                {
                    "index": _int(parts[0]),
                    "name": parts[1],
                    "memory_total_mib": _int(parts[2]),
                    "memory_used_mib": _int(parts[3]),
                    "temperature_c": _int(parts[4]),
                    "throttle_reasons": None,
                    "ecc_uncorrected": None,
                    "ecc_corrected": None,
                }
            )
        if gpus:
            self.gpus, self.gpu_source = gpus, "nvidia-smi"

    def check_nvml(self) -> None:
        if self.nvml is None:
            why = (
                "NVML reads the running machine's driver, not the --root tree"
                if self.rooted
                else "the nvidia-ml-py package is missing (pip install nvidia-ml-py)"
            )
            self.add("nvml", SKIP, f"not checked: {why}")
            return
        nvml = self.nvml
        not_found = getattr(nvml, "NVMLError_LibraryNotFound", None)
        nvml_error = getattr(nvml, "NVMLError", Exception)
        try:
            nvml.nvmlInit()
        except Exception as exc:
            if not_found is not None and isinstance(exc, not_found):
                self.add(
                    "nvml",
                    FAIL,
                    "no NVIDIA driver library (libnvidia-ml.so.1 is not installed): the driver is missing",
                    "install the driver (airgap install BUNDLE --only driver), then reboot",
                )
            elif isinstance(exc, nvml_error):
                self.add(
                    "nvml",
                    FAIL,
                    f"NVML cannot talk to the driver: {exc}",
                    "the driver library is there but the kernel module is not loaded: reboot after "
                    "installing, check `lsmod | grep nvidia`, Secure Boot and nouveau",
                )
            else:
                raise
            return
        try:
            self.driver = _text(nvml.nvmlSystemGetDriverVersion())
            with contextlib.suppress(Exception):
                v = int(nvml.nvmlSystemGetCudaDriverVersion_v2())
                self.driver_cuda = f"{v // 1000}.{(v % 1000) // 10}"
            gpus = [_nvml_gpu(nvml, i) for i in range(int(nvml.nvmlDeviceGetCount()))]
            self.gpus, self.gpu_source = gpus, "NVML"
        finally:
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()
        names = ", ".join(f"{g['name']} ({g['memory_total_mib'] // 1024} GiB)" for g in self.gpus) or "no GPU"
        self.add("nvml", PASS, f"NVML: driver {self.driver}, CUDA up to {self.driver_cuda}; {names}")

    def check_bundle_driver(self) -> None:
        want = self.expect.driver
        if want is None:
            return
        if self.driver is None:
            self.add(
                "bundle-driver",
                FAIL,
                f"the bundle brings driver {want}; no running driver was found",
                "airgap install BUNDLE --only driver, then reboot",
            )
        elif self.driver != want:
            self.add(
                "bundle-driver",
                WARN,
                f"the bundle brings driver {want}; the running driver is {self.driver}",
                "airgap install BUNDLE --only driver (and reboot) to run the bundle's driver",
            )
        else:
            self.add("bundle-driver", PASS, f"driver {self.driver}, as the bundle")

    def check_toolkit(self) -> None:
        nvcc = self.which("nvcc")
        if nvcc is None:
            installed = sorted(p for p in (self.host.path("/usr/local").glob("cuda*/bin/nvcc")) if p.is_file())
            if installed:
                where = "/" + str(installed[-1].parent.relative_to(self.host.root))
                sudo = (
                    " (sudo resets PATH: run `sudo env PATH=$PATH airgap doctor`)"
                    if self.host.base_env.get("SUDO_USER")
                    else ""
                )
                self.add(
                    "driver-toolkit",
                    FAIL,
                    f"a CUDA toolkit is installed in {where} but nvcc is not on PATH{sudo}",
                    f"export PATH={where}:$PATH and LD_LIBRARY_PATH={where.removesuffix('/bin')}/lib64 "
                    "(put both in /etc/profile.d/cuda.sh)",
                )
                return
            status = FAIL if self.expect.cuda else WARN
            self.add(
                "driver-toolkit",
                status,
                "no CUDA toolkit (nvcc) found: nvidia-smi's CUDA Version is the driver's maximum, not an "
                "installed toolkit"
                + (
                    ""
                    if self.expect.cuda
                    else "; containers and pip wheels bring their own CUDA, but building CUDA code needs the toolkit"
                ),
                "install the CUDA layer (airgap install BUNDLE --only cuda) and put its bin/ on PATH",
            )
            return
        rc, out = self.run([nvcc, "--version"])
        m = re.search(r"release\s+(\d+\.\d+)(?:,\s*V([\d.]+))?", out)
        if rc != 0 or not m:
            self.add(
                "driver-toolkit",
                FAIL,
                f"{nvcc} --version failed (exit {rc}): {out.strip()[-200:]}",
                "reinstall the CUDA toolkit (airgap install BUNDLE --only cuda)",
            )
            return
        self.toolkit = m.group(1)
        full = f" (V{m.group(2)})" if m.group(2) else ""
        minimum = compat.cuda_min_driver(f"{self.toolkit}.0")
        if self.expect.cuda and compat.cuda_minor(self.expect.cuda) != self.toolkit:
            self.add(
                "driver-toolkit",
                FAIL,
                f"nvcc on PATH is CUDA {self.toolkit}{full}; the bundle installs CUDA {self.expect.cuda}",
                f"put /usr/local/cuda-{compat.cuda_minor(self.expect.cuda)}/bin first "
                "on PATH, or install the bundle's CUDA layer",
            )
            return
        if self.driver is None:
            self.add(
                "driver-toolkit",
                WARN,
                f"nvcc {self.toolkit}{full} at {nvcc}; no running driver to compare it with",
                "install the driver and reboot; then run doctor again",
            )
            return
        if minimum and compat.version_tuple(self.driver) < compat.version_tuple(minimum.driver):
            self.add(
                "driver-toolkit",
                FAIL,
                f"CUDA toolkit {self.toolkit}{full} needs driver >= {minimum.driver}; the driver is {self.driver} "
                f"(nvidia-smi's \"CUDA Version: {self.driver_cuda}\" is the driver's maximum, not the toolkit)",
                f"install driver {minimum.driver} or newer, or a CUDA toolkit the driver supports",
            )
            return
        self.add(
            "driver-toolkit",
            PASS,
            f"nvcc {self.toolkit}{full} on PATH; driver {self.driver} runs it "
            f"(it supports CUDA up to {self.driver_cuda or '?'})",
        )

    def check_cudnn(self) -> None:
        for header in CUDNN_HEADERS:
            text = self.read(header)
            if text is None:
                continue
            parts = [re.search(rf"#define\s+CUDNN_{k}\s+(\d+)", text) for k in ("MAJOR", "MINOR", "PATCHLEVEL")]
            version = ".".join(p.group(1) for p in parts if p)
            if not version:
                continue
            want = self.expect.cudnn
            if want and version.split(".")[0] != want.split(".")[0]:
                self.add(
                    "cudnn",
                    FAIL,
                    f"cuDNN {version} ({header}); the bundle brings cuDNN {want}",
                    "install the bundle's cudnn layer (airgap install BUNDLE --only cudnn)",
                )
            else:
                self.add("cudnn", PASS, f"cuDNN {version} ({header})")
            return
        status = FAIL if self.expect.cudnn else WARN
        self.add(
            "cudnn",
            status,
            "no cuDNN version header (/usr/include/cudnn_version.h or "
            "/usr/include/x86_64-linux-gnu/cudnn_version_v9.h)"
            + ("" if self.expect.cudnn else "; PyTorch wheels bring their own, code built on the host needs it"),
            "install libcudnn9-cuda-12 and libcudnn9-dev-cuda-12 (airgap install BUNDLE --only cudnn)",
        )

    def check_torch(self) -> None:
        venv = self.expect.venv or DEFAULT_VENV
        python = self.host.path(f"{venv}/bin/python")
        if not python.exists():
            if self.expect.python_layer:
                self.add(
                    "pytorch",
                    FAIL,
                    f"no Python environment at {venv}, where the bundle's wheels go",
                    "airgap install BUNDLE --only python",
                )
            else:
                self.add("pytorch", SKIP, f"no Python environment at {venv} (--bundle points at the bundle's)")
            return
        rc, out = self.run([str(python), "-c", TORCH_PROBE], timeout=180)
        try:
            info = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.add(
                "pytorch",
                FAIL,
                f"{venv}/bin/python could not run a one-line probe (exit {rc}): {out.strip()[-200:]}",
                "recreate the environment: airgap install BUNDLE --only python",
            )
            return
        if "error" in info:
            status = FAIL if self.expect.torch else WARN
            self.add(
                "pytorch",
                status,
                f"torch is not importable in {venv}: {info['error']}",
                "install the bundle's wheels: airgap install BUNDLE --only python",
            )
            return
        version, cuda = str(info.get("version")), info.get("cuda")
        if "+cu" not in version and not cuda:
            build = self.expect.torch_build or (f"cu{self.toolkit.replace('.', '')}" if self.toolkit else "cu124")
            self.add(
                "pytorch",
                FAIL,
                f"torch {version} in {venv} is a CPU-only build (no +cu in its version, torch.version.cuda is "
                "None): torch.cuda.is_available() is False",
                f"install the CUDA build: collect torch with the index https://download.pytorch.org/whl/{build} "
                f"(torch=={version.split('+')[0]}+{build}), then airgap install BUNDLE --only python",
            )
            return
        cuda = str(cuda or compat.build_cuda(version.split("+cu", 1)[1][:3]))
        problems: list[tuple[str, str, str]] = []
        major = int(cuda.split(".")[0])
        floor = compat.CUDA_MINOR_COMPAT_DRIVER.get(major)
        if self.driver and floor and compat.version_tuple(self.driver) < compat.version_tuple(floor):
            problems.append(
                (
                    FAIL,
                    f"needs driver >= {floor} for CUDA {major}.x, the driver is {self.driver}",
                    f"install a driver >= {floor}",
                )
            )
        if self.expect.torch_build and compat.build_cuda(self.expect.torch_build) != cuda:
            problems.append(
                (
                    FAIL,
                    f"the bundle's torch is the {self.expect.torch_build} build",
                    "install the bundle's wheels: airgap install BUNDLE --only python",
                )
            )
        if self.toolkit and self.toolkit != cuda:
            problems.append(
                (
                    WARN,
                    f"the CUDA toolkit on PATH is {self.toolkit} (extensions built with nvcc will not match torch)",
                    f"use torch for CUDA {self.toolkit}, or the CUDA {cuda} toolkit",
                )
            )
        if info.get("available") is False and self.pci_gpus():
            problems.append(
                (
                    FAIL,
                    "torch.cuda.is_available() is False although a GPU is on the PCI bus",
                    "check nvidia-smi works and that the driver supports CUDA " + cuda,
                )
            )
        what = f"torch {version}, built for CUDA {cuda}"
        if not problems:
            self.add("pytorch", PASS, f"{what} ({venv})")
            return
        status = FAIL if any(p[0] == FAIL for p in problems) else WARN
        self.add("pytorch", status, f"{what}: " + "; ".join(p[1] for p in problems), "; ".join(p[2] for p in problems))

    # --- Docker -------------------------------------------------------------------------------------------

    def dockerd_pids(self) -> list[int]:
        proc = self.host.path("/proc")
        pids = []
        with contextlib.suppress(OSError):
            for entry in proc.iterdir():
                if not entry.name.isdigit():
                    continue
                with contextlib.suppress(OSError):
                    if (entry / "comm").read_text().strip() == "dockerd":
                        pids.append(int(entry.name))
        return sorted(pids)

    def check_docker_daemon(self) -> None:
        sockets = [s for s in DOCKER_SOCKETS if self.host.path(s).exists()]
        pids = self.dockerd_pids()
        if not sockets:
            if pids:
                self.add(
                    "docker-daemon",
                    WARN,
                    f"dockerd runs (pid {pids[0]}) but not on {DOCKER_SOCKETS[0]}: docker and compose will not find it",
                    "start it with -H unix:///var/run/docker.sock (the docker.socket unit does)",
                )
            else:
                self.add(
                    "docker-daemon",
                    FAIL,
                    "Docker is not running (no /var/run/docker.sock)",
                    "systemctl enable --now docker; if Docker is not installed: airgap install BUNDLE --only docker",
                )
            return
        path = self.host.path(sockets[0])
        if not stat.S_ISSOCK(path.stat().st_mode):
            self.add("docker-daemon", FAIL, f"{sockets[0]} is not a socket", "remove it and restart Docker")
            return
        error = _connect_unix(path)
        if error is None:
            self.add("docker-daemon", PASS, f"dockerd answers on {sockets[0]}")
        elif isinstance(error, PermissionError):
            self.add(
                "docker-daemon",
                WARN,
                f"{sockets[0]} exists, but this user may not use it (permission denied)",
                "see docker-group below, or run with sudo",
            )
        else:
            self.add(
                "docker-daemon",
                FAIL,
                f"{sockets[0]} exists but nothing answers ({error}): dockerd is not running (a stale socket)",
                "systemctl restart docker (journalctl -u docker says why it "
                "stopped; an invalid daemon.json is a common cause)",
            )

    def daemon_config(self) -> tuple[dict[str, Any] | None, str]:
        text = self.read(DAEMON_JSON)
        if text is None:
            return None, "missing"
        try:
            data = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            return None, f"invalid: {exc}"
        return (data, "") if isinstance(data, dict) else (None, "invalid: not a JSON object")

    def check_nvidia_runtime(self) -> None:
        data, problem = self.daemon_config()
        fix = (
            "nvidia-ctk runtime configure --runtime=docker && systemctl restart docker "
            "(`airgap install BUNDLE --only container_toolkit` does both)"
        )
        if problem == "missing":
            status = FAIL
            self.add(
                "nvidia-runtime",
                status,
                f"no {DAEMON_JSON}: the nvidia runtime is not configured, containers see no GPU",
                fix,
            )
            return
        if data is None:
            self.add(
                "nvidia-runtime",
                FAIL,
                f"{DAEMON_JSON} is {problem}; dockerd refuses to start with it",
                f"fix the JSON (python3 -m json.tool {DAEMON_JSON} shows where), then systemctl restart docker",
            )
            return
        runtime = (data.get("runtimes") or {}).get("nvidia") if isinstance(data.get("runtimes"), dict) else None
        if not isinstance(runtime, dict):
            cdi = (
                " (a CDI spec exists: `--device nvidia.com/gpu=all` can work, `--gpus all` needs the runtime)"
                if self.host.path(CDI_SPEC).exists()
                else ""
            )
            self.add(
                "nvidia-runtime",
                FAIL,
                f"{DAEMON_JSON} has no nvidia runtime: nvidia-smi works but containers see no GPU{cdi}",
                fix,
            )
            return
        binary = str(runtime.get("path") or "nvidia-container-runtime")
        found = self.host.path(binary).is_file() if binary.startswith("/") else self.which(binary) is not None
        default = data.get("default-runtime", "runc")
        if not found:
            self.add(
                "nvidia-runtime",
                FAIL,
                f"{DAEMON_JSON} names the runtime {binary}, which is not installed",
                "install nvidia-container-toolkit (airgap install BUNDLE --only container_toolkit)",
            )
            return
        self.add("nvidia-runtime", PASS, f"runtimes.nvidia -> {binary} in {DAEMON_JSON} (default-runtime: {default})")

    def check_dockerd_restarted(self) -> None:
        path = self.host.path(DAEMON_JSON)
        if not path.exists():
            self.add("dockerd-restarted", SKIP, f"no {DAEMON_JSON} to compare with")
            return
        pids = self.dockerd_pids()
        if not pids:
            self.add("dockerd-restarted", SKIP, f"dockerd is not running; it reads {DAEMON_JSON} when it starts")
            return
        started = self.process_start(pids[0])
        if started is None:
            self.add("dockerd-restarted", SKIP, f"the start time of dockerd (pid {pids[0]}) cannot be read")
            return
        written = path.stat().st_mtime
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        wrote = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(written))
        if started + START_SLACK_S < written:
            self.add(
                "dockerd-restarted",
                FAIL,
                f"dockerd (pid {pids[0]}) started at {when}, before {DAEMON_JSON} "
                f"was last written ({wrote}): it runs without that configuration (the nvidia runtime too)",
                "systemctl restart docker",
            )
        else:
            self.add(
                "dockerd-restarted",
                PASS,
                f"dockerd (pid {pids[0]}) started at {when}, after {DAEMON_JSON} was written ({wrote})",
            )

    def process_start(self, pid: int) -> float | None:
        """Seconds since the epoch: /proc/PID/stat's starttime (field 22, clock ticks after boot) plus
        /proc/stat's btime."""
        stat_text = self.read(f"/proc/{pid}/stat")
        boot = self.read("/proc/stat")
        if not stat_text or not boot:
            return None
        m = re.search(r"^btime\s+(\d+)", boot, re.MULTILINE)
        fields = stat_text.rsplit(")", 1)[-1].split()  # the command name may hold spaces and parentheses
        if not m or len(fields) < 20:
            return None
        ticks = int(fields[19])  # field 22 overall; the list starts at field 3 (state)
        return int(m.group(1)) + ticks / os.sysconf("SC_CLK_TCK")

    def check_compose(self) -> None:
        docker = self.which("docker")
        if docker is None:
            self.add(
                "compose",
                FAIL,
                "the docker command is not installed, so neither is Compose",
                "airgap install BUNDLE --only docker, then the Compose v2 plugin",
            )
            return
        rc, out = self.run([docker, "compose", "version"])
        m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
        if rc == 0 and m and int(m.group(1)) >= 2:
            self.add("compose", PASS, f"Compose v2: {out.strip().splitlines()[0][:120]}")
            return
        legacy = self.which("docker-compose")
        also = f"; only the legacy {legacy} was found" if legacy else ""
        got = out.strip().splitlines()[-1][:160] if out.strip() else f"exit {rc}"
        self.add(
            "compose",
            FAIL,
            f"`docker compose` (v2) does not work ({got}){also}",
            "put the docker-compose v2 binary in /usr/local/lib/docker/cli-plugins/ (chmod +x); Docker's "
            "static tgz does not include it",
        )

    def check_docker_group(self) -> None:
        user = self.host.base_env.get("SUDO_USER") or _current_user()
        groups = self.read("/etc/group") or ""
        docker = next((line.split(":") for line in groups.splitlines() if line.startswith("docker:")), None)
        if docker is None or len(docker) < 4:
            self.add(
                "docker-group",
                FAIL,
                "there is no docker group: the Docker socket is root's only",
                f"groupadd docker && usermod -aG docker {user if user != 'root' else 'YOUR_USER'}, then "
                "restart docker.socket and log in again",
            )
            return
        if user == "root":
            self.add(
                "docker-group",
                WARN,
                "run as root: which non-root user will run containers is not known",
                "run `sudo airgap doctor` from that user's account (it reads SUDO_USER)",
            )
            return
        members = [m.strip() for m in docker[3].split(",") if m.strip()]
        primary = None
        for line in (self.read("/etc/passwd") or "").splitlines():
            parts = line.split(":")
            if len(parts) > 3 and parts[0] == user:
                primary = parts[3]
        if user in members or primary == docker[2]:
            self.add("docker-group", PASS, f"{user} is in the docker group")
        else:
            self.add(
                "docker-group",
                FAIL,
                f"{user} is not in the docker group: docker and compose need sudo",
                f"usermod -aG docker {user}, then log out and in again",
            )

    # --- health (NVML or nvidia-smi) ------------------------------------------------------------------------

    def _no_gpu_data(self, name: str) -> bool:
        if self.gpus:
            return False
        self.add(name, SKIP, "no GPU data (neither NVML nor nvidia-smi answered)")
        return True

    def check_gpu_temperature(self) -> None:
        if self._no_gpu_data("gpu-temperature"):
            return
        hot = [g for g in self.gpus if isinstance(g["temperature_c"], int) and g["temperature_c"] >= TEMP_WARN_C]
        temps = ", ".join(f"GPU{g['index']} {g['temperature_c']} C" for g in self.gpus)
        if hot:
            self.add(
                "gpu-temperature",
                WARN,
                f"{temps}: at or above {TEMP_WARN_C} C (80 C and up throttles, and halves throughput unnoticed)",
                "check airflow, fans and the room's cooling; alert on it (DCGM exporter + Prometheus)",
            )
        else:
            self.add("gpu-temperature", PASS, temps)

    def check_gpu_throttle(self) -> None:
        if self._no_gpu_data("gpu-throttle"):
            return
        if all(g["throttle_reasons"] is None or g["throttle_reasons"] == "n/a" for g in self.gpus):
            self.add("gpu-throttle", SKIP, f"throttle reasons need NVML ({self.gpu_source} gave none)")
            return
        bad, info = [], []
        for g in self.gpus:
            reasons = g["throttle_reasons"]
            if not isinstance(reasons, int):
                continue
            bad += [f"GPU{g['index']}: {text}" for bit, text in THROTTLE_BAD.items() if reasons & bit]
            info += [f"GPU{g['index']}: {text}" for bit, text in THROTTLE_INFO.items() if reasons & bit]
        if bad:
            self.add(
                "gpu-throttle",
                WARN,
                "clocks held down: " + "; ".join(bad),
                "thermal: check cooling; power brake: check the PSU and power cables",
            )
        else:
            extra = f" ({'; '.join(info)})" if info else ""
            self.add("gpu-throttle", PASS, f"no thermal or hardware slowdown{extra}")

    def check_gpu_ecc(self) -> None:
        if self._no_gpu_data("gpu-ecc"):
            return
        values = [(g, g["ecc_uncorrected"], g["ecc_corrected"]) for g in self.gpus]
        if all(not isinstance(u, int) for _, u, _ in values):
            self.add(
                "gpu-ecc",
                PASS if self.gpu_source == "NVML" else SKIP,
                "ECC is not reported (GeForce cards have none)"
                if self.gpu_source == "NVML"
                else f"ECC counters need NVML ({self.gpu_source} gave none)",
            )
            return
        bad = [f"GPU{g['index']}: {u} uncorrected" for g, u, _ in values if isinstance(u, int) and u > 0]
        soft = [f"GPU{g['index']}: {c} corrected" for g, _, c in values if isinstance(c, int) and c > 0]
        if bad:
            self.add(
                "gpu-ecc",
                FAIL,
                "ECC errors since the driver loaded: " + ", ".join(bad + soft),
                "drain the GPU, look at `nvidia-smi -q -d ECC,PAGE_RETIREMENT`, reset it (nvidia-smi -r); "
                "if it comes back, the card needs replacing",
            )
        elif soft:
            self.add(
                "gpu-ecc",
                WARN,
                "corrected ECC errors: " + ", ".join(soft),
                "watch the count; a rising one precedes uncorrected errors",
            )
        else:
            self.add("gpu-ecc", PASS, "no ECC errors")

    def check_gpu_memory(self) -> None:
        if self._no_gpu_data("gpu-memory"):
            return
        lines, full = [], False
        for g in self.gpus:
            total, used = g["memory_total_mib"], g["memory_used_mib"]
            if not isinstance(total, int) or not isinstance(used, int) or total <= 0:
                continue
            share = used / total
            full = full or share >= VRAM_WARN
            lines.append(f"GPU{g['index']} {used / 1024:.1f} of {total / 1024:.1f} GiB in use ({share:.0%})")
        if not lines:
            self.add("gpu-memory", SKIP, "no memory figures")
        elif full:
            self.add(
                "gpu-memory",
                WARN,
                "; ".join(lines) + f": {VRAM_WARN:.0%} or more",
                "expected while vLLM runs (--gpu-memory-utilization 0.90 takes 90%); otherwise nvidia-smi "
                "lists the processes holding it",
            )
        else:
            self.add("gpu-memory", PASS, "; ".join(lines))

    # --- host resources -------------------------------------------------------------------------------------

    def model_dirs(self) -> list[tuple[str, int]]:
        if self.expect.models:
            return self.expect.models
        return [(d, CONTAINER_UID) for d in DEFAULT_MODEL_DIRS if self.host.path(d).is_dir()]

    def check_disk(self) -> None:
        paths = ["/", "/var/lib/docker", *[d for d, _ in self.model_dirs()]]
        seen: dict[int, list[str]] = {}
        usage: dict[int, tuple[float, int, int]] = {}
        for p in paths:
            where = _existing(self.host.path(p))
            try:
                st = os.statvfs(where)
                dev = os.stat(where).st_dev
            except OSError:
                continue
            if dev in seen:
                seen[dev].append(p)
                continue
            seen[dev] = [p]
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            avail = st.f_bavail * st.f_frsize
            usage[dev] = (used / (used + avail) if used + avail else 1.0, avail, used + avail)
        worst = PASS
        parts = []
        for dev, names in seen.items():
            share, avail, size = usage[dev]
            label = names[0] + (f" (also {', '.join(names[1:])})" if len(names) > 1 else "")
            parts.append(f"{label}: {share:.0%} used, {human_size(avail)} free of {human_size(size)}")
            if share >= DISK_FAIL:
                worst = FAIL
            elif share >= DISK_WARN and worst != FAIL:
                worst = WARN
        fix = ""
        if worst != PASS:
            fix = (
                "free space: `docker system prune` (unused images), old models, logs (journalctl "
                "--vacuum-size=500M); images and models need room to unpack"
            )
        need = 2 * self.expect.models_bytes
        models = self.model_dirs()
        if need and models:
            free = shutil_free(_existing(self.host.path(models[0][0])))
            if free is not None and free < need:
                worst = FAIL if worst == FAIL else WARN
                parts.append(
                    f"{models[0][0]}: {human_size(free)} free, less than twice the bundle's models ({human_size(need)})"
                )
                fix = (fix + "; " if fix else "") + "keep free space at least twice the models' size"
        self.add("disk", worst, "; ".join(parts) or "no file system could be read", fix)

    def check_ram_vs_vram(self) -> None:
        meminfo = self.read("/proc/meminfo") or ""
        m = re.search(r"^MemTotal:\s+(\d+)\s*kB", meminfo, re.MULTILINE)
        if not m:
            self.add("ram-vs-vram", SKIP, "/proc/meminfo cannot be read")
            return
        ram = int(m.group(1)) * 1024
        vram = sum(g["memory_total_mib"] for g in self.gpus if isinstance(g["memory_total_mib"], int)) * 2**20
        source = f"{len(self.gpus)} GPU(s)"
        if not vram and self.expect.gpus:
            for entry in self.expect.gpus:
                count, name = compat.parse_gpu_entry(entry)
                gpu = compat.find_gpu(name)
                vram += count * gpu.vram_gib * 2**30 if gpu else 0
            source = "the bundle's target.gpus"
        if not vram:
            self.add("ram-vs-vram", SKIP, f"RAM {human_size(ram)}; the GPUs' memory is unknown")
            return
        ratio = ram / vram
        what = f"RAM {human_size(ram)} for {human_size(vram)} of VRAM ({source}): {ratio:.1f}x"
        fix = "add RAM (or swap): loading a model passes through host memory, the OOM killer strikes otherwise"
        if ratio < 1.0:
            self.add("ram-vs-vram", FAIL, f"{what}, less than the VRAM", fix)
        elif ratio < RAM_PER_VRAM:
            self.add("ram-vs-vram", WARN, f"{what}, under the {RAM_PER_VRAM}x FIELD notes advise", fix)
        else:
            self.add("ram-vs-vram", PASS, what)

    def check_oom(self) -> None:
        text, source = None, ""
        if not self.rooted:
            dmesg = self.which("dmesg")
            if dmesg:
                rc, out = self.run([dmesg], timeout=20)
                if rc == 0:
                    text, source = out, "dmesg"
        if text is None:
            text = self.read("/var/log/kern.log")
            source = "/var/log/kern.log"
        if text is None:
            self.add(
                "oom-killer",
                SKIP,
                "the kernel log cannot be read (dmesg needs root, no /var/log/kern.log)",
                "run it with sudo",
            )
            return
        hits = [line.strip() for line in text.splitlines() if OOM_RE.search(line)]
        if hits:
            self.add(
                "oom-killer",
                WARN,
                f"{len(hits)} OOM-killer line(s) in {source}, the last: {hits[-1][-200:]}",
                "host RAM ran out (vLLM loading a model is the usual victim): add RAM or swap, or load a smaller model",
            )
        else:
            self.add("oom-killer", PASS, f"no OOM-killer lines in {source}")

    def check_models_owner(self) -> None:
        dirs = self.model_dirs()
        if not dirs:
            self.add(
                "models-owner",
                SKIP,
                f"no models directory (looked at {', '.join(DEFAULT_MODEL_DIRS)}; --bundle gives the bundle's)",
            )
            return
        for server_dir, uid in dirs:
            path = self.host.path(server_dir)
            if not path.is_dir():
                self.add(
                    "models-owner", WARN, f"{server_dir} does not exist yet", "airgap install BUNDLE --only models"
                )
                continue
            unreadable, foreign, seen = [], 0, 0
            for entry in _walk(path, limit=5000):
                seen += 1
                try:
                    st = entry.lstat()
                except OSError:
                    continue
                if st.st_uid != uid:
                    foreign += 1
                if not _readable_by(st, uid):
                    unreadable.append(entry)
            top = path.stat()
            owner = _user_name(top.st_uid)
            fix = f"chown -R {uid}:{uid} {server_dir}"
            if unreadable:
                first = "/" + str(unreadable[0].relative_to(self.host.root))
                self.add(
                    "models-owner",
                    FAIL,
                    f"{server_dir}: {len(unreadable)} of {seen} entries cannot be read "
                    f'by uid {uid}, the containers\' user (e.g. {first}): "Permission denied" in vLLM',
                    fix,
                )
            elif foreign:
                self.add(
                    "models-owner",
                    WARN,
                    f"{server_dir}: owned by {owner}, not uid {uid}; readable, but the "
                    "containers cannot write there (caches, locks)",
                    fix,
                )
            else:
                self.add("models-owner", PASS, f"{server_dir}: owned by uid {uid}, the containers' user")

    def check_os_kernel(self) -> None:
        if not (self.expect.os or self.expect.kernel):
            return
        release = {}
        for line in (self.read("/etc/os-release") or "").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                release[key.strip()] = value.strip().strip('"')
        have_os = f"{release.get('ID', '?')}-{release.get('VERSION_ID', '?')}"
        kernel = (self.read("/proc/sys/kernel/osrelease") or os.uname().release).strip()
        problems = []
        if self.expect.os and have_os != self.expect.os:
            problems.append(f"this machine runs {have_os}, the bundle was made for {self.expect.os}")
        if self.expect.kernel and kernel != self.expect.kernel:
            problems.append(
                f"the running kernel is {kernel}, the bundle brings headers for {self.expect.kernel} "
                "(the driver module is built against them)"
            )
        if problems:
            self.add(
                "os-kernel",
                WARN,
                "; ".join(problems),
                "boot the bundle's kernel, or collect again with this machine's target.os and target.kernel",
            )
        else:
            self.add("os-kernel", PASS, f"{have_os}, kernel {kernel}, as the bundle's target")

    def check_bundle_mismatches(self) -> None:
        accepted = self.expect.allowed_mismatches
        if accepted:
            what = "; ".join(f"{a.get('field')}: {a.get('message')}" for a in accepted)
            self.add(
                "bundle-mismatches",
                WARN,
                f"the bundle was collected with --allow-mismatch: {what}",
                "expect the failures those mismatches cause; fix the manifest and collect again if they bite",
            )


# --- helpers --------------------------------------------------------------------------------------------------


def _import_nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def _nvml_gpu(nvml: Any, index: int) -> dict[str, Any]:
    h = nvml.nvmlDeviceGetHandleByIndex(index)
    mem = nvml.nvmlDeviceGetMemoryInfo(h)

    def temperature() -> int:
        return int(nvml.nvmlDeviceGetTemperature(h, 0))  # NVML_TEMPERATURE_GPU

    def ecc(error_type: int) -> Callable[[], int]:
        # error_type: NVML_MEMORY_ERROR_TYPE_CORRECTED 0 / UNCORRECTED 1; counter NVML_VOLATILE_ECC 0
        return lambda: int(nvml.nvmlDeviceGetTotalEccErrors(h, error_type, 0))

    return {
        "index": index,
        "name": _text(nvml.nvmlDeviceGetName(h)),
        "memory_total_mib": int(mem.total) // 2**20,
        "memory_used_mib": int(mem.used) // 2**20,
        "temperature_c": _try(temperature),
        "throttle_reasons": _try(lambda: _clock_reasons(nvml, h)),
        "ecc_uncorrected": _try(ecc(1)),
        "ecc_corrected": _try(ecc(0)),
    }


def _clock_reasons(nvml: Any, handle: Any) -> int:
    fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    return int(fn(handle))


def _connect_unix(path: Path) -> OSError | None:
    """None when something accepts connections on the socket, else the error. A path too long for
    sun_path (deep test trees) is reached through /proc/self/fd/N/name."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2.0)
    dir_fd = None
    try:
        target = str(path)
        if len(target.encode()) > 100:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            target = f"/proc/self/fd/{dir_fd}/{path.name}"
        sock.connect(target)
        return None
    except OSError as exc:
        return exc
    finally:
        sock.close()
        if dir_fd is not None:
            os.close(dir_fd)


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def shutil_free(path: Path) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _walk(root: Path, limit: int) -> list[Path]:
    out: list[Path] = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.append(Path(dirpath, name))
            if len(out) >= limit:
                return out
    return out


def _readable_by(st: os.stat_result, uid: int) -> bool:
    """Whether `uid` (not in the file's group: containers rarely are) can read it (and enter a directory)."""
    need_exec = stat.S_ISDIR(st.st_mode)
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IRUSR) and (not need_exec or bool(st.st_mode & stat.S_IXUSR))
    return bool(st.st_mode & stat.S_IROTH) and (not need_exec or bool(st.st_mode & stat.S_IXOTH))


def _user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER") or str(os.getuid())


def _int(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # NVML raises NotSupported on consumer cards (ECC) and old drivers (event reasons)
        return "n/a"


def run_doctor(host: Host, lock: Lock | None = None, nvml: Any = _AUTO) -> DoctorReport:
    """The readiness report for the machine `host` looks at; `lock` adds a bundle's expectations."""
    return Doctor(host, lock, nvml).run_all()
