"""`airgap split` killed with SIGKILL at any moment loses nothing: the bundle meanwhile says it is being split
(never "altered"), and the same command then finishes it, equal byte for byte to an uninterrupted split.

The moments are seen on the filesystem, not read from a clock: the marker appearing, SHA256SUMS going, the
first *.tmp, the k-th part renamed into place, the lock rewritten, an old file removed, the marker going;
plus kills after a seeded number of polls, which land wherever the split happens to be. Whatever moment a
kill lands on, the assertions are the same, so the outcome does not depend on timing.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import MiB, make_bundle, payload, run_airgap

FILES = {
    "layers/02-driver/NVIDIA-Linux-x86_64-550.90.07.run": payload(3 * MiB + 5, 1),
    "layers/03-cuda/cuda_12.4.0_550.54.14_linux.run": payload(2 * MiB + 7, 2),
    "layers/10-files/model.bin": payload(2 * MiB, 3),
    "layers/10-files/check.sh": b"#!/bin/sh\n",
}
OLD = "layers/02-driver/NVIDIA-Linux-x86_64-550.90.07.run"


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".airgap-dirlock")
    }


def split_cmd(bundle: Path, size: str) -> list[str]:
    return [sys.executable, "-m", "airgap", "split", str(bundle), "--max-file-size", size]


def kill_when(bundle: Path, size: str, seen: Callable[[], bool]) -> bool:
    """Run split and SIGKILL it the first time `seen()` holds; True when it was killed before it ended."""
    proc = subprocess.Popen(split_cmd(bundle, size), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None:
            if seen():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def moments(bundle: Path) -> dict[str, Callable[[], bool]]:
    lock0 = (bundle / "airgap.lock.json").read_bytes()
    readme0 = (bundle / "README.txt").read_bytes()
    marker = bundle / ".airgap-split.json"
    state = {"marker_seen": False}

    def files(pattern: str) -> list[Path]:
        return list((bundle / "layers").rglob(pattern))

    def marker_gone() -> bool:
        if marker.exists():
            state["marker_seen"] = True
            return False
        return state["marker_seen"]

    def lock_changed() -> bool:
        try:
            return (bundle / "airgap.lock.json").read_bytes() != lock0
        except OSError:
            return False

    def readme_changed() -> bool:
        try:
            return (bundle / "README.txt").read_bytes() != readme0
        except OSError:
            return False

    found: dict[str, Callable[[], bool]] = {
        "marker written": marker.exists,
        "SHA256SUMS removed": lambda: not (bundle / "SHA256SUMS").exists(),
        "first .tmp": lambda: bool(files("*.tmp")),
        "lock rewritten": lock_changed,
        "old whole file removed": lambda: not (bundle / OLD).exists(),
        "README rewritten": readme_changed,
        "marker removed": marker_gone,
    }
    for k in (1, 2, 3, 5, 7):
        found[f"{k} parts in place"] = lambda k=k: len(files("*.[0-9][0-9][0-9]")) >= k  # type: ignore[misc]
    return found


def after_polls(n: int) -> Callable[[], bool]:
    left = [n]

    def due() -> bool:
        left[0] -= 1
        return left[0] < 0

    return due


def check_meanwhile(bundle: Path) -> None:
    """A bundle whose split was killed is never reported as damaged or tampered with."""
    r = run_airgap("verify", str(bundle))
    said = r.stdout + r.stderr
    assert "Traceback" not in said and "ALTERED" not in said and "tampering" not in said, said
    assert r.returncode in (0, 1), said
    if r.returncode == 1:
        assert "a split of this bundle did not finish" in said or "left by an interrupted `airgap split`" in said, said


def kill_and_resume(bundle: Path, size: str, moment: str, expected: dict[str, bytes]) -> Path:
    """Kill a split of `bundle` to `size` at `moment`, check what it says meanwhile, run it again to the end."""
    kill_when(bundle, size, moments(bundle)[moment])
    check_meanwhile(bundle)
    r = run_airgap("split", str(bundle), "--max-file-size", size)
    assert r.returncode == 0, r.stdout + r.stderr
    assert tree(bundle) == expected
    return bundle


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    """An original bundle, and the same split without interruption at 1MiB and then at 2MiB."""
    work = tmp_path_factory.mktemp("split-ref")
    original = make_bundle(work / "b", FILES)
    refs = {"original": tree(original)}
    done = work / "split"
    shutil.copytree(original, done)
    for size in ("1MiB", "2MiB"):
        r = run_airgap("split", str(done), "--max-file-size", size)
        assert r.returncode == 0, r.stderr
        refs[size] = tree(done)
    return refs


def fresh(tmp_path: Path, files: dict[str, bytes]) -> Path:
    bundle = tmp_path / "b"
    for rel, data in files.items():
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        (bundle / rel).write_bytes(data)
    return bundle


@pytest.mark.parametrize(
    "moment",
    [
        "marker written",
        "SHA256SUMS removed",
        "first .tmp",
        "1 parts in place",
        "3 parts in place",
        "7 parts in place",
        "lock rewritten",
        "old whole file removed",
        "README rewritten",
        "marker removed",
    ],
)
def test_a_split_killed_at_a_moment_resumes_to_the_same_bundle(
    moment: str, reference: dict[str, dict[str, bytes]], tmp_path: Path
) -> None:
    bundle = kill_and_resume(fresh(tmp_path, reference["original"]), "1MiB", moment, reference["1MiB"])
    assert run_airgap("verify", str(bundle)).returncode == 0


@pytest.mark.parametrize("moment", ["first .tmp", "lock rewritten", "1 parts in place", "README rewritten"])
def test_a_resplit_to_other_parts_killed_resumes_too(
    moment: str, reference: dict[str, dict[str, bytes]], tmp_path: Path
) -> None:
    """1MiB parts to 2MiB parts share names (NAME.001): the split joins first, then splits again; a kill in
    either step loses nothing."""
    kill_and_resume(fresh(tmp_path, reference["1MiB"]), "2MiB", moment, reference["2MiB"])


def test_kills_in_a_row_at_seeded_points_then_a_rerun(reference: dict[str, dict[str, bytes]], tmp_path: Path) -> None:
    """Five kills in a row, each after a seeded number of polls (wherever that lands), then one run to the end."""
    bundle = fresh(tmp_path, reference["original"])
    rng = random.Random(int(os.environ.get("AIRGAP_TEST_SEED", "13")))
    for _ in range(5):
        kill_when(bundle, "1MiB", after_polls(rng.randint(0, 3000)))
        check_meanwhile(bundle)
    r = run_airgap("split", str(bundle), "--max-file-size", "1MiB")
    assert r.returncode == 0, r.stdout + r.stderr
    assert tree(bundle) == reference["1MiB"]


def test_a_lock_changed_while_the_split_was_interrupted_is_refused(
    reference: dict[str, dict[str, bytes]], tmp_path: Path
) -> None:
    """Resuming writes SHA256SUMS from the lock: only a lock the split itself verified or wrote is trusted."""
    bundle = fresh(tmp_path, reference["original"])
    assert kill_when(bundle, "1MiB", lambda: not (bundle / "SHA256SUMS").exists())
    lock = bundle / "airgap.lock.json"
    lock.write_bytes(lock.read_bytes().replace(b'"name": "t"', b'"name": "evil"'))
    r = run_airgap("split", str(bundle), "--max-file-size", "1MiB")
    assert r.returncode == 1 and "changed meanwhile" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (bundle / "SHA256SUMS").exists()


def test_verify_meanwhile_gives_the_command_that_finishes_it(
    reference: dict[str, dict[str, bytes]], tmp_path: Path
) -> None:
    bundle = fresh(tmp_path, reference["original"])
    assert kill_when(bundle, "1MiB", lambda: bool(list((bundle / "layers").rglob("*.tmp"))))
    r = run_airgap("verify", str(bundle))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"airgap split {bundle} --max-file-size 1MiB" in r.stderr, r.stderr


def test_resuming_never_removes_through_a_directory_swapped_for_a_link(
    reference: dict[str, dict[str, bytes]], tmp_path: Path
) -> None:
    """An interrupted split's leftovers are removed by name; a layer directory made a link to elsewhere
    (holding a file of the artifact's name) is refused, and that file stays."""
    bundle = fresh(tmp_path, reference["original"])
    assert kill_when(bundle, "1MiB", lambda: not (bundle / "SHA256SUMS").exists())
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(bundle / "layers/10-files"), elsewhere)
    (elsewhere / "model.bin.001").write_bytes(b"someone else's file\n")
    (bundle / "layers/10-files").symlink_to(elsewhere)
    r = run_airgap("split", str(bundle), "--max-file-size", "1MiB")
    assert r.returncode == 1 and "is a link or lies outside the bundle" in r.stdout + r.stderr, r.stdout + r.stderr
    assert (elsewhere / "model.bin.001").read_bytes() == b"someone else's file\n"
    assert (elsewhere / "model.bin").exists()
