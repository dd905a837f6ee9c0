"""The loopback file server and its fault-injecting subclass, checked with requests and curl."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from airgap.localserver import LocalHTTPServer, RequestRecord, parse_range
from tests.faulty_server import FaultyHTTPServer

PATH = "/nvidia/x.run"
DATA = bytes(range(256)) * 40 + b"tail"  # 10244 bytes, every offset distinguishable enough


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "nvidia").mkdir(parents=True)
    (root / "nvidia" / "x.run").write_bytes(DATA)
    (root / "empty.bin").write_bytes(b"")
    (tmp_path / "secret.txt").write_text("outside the root\n")
    return root


@pytest.fixture
def server(tree: Path) -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer(tree) as srv:
        yield srv


@pytest.fixture
def faulty(tree: Path) -> Iterator[FaultyHTTPServer]:
    with FaultyHTTPServer(tree) as srv:
        yield srv


def raw_get(srv: LocalHTTPServer, target: str) -> int:
    """Status of a GET for `target` sent verbatim (requests would normalise away `..`)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


# -- the plain server ----------------------------------------------------------------------------------


def test_url_and_loopback_bind(server: LocalHTTPServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert not server.url.endswith("/")


def test_head_gives_size_and_validators(server: LocalHTTPServer) -> None:
    r = requests.head(server.url + PATH, timeout=5)
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == len(DATA)
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["ETag"].startswith('"')
    assert r.headers["Last-Modified"].endswith("GMT")
    assert r.content == b""
    assert server.bytes_sent() == 0


def test_full_get(server: LocalHTTPServer) -> None:
    r = requests.get(server.url + PATH, timeout=5)
    assert r.status_code == 200
    assert r.content == DATA
    assert server.bytes_sent(PATH) == len(DATA)
    assert server.requests == [RequestRecord("GET", PATH, None, 200, len(DATA))]


def test_empty_file(server: LocalHTTPServer) -> None:
    r = requests.get(server.url + "/empty.bin", timeout=5)
    assert (r.status_code, r.content, r.headers["Content-Length"]) == (200, b"", "0")


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=10-", 10, len(DATA) - 1),
        ("bytes=10-19", 10, 19),
        ("bytes=-5", len(DATA) - 5, len(DATA) - 1),
        ("bytes=10-999999", 10, len(DATA) - 1),
        ("bytes=-999999", 0, len(DATA) - 1),
    ],
)
def test_ranges(server: LocalHTTPServer, header: str, start: int, end: int) -> None:
    r = requests.get(server.url + PATH, headers={"Range": header}, timeout=5)
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert int(r.headers["Content-Length"]) == end - start + 1
    assert r.content == DATA[start : end + 1]
    assert server.bytes_sent() == end - start + 1


@pytest.mark.parametrize("header", [f"bytes={len(DATA)}-", f"bytes={len(DATA) + 5}-{len(DATA) + 9}", "bytes=-0"])
def test_unsatisfiable_range(server: LocalHTTPServer, header: str) -> None:
    r = requests.get(server.url + PATH, headers={"Range": header}, timeout=5)
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(DATA)}"
    assert r.content == b""


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=9-3", "items=0-5", "bytes=x-"])
def test_multi_or_malformed_range_gets_full_body(server: LocalHTTPServer, header: str) -> None:
    r = requests.get(server.url + PATH, headers={"Range": header}, timeout=5)
    assert (r.status_code, r.content) == (200, DATA)


def test_head_ignores_range(server: LocalHTTPServer) -> None:
    r = requests.head(server.url + PATH, headers={"Range": "bytes=10-19"}, timeout=5)
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == len(DATA)


def test_if_range(server: LocalHTTPServer) -> None:
    head = requests.head(server.url + PATH, timeout=5).headers
    for validator in (head["ETag"], head["Last-Modified"]):
        r = requests.get(server.url + PATH, headers={"Range": "bytes=10-", "If-Range": validator}, timeout=5)
        assert (r.status_code, r.content) == (206, DATA[10:])
    for stale in ('"0-0"', "W/" + head["ETag"], "Thu, 01 Jan 1970 00:00:00 GMT"):
        r = requests.get(server.url + PATH, headers={"Range": "bytes=10-", "If-Range": stale}, timeout=5)
        assert (r.status_code, r.content) == (200, DATA)


def test_etag_changes_with_file(server: LocalHTTPServer, tree: Path) -> None:
    before = requests.head(server.url + PATH, timeout=5).headers["ETag"]
    f = tree / "nvidia" / "x.run"
    f.write_bytes(DATA + b"more")
    os.utime(f, ns=(1, 1))
    assert requests.head(server.url + PATH, timeout=5).headers["ETag"] != before


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/nvidia/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/../etc/passwd",
        "/",
        "/nvidia",
        "/nvidia/",
        "/missing.bin",
    ],
)
def test_escape_directories_and_missing_are_404(server: LocalHTTPServer, target: str) -> None:
    assert raw_get(server, target) == 404


def test_symlink_out_of_root_is_404(server: LocalHTTPServer, tree: Path) -> None:
    (tree / "link.txt").symlink_to(tree.parent / "secret.txt")
    assert raw_get(server, "/link.txt") == 404


def test_query_string_ignored_and_percent_decoded(server: LocalHTTPServer, tree: Path) -> None:
    (tree / "a b.bin").write_bytes(b"spaced")
    assert requests.get(server.url + "/a%20b.bin?x=1", timeout=5).content == b"spaced"


def test_post_not_allowed(server: LocalHTTPServer) -> None:
    assert requests.post(server.url + PATH, data=b"x", timeout=5).status_code == 501


def test_keep_alive_serves_several_requests(server: LocalHTTPServer) -> None:
    with requests.Session() as s:
        for _ in range(3):
            assert s.get(server.url + PATH, headers={"Range": "bytes=0-9"}, timeout=5).content == DATA[:10]
    assert len(server.requests) == 3
    server.reset_stats()
    assert server.requests == [] and server.bytes_sent() == 0


def test_curl_full_and_resume(server: LocalHTTPServer, tmp_path: Path) -> None:
    out = tmp_path / "x.run"
    subprocess.run(["curl", "-sSf", "-o", str(out), server.url + PATH], check=True, timeout=10)
    assert out.read_bytes() == DATA
    out.write_bytes(DATA[:1000])
    subprocess.run(["curl", "-sSf", "-C", "-", "-o", str(out), server.url + PATH], check=True, timeout=10)
    assert out.read_bytes() == DATA
    assert server.requests[-1].range == "bytes=1000-"
    assert server.requests[-1].status == 206


def test_curl_path_as_is_escape(server: LocalHTTPServer) -> None:
    p = subprocess.run(
        ["curl", "-s", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", server.url + "/../etc/passwd"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert p.stdout == "404"


def test_parallel_clients(server: LocalHTTPServer) -> None:
    results: list[bytes] = []

    def fetch(i: int) -> None:
        r = requests.get(server.url + PATH, headers={"Range": f"bytes={i}-{i + 99}"}, timeout=5)
        results.append(r.content)

    threads = [threading.Thread(target=fetch, args=(i * 100,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(DATA[i * 100 : i * 100 + 100] for i in range(16))


def test_client_disconnect_is_quiet(server: LocalHTTPServer, tree: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tree / "big.bin").write_bytes(b"\0" * (32 << 20))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(1024)
    deadline = time.monotonic() + 3
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.requests[0].status == 200
    assert server.requests[0].bytes_sent < 32 << 20
    assert requests.get(server.url + PATH, timeout=5).content == DATA  # still serving
    assert "Traceback" not in capfd.readouterr().err


def test_stop_is_idempotent_and_frees_port(tree: Path) -> None:
    srv = LocalHTTPServer(tree).start()
    port = srv.port
    srv.stop()
    srv.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}{PATH}", timeout=2)
    with LocalHTTPServer(tree, port=port) as again:  # allow_reuse_address lets the port come straight back
        assert requests.get(again.url + PATH, timeout=5).content == DATA


def test_sendfile_fallback(server: LocalHTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sendfile")
    r = requests.get(server.url + PATH, headers={"Range": "bytes=100-"}, timeout=5)
    assert r.content == DATA[100:]
    assert server.bytes_sent() == len(DATA) - 100


def test_parse_range_edges() -> None:
    assert parse_range("bytes=0-0", 1) is not None
    assert parse_range("bytes=-1", 0) is not None and not parse_range("bytes=-1", 0).satisfiable  # type: ignore[union-attr]
    assert parse_range("bytes=", 10) is None
    assert parse_range("bytes=-", 10) is None


# -- faults --------------------------------------------------------------------------------------------


def test_fail_then_recover(faulty: FaultyHTTPServer) -> None:
    faulty.fail(PATH, status=503, times=2)
    assert requests.head(faulty.url + PATH, timeout=5).status_code == 200  # HEAD unaffected
    assert requests.get(faulty.url + PATH, timeout=5).status_code == 503
    assert requests.get(faulty.url + PATH, timeout=5).status_code == 503
    r = requests.get(faulty.url + PATH, timeout=5)
    assert (r.status_code, r.content) == (200, DATA)
    assert [rec.status for rec in faulty.requests] == [200, 503, 503, 200]


def test_fail_with_retry_after_only_on_the_failed_answer(faulty: FaultyHTTPServer) -> None:
    faulty.fail(PATH, status=429, retry_after="3")
    with requests.Session() as s:  # one kept-alive connection: the next answer must not inherit the header
        r = s.get(faulty.url + PATH, timeout=5)
        assert (r.status_code, r.headers.get("Retry-After")) == (429, "3")
        r = s.get(faulty.url + PATH, timeout=5)
        assert (r.status_code, r.headers.get("Retry-After")) == (200, None)
        r = s.get(faulty.url + "/missing", timeout=5)
        assert (r.status_code, r.headers.get("Retry-After")) == (404, None)


def test_fail_head(faulty: FaultyHTTPServer) -> None:
    faulty.fail(PATH, status=500, head=True)
    assert requests.head(faulty.url + PATH, timeout=5).status_code == 500
    assert requests.get(faulty.url + PATH, timeout=5).status_code == 200


def test_drop_after_cuts_body(faulty: FaultyHTTPServer) -> None:
    faulty.drop_after(PATH, 1000)
    try:
        got = requests.get(faulty.url + PATH, timeout=5).content
    except requests.exceptions.RequestException:
        pass
    else:
        assert len(got) < len(DATA)
    assert faulty.requests[-1].bytes_sent == 1000
    assert requests.get(faulty.url + PATH, timeout=5).content == DATA  # times=1 used up


def test_drop_after_with_range_and_curl(faulty: FaultyHTTPServer, tmp_path: Path) -> None:
    faulty.drop_after(PATH, 50)
    out = tmp_path / "x"
    p = subprocess.run(
        ["curl", "-sS", "-r", "100-", "-o", str(out), faulty.url + PATH], timeout=10, capture_output=True
    )
    assert p.returncode == 18  # CURLE_PARTIAL_FILE
    assert out.read_bytes() == DATA[100:150]
    resume = subprocess.run(["curl", "-sSf", "-r", "150-", "-o", str(out), faulty.url + PATH], timeout=10)
    assert resume.returncode == 0 and out.read_bytes() == DATA[150:]


def test_ignore_range(faulty: FaultyHTTPServer) -> None:
    faulty.ignore_range(PATH)
    r = requests.get(faulty.url + PATH, headers={"Range": "bytes=10-19"}, timeout=5)
    assert (r.status_code, r.content) == (200, DATA)
    assert "Content-Range" not in r.headers


def test_corrupt_flips_one_byte(faulty: FaultyHTTPServer) -> None:
    faulty.corrupt(PATH, offset=5000)
    got = requests.get(faulty.url + PATH, timeout=5).content
    assert len(got) == len(DATA)
    diff = [i for i in range(len(DATA)) if got[i] != DATA[i]]
    assert diff == [5000] and got[5000] == DATA[5000] ^ 0xFF
    part = requests.get(faulty.url + PATH, headers={"Range": "bytes=4990-5009"}, timeout=5).content
    assert part == got[4990:5010]
    assert requests.get(faulty.url + PATH, headers={"Range": "bytes=0-99"}, timeout=5).content == DATA[:100]


def test_throttle_slows_and_stop_ends_it(tree: Path) -> None:
    srv = FaultyHTTPServer(tree).start()
    try:
        srv.throttle(PATH, bytes_per_second=20_000)
        t0 = time.monotonic()
        r = requests.get(srv.url + PATH, headers={"Range": "bytes=0-3999"}, timeout=5)
        assert r.content == DATA[:4000]
        assert 0.1 < time.monotonic() - t0 < 2
        srv.reset_stats()
        # A client still connected mid-body when the server stops: the throttled writer must notice
        # the stop at once rather than trickle out the remaining half second of body.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(f"GET {PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            s.recv(100)
            t0 = time.monotonic()
            srv.stop()
            while not srv.requests and time.monotonic() - t0 < 2:
                time.sleep(0.005)
            assert time.monotonic() - t0 < 0.3
            assert 0 < srv.requests[0].bytes_sent < len(DATA)
    finally:
        srv.stop()


def test_not_found_and_clear(faulty: FaultyHTTPServer) -> None:
    faulty.not_found(PATH)
    assert requests.head(faulty.url + PATH, timeout=5).status_code == 404
    assert requests.get(faulty.url + PATH, timeout=5).status_code == 404
    faulty.clear()
    assert requests.get(faulty.url + PATH, timeout=5).content == DATA


def test_faults_are_per_path(faulty: FaultyHTTPServer, tree: Path) -> None:
    (tree / "other.bin").write_bytes(b"other")
    faulty.fail(PATH, times=None)
    faulty.corrupt("/other.bin", 0)
    assert requests.get(faulty.url + PATH, timeout=5).status_code == 500
    assert requests.get(faulty.url + PATH, timeout=5).status_code == 500
    assert requests.get(faulty.url + "/other.bin", timeout=5).content == b"\x90ther"
    assert faulty.bytes_sent("/other.bin") == 5


def test_combined_drop_and_corrupt(faulty: FaultyHTTPServer) -> None:
    faulty.corrupt(PATH, 3)
    faulty.drop_after(PATH, 10)
    conn = http.client.HTTPConnection("127.0.0.1", faulty.port, timeout=5)
    conn.request("GET", PATH)
    resp = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead) as exc:
        resp.read()
    conn.close()
    partial = exc.value.partial
    assert partial == DATA[:3] + bytes([DATA[3] ^ 0xFF]) + DATA[4:10]
