"""Shared fixtures: a real local HTTP upstream laid out like NVIDIA's and Docker's servers, and bundles."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airgap.bundle import finalize
from airgap.lock import Lock, LockedArtifact
from airgap.units import now_utc
from tests.faulty_server import FaultyHTTPServer

MiB = 1 << 20

DRIVER = "nvidia-us/XFree86/Linux-x86_64/550.90.07/NVIDIA-Linux-x86_64-550.90.07.run"
DRIVER_TESLA = "nvidia-us/tesla/550.90.07/NVIDIA-Linux-x86_64-550.90.07.run"
CUDA = "nvidia-dev/compute/cuda/12.4.0/local_installers/cuda_12.4.0_550.54.14_linux.run"
CUDA_MD5 = "nvidia-dev/compute/cuda/12.4.0/docs/sidebar/md5sum.txt"
DOCKER = "docker/linux/static/stable/x86_64/docker-25.0.3.tgz"
SCRIPT = "example/tools/check.sh"

IN_BUNDLE = {
    DRIVER: "layers/02-driver/NVIDIA-Linux-x86_64-550.90.07.run",
    CUDA: "layers/03-cuda/cuda_12.4.0_550.54.14_linux.run",
    DOCKER: "layers/05-docker/docker-25.0.3.tgz",
    SCRIPT: "layers/10-files/check.sh",
}


def payload(size: int, seed: int) -> bytes:
    # Deterministic, incompressible bytes: a flipped byte anywhere changes every digest.
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 64
        counter += 1
    return bytes(out[:size])


@dataclass
class Upstream:
    server: FaultyHTTPServer
    root: Path
    files: dict[str, bytes]

    @property
    def url(self) -> str:
        return self.server.url

    def path(self, rel: str) -> str:
        """The URL path the server sees for a file of the tree."""
        return "/" + rel

    def manifest(self, tmp: Path, extra: str = "", mirrors_auth: str = "", **sections: str) -> Path:
        base = self.url.replace("http://", f"http://{mirrors_auth}") if mirrors_auth else self.url
        body = {
            "driver": "{version: 550.90.07}",
            "cuda": "{version: 12.4.0}",
            "docker": "{version: 25.0.3}",
            "files": f"\n  - url: https://example.com/tools/check.sh\n    sha256: {sha(self.files[SCRIPT])}",
        }
        body.update(sections)
        lines = ["name: test-stack", 'target: {os: ubuntu-22.04, arch: amd64, python: "3.10"}']
        lines += [f"{k}: {v}" for k, v in body.items() if v]
        lines += [
            "mirrors:",
            f"  https://us.download.nvidia.com: {base}/nvidia-us",
            f"  https://developer.download.nvidia.com: {base}/nvidia-dev",
            f"  https://download.docker.com: {base}/docker",
            f"  https://example.com: {base}/example",
        ]
        path = tmp / "manifest.yaml"
        path.write_text("\n".join(lines) + "\n" + extra)
        return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    root = tmp_path / "upstream"
    files = {
        # Unpinned downloads must start like their format (a makeself shell script, a gzip stream).
        DRIVER: b"#!/bin/sh\n" + payload(3 * MiB + 7, 1),
        CUDA: b"#!/bin/sh\n" + payload(4 * MiB - 5, 2),
        DOCKER: b"\x1f\x8b" + payload(1 * MiB + 1, 3),
        SCRIPT: b"#!/bin/sh\nnvidia-smi\n",
    }
    files[CUDA_MD5] = (
        f"{hashlib.md5(files[CUDA]).hexdigest()}  local_installers/cuda_12.4.0_550.54.14_linux.run\n"
        f"0123456789abcdef0123456789abcdef  local_installers/cuda_12.4.0_550.54.14_linux_sbsa.run\n"
    ).encode()
    write_tree(root, files)
    with FaultyHTTPServer(root) as server:
        yield Upstream(server, root, files)


def run_airgap(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m airgap ARGS`. collect gets --no-tool unless the test says --tool: putting airgap's own
    wheels in the bundle downloads them from PyPI (tests/test_selfinstall.py covers that, marked network)."""
    if args and args[0] == "collect" and "--tool" not in args and "--no-tool" not in args:
        args = (*args, "--no-tool")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "airgap", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env
    )


def make_bundle(root: Path, files: dict[str, bytes]) -> Path:
    """A finished bundle written straight through the bundle module (no network), for verify tests."""
    arts = []
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        layer = rel.split("/")[1].split("-", 1)[1]
        arts.append(
            LockedArtifact(
                layer=layer,
                name=p.name,
                path=rel,
                size=len(data),
                sha256=sha(data),
                url=f"https://example.com/{p.name}",
            )
        )
    lock = Lock(
        name="t", target={"os": "ubuntu-22.04", "arch": "amd64", "python": "3.10"}, created=now_utc(), artifacts=arts
    )
    finalize(root, lock)
    return root
