"""The images layer against real parts: Debian's docker-registry (plain, htpasswd, token auth) with images
pushed by skopeo, a fault-injecting proxy, and a private dockerd (vfs) for the install side."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from airgap import manifest as manifest_mod
from airgap.artifacts import Digest
from airgap.collect import CollectFailed, collect
from airgap.errors import BadInputError
from airgap.host import Host
from airgap.install_context import InstallContext
from airgap.layers import LAYERS
from airgap.layers.images import BundledImage, ImagesLayer, archive_stream
from airgap.lock import Lock, LockedArtifact
from airgap.sources.http import HttpSource
from airgap.sources.registry import (
    Credentials,
    DaemonExport,
    RegistryAuth,
    lookup_credentials,
    parse_ref,
    pick_platform,
    scheme_for,
)
from tests.conftest import run_airgap
from tests.dockerd import Dockerd, dockerd_fixture  # noqa: F401  # the `dockerd` fixture
from tests.registry_fixtures import (  # noqa: F401  # the `registries` and `proxy` fixtures
    PASSWORD,
    USER,
    FaultProxy,
    RegistrySet,
    proxy_fixture,
    registries_fixture,
    sha256_hex,
)

IMAGES_DIR = "layers/07-images"
NO_DAEMON = "unix:///nonexistent/airgap-test/docker.sock"


def write_manifest(
    tmp: Path,
    images: Sequence[str | dict[str, object]],
    arch: str = "amd64",
    mirrors: dict[str, str] | None = None,
    insecure: list[str] | None = None,
) -> Path:
    doc: dict[str, object] = {
        "name": "images-test",
        "target": {"os": "ubuntu-22.04", "arch": arch},
        "images": list(images),
    }
    if mirrors:
        doc["mirrors"] = mirrors
    if insecure:
        doc["insecure_registries"] = insecure
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "manifest.yaml"
    path.write_text(json.dumps(doc, indent=2))  # JSON is YAML
    return path


def collect_images(tmp: Path, images: Sequence[str | dict[str, object]], **kw: object) -> Path:
    m = manifest_mod.load(write_manifest(tmp, images, **kw))  # type: ignore[arg-type]
    bundle = tmp / "bundle"
    collect(m, bundle, HttpSource(m.mirrors, retries=3, backoff=0.01), jobs=4, progress_mode="off")
    return bundle


def lock_images(bundle: Path) -> dict[str, dict[str, object]]:
    """ref -> the lock's meta for that image."""
    out = {}
    for a in Lock.read(bundle).artifacts:
        if a.layer == "images" and a.meta.get("role") == "manifest":
            for ref in a.meta["refs"]:
                out[ref] = a.meta
    return out


def bundle_text(bundle: Path) -> bytes:
    return b"".join(p.read_bytes() for p in bundle.rglob("*") if p.is_file())


@pytest.fixture
def no_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    """Collect must not need Docker: point DOCKER_HOST at nothing."""
    monkeypatch.setenv("DOCKER_HOST", NO_DAEMON)


# --- references, transport, credentials (no servers) ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "registry", "repo", "tag", "docker_tag"),
    [
        ("ubuntu", "registry-1.docker.io", "library/ubuntu", None, "ubuntu:latest"),
        ("ubuntu:22.04", "registry-1.docker.io", "library/ubuntu", "22.04", "ubuntu:22.04"),
        ("docker.io/library/ubuntu:22.04", "registry-1.docker.io", "library/ubuntu", "22.04", "ubuntu:22.04"),
        ("registry-1.docker.io/ubuntu", "registry-1.docker.io", "library/ubuntu", None, "ubuntu:latest"),
        ("vllm/vllm-openai:v0.6.3", "registry-1.docker.io", "vllm/vllm-openai", "v0.6.3", "vllm/vllm-openai:v0.6.3"),
        (
            "nvcr.io/nvidia/cuda:12.4.0-base-ubuntu22.04",
            "nvcr.io",
            "nvidia/cuda",
            "12.4.0-base-ubuntu22.04",
            "nvcr.io/nvidia/cuda:12.4.0-base-ubuntu22.04",
        ),
        ("localhost/a", "localhost", "a", None, "localhost/a:latest"),
        ("host:5000/a/b@sha256:" + "a" * 64, "host:5000", "a/b", None, "host:5000/a/b:sha256-" + "a" * 64),
        ("host:5000/a/b:1.0@sha256:" + "b" * 64, "host:5000", "a/b", "1.0", "host:5000/a/b:1.0"),
    ],
)
def test_refs_are_read_as_docker_reads_them(
    text: str, registry: str, repo: str, tag: str | None, docker_tag: str
) -> None:
    ref = parse_ref(text)
    assert (ref.registry, ref.repository, ref.tag, ref.docker_tag) == (registry, repo, tag, docker_tag)
    if "@" in text:
        assert ref.reference == text.split("@")[1]


@pytest.mark.parametrize("bad", ["Ubuntu_/x", "host:5000/a/b@sha256:123", "a/b:bad tag", "a//b"])
def test_bad_refs_say_what_is_wrong(bad: str) -> None:
    with pytest.raises(ValueError, match="not"):
        parse_ref(bad)


def test_plain_http_only_for_loopback_and_listed_registries() -> None:
    assert scheme_for("localhost:5000") == "http"
    assert scheme_for("127.0.0.5:5000") == "http"
    assert scheme_for("[::1]:5000") == "http"
    assert scheme_for("registry.corp:5000") == "https"
    assert scheme_for("registry.corp:5000", ["registry.corp:5000"]) == "http"
    assert scheme_for("registry.corp", ["http://registry.corp"]) == "http"
    assert scheme_for("nvcr.io", ["registry.corp"]) == "https"


def test_credentials_from_env_docker_config_and_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "docker"
    cfg.mkdir()
    auth = base64.b64encode(b"hubuser:hubpass").decode()
    (cfg / "config.json").write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": auth},
                    "https://nvcr.io": {"auth": base64.b64encode(b"$oauthtoken:nvkey").decode()},
                },
                "credHelpers": {"ghcr.io": "airgaptest"},
            }
        )
    )
    helper = tmp_path / "bin" / "docker-credential-airgaptest"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nread host\necho "{\\"Username\\": \\"gh\\", \\"Secret\\": \\"tok-$host\\"}"\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")  # the helper is found on PATH
    env = {"DOCKER_CONFIG": str(cfg)}
    assert lookup_credentials("registry-1.docker.io", env) == Credentials("hubuser", "hubpass")
    assert lookup_credentials("nvcr.io", env) == Credentials("$oauthtoken", "nvkey")
    assert lookup_credentials("ghcr.io", env) == Credentials("gh", "tok-ghcr.io")
    assert lookup_credentials("quay.io", env) is None
    env["AIRGAP_REGISTRY_AUTH"] = "other.io=a:b nvcr.io=$oauthtoken:from-env"
    assert lookup_credentials("nvcr.io", env) == Credentials("$oauthtoken", "from-env")
    assert "nvkey" not in repr(Credentials("$oauthtoken", "nvkey"))


def test_platform_choice_lists_what_exists() -> None:
    index = {
        "manifests": [
            {"digest": "sha256:" + "1" * 64, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
            {
                "digest": "sha256:" + "2" * 64,
                "size": 1,
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
            },
            {"digest": "sha256:" + "3" * 64, "size": 1, "platform": {"os": "unknown", "architecture": "unknown"}},
        ]
    }
    assert pick_platform(index, "linux/arm64", "x").digest.endswith("2" * 64)
    assert pick_platform(index, "linux/arm64/v8", "x").digest.endswith("2" * 64)
    with pytest.raises(BadInputError) as err:
        pick_platform(index, "linux/s390x", "img:1")
    assert "img:1: no linux/s390x variant; the registry has linux/amd64, linux/arm64/v8." in str(err.value)


def test_archive_stream_is_a_docker_archive(tmp_path: Path) -> None:
    arts = {}
    for key, data in (
        ("layer", b"L" * 1000),
        ("config", b'{"rootfs": {"diff_ids": []}}'),
        ("manifest", b'{"schemaVersion": 2}'),
    ):
        name = f"blobs/sha256/{sha256_hex(data)}"
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
        arts[key] = LockedArtifact(
            layer="images", name=name, path=f"{IMAGES_DIR}/{name}", size=len(data), sha256=sha256_hex(data), url=""
        )
    layer, config, manifest = arts["layer"], arts["config"], arts["manifest"]
    img = BundledImage(
        ["ubuntu:22.04"],
        "sha256:" + manifest.sha256,
        "sha256:" + config.sha256,
        "application/vnd.oci.image.manifest.v1+json",
        "linux/amd64",
        0,
        manifest,
        config,
        [layer, layer],
    )
    stream = b"".join(archive_stream(img, lambda a: open(tmp_path / a.name, "rb")))  # noqa: SIM115
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        names = tar.getnames()
        entry = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert tar.extractfile(layer.name).read() == b"L" * 1000  # type: ignore[union-attr]
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert entry == [{"Config": config.name, "RepoTags": ["ubuntu:22.04"], "Layers": [layer.name] * 2}]
    assert names.count(layer.name) == 1
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/library/ubuntu:22.04"


def test_images_layer_is_in_the_install_order() -> None:
    layer = next(x for x in LAYERS if x.name == "images")
    assert isinstance(layer, ImagesLayer) and layer.installable
    assert layer.preflight == frozenset({"disk"})


# --- collect from a real registry ----------------------------------------------------------------------


@pytest.mark.slow
def test_two_images_sharing_a_layer_are_stored_once_and_verify(
    registries: RegistrySet, tmp_path: Path, no_daemon: None
) -> None:
    reg, imgs = registries.plain, registries.images
    refs = [f"{reg.host}/airgap/base-a:1", f"{reg.host}/airgap/app-b:2"]
    m = write_manifest(tmp_path, [*refs])
    r = run_airgap("collect", str(m), "-o", str(tmp_path / "bundle"), "--json")
    assert r.returncode == 0, r.stderr
    bundle = tmp_path / "bundle"
    blob_dir = bundle / IMAGES_DIR / "blobs/sha256"

    shared = imgs.a.layer_digests[0]
    assert shared == imgs.b.layer_digests[0]
    stored = {p.name for p in blob_dir.iterdir()}
    wanted = {d.split(":")[1] for i in (imgs.a, imgs.b) for d in [i.manifest_digest, i.config_digest, *i.layer_digests]}
    assert stored == wanted  # every blob once, nothing else
    for img in (imgs.a, imgs.b):
        for d in img.layer_digests:
            assert sha256_hex((blob_dir / d.split(":")[1]).read_bytes()) == d.split(":")[1]

    meta = lock_images(bundle)
    assert meta[refs[0]]["manifest_digest"] == imgs.a.manifest_digest  # a :tag ref, pinned in the lock
    assert meta[refs[0]]["config_digest"] == imgs.a.config_digest
    assert meta[refs[0]]["pinned"] == f"{reg.host}/airgap/base-a@{imgs.a.manifest_digest}"
    assert meta[refs[1]]["media_type"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert meta[refs[1]]["platform"] == "linux/amd64"
    lock = Lock.read(bundle)
    index_meta = next(a.meta for a in lock.artifacts if a.path == f"{IMAGES_DIR}/index.json")
    shared_size = imgs.a.layer_sizes[0]
    assert index_meta["image_bytes"] == imgs.a.size + imgs.b.size
    assert index_meta["saved_bytes"] == shared_size
    layer_entry = next(a for a in lock.artifacts if a.path.endswith(shared.split(":")[1]))
    assert layer_entry.upstream_digest is not None
    assert layer_entry.upstream_digest.value == shared.split(":")[1]
    assert layer_entry.url == f"http://{reg.host}/v2/airgap/base-a/blobs/{shared}"

    archive = json.loads((bundle / IMAGES_DIR / "manifest.json").read_text())
    assert [e["RepoTags"] for e in archive] == [[refs[0]], [refs[1]]]
    assert archive[0]["Layers"] == [f"blobs/sha256/{d.split(':')[1]}" for d in imgs.a.layer_digests]
    index = json.loads((bundle / IMAGES_DIR / "index.json").read_text())
    assert [e["digest"] for e in index["manifests"]] == [imgs.a.manifest_digest, imgs.b.manifest_digest]

    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle).returncode == 0
    v = run_airgap("verify", str(bundle))
    assert v.returncode == 0, v.stdout + v.stderr
    # The directory is an OCI layout: skopeo reads an image out of it by its ref name (skopeo 1.9 finds
    # OCI-typed manifests only, so image a, not b, which the registry holds as a Docker v2 manifest).
    s = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{bundle / IMAGES_DIR}:1"], capture_output=True)
    assert s.returncode == 0 and hashlib.sha256(s.stdout).hexdigest() == imgs.a.manifest_digest.split(":")[1]

    # A second run transfers no blob again.
    r2 = run_airgap("collect", str(m), "-o", str(bundle), "--json")
    assert r2.returncode == 0, r2.stderr
    assert json.loads(r2.stdout)["transferred_bytes"] == 0


@pytest.mark.slow
def test_index_picks_the_target_platform(registries: RegistrySet, tmp_path: Path, no_daemon: None) -> None:
    reg, imgs = registries.plain, registries.images
    ref = f"{reg.host}/airgap/multi:1"
    bundle = collect_images(tmp_path / "arm", [ref], arch="arm64")
    meta = lock_images(bundle)[ref]
    assert meta["manifest_digest"] == imgs.multi_arm64.manifest_digest
    assert meta["index_digest"] == imgs.multi_index_digest
    assert meta["platform"] == "linux/arm64"
    # A per-image platform wins over target.arch.
    bundle = collect_images(tmp_path / "amd", [{"ref": ref, "platform": "linux/amd64"}], arch="arm64")
    assert lock_images(bundle)[ref]["manifest_digest"] == imgs.multi_amd64.manifest_digest

    # Single-platform image, wrong arch; and a platform the index lacks: both name the image and the fix.
    m = write_manifest(
        tmp_path,
        [
            ref,
            {"ref": f"{reg.host}/airgap/base-a:1", "platform": "linux/arm64"},
            {"ref": ref, "platform": "linux/s390x"},
        ],
    )
    r = run_airgap("collect", str(m), "-o", str(tmp_path / "bad"))
    assert r.returncode == 2, r.stderr
    assert f"image {ref}: no linux/s390x variant; the registry has linux/amd64, linux/arm64." in r.stderr
    assert f"image {reg.host}/airgap/base-a:1: it is built for linux/amd64 only" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_missing_image_names_it(registries: RegistrySet, tmp_path: Path, no_daemon: None) -> None:
    reg = registries.plain
    m = write_manifest(tmp_path, [f"{reg.host}/airgap/base-a:nope"])
    r = run_airgap("collect", str(m), "-o", str(tmp_path / "b"))
    assert r.returncode == 3
    assert f"image {reg.host}/airgap/base-a:nope: {reg.host} has no manifest airgap/base-a:nope (404" in r.stderr
    assert "No local Docker daemon has it either" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_basic_auth_from_docker_config(
    registries: RegistrySet, tmp_path: Path, no_daemon: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = registries.basic()
    ref = f"{reg.host}/airgap/base-a:1"
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty"))
    m = write_manifest(tmp_path, [ref])
    r = run_airgap("collect", str(m), "-o", str(tmp_path / "denied"))
    assert r.returncode == 3
    assert f"image {ref}: {reg.host} refused access to manifest airgap/base-a:1 (401" in r.stderr
    assert f"docker login {reg.host}" in r.stderr

    cfg = tmp_path / "docker"
    cfg.mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    r = run_airgap("collect", str(m), "-o", str(tmp_path / "bundle"), "--json")
    assert r.returncode == 0, r.stderr
    assert lock_images(tmp_path / "bundle")[ref]["config_digest"] == registries.images.a.config_digest
    everything = bundle_text(tmp_path / "bundle") + r.stdout.encode() + r.stderr.encode()
    assert PASSWORD.encode() not in everything and auth.encode() not in everything


@pytest.mark.slow
def test_bearer_token_challenge(
    registries: RegistrySet, tmp_path: Path, no_daemon: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg, tokens = registries.token()
    ref = f"{reg.host}/airgap/app-b:2"
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty"))
    # Anonymous: the token service hands out a token without access, as Docker Hub does for a private repo.
    m = write_manifest(tmp_path, [ref])
    r = run_airgap("collect", str(m), "-o", str(tmp_path / "denied"))
    assert r.returncode == 3
    assert f"image {ref}: {reg.host} refused access" in r.stderr
    assert tokens.requests[-1]["user"] is None

    monkeypatch.setenv("AIRGAP_REGISTRY_AUTH", f"{reg.host}={USER}:{PASSWORD}")
    before = len(tokens.requests)
    r = run_airgap("collect", str(m), "-o", str(tmp_path / "bundle"), "--json")
    assert r.returncode == 0, r.stderr
    asked = tokens.requests[before:]
    assert asked and {q["user"] for q in asked} == {USER}
    assert asked[0]["scope"] == ["repository:airgap/app-b:pull"]
    # The token is asked once and reused for every blob (no 401 round trip per download).
    assert len(asked) == 1
    assert lock_images(tmp_path / "bundle")[ref]["manifest_digest"] == registries.images.b.manifest_digest
    everything = bundle_text(tmp_path / "bundle") + r.stdout.encode() + r.stderr.encode()
    assert PASSWORD.encode() not in everything and b"Bearer" not in everything

    # The same auth object drives HttpSource's own downloads: a blob's first GET meets the 401 challenge
    # (nothing cached yet), gets a token, and is resent; the body streams and is checked as usual.
    auth = RegistryAuth(lambda host: Credentials(USER, PASSWORD))
    blob = registries.images.b.layer_digests[1]
    res = HttpSource(retries=0).fetch(
        [f"{reg.url}/v2/airgap/app-b/blobs/{blob}"],
        tmp_path / "blob",
        "blob",
        expected=Digest("sha256", blob.split(":")[1], "test"),
        auth=auth,
    )
    assert res.sha256 == blob.split(":")[1] and auth.token_requests == 1


# --- faults on the way ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_corrupt_blob_is_refused_and_not_kept(
    registries: RegistrySet, proxy: FaultProxy, tmp_path: Path, no_daemon: None
) -> None:
    imgs = registries.images
    bad = imgs.a.layer_digests[1]
    proxy.corrupt(bad, offset=10)
    with pytest.raises(CollectFailed) as err:
        collect_images(tmp_path, [f"{proxy.host}/airgap/base-a:1"])
    text = str(err.value)
    assert f"{IMAGES_DIR}/blobs/sha256/{bad.split(':')[1]}: the bytes from" in text
    assert f"do not match the expected sha256 (http://{proxy.host}/v2/airgap/base-a/manifests/" in text
    assert not (tmp_path / "bundle" / IMAGES_DIR / "blobs/sha256" / bad.split(":")[1]).exists()
    assert not list((tmp_path / "bundle").rglob("*.part"))
    assert len(proxy.blob_requests(bad)) == 1  # a mismatch from scratch is not retried


@pytest.mark.slow
def test_connection_cut_mid_blob_resumes(
    registries: RegistrySet, proxy: FaultProxy, tmp_path: Path, no_daemon: None
) -> None:
    big = registries.images.big
    digest, size = big.layer_digests[0], big.layer_sizes[0]
    cut_at = 1 << 20
    proxy.cut(digest, after=cut_at)
    bundle = collect_images(tmp_path, [f"{proxy.host}/airgap/big:1"])
    reqs = proxy.blob_requests(digest)
    assert [(q.range, q.bytes_sent) for q in reqs] == [(None, cut_at), (f"bytes={cut_at}-", size - cut_at)]
    path = bundle / IMAGES_DIR / "blobs/sha256" / digest.split(":")[1]
    assert sha256_hex(path.read_bytes()) == digest.split(":")[1]


@pytest.mark.slow
def test_mirrors_and_docker_hub_names(
    registries: RegistrySet, proxy: FaultProxy, tmp_path: Path, no_daemon: None
) -> None:
    imgs = registries.images
    mirrors = {"https://registry-1.docker.io": proxy.url, "https://registry.airgap.test": proxy.url}
    bundle = collect_images(tmp_path, ["abox", "registry.airgap.test/airgap/base-a:1"], mirrors=mirrors)
    meta = lock_images(bundle)
    assert meta["abox"]["tags"] == ["abox:latest"]
    assert meta["abox"]["pinned"] == f"docker.io/library/abox@{imgs.hub.manifest_digest}"
    assert meta["registry.airgap.test/airgap/base-a:1"]["config_digest"] == imgs.a.config_digest
    urls = {a.url for a in Lock.read(bundle).artifacts if a.meta.get("role") == "layer"}
    # The lock records canonical URLs (before mirrors), so bundles made through any mirror agree.
    assert f"https://registry-1.docker.io/v2/library/abox/blobs/{imgs.hub.layer_digests[1]}" in urls
    assert f"https://registry.airgap.test/v2/airgap/base-a/blobs/{imgs.a.layer_digests[1]}" in urls
    assert all(q.path.startswith("/v2/library/abox/") or q.path.startswith("/v2/airgap/base-a/") for q in proxy.records)


# --- the server side: a real dockerd -------------------------------------------------------------------


def install_ctx(bundle: Path, d: Dockerd, dry_run: bool = False) -> InstallContext:
    host = Host(dry_run=dry_run, echo=io.StringIO(), log=io.StringIO(), env=d.env())
    return InstallContext(host, bundle, Lock.read(bundle))


def remove_all_images(d: Dockerd) -> None:
    client = d.client()
    for image in client.images.list():
        client.images.remove(image.id, force=True)


@pytest.mark.slow
def test_install_loads_tags_checks_ids_runs_and_skips(
    registries: RegistrySet, dockerd: Dockerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg, imgs = registries.plain, registries.images
    monkeypatch.setenv("DOCKER_HOST", NO_DAEMON)
    refs = [f"{reg.host}/airgap/base-a:1", f"{reg.host}/airgap/app-b:2", f"{reg.host}/airgap/multi:1"]
    bundle = collect_images(tmp_path, refs)
    monkeypatch.delenv("DOCKER_HOST")
    remove_all_images(dockerd)
    layer = ImagesLayer()

    dry = install_ctx(bundle, dockerd, dry_run=True)
    assert layer.installed(dry) is None
    summary = layer.install(dry)
    assert "would load 3 of 3" in summary
    assert sum(a.startswith("load image:") for a in dry.host.actions) == 3
    assert "would load image: " + refs[0] in dry.host.echo.getvalue()  # type: ignore[union-attr]
    assert dockerd.client().images.list() == []  # a dry run loads nothing

    ctx = install_ctx(bundle, dockerd)
    summary = layer.install(ctx)
    assert "loaded 3 of 3" in summary, summary
    client = dockerd.client()
    for ref, img in zip(refs, (imgs.a, imgs.b, imgs.multi_amd64), strict=True):
        assert client.images.get(ref).id == img.config_digest == lock_images(bundle)[ref]["config_digest"]
    out = dockerd.docker("run", "--rm", "--network", "none", refs[0], "cat", "/a.txt").stdout
    assert out == "image A holds this\n"
    out = dockerd.docker("run", "--rm", "--network", "none", refs[1], "/bin/sh", "-c", "cat /b.txt; ls /bin").stdout
    assert out.startswith("image B holds that\n") and "busybox" in out
    assert dockerd.docker("run", "--rm", "--network", "none", refs[2], "cat", "/platform.txt").stdout == "amd64\n"

    again = install_ctx(bundle, dockerd)
    assert layer.installed(again) == "all 3 image(s) already loaded with the bundle's IDs"
    assert "loaded 0 of 3" in layer.install(again)
    assert not [a for a in again.host.actions if a.startswith("load image:")]

    # A tag moved away (someone re-tagged): only the tag is put back, nothing is loaded.
    dockerd.docker("tag", refs[1], refs[0])
    third = install_ctx(bundle, dockerd)
    assert layer.installed(third) is None
    summary = layer.install(third)
    assert "loaded 0 of 3 (0 B in" in summary and summary.endswith("1 re-tagged, 2 already present")
    assert [a.split(":")[0] for a in third.host.actions] == ["tag"]
    assert client.images.get(refs[0]).id == imgs.a.config_digest


@pytest.mark.slow
def test_blob_split_into_parts_loads_straight_from_the_parts(
    registries: RegistrySet, dockerd: Dockerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle for FAT32/DVDs stores big blobs as NAME.001, NAME.002...: install streams them without
    joining them on disk."""
    reg, imgs = registries.plain, registries.images
    monkeypatch.setenv("DOCKER_HOST", NO_DAEMON)
    ref = f"{reg.host}/airgap/base-a:1"
    m = manifest_mod.load(write_manifest(tmp_path, [ref]))
    bundle = tmp_path / "bundle"
    collect(m, bundle, HttpSource(m.mirrors, retries=3, backoff=0.01), progress_mode="off", max_file_size=512 << 10)
    busybox = bundle / IMAGES_DIR / "blobs/sha256" / imgs.a.layer_digests[0].split(":")[1]
    assert not busybox.exists() and len(list(busybox.parent.glob(busybox.name + ".0*"))) == 2
    assert run_airgap("verify", str(bundle)).returncode == 0
    monkeypatch.delenv("DOCKER_HOST")
    remove_all_images(dockerd)
    ctx = install_ctx(bundle, dockerd)
    assert "loaded 1 of 1" in ImagesLayer().install(ctx)
    assert dockerd.client().images.get(ref).id == imgs.a.config_digest
    assert dockerd.docker("run", "--rm", "--network", "none", ref, "cat", "/a.txt").stdout == "image A holds this\n"
    log = ctx.host.log.getvalue()  # type: ignore[union-attr]
    assert "joining" not in log and f"images: loaded {ref} (" in log


@pytest.mark.slow
def test_local_daemon_image_is_exported_and_loads_back(
    registries: RegistrySet, dockerd: Dockerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.registry_fixtures import busybox_layer

    rootfs = tmp_path / "rootfs.tar"
    # An image that exists only in this daemon, made the way people make one from a root filesystem.
    rootfs.write_bytes(busybox_layer({"local.txt": b"built on this PC\n"}))
    subprocess.run(
        ["docker", "--host", dockerd.host, "import", str(rootfs), "airgap-local/app:dev"],
        check=True,
        capture_output=True,
    )
    image_id = dockerd.client().images.get("airgap-local/app:dev").id
    # Also under a registry name the registry does not have: taken from the daemon without `local: true`.
    unpushed = f"{registries.plain.host}/airgap/never-pushed:1"
    dockerd.docker("tag", "airgap-local/app:dev", unpushed)
    monkeypatch.setenv("DOCKER_HOST", dockerd.host)
    staging = tmp_path / "tmp"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    staged_at_close: list[bool] = []
    close = DaemonExport.close

    def spy(self: DaemonExport) -> None:
        staged_at_close.append(any(staging.glob("airgap-docker-export-*")))
        close(self)

    monkeypatch.setattr(DaemonExport, "close", spy)
    bundle = collect_images(tmp_path, [{"ref": "airgap-local/app:dev", "local": True}, unpushed])
    # One export for the run, staged until the run's end, then removed: nothing outlives the collect.
    assert staged_at_close == [True]
    assert not list(staging.glob("airgap-docker-export-*"))
    meta = lock_images(bundle)
    assert meta["airgap-local/app:dev"]["config_digest"] == image_id
    assert meta["airgap-local/app:dev"]["source"] == "docker-daemon"
    assert meta[unpushed]["config_digest"] == image_id and meta[unpushed]["source"] == "docker-daemon"
    lock = Lock.read(bundle)
    assert all(
        a.url.startswith("http://docker-daemon.invalid/") for a in lock.artifacts if a.meta.get("role") == "layer"
    )
    assert run_airgap("verify", str(bundle)).returncode == 0

    remove_all_images(dockerd)
    ctx = install_ctx(bundle, dockerd)
    assert "loaded 1 of 1" in ImagesLayer().install(ctx)
    assert dockerd.client().images.get("airgap-local/app:dev").id == image_id
    assert dockerd.client().images.get(unpushed).id == image_id
    out = dockerd.docker("run", "--rm", "--network", "none", "airgap-local/app:dev", "cat", "/local.txt")
    assert out.stdout == "built on this PC\n"


def test_local_image_without_a_daemon_is_a_clear_error(tmp_path: Path, no_daemon: None) -> None:
    m = write_manifest(tmp_path, [{"ref": "airgap-local/app:dev", "local": True}])
    r = run_airgap("collect", str(m), "-o", str(tmp_path / "b"))
    assert r.returncode == 3
    assert (
        "image airgap-local/app:dev: it is marked `local: true`, so it must come from the local Docker daemon, "
        "and none answers" in r.stderr
    )
    assert "Traceback" not in r.stderr


def test_install_without_a_daemon_says_so(tmp_path: Path) -> None:
    from airgap.bundle import finalize
    from airgap.errors import InstallError
    from airgap.lock import Lock
    from airgap.units import now_utc

    arts = []
    config = b'{"architecture": "amd64", "os": "linux", "rootfs": {"diff_ids": []}}'
    manifest = b'{"config": {"digest": "sha256:' + sha256_hex(config).encode() + b'"}, "layers": []}'
    for data, meta in (
        (config, {"role": "config"}),
        (
            manifest,
            {
                "role": "manifest",
                "ref": "a:1",
                "refs": ["a:1"],
                "tags": ["a:1"],
                "manifest_digest": "sha256:" + sha256_hex(manifest),
                "config_digest": "sha256:" + sha256_hex(config),
                "platform": "linux/amd64",
                "media_type": "application/vnd.oci.image.manifest.v1+json",
                "layers": 0,
                "size": 100,
                "source": "registry",
            },
        ),
    ):
        name = f"blobs/sha256/{sha256_hex(data)}"
        (tmp_path / IMAGES_DIR / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / IMAGES_DIR / name).write_bytes(data)
        arts.append(
            LockedArtifact(
                layer="images",
                name=name,
                path=f"{IMAGES_DIR}/{name}",
                size=len(data),
                sha256=sha256_hex(data),
                url="",
                meta=meta,
            )
        )
    finalize(tmp_path, Lock(name="t", target={}, created=now_utc(), artifacts=arts))
    ctx = InstallContext(
        Host(env={"DOCKER_HOST": NO_DAEMON, "PATH": os.environ["PATH"]}), tmp_path, Lock.read(tmp_path)
    )
    with pytest.raises(InstallError, match="no Docker daemon answers"):
        ImagesLayer().install(ctx)
    dry = InstallContext(Host(dry_run=True, env={"DOCKER_HOST": NO_DAEMON}), tmp_path, Lock.read(tmp_path))
    assert "would load 1 of 1" in ImagesLayer().install(dry)
