"""A real, private `dockerd` for tests: its own data root, exec root, pidfile and socket under a temp dir.

    with run_dockerd(tmp_path / "dockerd") as d:      # or the `dockerd` fixture (one per test module)
        d.docker("images")                            # the CLI against this daemon only
        d.client().images.list()                      # the docker SDK, likewise
        subprocess.run([...], env=d.env())            # anything that honours DOCKER_HOST

It runs with the vfs storage driver (no overlay mounts needed inside a container), no iptables rules and
no bridge (`--iptables=false --bridge=none`), so it touches neither the host's firewall nor its network:
containers run with `--network none`. It starts its own containerd under the exec root. Stopping sends
SIGTERM and waits; dockerd then stops its containers and its containerd. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def dockerd_unavailable() -> str | None:
    """Why a private dockerd cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "dockerd needs root"
    for tool in ("dockerd", "docker", "containerd", "runc"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install docker.io; see scripts/test-apt-packages.txt)"
    return None


@dataclass
class Dockerd:
    data_root: Path
    exec_root: Path
    socket: Path
    pidfile: Path
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["DOCKER_HOST"] = self.host
        return env

    def client(self, timeout: int = 120) -> Any:
        import docker

        return docker.DockerClient(base_url=self.host, version="auto", timeout=timeout)

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The docker CLI against this daemon (never the machine's default one)."""
        return subprocess.run(
            ["docker", "--host", self.host, *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                out.append(point)
    return sorted(out, key=len, reverse=True)  # deepest first


@contextlib.contextmanager
def run_dockerd(workdir: Path, start_timeout: float = 60, extra_args: tuple[str, ...] = ()) -> Iterator[Dockerd]:
    """Start a private dockerd, wait until it answers, and stop it (and its containerd) on exit."""
    reason = dockerd_unavailable()
    if reason:
        raise RuntimeError(reason)
    workdir.mkdir(parents=True, exist_ok=True)
    # Unix socket paths are limited to 108 bytes and containerd puts its sockets under the exec root:
    # keep those in a short directory of their own rather than under pytest's long tmp paths.
    short = Path(tempfile.mkdtemp(prefix="agd-", dir="/tmp"))
    d_data, d_exec = workdir / "data", short / "exec"
    sock, pidfile, log = short / "docker.sock", short / "docker.pid", workdir / "dockerd.log"
    argv = [
        "dockerd",
        "--storage-driver=vfs",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        f"--data-root={d_data}",
        f"--exec-root={d_exec}",
        f"--pidfile={pidfile}",
        f"--host=unix://{sock}",
        "--log-level=warn",
        *extra_args,
    ]
    with open(log, "wb") as out:
        # Its own session, so a Ctrl-C meant for pytest does not reach it before we stop it in order.
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    d = Dockerd(d_data, d_exec, sock, pidfile, log, proc)
    try:
        _wait_ready(d, start_timeout)
        yield d
    finally:
        _stop(d)
        for point in _mounts_under(short) + _mounts_under(workdir):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(short, ignore_errors=True)


def _wait_ready(d: Dockerd, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.proc.poll() is not None:
            raise RuntimeError(f"dockerd exited {d.proc.returncode} while starting:\n{d.log_tail()}")
        if d.socket.exists():
            try:
                d.client(timeout=5).ping()
                return
            except Exception:  # not listening yet
                pass
        time.sleep(0.1)
    raise RuntimeError(f"dockerd did not answer on {d.socket} within {timeout:.0f}s:\n{d.log_tail()}")


def _stop(d: Dockerd) -> None:
    if d.proc.poll() is None:
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # SIGKILL leaves its containerd behind: end that too, by the pid it recorded.
            d.proc.kill()
            d.proc.wait()
            pid_file = d.exec_root / "containerd" / "containerd.pid"
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


@pytest.fixture(scope="module", name="dockerd")
def dockerd_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    """One private dockerd per test module (starting one takes a couple of seconds)."""
    reason = dockerd_unavailable()
    if reason:
        pytest.skip(reason)
    with run_dockerd(tmp_path_factory.mktemp("dockerd")) as d:
        yield d
