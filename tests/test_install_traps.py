"""`airgap install` answers honestly: the server's release under --root, a dry run that says "would", a layer
the bundle lacks, a --root without /var/tmp, and advice the server's operator can follow."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from airgap import manifest as manifest_mod
from airgap.collect import collect
from airgap.localserver import LocalHTTPServer
from airgap.sources.http import HttpSource
from tests.conftest import run_airgap
from tests.installers import nvidia_mirrors, publish_nvidia
from tests.test_install import KERNEL, build_bundle, prepare_root

DOCKER = "27.1.1"


def tiny_docker_tgz(path: Path) -> None:
    """A docker-VERSION.tgz laid out like Docker's static release, holding stand-in scripts."""
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("docker")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for name in ("docker", "dockerd", "containerd", "runc"):
            data = f"#!/bin/sh\necho {name} stand-in\n".encode()
            member = tarfile.TarInfo(f"docker/{name}")
            member.size, member.mode = len(data), 0o755
            tar.addfile(member, io.BytesIO(data))


@pytest.fixture(scope="module")
def no_driver_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CUDA and Docker, no driver: collected through the real collect path from a local upstream."""
    work = tmp_path_factory.mktemp("nodriver")
    up = work / "upstream"
    publish_nvidia(up)
    dd = up / "docker/linux/static/stable/x86_64"
    dd.mkdir(parents=True)
    tiny_docker_tgz(dd / f"docker-{DOCKER}.tgz")
    with LocalHTTPServer(up) as server:
        m = work / "manifest.yaml"
        m.write_text(
            "name: no-driver\n"
            f'target: {{os: ubuntu-22.04, arch: amd64, python: "3.10", kernel: {KERNEL}}}\n'
            f"cuda: {{version: 12.4.0}}\ndocker: {{version: {DOCKER}}}\n"
            f"mirrors:\n{nvidia_mirrors(server.url)}"
            f"  https://download.docker.com: {server.url}/docker\n"
        )
        manifest = manifest_mod.load(m)
        collect(manifest, work / "bundle", HttpSource(manifest.mirrors, backoff=0.01), progress_mode="off")
    return work / "bundle"


@pytest.fixture(scope="module")
def gpu_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("gpu"))


def layer_rows(stdout: str) -> dict[str, str]:
    """The Layers table: layer -> status."""
    table = stdout[stdout.index("\nLayers\n") + 1 :].splitlines()[2:]
    rows = [re.split(r"\s{2,}", line.strip()) for line in table if line.strip()]
    return {row[0]: row[1] for row in rows if len(row) >= 2}


def preflight(stdout: str) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in json.loads(stdout)["preflight"]}


# --- the release is the tree's ---------------------------------------------------------------------------


def test_the_os_is_read_under_the_root_through_its_links(no_driver_bundle: Path, tmp_path: Path) -> None:
    args = ("install", str(no_driver_bundle), "--dry-run", "--only", "cuda", "--json")
    # As on a real system: /etc/os-release a link to /usr/lib/os-release, here an absolute one, which must
    # name the tree's file and not this machine's; values in single quotes, a comment.
    linked = prepare_root(tmp_path / "linked")
    (linked / "etc/os-release").unlink()
    (linked / "usr/lib").mkdir(parents=True)
    (linked / "usr/lib/os-release").write_text("# the release\nNAME='Ubuntu'\nID=ubuntu\nVERSION_ID='22.04'\n")
    (linked / "etc/os-release").symlink_to("/usr/lib/os-release")
    r = run_airgap(*args, "--root", str(linked))
    assert r.returncode == 0, r.stdout + r.stderr
    os_check = preflight(r.stdout)["os"]
    assert (os_check["status"], os_check["message"]) == ("pass", "ubuntu-22.04, as the bundle's target")

    # No /etc/os-release at all: os-release(5)'s fallback.
    fallback = prepare_root(tmp_path / "fallback")
    (fallback / "etc/os-release").unlink()
    (fallback / "usr/lib").mkdir(parents=True)
    (fallback / "usr/lib/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    r = run_airgap(*args, "--root", str(fallback))
    os_check = preflight(r.stdout)["os"]
    assert os_check["status"] == "warn"
    assert "runs debian-12, the bundle was made for ubuntu-22.04" in os_check["message"]

    # Neither: said so, not "?-?", and this machine's release is not borrowed.
    bare = prepare_root(tmp_path / "bare")
    (bare / "etc/os-release").unlink()
    r = run_airgap(*args, "--root", str(bare))
    os_check = preflight(r.stdout)["os"]
    assert os_check["status"] == "warn", os_check
    assert f"no /etc/os-release or /usr/lib/os-release under {bare}" in os_check["message"]
    assert "?" not in os_check["message"]


# --- a dry run says "would", preflight first ----------------------------------------------------------------


def test_a_dry_run_prints_preflight_then_its_plan_and_says_would(gpu_bundle: Path, tmp_path: Path) -> None:
    root = prepare_root(tmp_path / "root")
    r = run_airgap("install", str(gpu_bundle), "--root", str(root), "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert out.index("Preflight") < out.index("The install would:") < out.index("would run: sh ")
    assert out.index("would run: sh ") < out.index("\nLayers\n")
    assert layer_rows(out) == {"driver": "would install", "cuda": "would install", "smoke": "would run"}
    assert not (root / "var/lib/airgap").exists()


def test_a_dry_run_names_no_dockerd_of_the_machine_running_airgap(no_driver_bundle: Path, tmp_path: Path) -> None:
    root = prepare_root(tmp_path / "root")
    r = run_airgap("install", str(no_driver_bundle), "--root", str(root), "--dry-run", "--only", "docker")
    assert r.returncode == 0, r.stdout + r.stderr
    (start,) = [line.strip() for line in r.stdout.splitlines() if "would start" in line]
    assert start == "would start dockerd: /usr/bin/dockerd"
    local = shutil.which("dockerd")
    if local and local != "/usr/bin/dockerd":
        assert local not in r.stdout
    assert layer_rows(r.stdout) == {"docker": "would install"}
    assert f"Docker {DOCKER} would be installed and started" in r.stdout
    assert not (root / "usr/bin/dockerd").exists()


# --- layers the bundle does not hold ------------------------------------------------------------------------


def test_only_a_layer_the_bundle_lacks_is_refused(no_driver_bundle: Path, tmp_path: Path) -> None:
    root = prepare_root(tmp_path / "root")
    r = run_airgap("install", str(no_driver_bundle), "--root", str(root), "--only", "driver")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "the bundle has no driver layer; it holds: cuda, docker" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (root / "var/log/airgap").exists() and not (root / "var/lib/airgap").exists()

    # --skip of a layer it lacks is only a note.
    r = run_airgap("install", str(no_driver_bundle), "--root", str(root), "--dry-run", "--skip", "driver,smoke")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "--skip driver: the bundle has no driver layer" in r.stderr
    assert layer_rows(r.stdout) == {"cuda": "would install", "docker": "would install"}


def test_the_preflight_hint_suggests_skipping_only_layers_the_bundle_has(
    no_driver_bundle: Path, gpu_bundle: Path, tmp_path: Path
) -> None:
    root = prepare_root(tmp_path / "root", gpu=False)
    r = run_airgap("install", str(no_driver_bundle), "--root", str(root))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no NVIDIA GPU on the PCI bus" in r.stderr
    assert "leave out the layers that need it: --skip smoke." in r.stderr
    assert "--skip driver" not in r.stderr and "driver,smoke" not in r.stderr
    # With a driver layer both are named, and a --skip already given is kept in the suggestion.
    r = run_airgap("install", str(gpu_bundle), "--root", str(root), "--skip", "cuda")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "leave out the layers that need it: --skip driver,cuda,smoke." in r.stderr


# --- a --root without /var/tmp ---------------------------------------------------------------------------------


def test_a_root_without_var_tmp_unpacks_under_var_lib_airgap(no_driver_bundle: Path, tmp_path: Path) -> None:
    root = prepare_root(tmp_path / "root")
    shutil.rmtree(root / "var/tmp")
    assert not any((root / d).exists() for d in ("var/tmp", "tmp", "root"))
    r = run_airgap("install", str(no_driver_bundle), "--root", str(root), "--only", "cuda")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / "usr/local/cuda-12.4/bin/nvcc").exists()
    assert "no directory with" not in r.stdout
    log = next((root / "var/log/airgap").glob("install-*.log")).read_text()
    assert f"--tmpdir={root}/var/lib/airgap" in log


# --- advice the server's operator can follow ------------------------------------------------------------------


def test_install_side_advice_never_says_to_run_collect(gpu_bundle: Path, tmp_path: Path) -> None:
    # A copy that lost SHA256SUMS: it can be copied again, not collected again, on the server.
    bundle = tmp_path / "copy"
    shutil.copytree(gpu_bundle, bundle)
    (bundle / "SHA256SUMS").unlink()
    root = prepare_root(tmp_path / "root")
    r = run_airgap("install", str(bundle), "--root", str(root))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Copy it again from the original bundle" in r.stderr and "on the connected PC" in r.stderr
    assert "Run `airgap collect` again" not in r.stderr

    # No headers for the running kernel: the fix names the connected PC.
    shutil.rmtree(root / f"lib/modules/{KERNEL}")
    r = run_airgap("install", str(gpu_bundle), "--root", str(root), "--only", "driver")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"get a bundle collected with target.kernel: {KERNEL} on the connected PC" in r.stderr
    assert "collect with" not in r.stderr
