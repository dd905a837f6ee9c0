"""A bundle's state while collect runs and after it stops, however it stops: real collects from the local
upstream, killed at a moment the test chooses (the server holds every download until the test lets go)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from tests.conftest import CUDA, DOCKER, DRIVER, IN_BUNDLE, SCRIPT, Upstream, run_airgap, sha
from tests.faulty_server import FaultyHandler, FaultyHTTPServer

JOURNAL = ".airgap-journal.jsonl"
GATED = (DRIVER, CUDA, DOCKER, SCRIPT)


class GatedHandler(FaultyHandler):
    def send_body(self, f: BinaryIO, offset: int, length: int) -> None:
        server = cast(GatedServer, self.owner)
        if self.url_path in server.gated:
            server.entered.set()
            # Held until the test lets go (or the server stops): no file can finish meanwhile.
            while not server.gate.wait(0.05):
                if server.stopping.is_set():
                    return
        super().send_body(f, offset, length)


class GatedServer(FaultyHTTPServer):
    handler_class = GatedHandler

    def __init__(self, root: Path, gated: set[str]) -> None:
        super().__init__(root)
        self.gated = gated
        self.gate = threading.Event()
        self.entered = threading.Event()


@pytest.fixture
def gated(upstream: Upstream) -> Iterator[Upstream]:
    server = GatedServer(upstream.root, {"/" + p for p in GATED})
    with server:
        try:
            yield Upstream(server, upstream.root, upstream.files)
        finally:
            server.gate.set()


def start_collect(manifest: Path, bundle: Path, *args: str, umask: int = -1) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "airgap", "collect", str(manifest), "-o", str(bundle), "--no-tool", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        umask=umask,
        # As from a terminal: a test run started in the background inherits SIGINT ignored, which airgap
        # rightly keeps ignored, so Ctrl-C would never reach it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def collect(manifest: Path, bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_airgap("collect", str(manifest), "-o", str(bundle), "--retries", "1", *args)


def comparable(bundle: Path) -> tuple[list[dict[str, object]], list[str]]:
    """What two collects of the same manifest must agree on: the lock's artifacts, and SHA256SUMS but for
    the lock's and README's lines (they hold the time of collection)."""
    lock = json.loads((bundle / "airgap.lock.json").read_text())
    sums = [
        line
        for line in (bundle / "SHA256SUMS").read_text().splitlines()
        if not line.endswith(("  airgap.lock.json", "  README.txt"))
    ]
    return lock["artifacts"], sums


def assert_finished_and_clean(bundle: Path) -> None:
    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*")}
    hidden = sorted(n for n in names if any(part.startswith(".") for part in n.split("/")))
    assert hidden == [], hidden  # no journal, no temp file, no lock file
    assert not [n for n in names if n.endswith((".part", ".tmp"))]
    assert run_airgap("verify", str(bundle)).returncode == 0
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle).returncode == 0


def stop_before_any_file_finished(up: Upstream, tmp_path: Path, sig: int) -> Path:
    m = up.manifest(tmp_path)
    bundle = tmp_path / "bundle"
    server = cast(GatedServer, up.server)
    proc = start_collect(m, bundle)
    try:
        assert server.entered.wait(60), "no download started"
        proc.send_signal(sig)
        if sig == signal.SIGINT:
            # The run notices between chunks: let the bodies flow so it does so now.
            server.gate.set()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.gate.set()
    return bundle


def test_kill_9_before_any_file_finished_resumes_to_the_same_bundle(gated: Upstream, tmp_path: Path) -> None:
    bundle = stop_before_any_file_finished(gated, tmp_path, signal.SIGKILL)
    # Only the journal says what this is: no lock was written yet, and no file got its final name.
    assert (bundle / JOURNAL).is_file()
    assert not (bundle / "airgap.lock.json").exists()
    assert not (bundle / "SHA256SUMS").exists()
    assert not any((bundle / inside).exists() for inside in IN_BUNDLE.values())
    v = run_airgap("verify", str(bundle))
    assert v.returncode == 1
    assert "did not finish" in v.stderr and "run `airgap collect` again" in v.stderr.lower().replace("\n", " ")
    assert "ALTERED" not in v.stdout + v.stderr and "tamper" not in (v.stdout + v.stderr).lower()

    m = gated.manifest(tmp_path)
    r = collect(m, bundle)
    assert r.returncode == 0, r.stderr
    assert collect(m, tmp_path / "clean").returncode == 0
    assert comparable(bundle) == comparable(tmp_path / "clean")
    assert_finished_and_clean(bundle)


def test_ctrl_c_leaves_a_bundle_in_progress_that_resumes(gated: Upstream, tmp_path: Path) -> None:
    bundle = stop_before_any_file_finished(gated, tmp_path, signal.SIGINT)
    assert (bundle / JOURNAL).is_file()
    assert not (bundle / "SHA256SUMS").exists()
    m = gated.manifest(tmp_path)
    r = collect(m, bundle)
    assert r.returncode == 0, r.stderr
    assert collect(m, tmp_path / "clean").returncode == 0
    assert comparable(bundle) == comparable(tmp_path / "clean")
    assert_finished_and_clean(bundle)


def test_failed_recollect_is_unfinished_not_altered(upstream: Upstream, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    assert collect(upstream.manifest(tmp_path), bundle).returncode == 0
    pin = sha(upstream.files[SCRIPT])
    missing = f"\n  - url: https://example.com/tools/check.sh\n    sha256: {pin}\n  - url: https://example.com/nope.sh"
    r = collect(upstream.manifest(tmp_path, files=missing), bundle)
    assert r.returncode == 3
    assert not (bundle / "SHA256SUMS").exists()
    assert "removed SHA256SUMS" in r.stdout
    v = run_airgap("verify", str(bundle))
    assert v.returncode == 1
    assert "this collection did not finish" in v.stderr
    assert "ALTERED" not in v.stdout + v.stderr and "tamper" not in (v.stdout + v.stderr).lower()
    # Fixed, the same bundle finishes.
    r = collect(upstream.manifest(tmp_path), bundle)
    assert r.returncode == 0, r.stderr
    assert_finished_and_clean(bundle)


def test_a_manifest_of_another_name_is_refused_unless_forced(upstream: Upstream, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    assert collect(upstream.manifest(tmp_path), bundle).returncode == 0
    before = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    other = upstream.manifest(tmp_path, docker="")
    other.write_text(other.read_text().replace("name: test-stack", "name: other-stack"))
    r = collect(other, bundle)
    assert r.returncode == 2
    assert "'test-stack'" in r.stderr and "'other-stack'" in r.stderr and "--force" in r.stderr
    assert {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == before  # nothing touched
    r = collect(other, bundle, "--force")
    assert r.returncode == 0, r.stderr
    assert f"removed {IN_BUNDLE[DOCKER]} (no longer in the manifest)" in r.stdout
    assert json.loads((bundle / "airgap.lock.json").read_text())["name"] == "other-stack"
    assert_finished_and_clean(bundle)


def test_removals_are_shown_when_the_run_fails(upstream: Upstream, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    assert collect(upstream.manifest(tmp_path), bundle).returncode == 0
    upstream.server.not_found(upstream.path(CUDA))
    (bundle / IN_BUNDLE[CUDA]).unlink()  # so it must be fetched, and fails
    r = collect(upstream.manifest(tmp_path, docker=""), bundle)
    assert r.returncode == 3
    assert f"removed {IN_BUNDLE[DOCKER]} (no longer in the manifest)" in r.stdout


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_modes_follow_the_umask(upstream: Upstream, tmp_path: Path, umask: int, file_mode: int, dir_mode: int) -> None:
    bundle = tmp_path / "bundle"
    proc = start_collect(upstream.manifest(tmp_path), bundle, umask=umask)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    for p in [bundle, *bundle.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (dir_mode if p.is_dir() else file_mode), f"{p}: {oct(mode)}"


def test_a_second_collect_into_the_same_bundle_is_refused_at_once(gated: Upstream, tmp_path: Path) -> None:
    m = gated.manifest(tmp_path)
    bundle = tmp_path / "bundle"
    server = cast(GatedServer, gated.server)
    first = start_collect(m, bundle)
    try:
        assert server.entered.wait(60), "no download started"
        second = collect(m, bundle)  # while the first is held mid-download
        assert second.returncode == 2
        assert "another `airgap collect` is writing this bundle" in second.stderr
        assert f"pid {first.pid}, started " in second.stderr
        server.gate.set()
        _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
    finally:
        server.gate.set()
        if first.poll() is None:
            first.kill()
            first.wait()
    assert_finished_and_clean(bundle)


def test_leftover_temp_files_are_cleaned_and_named(upstream: Upstream, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    assert collect(upstream.manifest(tmp_path), bundle).returncode == 0
    (bundle / ".airgap.lock.json.k3j2h1x.tmp").write_bytes(b"{half")
    r = collect(upstream.manifest(tmp_path), bundle)
    assert r.returncode == 0, r.stderr
    assert "removed .airgap.lock.json.k3j2h1x.tmp" in r.stdout
    assert_finished_and_clean(bundle)


def test_journal_lines_resume_a_bundle_with_no_lock(upstream: Upstream, tmp_path: Path) -> None:
    """What a kill after some files finished leaves: their journal lines make the next run reuse them."""
    bundle = tmp_path / "bundle"
    assert collect(upstream.manifest(tmp_path), bundle).returncode == 0
    lock = json.loads((bundle / "airgap.lock.json").read_text())
    for name in ("airgap.lock.json", "SHA256SUMS", "README.txt"):
        (bundle / name).unlink()
    lines = [json.dumps({"run": {"name": "test-stack", "pid": 1, "started": "x"}})]
    lines += [json.dumps({"artifact": a}) for a in lock["artifacts"]]
    (bundle / JOURNAL).write_text("\n".join(lines) + '\n{"artifact": {"torn')
    upstream.server.reset_stats()
    r = collect(upstream.manifest(tmp_path), bundle, "--json")
    assert r.returncode == 0, r.stderr
    assert {f["status"] for f in json.loads(r.stdout)["files"]} == {"present"}
    assert not [q for q in upstream.server.requests if q.method == "GET" and "md5sum" not in q.path]
    assert_finished_and_clean(bundle)


def test_umask_is_read_without_changing_it() -> None:
    from airgap.fsutil import current_umask

    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        assert current_umask() == 0o027
    finally:
        os.umask(old)
