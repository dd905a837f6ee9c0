"""Pieces of the HTTP source that need no server: URL rewriting and redaction."""

from __future__ import annotations

from airgap.sources.http import apply_mirrors, redact


def test_mirror_prefix_matches_only_at_a_path_boundary() -> None:
    mirrors = {"https://download.docker.com": "http://m/docker", "https://download.docker.com/linux": "http://m/l"}
    assert apply_mirrors("https://download.docker.com/linux/x.tgz", mirrors) == "http://m/l/x.tgz"
    assert apply_mirrors("https://download.docker.com/mac/x.dmg", mirrors) == "http://m/docker/mac/x.dmg"
    assert apply_mirrors("https://download.docker.com.evil.example/x", mirrors) == (
        "https://download.docker.com.evil.example/x"
    )
    assert apply_mirrors("https://other.example/x", mirrors) == "https://other.example/x"


def test_redact_hides_userinfo_and_signed_url_secrets() -> None:
    assert redact("https://u:p@host:8443/a/b.run") == "https://***@host:8443/a/b.run"
    assert redact("https://host/f?X-Amz-Signature=abc&X-Amz-Date=1&token=t") == (
        "https://host/f?X-Amz-Signature=***&X-Amz-Date=1&token=***"
    )
    assert redact("https://host/plain.run") == "https://host/plain.run"


def test_git_blob_sha1_digest_is_checked(upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    import pytest

    from airgap.artifacts import Digest
    from airgap.errors import IntegrityError
    from airgap.sources.http import HttpSource
    from tests.conftest import SCRIPT

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
