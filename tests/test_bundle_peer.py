"""bundle_peer.py, the script `fleet install` runs on the hosts to fan the bundle out: a seed serves the files
SHA256SUMS lists and nothing else; a host fetches what its copy lacks from the first URL that has it, and
keeps a file only when its sha256 is the listed one. Run here as on a host: `python3 bundle_peer.py ...`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from airgap.fleet.playbook import PEER, playbook_path
from airgap.localserver import LocalHTTPServer
from tests.conftest import make_bundle
from tests.registry_fixtures import free_port

BIG = os.urandom(3 << 20)
FILES = {"layers/10-files/a.txt": b"alpha\n", "layers/10-files/big.bin": BIG, "layers/10-files/sub/c": b"c" * 999}


def peer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(playbook_path(PEER)), *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "bundle", FILES)


def copy_without_artifacts(bundle: Path, dest: Path) -> Path:
    """What the control node sends a fetching host: everything but the artifacts (SHA256SUMS, the lock...)."""
    shutil.copytree(bundle, dest, ignore=lambda d, names: [n for n in names if "10-files" in d])
    return dest


@pytest.fixture
def seed(bundle: Path, tmp_path: Path) -> Iterator[str]:
    """A seed serving the bundle on 127.0.0.1, stopped by the fixture (it runs in the background)."""
    port = free_port()
    pidfile = tmp_path / "peer.pid"
    r = peer("serve", str(bundle), "--bind", "127.0.0.1", "--port", str(port), "--pidfile", str(pidfile))
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["ok"] and pidfile.is_file()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        stopped = peer("stop", "--pidfile", str(pidfile))
        assert stopped.returncode == 0, stopped.stderr
        assert not pidfile.exists()


def test_a_host_fetches_every_artifact_from_a_seed_and_the_copy_checks(bundle: Path, seed: str, tmp_path: Path) -> None:
    host = copy_without_artifacts(bundle, tmp_path / "host")
    r = peer("fetch", str(host), seed)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(r.stdout)
    assert summary["files"] == 3 and summary["from"] == {seed: 3} and summary["failed"] == []
    for rel, data in FILES.items():
        assert (host / rel).read_bytes() == data
    assert subprocess.run(["sha256sum", "--quiet", "--strict", "-c", "SHA256SUMS"], cwd=host).returncode == 0
    assert not list(host.rglob("*.part"))
    # Run again: the copy is complete, nothing is fetched.
    again = peer("fetch", str(host), seed)
    assert again.returncode == 0 and json.loads(again.stdout)["files"] == 0


def test_a_seed_serves_only_what_sha256sums_lists(bundle: Path, seed: str) -> None:
    (bundle / "layers/10-files/unlisted").write_bytes(b"not for the peers")
    with urllib.request.urlopen(seed + "layers/10-files/a.txt") as response:
        assert response.read() == b"alpha\n"
    for path in ("layers/10-files/unlisted", "../bundle/SHA256SUMS", "%2e%2e/etc/passwd", "etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(seed + path)
        assert err.value.code == 404, path
    request = urllib.request.Request(seed + "layers/10-files/big.bin", headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 206 and response.read() == BIG[10:20]


def test_a_dead_seed_falls_back_to_the_next_url(bundle: Path, seed: str, tmp_path: Path) -> None:
    host = copy_without_artifacts(bundle, tmp_path / "host")
    dead = f"http://127.0.0.1:{free_port()}/"
    r = peer("fetch", str(host), dead, seed)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["from"] == {seed: 3}


def test_bytes_other_than_the_listed_ones_are_refused_and_not_kept(bundle: Path, tmp_path: Path) -> None:
    """A mirror holding another big.bin: the host keeps nothing of it, says which file and why, exits 1."""
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    (other / "layers/10-files/big.bin").write_bytes(b"x" * len(BIG))
    host = copy_without_artifacts(bundle, tmp_path / "host")
    with LocalHTTPServer(other) as server:
        r = peer("fetch", str(host), server.url)
    assert r.returncode == 1, r.stdout + r.stderr
    summary = json.loads(r.stdout)
    assert [f["path"] for f in summary["failed"]] == ["layers/10-files/big.bin"]
    assert "not the ones SHA256SUMS lists" in summary["failed"][0]["tried"][0]
    assert not (host / "layers/10-files/big.bin").exists() and not list(host.rglob("*.part"))
    assert (host / "layers/10-files/a.txt").read_bytes() == b"alpha\n"  # the good ones are kept


def test_an_interrupted_fetch_resumes_from_its_part(bundle: Path, seed: str, tmp_path: Path) -> None:
    host = copy_without_artifacts(bundle, tmp_path / "host")
    part = host / "layers/10-files/big.bin.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(BIG[: 1 << 20])
    r = peer("fetch", str(host), seed)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["bytes"] == len(BIG) - (1 << 20) + len(b"alpha\n") + 999  # only the rest came
    assert (host / "layers/10-files/big.bin").read_bytes() == BIG


def test_a_list_naming_a_path_outside_the_copy_is_refused(bundle: Path, seed: str, tmp_path: Path) -> None:
    host = copy_without_artifacts(bundle, tmp_path / "host")
    (host / "SHA256SUMS").write_text("0" * 64 + "  ../../etc/cron.d/x\n")
    r = peer("fetch", str(host), seed)
    assert r.returncode != 0 and "SHA256SUMS line 1" in r.stderr
    assert not (tmp_path / "etc").exists()


def test_an_idle_seed_exits_by_itself(bundle: Path, tmp_path: Path) -> None:
    """So a playbook cut short leaves no server behind: with --idle-exit, the seed stops after that long
    without a request (waited for here by its pidfile going away, not by a clock)."""
    pidfile = tmp_path / "peer.pid"
    r = peer("serve", str(bundle), "--bind", "127.0.0.1", "--port", str(free_port()), "--pidfile", str(pidfile))
    assert r.returncode == 0, r.stderr
    r = peer(
        "serve",
        str(bundle),
        "--bind",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--pidfile",
        str(tmp_path / "idle.pid"),
        "--idle-exit",
        "0.2",
    )
    assert r.returncode == 0, r.stderr
    try:
        for _ in range(600):
            if not (tmp_path / "idle.pid").exists():
                break
            time.sleep(0.1)
        assert not (tmp_path / "idle.pid").exists()
        assert pidfile.exists()  # the other one, with the default, still serves
    finally:
        peer("stop", "--pidfile", str(pidfile))


def test_a_seed_does_not_serve_through_a_link(bundle: Path, tmp_path: Path) -> None:
    """A listed name that became a link to another file of the host is not followed."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"host's own file\n")
    listed = bundle / "layers/10-files/a.txt"
    listed.unlink()
    listed.symlink_to(secret)
    port = free_port()
    pidfile = tmp_path / "link.pid"
    r = peer("serve", str(bundle), "--bind", "127.0.0.1", "--port", str(port), "--pidfile", str(pidfile))
    assert r.returncode == 0, r.stderr
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/layers/10-files/a.txt")
        assert err.value.code == 404
    finally:
        peer("stop", "--pidfile", str(pidfile))


class _Hostile(BaseHTTPRequestHandler):
    """A depot gone bad: `endless` sends a body with no end, `trickle` one byte at a time, forever."""

    mode = "endless"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        try:
            while True:
                if self.mode == "endless":
                    self.wfile.write(b"\0" * 65536)
                else:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
        except OSError:
            return  # the fetcher hung up, as it should


@pytest.fixture
def hostile() -> Iterator[Callable[[str], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(mode: str) -> str:
        handler = type(f"Hostile_{mode}", (_Hostile,), {"mode": mode})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_server_sending_more_than_the_lock_records_cannot_fill_the_disk(
    bundle: Path, hostile: Callable[[str], str], tmp_path: Path
) -> None:
    host = copy_without_artifacts(bundle, tmp_path / "host")
    r = peer("fetch", str(host), hostile("endless"))
    assert r.returncode == 1, r.stdout + r.stderr
    failed = {f["path"]: f["tried"][0] for f in json.loads(r.stdout)["failed"]}
    assert set(failed) == set(FILES)
    assert f"sends more than the {len(BIG)} bytes the lock records" in failed["layers/10-files/big.bin"]
    assert not [p for p in (host / "layers").rglob("*") if p.is_file()]  # nothing kept, not even a .part


def test_a_trickling_server_is_given_up_on(bundle: Path, hostile: Callable[[str], str], tmp_path: Path) -> None:
    """One byte every 50 ms never times a socket out; the pace (here 1 s plus 1 MiB/s) does."""
    host = copy_without_artifacts(bundle, tmp_path / "host")
    r = peer("fetch", str(host), hostile("trickle"), "--grace", "1")
    assert r.returncode == 1, r.stdout + r.stderr
    failed = {f["path"]: f["tried"][0] for f in json.loads(r.stdout)["failed"]}
    assert set(failed) == set(FILES), failed
    # (A small file may first be refused as longer than the lock says: a trickle has no end either.)
    assert "too slow" in failed["layers/10-files/big.bin"], failed


def test_a_lock_not_the_one_listed_stops_the_fetch(bundle: Path, seed: str, tmp_path: Path) -> None:
    """The sizes come from the lock, so the lock must be the one SHA256SUMS lists."""
    host = copy_without_artifacts(bundle, tmp_path / "host")
    lock = host / "airgap.lock.json"
    lock.write_bytes(lock.read_bytes().replace(str(len(BIG)).encode(), str(len(BIG) * 1000).encode()))
    r = peer("fetch", str(host), seed)
    assert r.returncode != 0 and "not the one SHA256SUMS lists" in r.stderr, r.stdout + r.stderr
    assert not (host / "layers/10-files/big.bin").exists()
