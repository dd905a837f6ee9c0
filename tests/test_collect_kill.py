"""kill -9 at moments a seeded random picks, then a re-run: the bundle always equals a clean collect.

Every kill lands at a point the test observes, never after a delay: the local upstream holds bodies
until the test lets go (so "a file is half downloaded" or "no file has finished" is a fact when the kill
comes), the journal is read for how many files this run has recorded, and a small wrapper pauses the real
`airgap` process just before (or just after) its k-th rename, or before it renames the lock, README or
SHA256SUMS into place, and says so with a marker file. A paused process is killed exactly as any other.

Also here: `airgap split` holds the same directory lock as collect, so neither runs while the other
writes the bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from tests.conftest import MiB, payload, run_airgap, sha, write_tree
from tests.faulty_server import FaultyHandler, FaultyHTTPServer

SEED = 13  # the number; any fixed value makes the "random moments" the same on every run
FILES = 30
BIG = (0, 3, 11, 22, 29)  # multi-MiB files, so a kill can land mid-download; the rest are tiny
HOLD = 256 << 10  # bytes of a big file sent per response before the server holds the body
JOBS = "6"  # more workers than big files: held bodies never block the tiny ones
JOURNAL = ".airgap-journal.jsonl"
WAIT = 120.0  # generous: only a hung run ever waits this long
SPLIT = "1MiB"

# Runs `airgap` as `python -m airgap` does, pausing the process at a rename: before the k-th one
# (KILLPOINT_BEFORE=k), right after it (KILLPOINT_AFTER=k), before the one that puts a file of that name
# in place (KILLPOINT_TO=name) or right after it (KILLPOINT_AFTER_TO=name). Once paused it writes
# KILLPOINT_MARK and waits for KILLPOINT_GO (or its SIGKILL); every rename after that waits too, so
# nothing moves on behind the test's back.
WRAPPER = r"""
import os, runpy, sys, threading, time
env = os.environ
before, after = int(env.get("KILLPOINT_BEFORE", "0")), int(env.get("KILLPOINT_AFTER", "0"))
to, after_to = env.get("KILLPOINT_TO", ""), env.get("KILLPOINT_AFTER_TO", "")
mark, go = env.get("KILLPOINT_MARK", ""), env.get("KILLPOINT_GO", "")
mutex, state = threading.Lock(), {"n": 0, "paused": False}
def pause(what):
    with mutex:
        first = not state["paused"]
        state["paused"] = True
    if first and mark:
        with open(mark + ".tmp", "w") as f:
            f.write(what)
        real_replace(mark + ".tmp", mark)
    while not (go and os.path.exists(go)):
        time.sleep(0.02)
def hooked(real):
    def rename(src, dst, *a, **kw):
        with mutex:
            state["n"] += 1
            n = state["n"]
        name = os.path.basename(os.fspath(dst))
        if state["paused"] or n == before or (to and name == to):
            pause(f"before rename {n} to {name}")
        out = real(src, dst, *a, **kw)
        if n == after or (after_to and name == after_to):
            pause(f"after rename {n} to {name}")
        return out
    return rename
real_replace = os.replace
os.replace, os.rename = hooked(os.replace), hooked(os.rename)
runpy.run_module("airgap", run_name="__main__", alter_sys=True)
"""


# --- the upstream: 30 files, bodies held on the test's word ------------------------------------------


class HoldingHandler(FaultyHandler):
    def send_body(self, f: BinaryIO, offset: int, length: int) -> None:
        server = cast(HoldingServer, self.owner)
        gate, hold_all, hold_big = server.gate, server.hold_all, server.hold_big
        first = 0
        if self.url_path in server.big and hold_big is not None:
            first = min(length, hold_big)
        elif not hold_all:
            super().send_body(f, offset, length)
            return
        if first:
            super().send_body(f, offset, first)
            self.wfile.flush()
        if first < length:
            server.note_held()
            while not gate.wait(0.05):
                if server.stopping.is_set():
                    return  # a short body: the client sees the connection cut
            super().send_body(f, offset + first, length - first)


class HoldingServer(FaultyHTTPServer):
    """Per round: `hold_big` bytes of each big file per response, then the body waits for the round's gate;
    with `hold_all`, every other body waits for it before its first byte."""

    handler_class = HoldingHandler

    def __init__(self, root: Path, big: set[str]) -> None:
        super().__init__(root)
        self.big = big
        self.gate = threading.Event()
        self.hold_all = False
        self.hold_big: int | None = None
        self._held = 0
        self._held_lock = threading.Lock()

    def new_round(self, hold_big: int | None = None, hold_all: bool = False) -> None:
        """Let every body of the last round go (its client is dead or done) and hold anew."""
        old, self.gate = self.gate, threading.Event()
        self.hold_big, self.hold_all = hold_big, hold_all
        with self._held_lock:
            self._held = 0
        old.set()

    def note_held(self) -> None:
        with self._held_lock:
            self._held += 1

    @property
    def held(self) -> int:
        with self._held_lock:
            return self._held


@dataclass
class Upstream:
    server: HoldingServer
    files: dict[str, bytes]
    manifest: Path


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    tmp = tmp_path_factory.mktemp("kill-upstream")
    files = {}
    for i in range(FILES):
        size = 2 * MiB + 4099 * i if i in BIG else 50 + 97 * i
        files[f"pub/f{i:02d}.bin"] = payload(size, 1000 + i)
    write_tree(tmp / "root", files)
    server = HoldingServer(tmp / "root", {f"/pub/f{i:02d}.bin" for i in BIG})
    with server:
        lines = ["name: kill-loop", 'target: {os: ubuntu-22.04, arch: amd64, python: "3.10"}', "files:"]
        for i, (rel, data) in enumerate(files.items()):
            lines.append(f"  - url: https://example.com/{rel}")
            # Pinned and unpinned both: a pinned file is found present by its pin, an unpinned one only
            # through what the journal or the last lock recorded for its URL.
            if i % 2 == 0:
                lines.append(f"    sha256: {sha(data)}")
        lines += ["mirrors:", f"  https://example.com: {server.url}/"]
        manifest = tmp / "manifest.yaml"
        manifest.write_text("\n".join(lines) + "\n")
        try:
            yield Upstream(server, files, manifest)
        finally:
            server.gate.set()


def collect_args(up: Upstream, bundle: Path, split: bool) -> list[str]:
    args = ["collect", str(up.manifest), "-o", str(bundle), "--no-tool", "--jobs", JOBS, "--retries", "1"]
    return args + (["--max-file-size", SPLIT] if split else [])


@pytest.fixture(scope="module")
def clean(up: Upstream, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """A clean collect of the manifest, whole and split: what every killed-and-resumed bundle must equal."""
    up.server.new_round()
    out = {}
    for split in (False, True):
        bundle = tmp_path_factory.mktemp("clean") / "bundle"
        r = run_airgap(*collect_args(up, bundle, split))
        assert r.returncode == 0, r.stderr
        out[split] = bundle
    return out


# --- kill points ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KillPoint:
    kind: str  # start, nothing-finished, journal, before-rename, after-rename, before-name, after-name
    n: int = 0
    name: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.name or self.n}"


def kill_points(rng: random.Random, renames: int) -> list[KillPoint]:
    """One of each kind, their numbers drawn from `rng`: the moments a kill -9 must survive."""
    return [
        KillPoint("start"),
        KillPoint("nothing-finished"),
        KillPoint("journal", rng.randint(1, FILES - len(BIG))),
        KillPoint("before-rename", rng.randint(1, renames)),
        KillPoint("after-rename", rng.randint(1, renames)),
        # A pinned file renamed into place, its `.part.meta` not yet removed: found complete by its pin,
        # so never fetched again, and the record must still not outlive the run.
        KillPoint("after-name", name="f00.bin"),
        KillPoint("before-name", name="airgap.lock.json"),
        KillPoint("before-name", name="README.txt"),
        KillPoint("before-name", name="SHA256SUMS"),  # the journal is gone, the lock says complete
    ]


def wait_until(what: str, cond: Callable[[], bool], proc: subprocess.Popen[bytes]) -> bool:
    """Poll `cond` until it holds (True) or the run ended by itself (False). Only a hang hits the deadline."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc.poll() is not None:
            return cond()
        time.sleep(0.01)
    raise AssertionError(f"waited {WAIT:.0f} s for {what}")


def journal_lines(bundle: Path, pid: int | None) -> int:
    """Files the run `pid` (None: every run) has recorded in the journal so far."""
    try:
        data = (bundle / JOURNAL).read_bytes()
    except FileNotFoundError:
        return 0
    count, mine = 0, pid is None
    for line in data.split(b"\n"):
        try:
            raw = json.loads(line)
        except ValueError:
            continue  # a torn last line, or the blank one a resumed run starts with
        if "run" in raw and pid is not None:
            mine, count = raw["run"]["pid"] == pid, 0
        elif "artifact" in raw and mine:
            count += 1
    return count


def parts_with(bundle: Path, least: int) -> list[Path]:
    if not bundle.is_dir():
        return []
    found = []
    for p in bundle.rglob("*.part"):
        try:
            if p.stat().st_size >= least:
                found.append(p)
        except FileNotFoundError:
            continue  # finished meanwhile
    return found


def kill_at(up: Upstream, bundle: Path, split: bool, point: KillPoint, tmp: Path) -> bool:
    """Start a collect into `bundle`, kill -9 it at `point`. True when the kill landed at the point (False:
    the run had finished by itself first, which only a point past this run's last rename allows)."""
    server = up.server
    server.new_round(
        hold_big=HOLD if point.kind in ("nothing-finished", "journal") else None,
        hold_all=point.kind == "nothing-finished",
    )
    mark = tmp / f"paused-{point.kind}-{point.n}{point.name}"
    mark.unlink(missing_ok=True)
    env = dict(os.environ, KILLPOINT_MARK=str(mark))
    if point.kind == "before-rename":
        env["KILLPOINT_BEFORE"] = str(point.n)
    elif point.kind == "after-rename":
        env["KILLPOINT_AFTER"] = str(point.n)
    elif point.kind == "before-name":
        env["KILLPOINT_TO"] = point.name
    elif point.kind == "after-name":
        env["KILLPOINT_AFTER_TO"] = point.name
    log = tmp / "killed.log"
    with open(log, "w") as sink:  # a file, not a pipe: a full pipe would stall the run
        proc = subprocess.Popen(
            [sys.executable, "-c", WRAPPER, *collect_args(up, bundle, split)], stdout=sink, stderr=sink, env=env
        )
    try:
        if point.kind == "start":
            landed = True
        elif point.kind == "nothing-finished":
            # A big body half sent and held, the others held before their first byte: nothing can finish.
            landed = wait_until(
                "a half-downloaded file", lambda: server.held > 0 and bool(parts_with(bundle, HOLD)), proc
            )
        elif point.kind == "journal":
            landed = wait_until(f"{point.n} journal lines", lambda: journal_lines(bundle, proc.pid) >= point.n, proc)
        else:
            landed = wait_until(f"the pause at {point}", mark.exists, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.gate.set()
    err = log.read_text()
    if not landed:
        # Ended by itself: it must have succeeded (a failure is a bug, not a kill point).
        assert proc.returncode == 0, err
    else:
        assert proc.returncode == -signal.SIGKILL, err
    return landed


# --- what "equal to a clean collect" means ----------------------------------------------------------------

# The only run-specific fields: when the lock was written, and what repeats it (README, SHA256SUMS lines).
CREATED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def snapshot(bundle: Path) -> dict[str, object]:
    """Everything two collects of the same manifest must agree on, byte for byte where it can be."""
    tree: dict[str, object] = {}
    for p in sorted(bundle.rglob("*")):
        rel = p.relative_to(bundle).as_posix()
        st = p.lstat()
        if stat.S_ISDIR(st.st_mode):
            tree[rel] = ("dir", stat.S_IMODE(st.st_mode))
        elif rel in ("airgap.lock.json", "README.txt", "SHA256SUMS"):
            tree[rel] = ("file", stat.S_IMODE(st.st_mode))
        else:
            tree[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    lock = json.loads((bundle / "airgap.lock.json").read_text())
    assert lock.pop("status") == "complete"
    assert CREATED.fullmatch(lock.pop("created"))
    readme = CREATED.sub("CREATED", (bundle / "README.txt").read_text())
    sums = sorted(
        line
        for line in (bundle / "SHA256SUMS").read_text().splitlines()
        if not line.endswith(("  airgap.lock.json", "  README.txt"))
    )
    return {"tree": tree, "lock": lock, "readme": readme, "sums": sums}


def assert_equal_to_clean(bundle: Path, clean: Path) -> None:
    got, want = snapshot(bundle), snapshot(clean)
    assert sorted(cast(dict[str, object], got["tree"])) == sorted(cast(dict[str, object], want["tree"]))
    assert got == want
    litter = [p for p in bundle.rglob("*") if p.name.startswith(".") or p.name.endswith((".part", ".meta", ".tmp"))]
    assert litter == []
    v = run_airgap("verify", str(bundle))
    assert v.returncode == 0, v.stdout + v.stderr
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle).returncode == 0


def assert_unfinished_not_damaged(bundle: Path) -> None:
    """What a killed run leaves is a bundle in progress: never reported as altered or tampered with."""
    v = run_airgap("verify", str(bundle))
    said = v.stdout + v.stderr
    assert "ALTERED" not in said and "tamper" not in said.lower()
    if v.returncode != 0:
        assert "did not finish" in said, said


def finish(up: Upstream, bundle: Path, split: bool) -> None:
    up.server.new_round()
    r = run_airgap(*collect_args(up, bundle, split))
    assert r.returncode == 0, r.stdout + r.stderr


RNG = random.Random(SEED)
# Drawn once, at import, from the fixed seed: the same points on every run, printed in the test ids.
# A fresh run renames each file's .part.meta and .part into place, then the lock, README and SHA256SUMS;
# a drawn k beyond what the run does would never fire (the single-kill test says so).
RENAMES_BOUND = 2 * FILES + 3
POINTS = kill_points(RNG, RENAMES_BOUND)
# One bundle killed again and again: first before any file finished, then at every other kind of point,
# with numbers of their own, in a drawn order, one kill right after start among them.
CHAIN = kill_points(RNG, RENAMES_BOUND)[2:]
RNG.shuffle(CHAIN)
CHAIN = [KillPoint("nothing-finished"), *CHAIN]
CHAIN.insert(RNG.randint(2, len(CHAIN)), KillPoint("start"))


@pytest.mark.parametrize("point", POINTS, ids=str)
def test_one_kill_then_a_rerun_equals_a_clean_collect(
    up: Upstream, clean: dict[bool, Path], tmp_path: Path, point: KillPoint
) -> None:
    bundle = tmp_path / "bundle"
    landed = kill_at(up, bundle, False, point, tmp_path)
    assert landed, f"the kill at {point} never came: the run finished first"
    if point.kind == "nothing-finished":
        # The kill came before any file finished: only partial downloads, and no line for any file.
        assert journal_lines(bundle, None) == 0 and (bundle / JOURNAL).is_file()
        names = [p.name for p in (bundle / "layers/10-files").iterdir()]
        assert names and all(n.endswith((".part", ".part.meta")) or n.endswith(".tmp") for n in names), names
        assert parts_with(bundle, HOLD)
    if point.kind != "start":
        assert not (bundle / "SHA256SUMS").exists()
        assert_unfinished_not_damaged(bundle)
    finish(up, bundle, False)
    assert_equal_to_clean(bundle, clean[False])


@pytest.mark.parametrize("chain", [CHAIN], ids=lambda chain: ",".join(map(str, chain)))
def test_many_kills_in_a_row_then_a_rerun_equals_a_clean_collect(
    up: Upstream, clean: dict[bool, Path], tmp_path: Path, chain: list[KillPoint]
) -> None:
    """Each run killed in turn resumes what the last one left, split for a DVD (resplit adds renames)."""
    bundle = tmp_path / "bundle"
    for point in chain:
        kill_at(up, bundle, True, point, tmp_path)  # what each kill leaves is checked by the single-kill test
    finish(up, bundle, True)
    assert_equal_to_clean(bundle, clean[True])


# --- split takes the bundle's lock --------------------------------------------------------------------


def tree_bytes(bundle: Path) -> dict[str, bytes]:
    return {p.relative_to(bundle).as_posix(): p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file()}


def test_split_is_refused_while_the_lock_is_held(up: Upstream, clean: dict[bool, Path], tmp_path: Path) -> None:
    from airgap.journal import DirectoryLock

    bundle = tmp_path / "bundle"
    subprocess.run(["cp", "-a", str(clean[False]), str(bundle)], check=True)
    before = tree_bytes(bundle)
    # flock belongs to an open file description: this process holding it locks out any other.
    with DirectoryLock(bundle):
        r = run_airgap("split", str(bundle), "--max-file-size", SPLIT)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"pid {os.getpid()}" in r.stderr and "holds the lock on this bundle" in r.stderr
    assert "Traceback" not in r.stderr
    assert tree_bytes(bundle) == before
    # Once let go, the same split goes through.
    r = run_airgap("split", str(bundle), "--max-file-size", SPLIT)
    assert r.returncode == 0, r.stderr
    assert run_airgap("verify", str(bundle)).returncode == 0


def paused(args: list[str], tmp: Path, **points: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """`airgap ARGS`, paused at a rename until the file `go` (returned, with the run's log) is created."""
    go, mark, log = tmp / "go", tmp / "paused", tmp / "paused.log"
    env = dict(os.environ, KILLPOINT_MARK=str(mark), KILLPOINT_GO=str(go), **points)
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *args], stdout=sink, stderr=sink, env=env)
    assert wait_until("the pause", mark.exists, proc), log.read_text()
    return proc, go, log


def test_split_is_refused_while_a_collect_writes_the_bundle(
    up: Upstream, clean: dict[bool, Path], tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    subprocess.run(["cp", "-a", str(clean[False]), str(bundle)], check=True)
    up.server.new_round()
    collect, go, log = paused(collect_args(up, bundle, False), tmp_path, KILLPOINT_TO="airgap.lock.json")
    try:
        before = tree_bytes(bundle)
        r = run_airgap("split", str(bundle), "--max-file-size", SPLIT)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "another `airgap collect` is writing this bundle" in r.stderr
        assert f"pid {collect.pid}, started " in r.stderr
        assert tree_bytes(bundle) == before
        go.touch()
        assert collect.wait(timeout=WAIT) == 0, log.read_text()
    finally:
        if collect.poll() is None:
            collect.kill()
            collect.wait()
    assert_equal_to_clean(bundle, clean[False])


def test_collect_is_refused_while_split_rewrites_the_bundle(
    up: Upstream, clean: dict[bool, Path], tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    subprocess.run(["cp", "-a", str(clean[False]), str(bundle)], check=True)
    # Paused at its first rename: the first part of the first big file about to take its name.
    split, go, log = paused(["split", str(bundle), "--max-file-size", SPLIT], tmp_path, KILLPOINT_BEFORE="1")
    try:
        before = tree_bytes(bundle)
        up.server.new_round()
        r = run_airgap(*collect_args(up, bundle, False))
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"`airgap split` is rewriting this bundle (pid {split.pid})" in r.stderr
        assert tree_bytes(bundle) == before
        go.touch()
        assert split.wait(timeout=WAIT) == 0, log.read_text()
    finally:
        if split.poll() is None:
            split.kill()
            split.wait()
    # The split bundle is what collect with the same size makes.
    assert_equal_to_clean(bundle, clean[True])
