"""What `airgap doctor` reads from the server, gathered once, before any check judges it.

`gather()` reads every fact the checks need through the Host and `airgap.probes` (so `--root DIR` points
it at a prepared tree) into typed facts grouped by topic: the GPU and its driver, the CUDA software, the
torch environment, Docker, and the machine's resources. The checks (one module per topic beside this one)
only read these facts, so no check depends on another having run first.

A probe that breaks (a bug, an unreadable file nobody expected) does not stop the report: its topic is
recorded as failed, and only the checks that read that topic say they could not run.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from airgap import probes
from airgap.host import Host
from airgap.lock import Lock
from airgap.probes import DiskUsage, GpuReading, NvmlFailure, NvmlReading, NvmlSession, TorchProbe

# Where people keep models when the bundle does not say (serving compose files commonly mount /models;
# the install preflight plans for /data).
DEFAULT_MODEL_DIRS = ("/data/models", "/models", "/srv/models", "/opt/airgap/models")
CONTAINER_UID = 1000  # vLLM's and most serving images' user (the container runs as uid 1000)
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
MODELS_WALK_LIMIT = 5000  # entries looked at per models directory: enough to find a wrong owner, and quick
TORCH_TIMEOUT_S = 180

T = TypeVar("T")


# --- what the bundle expects ---------------------------------------------------------------------------


@dataclass
class Expectations:
    """What a bundle's lock says the server should have (all empty without --bundle)."""

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
        e.allowed_mismatches = list(lock.allowed_mismatches or [])
        return e


# --- the GPU and its driver ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SmiFacts:
    path: str | None  # None: nvidia-smi is not installed
    returncode: int = 0
    output: str = ""
    driver: str | None = None  # "Driver Version:" in its banner
    cuda_max: str | None = None  # "CUDA Version:": the newest CUDA the driver runs, not a toolkit
    gpus: list[GpuReading] = field(default_factory=list)  # from --query-gpu; empty when that failed


@dataclass(frozen=True)
class GpuFacts:
    pci: list[str]  # NVIDIA display controllers on the PCI bus
    nouveau: bool
    secure_boot: bool | None
    smi: SmiFacts
    nvml: NvmlReading | NvmlFailure | None  # None: not asked (a --root tree, whose driver NVML cannot read)

    @property
    def reading(self) -> NvmlReading | None:
        return self.nvml if isinstance(self.nvml, NvmlReading) else None

    @property
    def driver(self) -> str | None:
        """The running driver: NVML's word, else nvidia-smi's."""
        return self.reading.driver if self.reading else self.smi.driver

    @property
    def driver_cuda(self) -> str | None:
        """The newest CUDA the driver runs ("12.4")."""
        nvml = self.reading.cuda_max if self.reading else None
        return nvml or self.smi.cuda_max

    @property
    def gpus(self) -> list[GpuReading]:
        return self.reading.gpus if self.reading else self.smi.gpus

    @property
    def gpu_source(self) -> str:
        """Where `gpus` came from: "NVML", "nvidia-smi", or "" (neither answered)."""
        if self.reading:
            return "NVML"
        return "nvidia-smi" if self.smi.gpus else ""


def _gather_gpu(host: Host, nvml: NvmlSession | None) -> GpuFacts:
    return GpuFacts(
        pci=probes.pci_gpus(host),
        nouveau=probes.nouveau_loaded(host),
        secure_boot=probes.secure_boot(host),
        smi=_nvidia_smi(host),
        nvml=nvml.read() if nvml is not None else None,
    )


def _nvidia_smi(host: Host) -> SmiFacts:
    smi = probes.find_command(host, "nvidia-smi")
    if smi is None:
        return SmiFacts(None)
    res = host.run([smi], check=False, changes=False, timeout=60)
    if res.returncode != 0:
        return SmiFacts(smi, res.returncode, res.output)
    m = re.search(r"Driver Version:\s*([\d.]+)", res.output)
    c = re.search(r"CUDA Version:\s*([\d.]+)", res.output)
    query = host.run(
        [smi, "--query-gpu=index,name,memory.total,memory.used,temperature.gpu", "--format=csv,noheader,nounits"],
        check=False,
        changes=False,
        timeout=30,
    )
    gpus = []
    if query.returncode == 0:
        for line in query.output.strip().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 5:
                gpus.append(GpuReading(_int(parts[0]), parts[1], _int(parts[2]), _int(parts[3]), _int(parts[4])))
    return SmiFacts(smi, 0, res.output, m.group(1) if m else None, c.group(1) if c else None, gpus)


# --- CUDA software ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NvccFacts:
    path: str
    returncode: int
    output: str
    release: str | None  # "12.4"; None when `nvcc --version` said nothing readable
    build: str | None  # "12.4.131"


@dataclass(frozen=True)
class CudaFacts:
    nvcc: NvccFacts | None  # the nvcc on PATH; None when there is none
    toolkits: list[str]  # bin directories of toolkits under /usr/local ("/usr/local/cuda-12.4/bin"), sorted
    cudnn: tuple[str, str] | None  # (header, version) of the first cuDNN version header found

    @property
    def toolkit(self) -> str | None:
        """The release of the nvcc on PATH ("12.4"), when it runs and says."""
        return self.nvcc.release if self.nvcc and self.nvcc.returncode == 0 else None


def _gather_cuda(host: Host) -> CudaFacts:
    nvcc = None
    path = probes.find_command(host, "nvcc")
    if path is not None:
        res = host.run([path, "--version"], check=False, changes=False, timeout=30)
        m = re.search(r"release\s+(\d+\.\d+)(?:,\s*V([\d.]+))?", res.output)
        nvcc = NvccFacts(path, res.returncode, res.output, m.group(1) if m else None, m.group(2) if m else None)
    installed = sorted(p for p in host.path("/usr/local").glob("cuda*/bin/nvcc") if p.is_file())
    toolkits = ["/" + str(p.parent.relative_to(host.root)) for p in installed]
    return CudaFacts(nvcc, toolkits, _cudnn(host))


def _cudnn(host: Host) -> tuple[str, str] | None:
    for header in CUDNN_HEADERS:
        text = host.read_text(header)
        if text is None:
            continue
        parts = [re.search(rf"#define\s+CUDNN_{k}\s+(\d+)", text) for k in ("MAJOR", "MINOR", "PATCHLEVEL")]
        version = ".".join(p.group(1) for p in parts if p)
        if version:
            return header, version
    return None


@dataclass(frozen=True)
class TorchFacts:
    venv: str  # where the bundle's wheels go (or the default)
    probe: TorchProbe | None  # None: no interpreter there


# --- Docker ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DaemonConfig:
    """/etc/docker/daemon.json: `data` when it is a JSON object, else `problem` ("missing", "invalid: ...")."""

    data: dict[str, Any] | None
    problem: str = ""
    mtime: float | None = None
    runtime: dict[str, Any] | None = None  # runtimes.nvidia
    runtime_binary: str = ""  # what runtimes.nvidia runs
    runtime_installed: bool = False


@dataclass(frozen=True)
class DockerFacts:
    socket: str | None  # the first of DOCKER_SOCKETS that exists
    socket_is_socket: bool
    socket_error: OSError | None  # connecting to it; None: something answered
    dockerd_pids: list[int]
    dockerd_started: float | None  # the first dockerd's start, seconds since the epoch
    config: DaemonConfig
    cdi_spec: bool
    docker: str | None  # the docker command
    compose: tuple[int, str] | None  # `docker compose version`: exit code and output
    legacy_compose: str | None  # a docker-compose (v1) command
    user: str  # who will run containers: SUDO_USER, else who runs the doctor
    docker_group: list[str] | None  # the docker line of /etc/group, split at ":"
    primary_group: str | None  # the user's primary gid from /etc/passwd


def _gather_docker(host: Host) -> DockerFacts:
    sockets = [s for s in DOCKER_SOCKETS if host.path(s).exists()]
    sock = sockets[0] if sockets else None
    is_socket, error = False, None
    if sock is not None:
        is_socket = stat.S_ISSOCK(host.path(sock).stat().st_mode)
        error = _connect_unix(host.path(sock)) if is_socket else None
    pids = _dockerd_pids(host)
    docker = probes.find_command(host, "docker")
    compose = None
    if docker is not None:
        res = host.run([docker, "compose", "version"], check=False, changes=False, timeout=30)
        compose = (res.returncode, res.output)
    user = host.base_env.get("SUDO_USER") or _current_user()
    groups = host.read_text("/etc/group") or ""
    group = next((line.split(":") for line in groups.splitlines() if line.startswith("docker:")), None)
    primary = None
    for line in (host.read_text("/etc/passwd") or "").splitlines():
        parts = line.split(":")
        if len(parts) > 3 and parts[0] == user:
            primary = parts[3]
    return DockerFacts(
        socket=sock,
        socket_is_socket=is_socket,
        socket_error=error,
        dockerd_pids=pids,
        dockerd_started=_process_start(host, pids[0]) if pids else None,
        config=_daemon_config(host),
        cdi_spec=host.path(CDI_SPEC).exists(),
        docker=docker,
        compose=compose,
        legacy_compose=probes.find_command(host, "docker-compose"),
        user=user,
        docker_group=group,
        primary_group=primary,
    )


def _daemon_config(host: Host) -> DaemonConfig:
    path = host.path(DAEMON_JSON)
    mtime = path.stat().st_mtime if path.exists() else None
    text = host.read_text(DAEMON_JSON)
    if text is None:
        return DaemonConfig(None, "missing", mtime)
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        return DaemonConfig(None, f"invalid: {exc}", mtime)
    if not isinstance(data, dict):
        return DaemonConfig(None, "invalid: not a JSON object", mtime)
    runtimes = data.get("runtimes")
    runtime = runtimes.get("nvidia") if isinstance(runtimes, dict) else None
    if not isinstance(runtime, dict):
        return DaemonConfig(data, "", mtime)
    binary = str(runtime.get("path") or "nvidia-container-runtime")
    installed = host.path(binary).is_file() if binary.startswith("/") else probes.find_command(host, binary) is not None
    return DaemonConfig(data, "", mtime, runtime, binary, installed)


def _dockerd_pids(host: Host) -> list[int]:
    pids = []
    with contextlib.suppress(OSError):
        for entry in host.path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "dockerd":
                    pids.append(int(entry.name))
    return sorted(pids)


def _process_start(host: Host, pid: int) -> float | None:
    """Seconds since the epoch: /proc/PID/stat's starttime (field 22, clock ticks after boot) plus
    /proc/stat's btime."""
    stat_text = host.read_text(f"/proc/{pid}/stat")
    boot = host.read_text("/proc/stat")
    if not stat_text or not boot:
        return None
    m = re.search(r"^btime\s+(\d+)", boot, re.MULTILINE)
    fields = stat_text.rsplit(")", 1)[-1].split()  # the command name may hold spaces and parentheses
    if not m or len(fields) < 20 or not fields[19].isdigit():
        return None
    ticks = int(fields[19])  # field 22 overall; the list starts at field 3 (state)
    return int(m.group(1)) + ticks / os.sysconf("SC_CLK_TCK")


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


# --- the machine's resources ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelDir:
    """One models directory and whether the containers' uid can use what is in it."""

    path: str  # on the server
    uid: int  # the uid that must read it
    exists: bool
    seen: int = 0  # entries looked at (at most MODELS_WALK_LIMIT)
    foreign: int = 0  # entries owned by another uid
    unreadable: int = 0  # entries `uid` cannot read (or enter)
    first_unreadable: str = ""  # one of them, as a server path
    owner: str = ""  # the directory's owner, "root (uid 0)"


@dataclass(frozen=True)
class Disk:
    paths: list[str]  # the server paths on this file system, in the order they were asked about
    usage: DiskUsage


@dataclass(frozen=True)
class SystemFacts:
    disks: list[Disk]  # /, /var/lib/docker and the models directories, one entry per file system
    models_free: int | None  # free bytes where the first models directory is
    ram: int | None
    kernel_log: tuple[str, str] | None  # (text, where it came from); None when none can be read
    model_dirs: list[ModelDir]  # the bundle's, else the usual places that exist
    os_name: str  # "ubuntu-22.04"
    kernel: str


def _gather_system(host: Host, expect: Expectations) -> SystemFacts:
    wanted = expect.models or [(d, CONTAINER_UID) for d in DEFAULT_MODEL_DIRS if host.path(d).is_dir()]
    disks: dict[int, Disk] = {}
    for p in ["/", "/var/lib/docker", *[d for d, _ in wanted]]:
        usage = probes.disk_usage(host.path(p))
        if usage is None:
            continue
        if usage.device in disks:
            disks[usage.device].paths.append(p)
        else:
            disks[usage.device] = Disk([p], usage)
    models_usage = probes.disk_usage(host.path(wanted[0][0])) if wanted else None
    return SystemFacts(
        disks=list(disks.values()),
        models_free=models_usage.free if models_usage else None,
        ram=probes.total_ram(host),
        kernel_log=_kernel_log(host),
        model_dirs=[_model_dir(host, d, uid) for d, uid in wanted],
        os_name=probes.os_name(host),
        kernel=probes.running_kernel(host),
    )


def _kernel_log(host: Host) -> tuple[str, str] | None:
    if not probes.is_rooted(host):
        dmesg = probes.find_command(host, "dmesg")
        if dmesg:
            res = host.run([dmesg], check=False, changes=False, timeout=20)
            if res.returncode == 0:
                return res.output, "dmesg"
    text = host.read_text("/var/log/kern.log")
    return (text, "/var/log/kern.log") if text is not None else None


def _model_dir(host: Host, server_dir: str, uid: int) -> ModelDir:
    path = host.path(server_dir)
    if not path.is_dir():
        return ModelDir(server_dir, uid, exists=False)
    seen = foreign = 0
    unreadable: list[Path] = []
    for entry in _walk(path, MODELS_WALK_LIMIT):
        seen += 1
        try:
            st = entry.lstat()
        except OSError:
            continue
        if st.st_uid != uid:
            foreign += 1
        if not _readable_by(st, uid):
            unreadable.append(entry)
    first = "/" + str(unreadable[0].relative_to(host.root)) if unreadable else ""
    owner = _user_name(path.stat().st_uid)
    return ModelDir(server_dir, uid, True, seen, foreign, len(unreadable), first, owner)


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


# --- all of it --------------------------------------------------------------------------------------------


class ProbeFailed(Exception):
    """A topic's probe broke while gathering: the checks that read that topic cannot run."""


class Probed(Generic[T]):
    """A topic's facts, or why its probe broke."""

    def __init__(self, gather: Callable[[], T], topic: str) -> None:
        self._value: T | None = None
        self._error: str | None = None
        try:
            self._value = gather()
        except Exception as exc:  # one broken probe must not hide the rest of the report
            self._error = f"reading {topic} failed: {type(exc).__name__}: {exc}"

    def get(self) -> T:
        if self._error is not None:
            raise ProbeFailed(self._error)
        return cast(T, self._value)

    @property
    def ok(self) -> bool:
        return self._error is None


class ServerFacts:
    """Everything the doctor's checks read, gathered by `gather()`. Reading a topic whose probe broke
    raises ProbeFailed, which the runner reports as that check not being able to run."""

    def __init__(self, host: Host, lock: Lock | None, nvml: NvmlSession | None) -> None:
        self.rooted = probes.is_rooted(host)
        self.expect = Expectations.from_lock(lock) if lock is not None else Expectations()
        venv = self.expect.venv or probes.DEFAULT_VENV
        self._gpu = Probed(lambda: _gather_gpu(host, nvml), "the GPU")
        self._cuda = Probed(lambda: _gather_cuda(host), "the CUDA toolkit")
        self._torch = Probed(lambda: TorchFacts(venv, probes.probe_torch(host, venv, timeout=TORCH_TIMEOUT_S)), "torch")
        self._docker = Probed(lambda: _gather_docker(host), "Docker")
        self._system = Probed(lambda: _gather_system(host, self.expect), "the system")
        self.sudo_user = host.base_env.get("SUDO_USER")

    @property
    def gpu(self) -> GpuFacts:
        return self._gpu.get()

    @property
    def cuda(self) -> CudaFacts:
        return self._cuda.get()

    @property
    def torch(self) -> TorchFacts:
        return self._torch.get()

    @property
    def docker(self) -> DockerFacts:
        return self._docker.get()

    @property
    def system(self) -> SystemFacts:
        return self._system.get()

    def summary(self) -> dict[str, Any]:
        """The facts `doctor --json` reports beside its checks."""
        gpu = self._gpu.get() if self._gpu.ok else None
        cuda = self._cuda.get() if self._cuda.ok else None
        return {
            "driver": gpu.driver if gpu else None,
            "driver_cuda_max": gpu.driver_cuda if gpu else None,
            "toolkit": cuda.toolkit if cuda else None,
            "gpus": [_gpu_dict(g) for g in gpu.gpus] if gpu else [],
            "gpu_source": gpu.gpu_source if gpu else "",
        }


def _gpu_dict(g: GpuReading) -> dict[str, Any]:
    return {
        "index": g.index,
        "name": g.name,
        "memory_total_mib": g.memory_total_mib,
        "memory_used_mib": g.memory_used_mib,
        "temperature_c": g.temperature_c,
        "throttle_reasons": g.throttle_reasons,
        "ecc_uncorrected": g.ecc_uncorrected,
        "ecc_corrected": g.ecc_corrected,
    }


def gather(host: Host, lock: Lock | None = None, nvml: NvmlSession | None = None) -> ServerFacts:
    """Read the server `host` looks at. `nvml` is an open session, or None where NVML is not asked."""
    return ServerFacts(host, lock, nvml)
