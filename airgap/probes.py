"""Facts about the server, read the one way preflight, the smoke test and `airgap doctor` all share.

Everything is read through a `Host`, so `--root DIR` (and the tests) point the probes at a prepared tree:
sysfs for PCI GPUs, /proc for modules, RAM and the kernel, /etc/os-release, EFI variables for Secure
Boot, commands under the tree's usr/bin. Two facts cannot come from a tree: NVML talks to the running
kernel's driver, so an `NvmlSession` is opened by the command that needs it (tests hand it a stand-in
library where no GPU exists), and the torch probe runs the server's own interpreter. Probes report what
they found, including "unknown"; judging it (pass, warn, fail, and the fix) is the checks' job.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from airgap.host import SYSTEM_PATH, Host
from airgap.manifest import DEFAULT_VENV as DEFAULT_VENV  # smoke and doctor read it from here
from airgap.safepaths import normalise
from airgap.target import find_arch


def is_rooted(host: Host) -> bool:
    """Whether the host looks at a tree (`--root`) rather than the running machine."""
    return host.root != Path("/")


def find_command(host: Host, name: str, extra_dirs: tuple[str, ...] = ()) -> str | None:
    """On the running machine: PATH (what a user's shell finds). Under --root: only the tree's own
    system directories, so the machine running airgap never answers for the tree."""
    if not is_rooted(host):
        return host.which(name)
    for d in (*SYSTEM_PATH, *extra_dirs):
        candidate = host.path(d) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


# --- hardware and kernel -------------------------------------------------------------------------------


def pci_gpus(host: Host) -> list[str]:
    """PCI addresses of NVIDIA display controllers (vendor 0x10de, class 0x03xxxx), from sysfs: the GPUs
    there are, driver or not."""
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


def nouveau_loaded(host: Host) -> bool:
    modules = host.read_text("/proc/modules", "") or ""
    return any(line.split(" ", 1)[0] == "nouveau" for line in modules.splitlines())


def secure_boot(host: Host) -> bool | None:
    """Whether Secure Boot is on (an unsigned nvidia module will not load); None when unknown. The EFI
    variable first (no command, and a tree can carry it), then `mokutil --sb-state`."""
    with contextlib.suppress(OSError):
        for entry in host.path("/sys/firmware/efi/efivars").glob("SecureBoot-*"):
            data = entry.read_bytes()  # 4 bytes of attributes, then the value
            return bool(data) and data[-1] == 1
    mokutil = find_command(host, "mokutil")
    if mokutil is None:
        return None
    return "enabled" in host.run([mokutil, "--sb-state"], check=False, changes=False).output.lower()


def running_kernel(host: Host) -> str:
    return (host.read_text("/proc/sys/kernel/osrelease") or platform.release()).strip()


def kernel_headers_installed(host: Host, kernel: str) -> bool:
    """What DKMS and NVIDIA's installer build the module against."""
    return host.path(f"/lib/modules/{kernel}/build").exists()


def total_ram(host: Host) -> int | None:
    """Bytes of RAM (MemTotal), or None when /proc/meminfo cannot be read."""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", host.read_text("/proc/meminfo", "") or "", re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def machine_arch() -> str:
    """This machine's architecture as a manifest's target.arch spells it ("amd64", "arm64")."""
    arch = find_arch(platform.machine())
    return arch.debian if arch is not None else platform.machine()


# os-release(5): /etc/os-release, else /usr/lib/os-release (where /etc's is usually a link to).
OS_RELEASE_FILES = ("/etc/os-release", "/usr/lib/os-release")


def os_release(host: Host) -> dict[str, str]:
    """The server's os-release fields ({} when it has none): under --root the tree's, never this machine's."""
    for server_path in OS_RELEASE_FILES:
        text = read_in_root(host, server_path)
        if text is not None:
            return parse_os_release(text)
    return {}


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines as os-release(5) writes them: values bare, or in double or single quotes with shell
    escapes; comments and blank lines skipped."""
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        try:
            words = shlex.split(value)
        except ValueError:  # an unbalanced quote: take the text as it stands
            words = [value.strip().strip("\"'")]
        out[key.strip()] = " ".join(words)
    return out


def read_in_root(host: Host, server_path: str, max_links: int = 16) -> str | None:
    """A server file's text, its links followed inside the root: in a --root tree an absolute link
    (/etc/os-release -> /usr/lib/os-release) names the tree's file, where the kernel would resolve it
    against this machine's /. None when it is missing or unreadable."""
    path = normalise(server_path)
    for _ in range(max_links):
        local = host.path(path)
        if not local.is_symlink():
            try:
                return local.read_text(errors="replace")
            except OSError:
                return None
        try:
            target = os.readlink(local)
        except OSError:
            return None
        path = normalise(target if target.startswith("/") else posixpath.join(posixpath.dirname(path), target))
    return None  # a loop of links


def os_name(host: Host) -> str:
    """The release as a manifest's target.os spells it: "ubuntu-22.04" ("?" for what is not known)."""
    release = os_release(host)
    return f"{release.get('ID', '?').lower()}-{release.get('VERSION_ID', '?')}"


# --- disks ---------------------------------------------------------------------------------------------


def existing_ancestor(path: Path) -> Path:
    """The nearest directory that exists: where a path not made yet will take its space from."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@dataclass(frozen=True)
class DiskUsage:
    device: int  # st_dev: paths on one file system share it
    used: int
    free: int  # available to an unprivileged user (f_bavail)

    @property
    def size(self) -> int:
        return self.used + self.free

    @property
    def share_used(self) -> float:
        return self.used / self.size if self.size else 1.0


def disk_usage(path: Path) -> DiskUsage | None:
    """The file system that holds `path` (or would hold it), or None when it cannot be read."""
    where = existing_ancestor(path)
    try:
        st = os.statvfs(where)
        device = os.stat(where).st_dev
    except OSError:
        return None
    return DiskUsage(device, (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_bavail * st.f_frsize)


# --- NVML ----------------------------------------------------------------------------------------------

# What NVML said when asked for a value a card does not have (ECC on GeForce, power on some boards).
NotSupported = Literal["n/a"]
NA: NotSupported = "n/a"
# The usual alert threshold for a GPU's temperature (at 80 C and above it throttles): smoke and doctor warn.
TEMP_ALERT_C = 78
# Host RAM >= total VRAM, better 1.5-2x (loading a model passes through host RAM); preflight and
# doctor ask 1.5x.
RAM_PER_VRAM = 1.5
# NVML enum values (nvml.h), so a stand-in library need not define them.
_TEMPERATURE_GPU = 0
_ECC_CORRECTED, _ECC_UNCORRECTED = 0, 1
_VOLATILE_ECC = 0
T = TypeVar("T")


@dataclass(frozen=True)
class GpuReading:
    """One GPU as NVML (or nvidia-smi) reports it. None: the source does not report it; "n/a": the card
    does not (NVML said NotSupported)."""

    index: int | None
    name: str
    memory_total_mib: int | None
    memory_used_mib: int | None
    temperature_c: int | NotSupported | None = None
    power_w: float | NotSupported | None = None
    throttle_reasons: int | NotSupported | None = None
    ecc_uncorrected: int | NotSupported | None = None
    ecc_corrected: int | NotSupported | None = None


@dataclass(frozen=True)
class NvmlReading:
    driver: str
    cuda_max: str | None  # the newest CUDA the driver runs, "12.4" (nvidia-smi's "CUDA Version")
    gpus: list[GpuReading] = field(default_factory=list)


NvmlFailureKind = Literal["no-package", "no-library", "no-driver", "broken"]


@dataclass(frozen=True)
class NvmlFailure:
    """Why NVML gave no reading: nvidia-ml-py missing, no libnvidia-ml.so.1 (no driver installed), the
    library there but no kernel module answering, or NVML failing some other way."""

    kind: NvmlFailureKind
    detail: str = ""


def pynvml_library() -> Any | None:
    """The pynvml module (nvidia-ml-py), or None when it is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


class NvmlSession:
    """One NVML client for one command: `nvmlInit` on entering, `nvmlShutdown` on leaving.

    `library` is the pynvml module (`pynvml_library()`), or a stand-in with its names where no GPU exists
    (tests); None when nvidia-ml-py is not installed. The caller creates and closes it (`with`) and hands
    it to the probes that need it, so NVML is started once per command, not once per check.
    """

    def __init__(self, library: Any | None) -> None:
        self._lib: Any = library  # pynvml has no type hints; None only until start() says no-package
        self._started = False
        self.failure: NvmlFailure | None = None

    def __enter__(self) -> NvmlSession:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        lib = self._lib
        if lib is None:
            self.failure = NvmlFailure("no-package")
            return
        not_found = getattr(lib, "NVMLError_LibraryNotFound", None)
        nvml_error = getattr(lib, "NVMLError", None)
        try:
            lib.nvmlInit()
        except Exception as exc:  # a driver problem, or a library failing in a way NVML does not name
            if not_found is not None and isinstance(exc, not_found):
                self.failure = NvmlFailure("no-library", str(exc))
            elif nvml_error is not None and isinstance(exc, nvml_error):
                self.failure = NvmlFailure("no-driver", str(exc))
            else:
                self.failure = NvmlFailure("broken", f"{type(exc).__name__}: {exc}")
            return
        self._started = True

    def close(self) -> None:
        if self._started:
            self._started = False
            with contextlib.suppress(Exception):  # nothing left to report about a library going away
                self._lib.nvmlShutdown()

    def read(self) -> NvmlReading | NvmlFailure:
        """The driver, the newest CUDA it runs, and every GPU's health; or why there is none."""
        if self.failure is not None:
            return self.failure
        if not self._started:
            raise RuntimeError("NvmlSession.read() outside its `with` block")
        lib = self._lib
        try:
            driver = _text(lib.nvmlSystemGetDriverVersion())
            cuda_max = None
            with contextlib.suppress(Exception):  # older drivers lack the call
                v = int(lib.nvmlSystemGetCudaDriverVersion_v2())
                cuda_max = f"{v // 1000}.{(v % 1000) // 10}"
            gpus = [_read_gpu(lib, i) for i in range(int(lib.nvmlDeviceGetCount()))]
        except Exception as exc:  # NVML can fail per call (a GPU fallen off the bus): report, do not crash
            return NvmlFailure("broken", f"{type(exc).__name__}: {exc}")
        return NvmlReading(driver, cuda_max, gpus)


def _read_gpu(lib: Any, index: int) -> GpuReading:
    h = lib.nvmlDeviceGetHandleByIndex(index)
    mem = lib.nvmlDeviceGetMemoryInfo(h)

    def clock_reasons() -> int:
        # Renamed in newer NVML ("clock event reasons"); the old name still answers on older drivers.
        fn = getattr(lib, "nvmlDeviceGetCurrentClocksEventReasons", None)
        return int((fn or lib.nvmlDeviceGetCurrentClocksThrottleReasons)(h))

    return GpuReading(
        index=index,
        name=_text(lib.nvmlDeviceGetName(h)),
        memory_total_mib=int(mem.total) // 2**20,
        memory_used_mib=int(mem.used) // 2**20,
        temperature_c=_supported(lambda: int(lib.nvmlDeviceGetTemperature(h, _TEMPERATURE_GPU))),
        power_w=_supported(lambda: lib.nvmlDeviceGetPowerUsage(h) / 1000),
        throttle_reasons=_supported(clock_reasons),
        ecc_uncorrected=_supported(lambda: int(lib.nvmlDeviceGetTotalEccErrors(h, _ECC_UNCORRECTED, _VOLATILE_ECC))),
        ecc_corrected=_supported(lambda: int(lib.nvmlDeviceGetTotalEccErrors(h, _ECC_CORRECTED, _VOLATILE_ECC))),
    )


def _supported(read: Callable[[], T]) -> T | NotSupported:
    try:
        return read()
    except Exception:  # NVML raises NotSupported on consumer cards (ECC, power) and old drivers (reasons)
        return NA


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- torch ---------------------------------------------------------------------------------------------

# Run by the server's own interpreter: which torch, built for which CUDA, whether it sees a GPU, and with
# --matmul a small product on it. One JSON line; an import error is a finding, not a crash.
TORCH_PROBE = """
import json, sys
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
if info.get("available") and "--matmul" in sys.argv:
    a = torch.randn(256, 256, device="cuda")
    info["matmul"] = float((a @ a).sum().item()) == float((a @ a).sum().item())
    info["device"] = torch.cuda.get_device_name(0)
print(json.dumps(info))
"""


@dataclass(frozen=True)
class TorchProbe:
    """What the probe found in one environment. `answered` is False when it printed no JSON (the
    interpreter is broken, or torch crashed the GPU step): then `returncode` and `output` say why."""

    venv: str
    returncode: int
    output: str
    answered: bool
    import_error: str | None = None  # torch is not importable
    version: str = ""
    cuda: str | None = None  # torch.version.cuda: None for a CPU-only build
    available: bool | None = None  # torch.cuda.is_available(); None when asking it raised
    available_error: str | None = None
    device: str | None = None  # the GPU the --matmul step ran on


def probe_torch(host: Host, venv: str, *, matmul: bool = False, timeout: float = 180) -> TorchProbe | None:
    """Run the torch probe with `venv`'s interpreter; None when there is no interpreter there."""
    python = host.path(f"{venv}/bin/python")
    if not python.exists():
        return None
    argv = [str(python), "-c", TORCH_PROBE, *(["--matmul"] if matmul else [])]
    res = host.run(argv, check=False, changes=False, timeout=timeout)
    try:
        info = json.loads(res.output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        info = None
    if not isinstance(info, dict):
        return TorchProbe(venv, res.returncode, res.output, answered=False)
    if "error" in info:
        return TorchProbe(venv, res.returncode, res.output, answered=True, import_error=str(info["error"]))
    cuda = info.get("cuda")
    return TorchProbe(
        venv,
        res.returncode,
        res.output,
        answered=True,
        version=str(info.get("version")),
        cuda=str(cuda) if cuda else None,
        available=info.get("available") if isinstance(info.get("available"), bool) else None,
        available_error=info.get("available_error"),
        device=info.get("device"),
    )
