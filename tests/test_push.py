"""`airgap push` against real parts: a bundle collected from Debian's docker-registry (the session's source
registry), pushed into a second, fresh docker-registry with htpasswd (Basic) auth, read back with skopeo."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from airgap import manifest as manifest_mod
from airgap.collect import collect
from airgap.errors import BadInputError, ChangedSinceVerify
from airgap.lock import Lock
from airgap.push import parse_target, push_bundle
from airgap.sources.http import HttpSource
from tests.conftest import run_airgap
from tests.dockerd import Dockerd, dockerd_fixture  # noqa: F401  # the `dockerd` fixture
from tests.registry_fixtures import (  # noqa: F401  # the `registries` fixture
    PASSWORD,
    USER,
    Registry,
    RegistrySet,
    htpasswd_auth,
    registries_fixture,
    run_registry,
)

IMAGES_DIR = "layers/07-images"


@pytest.fixture(scope="module", name="bundle")
def bundle_fixture(registries: RegistrySet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images a and b (sharing the busybox layer), the amd64 image of the two-platform index, and the 3 MiB
    single-layer image, collected once for the module."""
    host = registries.plain.host
    work = tmp_path_factory.mktemp("push-bundle")
    doc = {
        "name": "push-test",
        "target": {"os": "ubuntu-22.04", "arch": "amd64"},
        "images": [
            f"{host}/airgap/base-a:1",
            f"{host}/airgap/app-b:2",
            f"{host}/airgap/multi:1",
            f"{host}/airgap/big:1",
        ],
    }
    (work / "manifest.yaml").write_text(json.dumps(doc))  # JSON is YAML
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_HOST", "unix:///nonexistent/airgap-test/docker.sock")
        m = manifest_mod.load(work / "manifest.yaml")
        collect(m, work / "bundle", HttpSource(m.mirrors, retries=3, backoff=0.01), jobs=4, progress_mode="off")
    return work / "bundle"


@pytest.fixture(name="target")
def target_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """A fresh registry with htpasswd auth, its login in a docker config.json of a temporary DOCKER_CONFIG."""
    work = tmp_path / "target"
    with run_registry(work, work / "storage", htpasswd_auth(work)) as reg:
        cfg = tmp_path / "docker-config"
        cfg.mkdir()
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        (cfg / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
        monkeypatch.delenv("AIRGAP_REGISTRY_AUTH", raising=False)
        monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
        yield reg


def lock_digests(bundle: Path) -> dict[str, str]:
    """source ref -> the manifest digest the lock records."""
    out = {}
    for a in Lock.read(bundle).artifacts:
        if a.layer == "images" and a.meta.get("role") == "manifest":
            for ref in a.meta["refs"]:
                out[ref] = a.meta["manifest_digest"]
    return out


def target_ref(target: Registry, source: str) -> str:
    return f"{target.host}/{source.split('/', 1)[1]}"


def raw_digest(ref: str) -> str:
    """The digest of the manifest `ref` serves, read back by skopeo (not by airgap)."""
    r = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", f"docker://{ref}"],
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return "sha256:" + hashlib.sha256(r.stdout).hexdigest()


def catalog(target: Registry) -> list[str]:
    r = requests.get(f"{target.url}/v2/_catalog", auth=(USER, PASSWORD), timeout=10)
    r.raise_for_status()
    return list(r.json().get("repositories") or [])


def flip_byte_in_a_layer(bundle: Path, dest: Path) -> str:
    """A copy of the bundle with one byte of image a's own layer flipped; that layer's digest."""
    shutil.copytree(bundle, dest)
    for a in Lock.read(dest).artifacts:
        if a.layer == "images" and a.meta.get("role") == "manifest" and "base-a" in a.meta["ref"]:
            doc = json.loads((dest / a.path).read_bytes())
            layer = doc["layers"][-1]["digest"]
            p = dest / IMAGES_DIR / "blobs/sha256" / layer.split(":")[1]
            data = bytearray(p.read_bytes())
            data[len(data) // 2] ^= 0xFF
            p.write_bytes(bytes(data))
            return str(layer)
    raise AssertionError("image a not in the bundle")


# --- the target's address (no servers) -----------------------------------------------------------------


def test_plain_http_only_for_this_machine_or_with_insecure() -> None:
    assert parse_target("127.0.0.1:5000", False).scheme == "http"
    assert parse_target("localhost:5000/mirror", False).prefix == "mirror"
    assert parse_target("depot.example.lan:5000/site/mirror", False).scheme == "https"
    t = parse_target("depot.example.lan/mirror", True)
    assert (t.scheme, t.host, t.prefix, t.repo("nvidia/cuda")) == (
        "http",
        "depot.example.lan",
        "mirror",
        "mirror/nvidia/cuda",
    )
    assert parse_target("https://localhost:5000", False).scheme == "https"
    for bad in ("http://depot.lan", "depot", "depot.lan/Bad_Prefix", ""):
        with pytest.raises(BadInputError):
            parse_target(bad, False)


# --- pushes into a real registry -----------------------------------------------------------------------


@pytest.mark.slow
def test_push_by_digest_then_tags_and_a_second_run_sends_nothing(bundle: Path, target: Registry) -> None:
    r = run_airgap("push", str(bundle), "--registry", target.host, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    want = lock_digests(bundle)
    got = {ref["source"]: ref for ref in report["references"]}
    assert set(got) == set(want)
    for source, digest in want.items():
        ref = got[source]
        assert ref["digest"] == digest and ref["tag"] == "created"
        assert ref["reference"] == target_ref(target, source)
        assert ref["pinned"] == f"{target_ref(target, source).rsplit(':', 1)[0]}@{digest}"
        # Read back by another client, by tag and by digest: the lock's digest, byte for byte.
        assert raw_digest(ref["reference"]) == digest
        assert raw_digest(ref["pinned"]) == digest
    # a and b share the busybox layer, in two repositories: sent once, mounted into the second.
    assert report["blobs_mounted"] >= 1
    assert report["manifests_sent"] == 4 and report["tags_set"] == 4 and report["transferred"] is True
    # Every blob comes back whole (skopeo checks each against its digest on the copy).
    for source in want:
        c = subprocess.run(
            [
                *("skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false"),
                *("--src-creds", f"{USER}:{PASSWORD}", f"docker://{target_ref(target, source)}"),
                f"dir:{target.storage.parent / source.split('/')[-1]}",
            ],
            capture_output=True,
            timeout=120,
        )
        assert c.returncode == 0, c.stderr

    again = run_airgap("push", str(bundle), "--registry", target.host)
    assert again.returncode == 0, again.stderr
    assert f"nothing transferred: every blob, manifest and tag was already in {target.host}." in again.stdout
    again_json = json.loads(run_airgap("push", str(bundle), "--registry", target.host, "--json").stdout)
    assert again_json["transferred"] is False and again_json["bytes_sent"] == 0
    assert {ref["tag"] for ref in again_json["references"]} == {"present"}
    everything = r.stdout + r.stderr + again.stdout + again.stderr
    assert PASSWORD not in everything and base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in everything


@pytest.mark.slow
def test_a_tag_pointing_elsewhere_fails_skips_or_is_overwritten(
    bundle: Path, target: Registry, registries: RegistrySet
) -> None:
    src = registries.plain.host
    a_source = f"{src}/airgap/base-a:1"
    a_target = target_ref(target, a_source)
    # Someone pushed image b under image a's tag.
    subprocess.run(
        [
            *("skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false"),
            *("--dest-creds", f"{USER}:{PASSWORD}", f"docker://{src}/airgap/app-b:2", f"docker://{a_target}"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    other = raw_digest(a_target)
    want = lock_digests(bundle)[a_source]
    assert other != want

    r = run_airgap("push", str(bundle), "--registry", target.host)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{a_target} is {other}, the bundle's is {want}" in r.stderr
    assert "--on-existing-tag" in r.stderr and "Traceback" not in r.stderr
    assert catalog(target) == ["airgap/base-a"]  # nothing else was pushed

    r = run_airgap("push", str(bundle), "--registry", target.host, "--on-existing-tag", "skip", "--json")
    assert r.returncode == 0, r.stderr
    tags = {ref["source"]: ref["tag"] for ref in json.loads(r.stdout)["references"]}
    assert tags[a_source] == "skipped" and tags[f"{src}/airgap/app-b:2"] == "created"
    assert raw_digest(a_target) == other
    assert raw_digest(f"{a_target.rsplit(':', 1)[0]}@{want}") == want  # the image is there, by digest

    r = run_airgap("push", str(bundle), "--registry", target.host, "--on-existing-tag", "overwrite", "--json")
    assert r.returncode == 0, r.stderr
    tags = {ref["source"]: ref["tag"] for ref in json.loads(r.stdout)["references"]}
    assert tags[a_source] == "updated" and tags[f"{src}/airgap/app-b:2"] == "present"
    assert raw_digest(a_target) == want


@pytest.mark.slow
def test_a_tampered_bundle_is_refused_before_anything_is_sent(bundle: Path, target: Registry, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    flip_byte_in_a_layer(bundle, bad)
    r = run_airgap("push", str(bad), "--registry", target.host)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed verification; nothing was pushed" in r.stderr and "ALTERED" in r.stderr
    assert catalog(target) == []


@pytest.mark.slow
def test_every_blob_is_hashed_as_it_is_sent_and_big_ones_go_in_chunks(
    bundle: Path, target: Registry, tmp_path: Path
) -> None:
    # Chunks of 1 MiB: the 3 MiB layer goes as PATCHes closed by a PUT.
    report = push_bundle(bundle, target.host, chunk=1 << 20, say=lambda _: None, warn=lambda _: None)
    assert report.blobs_sent >= 4 and report.blobs_chunked >= 1  # the 3 MiB layer at least
    for source, digest in lock_digests(bundle).items():
        assert raw_digest(target_ref(target, source)) == digest

    # Past the up-front verification (a file changed after it): the read that sends the blob stops the push,
    # and the registry never holds the altered blob.
    work = tmp_path / "t2"
    with run_registry(work, work / "storage", htpasswd_auth(work)) as fresh:
        config = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
        cfg = json.loads((config).read_text())
        cfg["auths"][fresh.host] = cfg["auths"][target.host]
        (config).write_text(json.dumps(cfg))
        bad = tmp_path / "bad"
        layer = flip_byte_in_a_layer(bundle, bad)
        with pytest.raises(ChangedSinceVerify, match="changed since the bundle was verified") as exc:
            push_bundle(bad, fresh.host, verify=False, chunk=1 << 20, say=lambda _: None, warn=lambda _: None)
        assert "not committed to the registry" in exc.value.message
        head = requests.head(f"{fresh.url}/v2/airgap/base-a/blobs/{layer}", auth=(USER, PASSWORD), timeout=10)
        assert head.status_code == 404
        tags = requests.get(f"{fresh.url}/v2/airgap/base-a/tags/list", auth=(USER, PASSWORD), timeout=10)
        assert tags.status_code == 404 or not tags.json().get("tags")


@pytest.mark.slow
def test_a_wrong_password_is_a_clear_error_that_never_shows_it(
    bundle: Path, target: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "not-the-Passw0rd-4242"
    monkeypatch.setenv("AIRGAP_REGISTRY_AUTH", f"{target.host}={USER}:{wrong}")
    r = run_airgap("push", str(bundle), "--registry", target.host)
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"registry {target.host}: {target.host} refused access" in r.stderr
    assert f"the credentials found for {target.host} were refused" in r.stderr
    assert f"docker login {target.host}" in r.stderr
    assert wrong not in r.stdout + r.stderr and "Traceback" not in r.stderr
    assert catalog(target) == []

    monkeypatch.setenv("AIRGAP_REGISTRY_AUTH", "")
    monkeypatch.setenv("DOCKER_CONFIG", str(target.storage.parent / "no-config"))
    r = run_airgap("push", str(bundle), "--registry", target.host, "--json")
    assert r.returncode == 3
    assert f"no credentials for {target.host} were found" in json.loads(r.stdout)["fix"]


@pytest.mark.slow
def test_bearer_token_registry_gets_a_push_token(
    bundle: Path, registries: RegistrySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg, tokens = registries.token()
    monkeypatch.setenv("AIRGAP_REGISTRY_AUTH", f"{reg.host}={USER}:{PASSWORD}")
    # A prefix of its own: this registry shares its storage with the session's source registry.
    r = run_airgap("push", str(bundle), "--registry", f"{reg.host}/pushed-by-token", "--json")
    assert r.returncode == 0, r.stderr
    for ref in json.loads(r.stdout)["references"]:
        assert ref["digest"] == lock_digests(bundle)[ref["source"]]
    scopes = [s for q in tokens.requests if q["user"] == USER for s in q["scope"] or []]
    assert any(s.startswith("repository:pushed-by-token/airgap/base-a:") and "push" in s for s in scopes)


def make_tls(work: Path) -> tuple[Path, Path, Path]:
    """A site CA and a certificate for 127.0.0.1 it signed: (ca.pem, server.pem, server.key)."""
    work.mkdir(parents=True, exist_ok=True)
    ca, ca_key, srv, srv_key, csr = (work / n for n in ("ca.pem", "ca.key", "srv.pem", "srv.key", "srv.csr"))

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=airgap-test-ca",
    )
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(srv_key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = work / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl(
        *("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial"),
        *("-out", str(srv), "-days", "2", "-extfile", str(ext)),
    )
    return ca, srv, srv_key


@pytest.mark.slow
def test_tls_with_a_site_ca(bundle: Path, tmp_path: Path) -> None:
    from tests.registry_fixtures import free_port, stop_process

    work = tmp_path / "tls"
    ca, cert, key = make_tls(work)
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(work / "storage")}},
        "http": {
            "addr": f"127.0.0.1:{port}",
            "secret": "airgap-test",
            "tls": {"certificate": str(cert), "key": str(key)},
        },
    }
    (work / "config.yml").write_text(json.dumps(config))
    with open(work / "registry.log", "wb") as log:
        proc = subprocess.Popen(["docker-registry", "serve", str(work / "config.yml")], stdout=log, stderr=log)
    try:
        # Up once it answers over TLS (a readiness loop on the outcome, not on a clock).
        for _ in range(300):
            try:
                requests.get(f"https://127.0.0.1:{port}/v2/", verify=str(ca), timeout=1)
                break
            except requests.RequestException:
                assert proc.poll() is None, (work / "registry.log").read_text()
                time.sleep(0.05)
        host = f"127.0.0.1:{port}"
        r = run_airgap("push", str(bundle), "--registry", f"https://{host}")
        assert r.returncode == 3, r.stdout + r.stderr
        assert f"registry {host}: TLS failed" in r.stderr and "--ca-file" in r.stderr and "Traceback" not in r.stderr

        r = run_airgap("push", str(bundle), "--registry", f"https://{host}", "--ca-file", str(ca), "--json")
        assert r.returncode == 0, r.stderr
        got = {ref["source"]: ref["digest"] for ref in json.loads(r.stdout)["references"]}
        assert got == lock_digests(bundle)

        r = run_airgap("push", str(bundle), "--registry", f"https://{host}", "--insecure")
        assert r.returncode == 2 and "contradict" in r.stderr
    finally:
        stop_process(proc)


@pytest.mark.slow
def test_docker_pulls_what_was_pushed(bundle: Path, target: Registry, dockerd: Dockerd) -> None:
    """A real Docker daemon pulls from the target registry, with the login, the digests the lock names."""
    r = run_airgap("push", str(bundle), "--registry", target.host, "--json")
    assert r.returncode == 0, r.stderr
    client = dockerd.client()
    locked = {
        a.meta["ref"]: a.meta
        for a in Lock.read(bundle).artifacts
        if a.layer == "images" and a.meta.get("role") == "manifest"
    }
    for source, meta in locked.items():
        repo, tag = target_ref(target, source).rsplit(":", 1)
        image = client.images.pull(repo, tag=tag, auth_config={"username": USER, "password": PASSWORD})
        assert image.id == meta["config_digest"]
        assert f"{repo}@{meta['manifest_digest']}" in image.attrs["RepoDigests"]
    a = target_ref(target, next(s for s in locked if "base-a" in s))
    assert dockerd.docker("run", "--rm", "--network", "none", a, "cat", "/a.txt").stdout == "image A holds this\n"
