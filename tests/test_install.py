"""`airgap install` with real makeself installers, a real Docker tgz and dockerd, into scratch roots."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airgap import manifest as manifest_mod
from airgap.collect import collect
from airgap.localserver import LocalHTTPServer
from airgap.sources.http import HttpSource
from tests.conftest import run_airgap
from tests.installers import dockerd_version, make_docker_tgz, make_evil_tgz, nvidia_mirrors, publish_nvidia

DRIVER = "550.90.07"
CUDA = "12.4.0"
KERNEL = "5.15.0-122-generic"


COMPOSE_PLUGIN = b"""#!/bin/sh
if [ "$1" = docker-cli-plugin-metadata ]; then
  echo '{"SchemaVersion":"0.1.0","Vendor":"Docker Inc.","Version":"v2.29.7","ShortDescription":"Docker Compose"}'
  exit 0
fi
echo "Docker Compose version v2.29.7"
"""


def build_bundle(
    work: Path, driver_exit: int = 0, docker: str | None = None, evil_docker: bool = False, compose: bool = False
) -> Path:
    """Collect a bundle through the real collect path from a local server holding real installers."""
    up = work / "upstream"
    publish_nvidia(up, driver_exit)
    build = work / "build"
    build.mkdir()
    docker_line = ""
    if docker:
        dd = up / "docker/linux/static/stable/x86_64"
        dd.mkdir(parents=True)
        tgz = make_evil_tgz(build) if evil_docker else make_docker_tgz(build, docker)
        shutil.move(tgz, dd / f"docker-{docker}.tgz")
        docker_line = f"docker: {{version: {docker}}}\n"
        if compose:
            rel = up / "github/docker/compose/releases/download/v2.29.7"
            rel.mkdir(parents=True)
            (rel / "docker-compose-linux-x86_64").write_bytes(COMPOSE_PLUGIN)
            digest = hashlib.sha256(COMPOSE_PLUGIN).hexdigest()
            (rel / "checksums.txt").write_text(f"{digest} *docker-compose-linux-x86_64\n{'0' * 64} *other\n")
            docker_line = f"docker: {{version: {docker}, compose: 2.29.7}}\n"
    with LocalHTTPServer(up) as server:
        m = work / "manifest.yaml"
        m.write_text(
            "name: install-test\n"
            f'target: {{os: ubuntu-22.04, arch: amd64, python: "3.10", kernel: {KERNEL}}}\n'
            f"driver: {{version: {DRIVER}}}\ncuda: {{version: {CUDA}}}\n{docker_line}"
            f"mirrors:\n{nvidia_mirrors(server.url)}"
            f"  https://download.docker.com: {server.url}/docker\n"
            f"  https://github.com: {server.url}/github\n"
        )
        manifest = manifest_mod.load(m)
        collect(manifest, work / "bundle", HttpSource(manifest.mirrors, backoff=0.01), progress_mode="off")
    return work / "bundle"


def prepare_root(root: Path, gpu: bool = True, nouveau: bool = False) -> Path:
    """A scratch 'server': the files preflight and the layers read, as on Ubuntu 22.04 with one GPU."""
    files = {
        "etc/os-release": 'ID=ubuntu\nVERSION_ID="22.04"\n',
        "etc/group": "root:x:0:\n",
        "proc/modules": "nvme 61440 3 - Live 0x0\n" + ("nouveau 2326528 0 - Live 0x0\n" if nouveau else ""),
        "proc/sys/kernel/osrelease": KERNEL + "\n",
        "proc/sys/kernel/random/boot_id": str(uuid.uuid4()) + "\n",
    }
    if gpu:
        files["sys/bus/pci/devices/0000:01:00.0/vendor"] = "0x10de\n"
        files["sys/bus/pci/devices/0000:01:00.0/class"] = "0x030000\n"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / f"lib/modules/{KERNEL}/build").mkdir(parents=True)
    (root / "var/tmp").mkdir(parents=True)
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def state(root: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((root / "var/lib/airgap/state.json").read_text())


def running_child(root: Path, needle: str) -> int | None:
    """The process group of the command a running install runs, if its command line holds `needle`: the
    install writes it into its lock file (airgap/install_lock.py)."""
    try:
        child = json.loads((root / "var/lib/airgap/install.lock").read_text()).get("child") or {}
    except (OSError, ValueError):  # not there yet, or being rewritten
        return None
    return child["pid"] if any(needle in a for a in child.get("argv", [])) else None


@pytest.fixture(scope="module")
def gpu_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("gpu"))


def test_dry_run_prints_every_step_and_changes_nothing(gpu_bundle: Path, tmp_path: Path) -> None:
    root = prepare_root(tmp_path / "root")
    before = snapshot(root)
    r = run_airgap("install", str(gpu_bundle), "--root", str(root), "--dry-run", "--skip", "smoke")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "would run: sh " in out and f"NVIDIA-Linux-x86_64-{DRIVER}.run --silent" in out
    assert "--toolkit --toolkitpath=" in out
    assert "would write: /etc/profile.d/cuda.sh" in out
    assert out.index("NVIDIA-Linux") < out.index("--toolkit")  # driver before cuda
    assert snapshot(root) == before


def test_driver_and_cuda_install_then_a_rerun_skips_them(gpu_bundle: Path, tmp_path: Path) -> None:
    root = prepare_root(tmp_path / "root")
    r = run_airgap("install", str(gpu_bundle), "--root", str(root), "--skip", "smoke")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / "usr/bin/nvidia-smi").exists()
    nvcc = root / "usr/local/cuda-12.4/bin/nvcc"
    assert "release 12.4" in subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    profile = (root / "etc/profile.d/cuda.sh").read_text()
    assert 'export PATH="/usr/local/cuda-12.4/bin${PATH:+:${PATH}}"' in profile
    assert (root / "etc/ld.so.conf.d/cuda-12-4.conf").read_text() == "/usr/local/cuda-12.4/lib64\n"
    st = state(root)
    assert {k: v["status"] for k, v in st["layers"].items()} == {"driver": "installed", "cuda": "installed"}
    (log,) = (root / "var/log/airgap").glob("install-*.log")
    text = log.read_text()
    assert "$ sh " in text and "--silent" in text and "[exit 0" in text
    assert (root / "var/log/airgap/nvidia-installer.log").exists()

    again = run_airgap("install", str(gpu_bundle), "--root", str(root), "--skip", "smoke", "--json")
    assert again.returncode == 0, again.stderr
    steps = {s["step"]: s for s in json.loads(again.stdout)["steps"]}
    assert steps["driver"]["status"] == "skipped"
    assert steps["driver"]["detail"] == f"driver {DRIVER} is already loaded"
    assert steps["cuda"]["status"] == "skipped"
    assert "nvcc reports 12.4" in steps["cuda"]["detail"]


def test_nouveau_stops_for_a_reboot_then_the_same_command_continues(gpu_bundle: Path, tmp_path: Path) -> None:
    root = prepare_root(tmp_path / "root", nouveau=True)
    args = ("install", str(gpu_bundle), "--root", str(root), "--skip", "smoke")
    r = run_airgap(*args)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "nouveau was loaded" in r.stdout
    assert "Reboot, then run the same command again" in r.stdout
    blacklist = (root / "etc/modprobe.d/blacklist-nouveau.conf").read_text()
    assert blacklist == "blacklist nouveau\noptions nouveau modeset=0\n"
    assert not (root / "usr/bin/nvidia-smi").exists()
    assert state(root)["reboot"]["layer"] == "driver"

    not_yet = run_airgap(*args)  # same boot: refuses to go on
    assert not_yet.returncode == 4
    assert "reboot is still due" in not_yet.stderr

    # "Reboot": a new boot id, and nouveau no longer loaded thanks to the blacklist.
    (root / "proc/sys/kernel/random/boot_id").write_text(str(uuid.uuid4()))
    (root / "proc/modules").write_text("nvme 61440 3 - Live 0x0\n")
    done = run_airgap(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "usr/bin/nvidia-smi").exists()
    assert state(root)["reboot"] is None


def test_a_failing_installer_is_reported_with_command_output_and_fix(tmp_path: Path) -> None:
    bundle = build_bundle(tmp_path / "w", driver_exit=1)
    root = prepare_root(tmp_path / "root")
    r = run_airgap("install", str(bundle), "--root", str(root))
    assert r.returncode == 1
    assert "the NVIDIA installer failed (exit 1)" in r.stdout
    assert "command: sh " in r.stdout
    assert "ERROR: Unable to build the kernel module." in r.stdout
    assert "what to do:" in r.stdout and "kernel headers" in r.stdout
    steps = dict(line.split()[:2] for line in r.stdout.splitlines() if line.split()[:1] in (["cuda"], ["smoke"]))
    assert steps == {"cuda": "not-run", "smoke": "not-run"}
    assert state(root)["layers"]["driver"]["status"] == "failed"


def test_preflight_without_a_gpu_fails_but_cuda_alone_needs_none(gpu_bundle: Path, tmp_path: Path) -> None:
    root = prepare_root(tmp_path / "root", gpu=False)
    r = run_airgap("install", str(gpu_bundle), "--root", str(root), "--skip", "smoke")
    assert r.returncode == 1
    assert "Preflight failed; nothing was changed" in r.stderr
    assert "no NVIDIA GPU on the PCI bus" in r.stderr
    assert not (root / "var/lib/airgap/state.json").exists()
    r = run_airgap("install", str(gpu_bundle), "--root", str(root), "--only", "cuda")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / "usr/local/cuda-12.4/bin/nvcc").exists()


def test_a_corrupt_bundle_is_refused_before_anything_changes(gpu_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "copy"
    shutil.copytree(gpu_bundle, bundle)
    victim = next((bundle / "layers/03-cuda").iterdir())
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    root = prepare_root(tmp_path / "root")
    before = snapshot(root)
    r = run_airgap("install", str(bundle), "--root", str(root))
    assert r.returncode == 1
    assert "failed verification; nothing was installed" in r.stderr
    assert f"ALTERED    layers/03-cuda/{victim.name}" in r.stderr
    assert snapshot(root) == before
    loud = run_airgap("install", str(bundle), "--root", str(root), "--only", "driver", "--no-verify")
    assert "--no-verify: the bundle was not re-hashed up front" in loud.stderr


def test_dkms_is_used_when_the_server_has_it_and_from_starts_later(gpu_bundle: Path, tmp_path: Path) -> None:
    root = prepare_root(tmp_path / "root")
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/dkms").write_text("#!/bin/sh\nexit 0\n")
    (root / "usr/sbin/dkms").chmod(0o755)
    r = run_airgap("install", str(gpu_bundle), "--root", str(root), "--only", "driver")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "dkms=1" in (root / "var/log/airgap/nvidia-installer.log").read_text()
    fresh = prepare_root(tmp_path / "fresh")
    r = run_airgap("install", str(gpu_bundle), "--root", str(fresh), "--from", "cuda", "--json")
    steps = [s["step"] for s in json.loads(r.stdout)["steps"]]
    assert steps == ["cuda", "smoke"]  # driver left alone; smoke fails here (no GPU), cuda went in
    assert (fresh / "usr/local/cuda-12.4/bin/nvcc").exists()
    assert not (fresh / "usr/bin/nvidia-smi").exists()


def test_install_from_a_split_bundle_joins_installers_and_cleans_up(gpu_bundle: Path, tmp_path: Path) -> None:
    from airgap.bundle import finalize
    from airgap.lock import Lock
    from airgap.parts import resplit

    bundle = tmp_path / "split"
    shutil.copytree(gpu_bundle, bundle)
    lock = Lock.read(bundle)
    assert all(resplit(bundle, a, 4096) for a in lock.artifacts)  # tiny parts: every installer is split
    finalize(bundle, lock)
    assert not list((bundle / "layers/02-driver").glob("*.run"))
    root = prepare_root(tmp_path / "root")
    r = run_airgap("install", str(bundle), "--root", str(root), "--skip", "smoke")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / "usr/bin/nvidia-smi").exists() and (root / "usr/local/cuda-12.4/bin/nvcc").exists()
    assert not list((root / "var/tmp").rglob("*.run"))  # joined copies removed


def test_unknown_layer_names_are_bad_input(gpu_bundle: Path, tmp_path: Path) -> None:
    r = run_airgap("install", str(gpu_bundle), "--root", str(tmp_path), "--only", "drivers")
    assert r.returncode == 2
    assert "unknown layer 'drivers'" in r.stderr


def test_smoke_without_a_gpu_fails_clearly() -> None:
    r = run_airgap("smoke", "--json")
    assert r.returncode == 1
    data = json.loads(r.stdout)
    assert data["ok"] is False
    nvml = next(c for c in data["checks"] if c["name"] == "nvml")
    assert nvml["status"] == "fail"
    assert "install the driver layer" in nvml["fix"]
    assert "Traceback" not in r.stderr
    text = run_airgap("smoke")
    assert text.returncode == 1
    assert "smoke test FAILED" in text.stdout


# --- Docker: the real daemon from a real static tgz ---------------------------------------------------------


def _short_tmp() -> Path:
    # dockerd's unix sockets live under its exec-root: keep paths short (108-byte socket path limit).
    return Path(tempfile.mkdtemp(prefix="ag-", dir="/tmp"))


def _docker_root(root: Path) -> Path:
    prepare_root(root)
    cfg = {
        "storage-driver": "vfs",
        "iptables": False,
        "ip6tables": False,
        "bridge": "none",
        "data-root": str(root / "var/lib/docker"),
        "exec-root": str(root / "run/docker"),
        "pidfile": str(root / "run/docker.pid"),
        "hosts": [f"unix://{root}/run/docker.sock"],
    }
    (root / "etc/docker").mkdir(parents=True)
    (root / "etc/docker/daemon.json").write_text(json.dumps(cfg))
    return root


def _stop_dockerd(root: Path) -> None:
    pidfile = root / "run/docker.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text().strip())
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run(["umount", "-R", str(root / "var/lib/docker")], capture_output=True)
    subprocess.run(["umount", "-R", str(root / "run/docker")], capture_output=True)


@pytest.fixture
def docker_root() -> Iterator[Path]:
    base = _short_tmp()
    root = _docker_root(base / "r")
    try:
        yield root
    finally:
        _stop_dockerd(root)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_docker_layer_installs_the_static_binaries_and_starts_dockerd(docker_root: Path, tmp_path: Path) -> None:
    version = dockerd_version()
    bundle = build_bundle(tmp_path / "w", docker=version, compose=True)
    lock = json.loads((bundle / "airgap.lock.json").read_text())
    compose = next(a for a in lock["artifacts"] if a["name"] == "docker-compose-linux-x86_64")
    assert compose["upstream_digest"]["source"].endswith("/v2.29.7/checksums.txt")  # checked at collect
    r = run_airgap("install", str(bundle), "--root", str(docker_root), "--only", "docker", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr + (docker_root / "var/log/airgap/dockerd.log").read_text()
    for name in ("dockerd", "docker", "containerd", "runc"):
        assert os.access(docker_root / "usr/bin" / name, os.X_OK)
    assert "SocketGroup=docker" in (docker_root / "etc/systemd/system/docker.socket").read_text()
    plugin = docker_root / "usr/libexec/docker/cli-plugins/docker-compose"
    assert plugin.read_bytes() == COMPOSE_PLUGIN and os.access(plugin, os.X_OK)
    assert "docker:x:" in (docker_root / "etc/group").read_text()
    host = f"unix://{docker_root}/run/docker.sock"
    docker = str(docker_root / "usr/bin/docker")
    info = subprocess.run([docker, "-H", host, "info", "--format", "{{.Driver}}"], capture_output=True, text=True)
    assert info.stdout.strip() == "vfs"
    busybox = shutil.which("busybox")
    if busybox:  # a later layer loads an image into it: here, a busybox rootfs imported by hand
        rootfs = tmp_path / "rootfs.tar"
        import tarfile

        with tarfile.open(rootfs, "w") as tar:
            tar.add(busybox, "bin/busybox")
            for applet in ("sh", "cat", "echo"):
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        subprocess.run([docker, "-H", host, "import", str(rootfs), "smoke:1"], check=True, capture_output=True)
        ran = subprocess.run(
            [docker, "-H", host, "run", "--rm", "--network", "none", "smoke:1", "echo", "hello"],
            capture_output=True,
            text=True,
        )
        assert ran.stdout.strip() == "hello", ran.stderr

    again = run_airgap("install", str(bundle), "--root", str(docker_root), "--only", "docker", "--json")
    step = json.loads(again.stdout)["steps"][0]
    assert step["status"] == "skipped"
    assert step["detail"].startswith(f"Docker {version}") and "is already running" in step["detail"]


def test_a_docker_tgz_that_escapes_its_directory_is_refused(tmp_path: Path) -> None:
    bundle = build_bundle(tmp_path / "w", docker="99.0.0", evil_docker=True)
    root = prepare_root(tmp_path / "root")
    r = run_airgap("install", str(bundle), "--root", str(root), "--only", "docker")
    assert r.returncode == 1
    assert "unexpected entry 'docker/../../etc/cron.d/evil'" in r.stdout
    assert not (root / "etc/cron.d").exists()
    assert not (tmp_path / "etc/cron.d").exists()


@pytest.mark.slow
@pytest.mark.root
def test_whole_install_without_network_killed_part_way_resumes(docker_root: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("unshare -n needs root (CI runs as root)")
    bundle = build_bundle(tmp_path / "w", docker=dockerd_version())
    cmd = [
        "unshare",
        "-n",
        sys.executable,
        "-m",
        "airgap",
        "install",
        str(bundle),
        "--root",
        str(docker_root),
        "--skip",
        "smoke",
    ]
    env = dict(os.environ, AIRGAP_TEST_CUDA_SLEEP="30", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    child = None
    try:
        while child is None:  # until the (sleeping) CUDA installer runs: the lock file names it
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline
            child = running_child(docker_root, "--toolkit")
            time.sleep(0.1)
    finally:
        # Power cut: airgap and the installer, which runs in a process group of its own, die together.
        for group in (child, proc.pid):
            if group is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
        proc.wait()
    assert state(docker_root)["layers"].keys() == {"driver"}
    assert not (docker_root / "usr/local/cuda-12.4/bin/nvcc").exists()

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = {
        line.split()[0]: line.split()[1]
        for line in r.stdout.splitlines()
        if line.split()[:1] in (["driver"], ["cuda"], ["docker"])
    }
    assert lines == {"driver": "skipped", "cuda": "installed", "docker": "installed"}

    third = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr
    assert {s["step"]: s["status"] for s in json.loads(third.stdout)["steps"]} == {
        "driver": "skipped",
        "cuda": "skipped",
        "docker": "skipped",
    }


def test_preflight_rechecks_versions_from_the_lock(tmp_path: Path) -> None:
    from airgap import manifest as manifest_mod
    from airgap.compat.rules import allowed, check_manifest, enforce
    from airgap.host import Host
    from airgap.install_context import InstallContext
    from airgap.lock import Lock
    from airgap.preflight import check_compat

    m = manifest_mod.loads(
        "name: x\ntarget: {os: ubuntu-22.04}\ndriver: {version: 535.54.03}\ncuda: {version: 12.4.0}\n"
    )
    lock = Lock(name="x", target={"os": "ubuntu-22.04"}, manifest=m.model_dump(mode="json"))
    ctx = InstallContext(Host(root=tmp_path), tmp_path, lock)
    (fail,) = [c for c in check_compat(ctx, []) if c.status == "fail"]
    assert "550.54.14" in fail.message + fail.fix  # CUDA 12.4's minimum driver is named
    lock.allowed_mismatches = allowed(enforce(m, check_manifest(m), allow_mismatch=True))  # as collect records
    assert {c.status for c in check_compat(ctx, [])} == {"warn"}
