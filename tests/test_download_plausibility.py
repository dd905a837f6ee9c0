"""A download is the file's own bytes or nothing: hostile loopback servers that answer 200 with a login page,
promise more bytes than they send, answer a resume with the wrong range or another version of the file,
gzip a body nobody asked to be encoded, or stall mid-body. None of it may end up under the file's name."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from airgap.artifacts import Digest
from airgap.sources.http import HttpSource
from airgap.sources.plausible import implausible
from airgap.sources.request import UpstreamFailed
from tests.conftest import MiB, payload
from tests.faulty_server import FaultyHTTPServer

LOGIN_PAGE = b"<!DOCTYPE html><html><body>Your session has expired. Log in.</body></html>\n"
RUN = b"#!/bin/sh\n# makeself stand-in\n" + payload(MiB + 11, 7)
WHEEL = b"PK\x03\x04" + payload(40_000, 8)
TGZ = gzip.compress(payload(200_000, 9), mtime=0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FaultyHTTPServer]:
    root = tmp_path / "www"
    for rel, data in {"d/driver.run": RUN, "p/pkg-1.0-py3-none-any.whl": WHEEL, "t/docker.tgz": TGZ}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    with FaultyHTTPServer(root) as srv:
        yield srv


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(dest.name))


def gets(server: FaultyHTTPServer, path: str) -> list[tuple[str | None, int]]:
    return [(q.range, q.status) for q in server.requests if q.method == "GET" and q.path == path]


# --- what the first bytes say ----------------------------------------------------------------------------


def test_each_format_is_judged_by_its_magic_bytes_and_unknown_names_pass() -> None:
    def refused(name: str, head: bytes, content_type: str | None = None, complete: bool = False) -> bool:
        return implausible(name, head, content_type, check_magic=True, complete=complete) is not None

    header = b'{"w":{}}'
    good = {
        "x.run": b"#!/bin/sh\n" + bytes(60),
        "y.run": b"#!/bin/bash\n" + bytes(60),
        "a.tar.gz": b"\x1f\x8b\x08" + bytes(60),
        "a.tgz": b"\x1f\x8b\x08" + bytes(60),
        "p.deb": b"!<arch>\ndebian-binary   " + bytes(60),
        "w.whl": b"PK\x03\x04" + bytes(60),
        "w.zip": b"PK\x03\x04" + bytes(60),
        "m.safetensors": struct.pack("<Q", len(header)) + header + bytes(60),
        "m.gguf": b"GGUF\x03\x00" + bytes(60),
        "m.bin": bytes(64),
        "t.tar": bytes(64),
    }
    for name, head in good.items():
        assert not refused(name, head[:64]), name
        assert not refused(name, head[:64], "text/html"), name  # a mislabelled binary keeps its magic
    for name in good:
        if name not in ("m.bin", "t.tar"):  # no magic bytes to miss
            assert refused(name, b"\x00" * 64), name
        assert implausible(name, LOGIN_PAGE, None, check_magic=False) == (
            implausible(name, LOGIN_PAGE, None, check_magic=True)
        )
        assert implausible(name, b"  \n<html lang=en>" + bytes(50), None, check_magic=False) is not None
    assert implausible("m.bin", b"<p>sorry</p>" + bytes(52), "text/html", check_magic=False) is not None
    # Too few bytes to tell, unless that is the whole body.
    assert not refused("w.whl", b"PK")
    assert refused("w.whl", b"PK", complete=True)
    # Names airgap has no opinion on pass whatever they hold, and a digest-checked body is judged only
    # for being a page.
    assert not refused("index.html", LOGIN_PAGE) and not refused("blobs/sha256/ab", LOGIN_PAGE)
    assert implausible("x.run", b"\x00" * 64, None, check_magic=False) is None


# --- a web page where a file was expected ----------------------------------------------------------------


def test_a_login_page_served_as_the_driver_run_is_refused_and_nothing_is_stored(
    server: FaultyHTTPServer, tmp_path: Path
) -> None:
    server.serve_page("/d/driver.run", LOGIN_PAGE)
    url = server.url.replace("http://", "http://mirror-user:s3cret@") + "/d/driver.run?token=abc"
    dest = tmp_path / "NVIDIA-Linux-x86_64-550.90.07.run"
    with pytest.raises(UpstreamFailed) as exc:
        HttpSource(retries=3, backoff=0.01).fetch([url], dest, "driver.run")
    msg = exc.value.message
    assert "the server sent a web page, not a makeself installer (.run): log in / check the mirror" in msg
    assert f"{server.url}/d/driver.run?token=REDACTED" in msg
    assert "s3cret" not in str(exc.value) and "abc" not in msg
    assert leftovers(dest) == []
    assert len(gets(server, "/d/driver.run")) == 1  # a page is an answer, not a failure worth retrying


def test_a_page_labelled_text_html_is_refused_for_a_wheel_even_when_pinned(
    server: FaultyHTTPServer, tmp_path: Path
) -> None:
    server.serve_page("/p/pkg-1.0-py3-none-any.whl", b"\n\n  <html><head><title>Sign in</title></head></html>")
    dest = tmp_path / "pkg-1.0-py3-none-any.whl"
    for expected in (None, Digest("sha256", sha(WHEEL), "manifest")):
        with pytest.raises(UpstreamFailed, match=r"sent a web page, not a wheel \(\.whl\)"):
            HttpSource(retries=0).fetch(
                [f"{server.url}/p/pkg-1.0-py3-none-any.whl"], dest, "pkg.whl", expected=expected
            )
        assert leftovers(dest) == []


def test_an_unpinned_body_without_its_magic_is_refused_and_a_pinned_one_is_trusted(
    server: FaultyHTTPServer, tmp_path: Path
) -> None:
    blob = payload(5000, 3)
    (server.root / "m").mkdir()
    (server.root / "m/model.gguf").write_bytes(blob)
    url = f"{server.url}/m/model.gguf"
    dest = tmp_path / "model.gguf"
    with pytest.raises(UpstreamFailed, match=r"is not a GGUF model file .*pin its sha256") as exc:
        HttpSource(retries=0).fetch([url], dest, "model.gguf")
    assert exc.value.hint and "pin its sha256" in exc.value.hint
    assert leftovers(dest) == []
    res = HttpSource(retries=0).fetch([url], dest, "model.gguf", expected=Digest("sha256", sha(blob), "manifest"))
    assert res.path.read_bytes() == blob


# --- bodies shorter than promised -------------------------------------------------------------------------


def test_a_body_shorter_than_its_content_length_is_never_stored_as_complete(
    server: FaultyHTTPServer, tmp_path: Path
) -> None:
    server.lie_length("/d/driver.run", 1000)
    dest = tmp_path / "driver.run"
    with pytest.raises(UpstreamFailed, match=r"failed after 1 attempts .*Content-Length promised") as exc:
        HttpSource(retries=0).fetch([f"{server.url}/d/driver.run"], dest, "driver.run")
    assert f"{server.url}/d/driver.run" in exc.value.message
    assert not dest.exists() and dest.with_name("driver.run.part").exists()  # kept to resume


# --- resumes that are not the rest of the same file -------------------------------------------------------


def interrupted(server: FaultyHTTPServer, path: str, dest: Path, at: int) -> None:
    """Leave `dest.part` holding the first `at` bytes of `path`, as an interrupted run does."""
    server.drop_after(path, at)
    with pytest.raises(UpstreamFailed):
        HttpSource(retries=0).fetch([server.url + path], dest, dest.name)
    assert dest.with_name(dest.name + ".part").stat().st_size == at
    meta = json.loads(dest.with_name(dest.name + ".part.meta").read_text())
    assert meta["etag"] and meta["size"] == (server.root / path.lstrip("/")).stat().st_size
    server.clear()
    server.reset_stats()


@pytest.mark.parametrize("shift", [(7, 0), (0, 1), (-100, 0)], ids=["start", "total", "earlier"])
def test_a_206_for_another_range_restarts_from_zero(
    server: FaultyHTTPServer, tmp_path: Path, shift: tuple[int, int]
) -> None:
    dest = tmp_path / "driver.run"
    interrupted(server, "/d/driver.run", dest, 300_000)
    server.shift_content_range("/d/driver.run", *shift)
    res = HttpSource(retries=0).fetch([f"{server.url}/d/driver.run"], dest, "driver.run")
    assert res.path.read_bytes() == RUN and res.sha256 == sha(RUN)
    assert gets(server, "/d/driver.run") == [("bytes=300000-", 206), (None, 200)]
    assert leftovers(dest) == ["driver.run"]


def replace_file(server: FaultyHTTPServer, rel: str, data: bytes) -> None:
    path = server.root / rel
    before = path.stat().st_mtime_ns
    path.write_bytes(data)
    os.utime(path, ns=(before + 5 * 10**9, before + 5 * 10**9))  # another version: another ETag and date


def test_a_file_changed_since_the_part_was_started_is_fetched_whole(server: FaultyHTTPServer, tmp_path: Path) -> None:
    dest = tmp_path / "driver.run"
    interrupted(server, "/d/driver.run", dest, 300_000)
    new = b"#!/bin/sh\n# version 2\n" + payload(len(RUN) - 22, 70)
    replace_file(server, "d/driver.run", new)
    res = HttpSource(retries=0).fetch([f"{server.url}/d/driver.run"], dest, "driver.run")
    assert res.path.read_bytes() == new
    # If-Range carried the old ETag: the server answered with the whole new file, not a splice.
    assert gets(server, "/d/driver.run") == [("bytes=300000-", 200)]


def test_a_server_that_sends_the_rest_of_another_version_is_caught_by_its_etag(
    server: FaultyHTTPServer, tmp_path: Path
) -> None:
    dest = tmp_path / "driver.run"
    interrupted(server, "/d/driver.run", dest, 300_000)
    new = b"#!/bin/sh\n# version 2\n" + payload(len(RUN) - 22, 71)
    replace_file(server, "d/driver.run", new)
    server.ignore_if_range("/d/driver.run")
    res = HttpSource(retries=0).fetch([f"{server.url}/d/driver.run"], dest, "driver.run")
    assert res.path.read_bytes() == new  # never RUN[:300000] + new[300000:]
    assert gets(server, "/d/driver.run") == [("bytes=300000-", 206), (None, 200)]
    assert leftovers(dest) == ["driver.run"]


# --- transport encodings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", ["d/driver.run", "t/docker.tgz"])
def test_a_gzip_encoded_body_is_stored_as_the_file_itself(server: FaultyHTTPServer, tmp_path: Path, rel: str) -> None:
    original = (server.root / rel).read_bytes()
    server.gzip_encode("/" + rel)
    dest = tmp_path / Path(rel).name
    res = HttpSource(retries=0).fetch([f"{server.url}/{rel}"], dest, rel)
    # The encoding header decides, not the name: a .tgz stays exactly as compressed as published.
    assert dest.read_bytes() == original and res.sha256 == sha(original)
    assert res.size == len(original)


def test_a_body_in_an_encoding_airgap_cannot_undo_is_refused(server: FaultyHTTPServer, tmp_path: Path) -> None:
    server.gzip_encode("/d/driver.run", header="compress")
    dest = tmp_path / "driver.run"
    with pytest.raises(UpstreamFailed, match="Content-Encoding 'compress', which airgap cannot undo"):
        HttpSource(retries=0).fetch([f"{server.url}/d/driver.run"], dest, "driver.run")
    assert leftovers(dest) == []


# --- parts from before validators were recorded -----------------------------------------------------------


def test_a_part_without_a_record_resumes_only_under_a_digest(server: FaultyHTTPServer, tmp_path: Path) -> None:
    dest = tmp_path / "driver.run"
    part = tmp_path / "driver.run.part"
    url = f"{server.url}/d/driver.run"
    part.write_bytes(RUN[:200_000])
    HttpSource(retries=0).fetch([url], dest, "driver.run", expected=Digest("sha256", sha(RUN), "manifest"))
    assert dest.read_bytes() == RUN
    assert gets(server, "/d/driver.run") == [("bytes=200000-", 206)]
    # Unpinned, nothing could tell those bytes from another version's: started over.
    dest.unlink()
    server.reset_stats()
    part.write_bytes(RUN[:200_000])
    HttpSource(retries=0).fetch([url], dest, "driver.run")
    assert dest.read_bytes() == RUN
    assert gets(server, "/d/driver.run") == [(None, 200)]


# --- servers that stop sending ----------------------------------------------------------------------------


def test_a_server_that_stalls_mid_body_is_given_up_on(server: FaultyHTTPServer, tmp_path: Path) -> None:
    # The server stalls until teardown; 5 s of idle leaves room for a busy machine to deliver the first bytes.
    server.stall_after("/d/driver.run", 100)
    dest = tmp_path / "driver.run"
    with pytest.raises(UpstreamFailed, match=r"no data for 5 s after 100 bytes") as exc:
        HttpSource(retries=0, idle_timeout=5.0).fetch([f"{server.url}/d/driver.run"], dest, "driver.run")
    assert f"{server.url}/d/driver.run" in exc.value.message
    assert not dest.exists()


def test_a_server_that_trickles_is_given_up_on(server: FaultyHTTPServer, tmp_path: Path) -> None:
    # 40 bytes/s can never make 1 MB/s over any window; how long the window lasts does not matter.
    server.throttle("/d/driver.run", 40)
    dest = tmp_path / "driver.run"
    source = HttpSource(retries=0, min_rate=1e6, rate_window=0.2)
    with pytest.raises(UpstreamFailed, match=r"trickled in at \d+ bytes/s") as exc:
        source.fetch([f"{server.url}/d/driver.run"], dest, "driver.run")
    assert f"{server.url}/d/driver.run" in exc.value.message
    assert not dest.exists() and dest.with_name("driver.run.part").exists()
