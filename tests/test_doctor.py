"""`airgap doctor` against prepared roots (sysfs, /proc, /etc, commands under usr/bin, a venv) and this
machine (no GPU here: clear failures, exit 1, never a traceback).

A root is built as a ready server first; each test then breaks one thing and checks that exactly that
check turns, with its fix.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airgap.bundle import finalize
from airgap.doctor import DoctorReport, run_doctor
from airgap.host import Host
from airgap.lock import Lock, LockedArtifact
from airgap.probes import NvmlSession
from airgap.units import now_utc
from airgap.verdict import Status
from tests.conftest import run_airgap

CLK_TCK = os.sysconf("SC_CLK_TCK")
IS_ROOT = os.geteuid() == 0

NVIDIA_SMI = """#!/bin/sh
case "$1" in
  --query-gpu=*) echo "0, NVIDIA GeForce RTX 4090, 24564, {used}, {temp}"; exit 0 ;;
esac
cat <<'OUT'
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.90.07              Driver Version: {driver}      CUDA Version: {cuda}     |
|   0  NVIDIA GeForce RTX 4090        Off |   00000000:01:00.0 Off |                  Off |
+-----------------------------------------------------------------------------------------+
OUT
"""
NVIDIA_SMI_BROKEN = """#!/bin/sh
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
exit 9
"""
NVCC = """#!/bin/sh
echo "nvcc: NVIDIA (R) Cuda compiler driver"
echo "Cuda compilation tools, release {release}, V{release}.131"
"""
DOCKER = """#!/bin/sh
if [ "$1" = compose ] && [ "$2" = version ]; then echo "Docker Compose version v2.27.0"; exit 0; fi
echo "docker: '$1' is not a docker command." >&2
exit 1
"""
DAEMON_JSON = {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}
CUDNN_H = "#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 1\n#define CUDNN_PATCHLEVEL 0\n"


def script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def put(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@dataclass
class Server:
    """A prepared root that passes every check, and the listening Docker socket that goes with it."""

    root: Path
    sock: socket.socket
    env: dict[str, str]

    def host(self) -> Host:
        return Host(root=self.root, env=self.env)

    def doctor(self, lock: Lock | None = None, nvml: Any = None) -> DoctorReport:
        """The report on this root; `nvml`, a stand-in NVML library, is opened as the CLI opens pynvml."""
        if nvml is None:
            return run_doctor(self.host(), lock)
        with NvmlSession(nvml) as session:
            return run_doctor(self.host(), lock, nvml=session)

    def daemon_json(self, data: Any, age_s: float = 950) -> None:
        p = self.root / "etc/docker/daemon.json"
        put(p, data if isinstance(data, str) else json.dumps(data))
        when = time.time() - age_s
        os.utime(p, (when, when))

    def torch(self, version: str, cuda: str | None) -> None:
        site = next((self.root / "opt/airgap/venv/lib").glob("python3*/site-packages"))
        pkg = site / "torch"
        put(pkg / "__init__.py", f"__version__ = {version!r}\nfrom . import cuda, version\n")
        put(pkg / "version.py", f"cuda = {cuda!r}\n")
        put(pkg / "cuda/__init__.py", f"def is_available():\n    return {cuda is not None}\n")


def status(report: DoctorReport, name: str) -> tuple[str, str, str]:
    (check,) = [c for c in report.checks if c.name == name]
    return check.status, check.message, check.fix


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    root = tmp_path / "root"
    dev = root / "sys/bus/pci/devices/0000:01:00.0"
    put(dev / "vendor", "0x10de\n")
    put(dev / "class", "0x030000\n")
    other = root / "sys/bus/pci/devices/0000:00:1f.0"  # an Intel bridge: not a GPU
    put(other / "vendor", "0x8086\n")
    put(other / "class", "0x060100\n")
    put(root / "proc/modules", "nvidia_uvm 1 0 - Live 0x0\nnvidia 2 0 - Live 0x0\n")
    put(root / "proc/meminfo", "MemTotal:       67108864 kB\nMemFree:        60000000 kB\n")
    boot = int(time.time()) - 1000
    put(root / "proc/stat", f"cpu  1 2 3 4\nbtime {boot}\n")
    put(root / "proc/4242/comm", "dockerd\n")
    fields = ["S"] + ["0"] * 18 + [str(100 * CLK_TCK)] + ["0"] * 10  # starttime: 100 s after boot
    put(root / "proc/4242/stat", "4242 (dockerd) " + " ".join(fields) + "\n")
    put(root / "etc/group", "root:x:0:\ndocker:x:999:alice\n")
    put(root / "etc/passwd", "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")
    put(root / "etc/os-release", 'ID=ubuntu\nVERSION_ID="22.04"\n')
    put(root / "proc/sys/kernel/osrelease", "5.15.0-122-generic\n")
    put(root / "usr/include/cudnn_version.h", CUDNN_H)
    put(root / "var/log/kern.log", "kernel: nvidia: loading out-of-tree module taints kernel.\n")
    script(root / "usr/bin/nvidia-smi", NVIDIA_SMI.format(used=1200, temp=45, driver="550.90.07", cuda="12.4"))
    script(root / "usr/bin/nvcc", NVCC.format(release="12.4"))
    script(root / "usr/bin/docker", DOCKER)
    script(root / "usr/bin/nvidia-container-runtime", "#!/bin/sh\nexit 0\n")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "opt/airgap/venv")], check=True)
    models = root / "data/models/llama"
    put(models / "model.safetensors", "weights")
    if IS_ROOT:
        for p in (root / "data/models", models, models / "model.safetensors"):
            os.chown(p, 1000, 1000)
    # The socket path under a pytest tmp dir can exceed sun_path's 108 bytes: bind it by a relative name.
    run_dir = root / "var/run"
    run_dir.mkdir(parents=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    monkeypatch.chdir(run_dir)
    sock.bind("docker.sock")
    sock.listen(8)
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, SUDO_USER="alice", PATH="/usr/bin:/bin")
    srv = Server(root, sock, env)
    srv.daemon_json(DAEMON_JSON)
    srv.torch("2.5.1+cu124", "12.4")
    try:
        yield srv
    finally:
        sock.close()


READY = (
    "gpu-pci",
    "nouveau",
    "nvidia-smi",
    "driver-toolkit",
    "cudnn",
    "pytorch",
    "docker-daemon",
    "nvidia-runtime",
    "dockerd-restarted",
    "compose",
    "docker-group",
    "gpu-temperature",
    "gpu-memory",
    "disk",
    "ram-vs-vram",
    "oom-killer",
)


def test_a_ready_server_passes(server: Server) -> None:
    report = server.doctor()
    assert report.ok, [(c.name, c.status, c.message) for c in report.checks if c.status != Status.PASS]
    for name in READY:
        assert status(report, name)[0] == Status.PASS, status(report, name)
    assert status(report, "nvml")[0] == Status.SKIP  # NVML reads the running kernel, not a tree
    assert 'CUDA Version: 12.4" (the newest CUDA this driver runs, not the toolkit)' in status(report, "nvidia-smi")[1]
    assert status(report, "models-owner")[0] == (Status.PASS if IS_ROOT else Status.WARN)
    assert report.facts["driver"] == "550.90.07" and report.facts["gpu_source"] == "nvidia-smi"


def test_no_gpu_on_the_pci_bus(server: Server) -> None:
    put(server.root / "sys/bus/pci/devices/0000:01:00.0/vendor", "0x1002\n")  # AMD
    st, msg, fix = status(server.doctor(), "gpu-pci")
    assert st == Status.FAIL and "vendor 0x10de" in msg and "lspci" in fix


def test_nvidia_smi_failing_names_the_likely_causes(server: Server) -> None:
    script(server.root / "usr/bin/nvidia-smi", NVIDIA_SMI_BROKEN)
    put(server.root / "proc/modules", "nouveau 1 0 - Live 0x0\n")
    report = server.doctor()
    st, msg, fix = status(report, "nvidia-smi")
    assert st == Status.FAIL and "exit 9" in msg and "nouveau is loaded" in msg and "mokutil" in fix
    assert status(report, "nouveau")[0] == Status.FAIL
    assert status(report, "gpu-temperature")[0] == Status.SKIP


def test_daemon_json_without_the_nvidia_runtime(server: Server) -> None:
    server.daemon_json({"log-driver": "json-file"})
    st, msg, fix = status(server.doctor(), "nvidia-runtime")
    assert st == Status.FAIL and "no nvidia runtime" in msg and "nvidia-ctk runtime configure --runtime=docker" in fix


def test_daemon_json_missing_or_broken(server: Server) -> None:
    (server.root / "etc/docker/daemon.json").unlink()
    report = server.doctor()
    assert status(report, "nvidia-runtime")[0] == Status.FAIL
    assert status(report, "dockerd-restarted")[0] == Status.SKIP
    server.daemon_json('{"runtimes": {')
    st, msg, fix = status(server.doctor(), "nvidia-runtime")
    assert st == Status.FAIL and "invalid" in msg and "json.tool" in fix


def test_runtime_named_but_not_installed(server: Server) -> None:
    (server.root / "usr/bin/nvidia-container-runtime").unlink()
    st, msg, fix = status(server.doctor(), "nvidia-runtime")
    assert st == Status.FAIL and "not installed" in msg and "container_toolkit" in fix


def test_dockerd_not_restarted_after_daemon_json(server: Server) -> None:
    server.daemon_json(DAEMON_JSON, age_s=60)  # written long after dockerd started (900 s ago)
    st, msg, fix = status(server.doctor(), "dockerd-restarted")
    assert (
        st == Status.FAIL
        and "before /etc/docker/daemon.json was last written" in msg
        and fix == "systemctl restart docker"
    )


def test_docker_not_running(server: Server) -> None:
    server.sock.close()
    report = server.doctor()
    st, msg, _ = status(report, "docker-daemon")
    assert st == Status.FAIL and "nothing answers" in msg  # the socket file stays: a stale socket
    (server.root / "var/run/docker.sock").unlink()
    (server.root / "proc/4242/comm").write_text("bash\n")
    st, msg, fix = status(server.doctor(), "docker-daemon")
    assert st == Status.FAIL and "Docker is not running" in msg and "systemctl enable --now docker" in fix


def test_compose_v1_only(server: Server) -> None:
    script(server.root / "usr/bin/docker", "#!/bin/sh\necho \"docker: 'compose' is not a docker command.\"\nexit 1\n")
    script(server.root / "usr/bin/docker-compose", "#!/bin/sh\necho 'docker-compose version 1.29.2'\n")
    st, msg, fix = status(server.doctor(), "compose")
    assert st == Status.FAIL and "legacy" in msg and "cli-plugins" in fix


def test_user_not_in_the_docker_group(server: Server) -> None:
    put(server.root / "etc/group", "docker:x:999:bob\n")
    st, msg, fix = status(server.doctor(), "docker-group")
    assert st == Status.FAIL and "alice is not in the docker group" in msg and "usermod -aG docker alice" in fix


def test_cpu_only_torch_in_the_venv(server: Server) -> None:
    server.torch("2.5.1", None)
    st, msg, fix = status(server.doctor(), "pytorch")
    assert st == Status.FAIL and "CPU-only build" in msg and "is_available() is False" in msg
    assert "https://download.pytorch.org/whl/cu124" in fix and "torch==2.5.1+cu124" in fix


def test_torch_for_another_cuda_than_the_toolkit(server: Server) -> None:
    server.torch("2.5.1+cu121", "12.1")
    st, msg, _ = status(server.doctor(), "pytorch")
    assert st == Status.WARN and "toolkit on PATH is 12.4" in msg


def test_toolkit_newer_than_the_driver(server: Server) -> None:
    script(server.root / "usr/bin/nvcc", NVCC.format(release="12.6"))
    st, msg, _ = status(server.doctor(), "driver-toolkit")
    assert st == Status.FAIL and "needs driver >= 560.28.03" in msg and "driver's maximum, not the toolkit" in msg


def test_toolkit_installed_but_not_on_path(server: Server) -> None:
    nvcc = server.root / "usr/bin/nvcc"
    script(server.root / "usr/local/cuda-12.4/bin/nvcc", nvcc.read_text())
    nvcc.unlink()
    st, msg, fix = status(server.doctor(), "driver-toolkit")
    assert st == Status.FAIL and "/usr/local/cuda-12.4/bin but nvcc is not on PATH" in msg
    assert "export PATH=/usr/local/cuda-12.4/bin:$PATH" in fix


def test_no_cudnn_header(server: Server) -> None:
    (server.root / "usr/include/cudnn_version.h").unlink()
    assert status(server.doctor(), "cudnn")[0] == Status.WARN
    put(server.root / "usr/include/x86_64-linux-gnu/cudnn_version_v9.h", CUDNN_H.replace("MINOR 1", "MINOR 3"))
    st, msg, _ = status(server.doctor(), "cudnn")
    assert st == Status.PASS and "cuDNN 9.3.0" in msg


def test_oom_killer_in_the_kernel_log(server: Server) -> None:
    put(server.root / "var/log/kern.log", "kernel: Out of memory: Killed process 4711 (python3) total-vm:9GB\n")
    st, msg, fix = status(server.doctor(), "oom-killer")
    assert st == Status.WARN and "Killed process 4711" in msg and "RAM or swap" in fix


def test_ram_smaller_than_vram(server: Server) -> None:
    put(server.root / "proc/meminfo", "MemTotal:       16777216 kB\n")  # 16 GiB for a 24 GiB card
    st, msg, _ = status(server.doctor(), "ram-vs-vram")
    assert st == Status.FAIL and "less than the VRAM" in msg


def test_hot_and_full_gpu_from_nvidia_smi(server: Server) -> None:
    script(server.root / "usr/bin/nvidia-smi", NVIDIA_SMI.format(used=23500, temp=83, driver="550.90.07", cuda="12.4"))
    report = server.doctor()
    assert status(report, "gpu-temperature")[0] == Status.WARN and "83 C" in status(report, "gpu-temperature")[1]
    st, msg, fix = status(report, "gpu-memory")
    assert st == Status.WARN and "(96%)" in msg and "gpu-memory-utilization" in fix


@pytest.mark.skipif(not IS_ROOT, reason="chown to another uid needs root")
def test_models_owned_by_root_and_unreadable(server: Server) -> None:
    models = server.root / "data/models"
    for p in models.rglob("*"):
        os.chown(p, 0, 0)
    (models / "llama/model.safetensors").chmod(0o600)
    st, msg, fix = status(server.doctor(), "models-owner")
    assert st == Status.FAIL and "cannot be read by uid 1000" in msg and fix == "chown -R 1000:1000 /data/models"


@pytest.mark.skipif(not IS_ROOT, reason="mounting a size-limited tmpfs needs root")
def test_full_disk(server: Server) -> None:
    docker_dir = server.root / "var/lib/docker"
    docker_dir.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(docker_dir)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        with open(docker_dir / "fill", "wb") as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        st, msg, fix = status(server.doctor(), "disk")
        assert st == Status.FAIL and "/var/lib/docker: 100% used" in msg and "docker system prune" in fix
        r = run_airgap("doctor", "--root", str(server.root))
        assert r.returncode == 1 and "FAIL  disk" in r.stdout
    finally:
        subprocess.run(["umount", str(docker_dir)], check=False)


# --- NVML (a stand-in: no GPU here) ---------------------------------------------------------------------------


class FakeNVMLError(Exception):
    pass


class FakeNVMLLibraryNotFound(FakeNVMLError):
    pass


@dataclass
class Mem:
    total: int
    used: int


class FakeNVML:
    NVMLError = FakeNVMLError
    NVMLError_LibraryNotFound = FakeNVMLLibraryNotFound

    def __init__(
        self,
        temp: int = 45,
        used: float = 0.1,
        reasons: int = 0,
        ecc: tuple[int, int] | None = (0, 0),
        missing: bool = False,
    ) -> None:
        self.temp, self.used, self.reasons, self.ecc, self.missing = temp, used, reasons, ecc, missing
        self.shut = False

    def nvmlInit(self) -> None:
        if self.missing:
            raise FakeNVMLLibraryNotFound("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.90.07"

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Mem:
        total = 80 * 2**30
        return Mem(total, int(total * self.used))

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return self.temp

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: int) -> int:
        return self.reasons

    def nvmlDeviceGetTotalEccErrors(self, h: int, error_type: int, counter: int) -> int:
        if self.ecc is None:
            raise FakeNVMLError("Not Supported")
        return self.ecc[0] if error_type == 1 else self.ecc[1]


def test_nvml_healthy_gpu(server: Server) -> None:
    nvml = FakeNVML()
    report = server.doctor(nvml=nvml)
    assert status(report, "nvml")[0] == Status.PASS and "NVIDIA H100 80GB HBM3 (80 GiB)" in status(report, "nvml")[1]
    for name in ("gpu-temperature", "gpu-throttle", "gpu-ecc", "gpu-memory"):
        assert status(report, name)[0] == Status.PASS, status(report, name)
    assert report.facts["gpu_source"] == "NVML" and nvml.shut


def test_nvml_hot_throttled_ecc_and_full(server: Server) -> None:
    report = server.doctor(nvml=FakeNVML(temp=83, used=0.95, reasons=0x40 | 0x4, ecc=(2, 5)))
    assert status(report, "gpu-temperature")[0] == Status.WARN
    st, msg, _ = status(report, "gpu-throttle")
    assert st == Status.WARN and "hardware thermal slowdown" in msg
    st, msg, fix = status(report, "gpu-ecc")
    assert st == Status.FAIL and "2 uncorrected" in msg and "nvidia-smi -r" in fix
    assert status(report, "gpu-memory")[0] == Status.WARN
    assert not report.ok


def test_nvml_consumer_card_without_ecc(server: Server) -> None:
    st, msg, _ = status(server.doctor(nvml=FakeNVML(ecc=None)), "gpu-ecc")
    assert st == Status.PASS and "GeForce cards have none" in msg


def test_nvml_without_a_driver_library_is_a_clear_failure(server: Server) -> None:
    st, msg, fix = status(server.doctor(nvml=FakeNVML(missing=True)), "nvml")
    assert st == Status.FAIL and "no NVIDIA driver library" in msg and "--only driver" in fix


# --- the same probes under smoke and preflight -------------------------------------------------------------------


def test_smoke_and_preflight_read_the_gpus_through_the_callers_nvml_session(server: Server, tmp_path: Path) -> None:
    from airgap.install_context import InstallContext
    from airgap.preflight import run_preflight
    from airgap.smoke import run_smoke

    fake = FakeNVML(temp=83)
    put(server.root / "proc/meminfo", "MemTotal:       67108864 kB\n")  # 64 GiB for an 80 GiB card
    with NvmlSession(fake) as nvml:
        smoke = run_smoke(server.host(), None, nvml=nvml)
        ctx = InstallContext(server.host(), tmp_path, Lock(name="x", target={"os": "ubuntu-22.04"}))
        checks = {c.name: c for c in run_preflight(ctx, [], {"ram_vram"}, nvml=nvml)}
        assert not fake.shut  # the caller's session stays open until the caller closes it
    assert fake.shut
    smoke_checks = {c.name: c for c in smoke.checks}
    assert smoke_checks["driver"].status == Status.PASS and "CUDA up to 12.4" in smoke_checks["driver"].message
    assert smoke_checks["gpu0"].status == Status.WARN and "83 C" in smoke_checks["gpu0"].message
    assert smoke.to_dict()["gpus"][0]["power_w"] == "n/a"  # a card that does not report it, as NVML says
    assert checks["ram_vram"].status == Status.WARN and "80.0 GiB of VRAM" in checks["ram_vram"].message


def test_smoke_without_a_driver_library_names_the_driver_layer(server: Server) -> None:
    from airgap.smoke import run_smoke

    with NvmlSession(FakeNVML(missing=True)) as nvml:
        report = run_smoke(server.host(), None, nvml=nvml)
    (check,) = [c for c in report.checks if c.name == "nvml"]
    assert check.status == Status.FAIL and "install the driver layer" in check.fix and not report.ok


def test_secure_boot_from_the_efi_variable_explains_a_failing_nvidia_smi(server: Server) -> None:
    script(server.root / "usr/bin/nvidia-smi", NVIDIA_SMI_BROKEN)
    efivar = server.root / "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
    efivar.parent.mkdir(parents=True)
    efivar.write_bytes(b"\x06\x00\x00\x00\x01")  # attributes, then 1: on
    st, msg, _ = status(server.doctor(), "nvidia-smi")
    assert st == Status.FAIL and "Secure Boot is on" in msg


def test_a_broken_probe_stops_only_the_checks_that_read_it(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from airgap.doctor import facts

    def broken(host: Host) -> Any:
        raise PermissionError("/proc: denied")

    monkeypatch.setattr(facts, "_gather_docker", broken)
    report = server.doctor()
    for name in ("docker-daemon", "nvidia-runtime", "dockerd-restarted", "compose", "docker-group"):
        st, msg, _ = status(report, name)
        assert st == Status.WARN and "could not run: reading Docker failed: PermissionError" in msg
    assert status(report, "gpu-pci")[0] == Status.PASS and status(report, "pytorch")[0] == Status.PASS


# --- with a bundle -----------------------------------------------------------------------------------------------


def bundle_for(tmp: Path, cuda: str = "12.4.0", torch_index: str = "cu124", kernel: str = "5.15.0-122-generic") -> Path:
    root = tmp / "bundle"
    manifest: dict[str, Any] = {
        "name": "stack",
        "target": {"os": "ubuntu-22.04", "arch": "amd64", "python": "3.10", "kernel": kernel, "gpus": ["RTX 4090"]},
        "driver": {"version": "550.90.07"},
        "cuda": {"version": cuda},
        "cudnn": {"version": "9"},
        "python": {
            "requirements": ["torch==2.5.1"],
            "index_urls": [f"https://download.pytorch.org/whl/{torch_index}"],
            "venv": "/opt/airgap/venv",
        },
        "models": [{"repo": "meta-llama/Llama-3.1-8B-Instruct", "dest": "/data/models", "owner": "1000:1000"}],
    }
    data = b"stand-in"
    path = root / "layers/02-driver/NVIDIA-Linux-x86_64-550.90.07.run"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    import hashlib

    art = LockedArtifact(
        layer="driver",
        name=path.name,
        path="layers/02-driver/" + path.name,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        url="https://example.com/" + path.name,
    )
    lock = Lock(
        name="stack",
        target=manifest["target"],
        created=now_utc(),
        manifest=manifest,
        artifacts=[art],
        allowed_mismatches=[{"code": "gpu-cuda", "field": "target.gpus[0]", "message": "made up"}],
    )
    finalize(root, lock)
    return root


def test_bundle_expectations_met(server: Server, tmp_path: Path) -> None:
    r = run_airgap("doctor", "--root", str(server.root), "--bundle", str(bundle_for(tmp_path)), "--json")
    data = json.loads(r.stdout)
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["bundle-driver"]["status"] == Status.PASS
    assert checks["os-kernel"]["status"] == Status.PASS
    assert checks["pytorch"]["status"] == Status.PASS
    assert checks["bundle-mismatches"]["status"] == Status.WARN and "made up" in checks["bundle-mismatches"]["message"]
    assert data["bundle"].endswith("bundle")


def test_bundle_expectations_missed(server: Server, tmp_path: Path) -> None:
    server.torch("2.5.1+cu121", "12.1")
    r = run_airgap(
        "doctor",
        "--root",
        str(server.root),
        "--json",
        "--bundle",
        str(bundle_for(tmp_path, cuda="12.6.0", kernel="6.8.0-40-generic")),
    )
    assert r.returncode == 1
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert (
        checks["driver-toolkit"]["status"] == Status.FAIL
        and "the bundle installs CUDA 12.6.0" in checks["driver-toolkit"]["message"]
    )
    assert checks["pytorch"]["status"] == Status.FAIL and "cu124 build" in checks["pytorch"]["message"]
    assert checks["os-kernel"]["status"] == Status.WARN and "6.8.0-40-generic" in checks["os-kernel"]["message"]


# --- the CLI, for real ---------------------------------------------------------------------------------------------


def test_cli_on_a_prepared_root(server: Server) -> None:
    env = dict(os.environ, SUDO_USER="alice", PYTHONUNBUFFERED="1")
    r = subprocess.run(
        [sys.executable, "-m", "airgap", "doctor", "--root", str(server.root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pass  nvidia-runtime" in r.stdout and ", 0 fail," in r.stdout
    server.daemon_json({})
    r = subprocess.run(
        [sys.executable, "-m", "airgap", "doctor", "--root", str(server.root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 1
    assert "FAIL  nvidia-runtime" in r.stdout and "fix: nvidia-ctk runtime configure" in r.stdout
    assert "not ready: nvidia-runtime failed" in r.stderr


def test_cli_on_this_machine_without_a_gpu() -> None:
    if any(Path("/sys/bus/pci/devices").glob("*/vendor")) and any(
        p.read_text().strip() == "0x10de" for p in Path("/sys/bus/pci/devices").glob("*/vendor")
    ):
        pytest.skip("this machine has an NVIDIA GPU")
    r = run_airgap("doctor")
    assert r.returncode == 1
    assert "FAIL  gpu-pci" in r.stdout and "no NVIDIA GPU on the PCI bus" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr and "could not run" not in r.stdout
    r = run_airgap("doctor", "--json")
    data = json.loads(r.stdout)
    assert r.returncode == 1 and data["ok"] is False
    checks = {c["name"]: c["status"] for c in data["checks"]}
    assert checks["gpu-pci"] == Status.FAIL and checks["nvml"] == Status.FAIL
    assert all(
        c["message"] and c["status"] in (Status.PASS, Status.WARN, Status.FAIL, Status.SKIP) for c in data["checks"]
    )


def test_cli_bad_arguments_exit_2(tmp_path: Path) -> None:
    r = run_airgap("doctor", "--root", str(tmp_path / "nope"))
    assert r.returncode == 2 and "not a directory" in r.stderr
    r = run_airgap("doctor", "--bundle", str(tmp_path))
    assert r.returncode == 2 and "not an airgap bundle" in r.stderr and "Traceback" not in r.stderr


def test_smoke_fails_when_fewer_gpus_answer_than_the_server_has(server: Server) -> None:
    """`--expect-gpus` (a fleet's `airgap_gpus`): one card of two gone from the driver's list is a failure
    with where to look; the NVML reading itself is fine, so nothing else would notice."""
    from airgap.smoke import gpu_count_check, run_smoke

    for expected, want in ((1, Status.PASS), (2, Status.FAIL)):
        with NvmlSession(FakeNVML()) as nvml:
            report = run_smoke(server.host(), None, nvml=nvml, expect_gpus=expected)
        (check,) = [c for c in report.checks if c.name == "gpu_count"]
        assert check.status == want, check
    assert "1 GPU(s) answer, 2 expected: 1 missing" in check.message and "fallen off the bus" in check.fix
    assert gpu_count_check(3, 2).status == Status.WARN
    with NvmlSession(FakeNVML()) as nvml:
        assert not [c for c in run_smoke(server.host(), None, nvml=nvml).checks if c.name == "gpu_count"]
