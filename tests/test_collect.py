"""`airgap collect` against a real local HTTP upstream, with the faults real transfers meet."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airgap import manifest as manifest_mod
from airgap.collect import collect
from airgap.errors import IntegrityError
from airgap.sources.http import HttpSource
from tests.conftest import CUDA, CUDA_MD5, DOCKER, DRIVER, DRIVER_TESLA, IN_BUNDLE, SCRIPT, MiB, Upstream, sha


def collect_cli(up: Upstream, tmp: Path, *args: str, manifest: Path | None = None):  # type: ignore[no-untyped-def]
    from tests.conftest import run_airgap

    m = manifest or up.manifest(tmp)
    return run_airgap("collect", str(m), "-o", str(tmp / "bundle"), "--retries", "3", *args)


def gets(up: Upstream, rel: str) -> list[object]:
    return [r for r in up.server.requests if r.method == "GET" and r.path == up.path(rel)]


def test_collect_writes_a_bundle_that_coreutils_and_verify_accept(upstream: Upstream, tmp_path: Path) -> None:
    r = collect_cli(upstream, tmp_path, "--json")
    assert r.returncode == 0, r.stderr
    bundle = tmp_path / "bundle"
    for rel, inside in IN_BUNDLE.items():
        assert (bundle / inside).read_bytes() == upstream.files[rel]
    assert not list(bundle.rglob("*.part"))
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle).returncode == 0

    lock = json.loads((bundle / "airgap.lock.json").read_text())
    assert lock["status"] == "complete"
    arts = {a["layer"]: a for a in lock["artifacts"]}
    assert [a["layer"] for a in lock["artifacts"]] == ["driver", "cuda", "docker", "files"]
    cuda = arts["cuda"]
    assert cuda["url"].startswith("https://developer.download.nvidia.com/compute/cuda/12.4.0/")  # canonical
    assert cuda["sha256"] == sha(upstream.files[CUDA])
    assert cuda["size"] == len(upstream.files[CUDA])
    assert cuda["upstream_digest"] == {
        "algorithm": "md5",
        "value": hashlib.md5(upstream.files[CUDA]).hexdigest(),
        "source": "https://developer.download.nvidia.com/compute/cuda/12.4.0/docs/sidebar/md5sum.txt",
    }
    assert arts["driver"]["upstream_digest"] is None
    assert "NVIDIA publishes no checksum" in arts["driver"]["upstream_digest_note"]
    assert arts["files"]["upstream_digest"]["source"] == "manifest"

    readme = (bundle / "README.txt").read_text()
    assert "sha256sum -c SHA256SUMS" in readme
    assert "4 files" in readme
    assert "layers/03-cuda/cuda_12.4.0_550.54.14_linux.run" in readme

    summary = json.loads(r.stdout)
    assert summary["transferred_bytes"] == sum(len(upstream.files[k]) for k in IN_BUNDLE)
    assert run_verify(bundle).returncode == 0


def run_verify(bundle: Path) -> subprocess.CompletedProcess[str]:
    from tests.conftest import run_airgap

    return run_airgap("verify", str(bundle))


def test_rerun_transfers_nothing(upstream: Upstream, tmp_path: Path) -> None:
    assert collect_cli(upstream, tmp_path).returncode == 0
    upstream.server.reset_stats()
    r = collect_cli(upstream, tmp_path, "--json")
    assert r.returncode == 0, r.stderr
    assert upstream.server.bytes_sent() < 1024  # the md5sum.txt list only
    assert not [q for q in upstream.server.requests if q.path != upstream.path(CUDA_MD5)]
    assert {f["status"] for f in json.loads(r.stdout)["files"]} == {"present"}


def test_404_names_the_artifact_exits_3_and_keeps_the_rest(upstream: Upstream, tmp_path: Path) -> None:
    (upstream.root / DOCKER).unlink()
    r = collect_cli(upstream, tmp_path)
    assert r.returncode == 3
    assert "layers/05-docker/docker-25.0.3.tgz: not found upstream" in r.stderr
    assert "/docker/linux/static/stable/x86_64/docker-25.0.3.tgz (404)" in r.stderr
    assert "pin the exact `url:`" in r.stderr
    assert "Traceback" not in r.stderr
    bundle = tmp_path / "bundle"
    assert not (bundle / "SHA256SUMS").exists()
    assert (bundle / IN_BUNDLE[CUDA]).read_bytes() == upstream.files[CUDA]
    # Once the file is there, a re-run fetches only it.
    (upstream.root / DOCKER).write_bytes(upstream.files[DOCKER])
    upstream.server.reset_stats()
    assert collect_cli(upstream, tmp_path).returncode == 0
    fetched = {q.path for q in upstream.server.requests if q.method == "GET"}
    assert fetched == {upstream.path(DOCKER), upstream.path(CUDA_MD5)}


def test_driver_falls_back_to_the_datacenter_path(upstream: Upstream, tmp_path: Path) -> None:
    (upstream.root / DRIVER_TESLA).parent.mkdir(parents=True)
    (upstream.root / DRIVER).rename(upstream.root / DRIVER_TESLA)
    assert collect_cli(upstream, tmp_path).returncode == 0
    lock = json.loads((tmp_path / "bundle/airgap.lock.json").read_text())
    assert (
        lock["artifacts"][0]["url"]
        == "https://us.download.nvidia.com/tesla/550.90.07/NVIDIA-Linux-x86_64-550.90.07.run"
    )


def test_500_then_success(upstream: Upstream, tmp_path: Path) -> None:
    upstream.server.fail(upstream.path(CUDA), status=500, times=2)
    upstream.server.fail(upstream.path(DOCKER), status=503, times=1)
    r = collect_cli(upstream, tmp_path)
    assert r.returncode == 0, r.stderr
    assert [q.status for q in gets(upstream, CUDA)] == [500, 500, 200]
    assert (tmp_path / "bundle" / IN_BUNDLE[CUDA]).read_bytes() == upstream.files[CUDA]


def test_persistent_500_gives_up_with_exit_3(upstream: Upstream, tmp_path: Path) -> None:
    upstream.server.fail(upstream.path(DOCKER), status=500, times=100)
    r = collect_cli(upstream, tmp_path, "--retries", "2")
    assert r.returncode == 3
    assert "failed after 3 attempts (last: HTTP 500)" in r.stderr


def test_dropped_connection_resumes_instead_of_restarting(upstream: Upstream, tmp_path: Path) -> None:
    size = len(upstream.files[CUDA])
    upstream.server.drop_after(upstream.path(CUDA), MiB, times=1)
    r = collect_cli(upstream, tmp_path)
    assert r.returncode == 0, r.stderr
    requests = gets(upstream, CUDA)
    assert [q.range for q in requests] == [None, f"bytes={MiB}-"]
    assert [q.status for q in requests] == [200, 206]
    assert upstream.server.bytes_sent(upstream.path(CUDA)) == size  # nothing sent twice
    assert (tmp_path / "bundle" / IN_BUNDLE[CUDA]).read_bytes() == upstream.files[CUDA]


def test_server_that_ignores_range_still_gives_a_correct_file(upstream: Upstream, tmp_path: Path) -> None:
    upstream.server.ignore_range(upstream.path(DRIVER))
    upstream.server.drop_after(upstream.path(DRIVER), MiB, times=1)
    r = collect_cli(upstream, tmp_path)
    assert r.returncode == 0, r.stderr
    assert [q.status for q in gets(upstream, DRIVER)] == [200, 200]
    assert (tmp_path / "bundle" / IN_BUNDLE[DRIVER]).read_bytes() == upstream.files[DRIVER]


def test_killed_process_resumes_from_its_part_file(upstream: Upstream, tmp_path: Path) -> None:
    size = len(upstream.files[CUDA])
    upstream.server.throttle(upstream.path(CUDA), 2 * MiB)
    m = upstream.manifest(tmp_path)
    bundle = tmp_path / "bundle"
    part = bundle / (IN_BUNDLE[CUDA] + ".part")
    proc = subprocess.Popen(
        [sys.executable, "-m", "airgap", "collect", str(m), "-o", str(bundle), "--no-tool"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size >= MiB):
            assert time.monotonic() < deadline, "download never started"
            assert proc.poll() is None, "collect ended before it could be killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    kept = part.stat().st_size
    assert 0 < kept < size
    assert not (bundle / IN_BUNDLE[CUDA]).exists()
    assert not (bundle / "SHA256SUMS").exists()

    upstream.server.clear()
    upstream.server.reset_stats()
    r = collect_cli(upstream, tmp_path, manifest=m)
    assert r.returncode == 0, r.stderr
    # The killed client's request may be logged late (when the server notices the broken pipe): look
    # only at ranged requests, which only the resuming run makes.
    (resumed,) = [q for q in gets(upstream, CUDA) if q.range]
    assert resumed.range == f"bytes={kept}-"
    assert resumed.bytes_sent == size - kept
    assert (bundle / IN_BUNDLE[CUDA]).read_bytes() == upstream.files[CUDA]
    assert run_verify(bundle).returncode == 0


def test_bytes_not_matching_the_pinned_digest_leave_nothing(upstream: Upstream, tmp_path: Path) -> None:
    wrong = "0" * 64
    m = upstream.manifest(tmp_path, docker=f"{{version: 25.0.3, sha256: '{wrong}'}}")
    r = collect_cli(upstream, tmp_path, manifest=m)
    assert r.returncode == 1
    assert "layers/05-docker/docker-25.0.3.tgz: the bytes from" in r.stderr
    assert f"expected {wrong}, got {sha(upstream.files[DOCKER])}" in r.stderr
    docker_dir = tmp_path / "bundle/layers/05-docker"
    assert not docker_dir.exists() or not any(docker_dir.iterdir())


def test_corrupt_bytes_are_caught_by_the_publishers_md5(upstream: Upstream, tmp_path: Path) -> None:
    upstream.server.corrupt(upstream.path(CUDA), offset=12345)
    r = collect_cli(upstream, tmp_path)
    assert r.returncode == 1
    assert "do not match the expected md5" in r.stderr
    assert "md5sum.txt" in r.stderr
    assert not (tmp_path / "bundle" / IN_BUNDLE[CUDA]).exists()


def test_md5_list_missing_is_a_warning_and_recorded(upstream: Upstream, tmp_path: Path) -> None:
    (upstream.root / CUDA_MD5).unlink()
    r = collect_cli(upstream, tmp_path, "--allow-unverified")  # without it: exit 3 (tests/test_collect_traps.py)
    assert r.returncode == 0, r.stderr
    assert "UNVERIFIED: layers/03-cuda/" in r.stderr and "could not be read" in r.stderr
    lock = json.loads((tmp_path / "bundle/airgap.lock.json").read_text())
    cuda = lock["artifacts"][1]
    assert cuda["upstream_digest"] is None
    assert "could not be read" in cuda["upstream_digest_note"]


def test_skipped_layers_are_left_out_and_said_so(upstream: Upstream, tmp_path: Path) -> None:
    m = upstream.manifest(tmp_path, images="[ubuntu:22.04]", models="[org/model]")
    r = collect_cli(upstream, tmp_path, "--skip", "images,models", manifest=m)
    assert r.returncode == 0, r.stderr  # no registry or hub was contacted: both were skipped
    lock = json.loads((tmp_path / "bundle/airgap.lock.json").read_text())
    assert lock["skipped_layers"] == ["images", "models"]
    readme = (tmp_path / "bundle/README.txt").read_text()
    assert "NOT IN THIS BUNDLE (skipped when collecting): images, models" in readme


def test_unknown_layer_in_skip_is_bad_input(upstream: Upstream, tmp_path: Path) -> None:
    r = collect_cli(upstream, tmp_path, "--skip", "imagez")
    assert r.returncode == 2
    assert "unknown layer 'imagez'" in r.stderr


def test_refuses_to_write_into_a_directory_that_is_not_a_bundle(upstream: Upstream, tmp_path: Path) -> None:
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "thesis.pdf").write_bytes(b"precious")
    r = collect_cli(upstream, tmp_path)
    assert r.returncode == 2
    assert "not empty and is not an airgap bundle" in r.stderr
    assert (tmp_path / "bundle" / "thesis.pdf").read_bytes() == b"precious"


def test_files_dropped_from_the_manifest_are_removed(upstream: Upstream, tmp_path: Path) -> None:
    assert collect_cli(upstream, tmp_path).returncode == 0
    m = upstream.manifest(tmp_path, docker="")
    r = collect_cli(upstream, tmp_path, manifest=m)
    assert r.returncode == 0, r.stderr
    assert "removed layers/05-docker/docker-25.0.3.tgz" in r.stdout
    assert not (tmp_path / "bundle/layers/05-docker").exists()
    assert run_verify(tmp_path / "bundle").returncode == 0


def test_mirror_credentials_never_reach_the_bundle_or_output(upstream: Upstream, tmp_path: Path) -> None:
    m = upstream.manifest(tmp_path, mirrors_auth="builder:s3cr3t-pass@")
    r = collect_cli(upstream, tmp_path, manifest=m)
    assert r.returncode == 0, r.stderr
    assert "s3cr3t" not in r.stdout + r.stderr
    for f in (tmp_path / "bundle").rglob("*"):
        if f.is_file() and f.stat().st_size < MiB:
            assert b"s3cr3t" not in f.read_bytes(), f


def test_plan_shows_sizes_from_head_without_downloading(upstream: Upstream, tmp_path: Path) -> None:
    from tests.conftest import run_airgap

    r = run_airgap("plan", str(upstream.manifest(tmp_path)), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    sizes = {row["layer"]: row["size"] for row in data["rows"]}
    assert sizes == {
        k: len(upstream.files[v])
        for k, v in {"driver": DRIVER, "cuda": CUDA, "docker": DOCKER, "files": SCRIPT}.items()
    }
    assert data["total_bytes"] == sum(sizes.values())
    assert {row["digest"] for row in data["rows"]} >= {"none published", "publisher md5 (md5sum.txt)"}
    assert not [q for q in upstream.server.requests if q.method == "GET"]
    text = run_airgap("plan", str(upstream.manifest(tmp_path)))
    assert "NVIDIA publishes no checksum for driver .run files" in text.stderr
    assert "total: 8.0 MiB in 4 files" in text.stdout


def test_plan_exits_3_when_an_artifact_is_missing_upstream(upstream: Upstream, tmp_path: Path) -> None:
    from tests.conftest import run_airgap

    (upstream.root / DOCKER).unlink()
    r = run_airgap("plan", str(upstream.manifest(tmp_path)))
    assert r.returncode == 3
    assert "NOT FOUND" in r.stdout


def test_parallel_downloads_share_one_bundle(upstream: Upstream, tmp_path: Path) -> None:
    m = manifest_mod.load(upstream.manifest(tmp_path))
    report = collect(m, tmp_path / "b", HttpSource(m.mirrors, backoff=0.01), jobs=4, progress_mode="off")
    assert sorted(f.path for f in report.files) == sorted(IN_BUNDLE.values())
    assert report.transferred == sum(len(upstream.files[k]) for k in IN_BUNDLE)


def test_library_raises_integrity_error_for_wrong_pin(upstream: Upstream, tmp_path: Path) -> None:
    m = manifest_mod.load(upstream.manifest(tmp_path, docker=f"{{version: 25.0.3, sha256: '{'1' * 64}'}}"))
    with pytest.raises(Exception) as exc:
        collect(m, tmp_path / "b", HttpSource(m.mirrors, backoff=0.01), progress_mode="off")
    assert any(isinstance(f, IntegrityError) for f in exc.value.failures)  # type: ignore[attr-defined]


@pytest.mark.root
def test_disk_full_is_a_clear_error_and_nothing_is_marked_complete(upstream: Upstream, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs as root)")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        r = collect_cli(upstream, small, "--jobs", "1", manifest=upstream.manifest(tmp_path))
        assert r.returncode == 1
        assert "no space left on the device" in r.stderr
        assert "Traceback" not in r.stderr
        bundle = small / "bundle"
        assert not (bundle / "SHA256SUMS").exists()
        for rel, inside in IN_BUNDLE.items():
            final = bundle / inside
            # Whatever got a final name is complete and correct; the rest are at most *.part files.
            if final.exists():
                assert final.read_bytes() == upstream.files[rel]
        assert not (bundle / IN_BUNDLE[CUDA]).exists()
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_script_entry_is_checked_against_its_pin(upstream: Upstream, tmp_path: Path) -> None:
    assert collect_cli(upstream, tmp_path).returncode == 0
    assert (tmp_path / "bundle" / IN_BUNDLE[SCRIPT]).read_bytes() == upstream.files[SCRIPT]


def test_progress_degrades_to_periodic_lines_when_piped(upstream: Upstream, tmp_path: Path) -> None:
    upstream.server.throttle(upstream.path(CUDA), 4 * MiB)
    env = dict(os.environ, AIRGAP_PROGRESS_INTERVAL="0.2")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "airgap",
            "collect",
            str(upstream.manifest(tmp_path)),
            "-o",
            str(tmp_path / "b"),
            "--no-tool",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("collect: ")]
    assert len(lines) >= 2
    assert "of 8.0 MiB (" in lines[-1]
    assert "ETA" in lines[-1]
    assert "\x1b[" not in r.stderr  # no terminal escapes in a log
