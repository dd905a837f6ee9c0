"""`airgap verify` against bundles damaged the ways transfers damage them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from airgap.verify import verify_bundle
from tests.conftest import MiB, make_bundle, payload, run_airgap

FILES = {
    "layers/02-driver/NVIDIA-Linux-x86_64-550.90.07.run": payload(2 * MiB + 1, 1),
    "layers/03-cuda/cuda_12.4.0_550.54.14_linux.run": payload(3 * MiB, 2),
    "layers/05-docker/docker-25.0.3.tgz": payload(MiB // 2, 3),
    "layers/10-files/check.sh": b"#!/bin/sh\n",
}


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "bundle", FILES)


def test_good_bundle_passes_and_coreutils_agrees(bundle: Path) -> None:
    report = verify_bundle(bundle)
    assert report.ok
    assert report.files == len(FILES) + 2  # the lock and README.txt are covered too
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle).returncode == 0
    r = run_airgap("verify", str(bundle))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK: 6 files")


def test_each_kind_of_damage_is_named(bundle: Path) -> None:
    flipped = bundle / "layers/03-cuda/cuda_12.4.0_550.54.14_linux.run"
    with open(flipped, "r+b") as f:
        f.seek(MiB)
        b = f.read(1)
        f.seek(MiB)
        f.write(bytes([b[0] ^ 1]))
    truncated = bundle / "layers/02-driver/NVIDIA-Linux-x86_64-550.90.07.run"
    with open(truncated, "r+b") as f:
        f.truncate(MiB)
    (bundle / "layers/05-docker/docker-25.0.3.tgz").unlink()
    (bundle / "layers/10-files/extra.bin").write_bytes(b"x")
    (bundle / "layers/03-cuda/cuda.run.part").write_bytes(b"x")

    r = run_airgap("verify", str(bundle), "--json")
    assert r.returncode == 1
    data = json.loads(r.stdout)
    assert data["ok"] is False
    got = {(p["kind"], p["path"]) for p in data["problems"]}
    assert got == {
        ("missing", "layers/05-docker/docker-25.0.3.tgz"),
        ("truncated", "layers/02-driver/NVIDIA-Linux-x86_64-550.90.07.run"),
        ("altered", "layers/03-cuda/cuda_12.4.0_550.54.14_linux.run"),
        ("unexpected", "layers/10-files/extra.bin"),
        ("unexpected", "layers/03-cuda/cuda.run.part"),
    }
    assert data["counts"] == {
        "signature": 0,
        "not-a-file": 0,
        "missing": 1,
        "truncated": 1,
        "altered": 1,
        "unexpected": 2,
        "unreadable": 0,
    }
    truncated_problem = next(p for p in data["problems"] if p["kind"] == "truncated")
    assert truncated_problem["detail"].startswith(f"{MiB} of {2 * MiB + 1} bytes")

    text = run_airgap("verify", str(bundle))
    assert text.returncode == 1
    assert "MISSING    layers/05-docker/docker-25.0.3.tgz" in text.stdout
    assert "FAILED: 5 problem(s)" in text.stderr


def test_a_longer_file_is_altered_not_ok(bundle: Path) -> None:
    with open(bundle / "layers/10-files/check.sh", "ab") as f:
        f.write(b"echo pwned\n")
    (problem,) = verify_bundle(bundle).problems
    assert (problem.kind, problem.path) == ("altered", "layers/10-files/check.sh")


def test_tampered_lock_is_caught(bundle: Path) -> None:
    lock = bundle / "airgap.lock.json"
    lock.write_text(lock.read_text().replace("example.com", "evil.example"))
    (problem,) = verify_bundle(bundle).problems
    assert (problem.kind, problem.path) == ("altered", "airgap.lock.json")


def test_sums_rewritten_to_match_a_swapped_file_disagree_with_the_lock(bundle: Path) -> None:
    # Someone swaps a file and fixes its SHA256SUMS line but cannot fix the lock without changing its digest.
    target = "layers/10-files/check.sh"
    (bundle / target).write_bytes(b"#!/bin/sh\nevil\n")
    import hashlib

    new = hashlib.sha256(b"#!/bin/sh\nevil\n").hexdigest()
    sums = bundle / "SHA256SUMS"
    lines = [f"{new}  {target}" if line.endswith(target) else line for line in sums.read_text().splitlines()]
    sums.write_text("\n".join(lines) + "\n")
    problems = {(p.kind, p.path) for p in verify_bundle(bundle).problems}
    assert ("altered", target) in problems


def test_damaged_sums_file_fails_with_line(bundle: Path) -> None:
    with open(bundle / "SHA256SUMS", "a") as f:
        f.write("garbage line\n")
    r = run_airgap("verify", str(bundle))
    assert r.returncode == 1
    assert "SHA256SUMS:7: not a sha256sum line" in r.stderr
    assert "Traceback" not in r.stderr


def test_not_a_bundle_is_bad_input(tmp_path: Path) -> None:
    r = run_airgap("verify", str(tmp_path))
    assert r.returncode == 2
    assert "not an airgap bundle" in r.stderr
    r = run_airgap("verify", str(tmp_path / "nope"))
    assert r.returncode == 2
    assert "no such directory" in r.stderr


def test_parallel_and_serial_agree(bundle: Path) -> None:
    (bundle / "layers/02-driver/NVIDIA-Linux-x86_64-550.90.07.run").write_bytes(payload(2 * MiB + 1, 99))
    one = verify_bundle(bundle, jobs=1)
    many = verify_bundle(bundle, jobs=4)
    assert [(p.kind, p.path) for p in one.problems] == [(p.kind, p.path) for p in many.problems]
    assert len(one.problems) == 1


def test_an_edited_lock_size_is_blamed_on_the_lock_not_the_good_file(tmp_path: Path) -> None:
    """Someone raises a size in the lock and rewrites the lock's SHA256SUMS line: the file still matches
    SHA256SUMS, so it is not TRUNCATED; the lock is what changed."""
    import hashlib

    bundle = make_bundle(tmp_path / "b", {"layers/09-files/a.bin": b"x" * 1000})
    lock_path = bundle / "airgap.lock.json"
    data = json.loads(lock_path.read_text())
    (art,) = [a for a in data["artifacts"] if a["path"] == "layers/09-files/a.bin"]
    art["size"] = 5000
    lock_path.write_text(json.dumps(data))
    digest = hashlib.sha256(lock_path.read_bytes()).hexdigest()
    sums = (bundle / "SHA256SUMS").read_text().splitlines()
    sums = [f"{digest}  airgap.lock.json" if line.endswith("  airgap.lock.json") else line for line in sums]
    (bundle / "SHA256SUMS").write_text("\n".join(sums) + "\n")

    r = run_airgap("verify", str(bundle), "--json", "--trusted-keys", str(tmp_path / "no-keys"))
    assert r.returncode == 1, r.stdout + r.stderr
    found = {(p["kind"], p["path"]): p["detail"] for p in json.loads(r.stdout)["problems"]}
    assert ("truncated", "layers/09-files/a.bin") not in found
    assert "records 5000 bytes for layers/09-files/a.bin, which has 1000" in found[("altered", "airgap.lock.json")]

    (bundle / "layers/09-files/a.bin").write_bytes(b"x" * 10)  # and a really short file is still TRUNCATED
    r = run_airgap("verify", str(bundle), "--json", "--trusted-keys", str(tmp_path / "no-keys"))
    kinds = {(p["kind"], p["path"]) for p in json.loads(r.stdout)["problems"]}
    assert ("truncated", "layers/09-files/a.bin") in kinds
