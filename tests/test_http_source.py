"""The HTTP source and the one request path under it: URL rewriting, redaction, backoff with jitter,
`Retry-After`, the status table's errors, and local copies that take the download's discipline."""

from __future__ import annotations

import email.utils
import hashlib
import threading
import time
from pathlib import Path

import pytest

from airgap.artifacts import Artifact, Digest
from airgap.errors import IntegrityError
from airgap.sources.http import HttpSource, apply_mirrors, redact
from airgap.sources.request import (
    AccessDenied,
    Cancelled,
    NotFound,
    Retry,
    RetryPolicy,
    UpstreamFailed,
    parse_retry_after,
)
from tests.conftest import SCRIPT, Upstream


def test_mirror_prefix_matches_only_at_a_path_boundary() -> None:
    mirrors = {"https://download.docker.com": "http://m/docker", "https://download.docker.com/linux": "http://m/l"}
    assert apply_mirrors("https://download.docker.com/linux/x.tgz", mirrors) == "http://m/l/x.tgz"
    assert apply_mirrors("https://download.docker.com/mac/x.dmg", mirrors) == "http://m/docker/mac/x.dmg"
    assert apply_mirrors("https://download.docker.com.evil.example/x", mirrors) == (
        "https://download.docker.com.evil.example/x"
    )
    assert apply_mirrors("https://other.example/x", mirrors) == "https://other.example/x"


def test_redact_hides_userinfo_and_signed_url_secrets() -> None:
    assert redact("https://u:p@host:8443/a/b.run") == "https://host:8443/a/b.run"
    assert redact("https://host/f?X-Amz-Signature=abc&X-Amz-Date=1&token=t&version=2") == (
        "https://host/f?X-Amz-Signature=REDACTED&X-Amz-Date=REDACTED&token=REDACTED&version=2"
    )
    assert redact("https://host/plain.run") == "https://host/plain.run"


def test_git_blob_sha1_digest_is_checked(upstream: Upstream, tmp_path: Path) -> None:
    data = upstream.files[SCRIPT]
    blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # what `git hash-object` prints
    source = HttpSource(backoff=0.01)
    url = f"{upstream.url}/{SCRIPT}"
    res = source.fetch([url], tmp_path / "ok.sh", "check.sh", expected=Digest("git-sha1", blob_id, "hub", len(data)))
    assert res.sha256 == hashlib.sha256(data).hexdigest()
    with pytest.raises(IntegrityError, match="expected git-sha1"):
        source.fetch([url], tmp_path / "bad.sh", "check.sh", expected=Digest("git-sha1", "0" * 40, "hub", len(data)))
    assert not (tmp_path / "bad.sh").exists()
    assert not (tmp_path / "bad.sh.part").exists()


# --- the request path ------------------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_up_to_a_cap() -> None:
    policy = RetryPolicy(backoff=1.0, max_wait=4.0)
    for failures, full in ((1, 1.0), (2, 2.0), (3, 4.0), (8, 4.0)):
        delays = {policy.delay(failures) for _ in range(50)}
        # Jitter: workers that failed together do not all come back at the same instant.
        assert len(delays) > 1 and all(full / 2 <= d < full for d in delays)


def test_retry_after_in_seconds_or_as_a_date_and_capped() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after(email.utils.formatdate(1_000_060, usegmt=True), now=1_000_000) == 60.0
    assert parse_retry_after(email.utils.formatdate(999_000, usegmt=True), now=1_000_000) == 0.0
    assert RetryPolicy(max_retry_after=10).delay(1, retry_after=3600) == 10
    assert RetryPolicy(backoff=0.01).delay(1, retry_after=2) == 2


def test_a_server_asking_to_wait_is_waited_for(upstream: Upstream, tmp_path: Path) -> None:
    upstream.server.fail(upstream.path(SCRIPT), status=429, times=1, retry_after="1")
    started = time.monotonic()
    res = HttpSource(backoff=0.01).fetch([f"{upstream.url}/{SCRIPT}"], tmp_path / "check.sh", "check.sh")
    assert time.monotonic() - started >= 1.0  # the server's word, not the 10 ms backoff
    assert res.path.read_bytes() == upstream.files[SCRIPT]
    assert [q.status for q in upstream.server.requests if q.method == "GET"] == [429, 200]


def test_a_wait_ends_at_once_when_the_user_interrupts() -> None:
    policy = RetryPolicy(retries=3, backoff=30.0)

    def attempt() -> None:
        raise Retry("HTTP 503")

    threading.Timer(0.2, policy.cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        policy.run(attempt, what="x", where="host")
    assert time.monotonic() - started < 5


def test_each_answer_becomes_one_error_of_the_table(upstream: Upstream, tmp_path: Path) -> None:
    server = upstream.server
    path = upstream.path(SCRIPT)
    # Credentials in the URL (a mirror behind a login) never reach a message.
    base = upstream.url.replace("http://", "http://mirror-user:s3cret@")
    url = f"{base}/{SCRIPT}"
    source = HttpSource(retries=1, backoff=0.01)

    server.not_found(path)
    with pytest.raises(NotFound) as nf:
        source.fetch([url], tmp_path / "a", "check.sh")
    assert nf.value.message.startswith("check.sh: not found upstream; tried http://127.0.0.1:")
    assert "mirror-user" not in nf.value.message and "s3cret" not in nf.value.message
    assert f"/{SCRIPT} (404)" in nf.value.message
    with pytest.raises(NotFound, match=rf"check.sh: 127.0.0.1:\d+ has no /{SCRIPT} \(404"):
        source.get_text(url, "check.sh")
    server.clear()

    server.fail(path, status=403, times=None)
    with pytest.raises(AccessDenied, match=rf"check.sh: 127.0.0.1:\d+ refused access to /{SCRIPT} \(403") as denied:
        source.fetch([url], tmp_path / "a", "check.sh")
    assert denied.value.hint and "~/.netrc" in denied.value.hint

    server.fail(path, status=418, times=None)
    with pytest.raises(UpstreamFailed, match=rf"answered HTTP 418 I'm a Teapot for /{SCRIPT}"):
        source.fetch([url], tmp_path / "a", "check.sh")

    server.fail(path, status=503, times=None)
    with pytest.raises(UpstreamFailed, match=r"failed after 2 attempts \(last: HTTP 503\)") as failed:
        source.fetch([url], tmp_path / "a", "check.sh")
    assert failed.value.hint and "resume" in failed.value.hint
    with pytest.raises(UpstreamFailed, match=r"failed after 2 attempts \(last: HTTP 503\)"):
        source.get_text(url, "check.sh")

    for err in (nf.value, denied.value, failed.value):
        assert "s3cret" not in str(err) and "mirror-user" not in str(err)
    assert not (tmp_path / "a").exists()


# --- local files, copied like downloads ------------------------------------------------------------------


def test_an_artifact_on_this_machine_is_copied_checked_and_never_fetched(tmp_path: Path) -> None:
    data = b"a layer exported from a local daemon\n" * 1000
    hexd = hashlib.sha256(data).hexdigest()
    src = tmp_path / "staged" / hexd
    src.parent.mkdir()
    src.write_bytes(data)
    url = f"http://docker-daemon.invalid/img/blobs/sha256/{hexd}"  # .invalid: any request would fail
    art = Artifact("images", f"blobs/sha256/{hexd}", [url], ("images", 0, "ref"), pinned=Digest("sha256", hexd, "t"))
    art.local = src
    seen: list[int] = []
    dest = tmp_path / "bundle" / hexd
    dest.parent.mkdir()
    res = HttpSource(retries=0).fetch_artifact(art, dest, seen.append)
    assert (res.url, res.size, res.sha256, res.transferred) == (url, len(data), hexd, 0)
    assert dest.read_bytes() == data and sum(seen) == len(data)

    art.pinned = Digest("sha256", "0" * 64, "t")
    bad = tmp_path / "bundle" / "bad"
    with pytest.raises(IntegrityError, match="do not match the expected sha256"):
        HttpSource(retries=0).fetch_artifact(art, bad)
    assert not bad.exists() and not bad.with_name("bad.part").exists()
