"""Image drift on real hosts, and the delta it leads to.

Two Debian 12 hosts (tests/fleet_hosts.py), each with its own Docker daemon: a private dockerd of this
machine (tests/dockerd.py) whose socket is mounted into that host at /var/run/docker.sock, where the images
layer finds it. The bundle holds one small image from a real registry (Debian's docker-registry, reached
through a recording proxy: tests/registry_fixtures.py) and one pinned file, with tool/ for the hosts'
python. `fleet install` loads the image into both daemons; an image removed by hand on one host is drift
that `fleet status` names, and the inventory it writes drives `collect --since`: the delta carries that
image again and nothing of the file layer, fetching nothing but the image.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airgap.localserver import LocalHTTPServer
from airgap.lock import Lock
from tests.conftest import run_airgap, sha
from tests.dockerd import Dockerd, run_dockerd
from tests.fleet_hosts import fleet_unavailable, host_rootfs, start_hosts
from tests.registry_fixtures import (
    OCI_MANIFEST,
    BuiltImage,
    FaultProxy,
    busybox_layer,
    make_image,
    missing_tools,
    run_registry,
    skopeo_push,
    tar_layer,
    write_oci_layout,
)
from tests.test_fleet import HOST_PYTHON, _fleet, _hosts_of, _inventory

HOSTS = ("h1", "h2")
REPO, TAG = "airgap/fleet-img", "1"
SCRIPT = b"#!/bin/sh\necho fleet\n"
SOCKET = "/var/run/docker.sock"  # where the images layer looks when DOCKER_HOST is unset


@dataclass
class ImagesFleet:
    fleet: Dockerd  # runs the hosts' containers
    daemons: dict[str, Dockerd]  # each host's own Docker daemon
    rootfs: Path
    manifest: Path
    bundle: Path
    image: BuiltImage
    ref: str
    proxy: FaultProxy  # in front of the registry: records what collect fetched
    files: LocalHTTPServer  # serves the file layer

    @property
    def image_paths(self) -> set[str]:
        return {a.path for a in Lock.read(self.bundle).artifacts if a.layer == "images"}


def _push_image(work: Path, registry_host: str) -> BuiltImage:
    image = make_image(REPO, TAG, [busybox_layer(), tar_layer({"fleet.txt": b"loaded by airgap fleet\n"})])
    layout = work / "oci"
    write_oci_layout(layout, image)
    skopeo_push(layout, TAG, f"{registry_host}/{REPO}:{TAG}")
    import requests

    # skopeo may rewrite the manifest on the way: the registry's copy is the one the bundle pins.
    r = requests.get(
        f"http://{registry_host}/v2/{REPO}/manifests/{TAG}",
        headers={"Accept": f"application/vnd.docker.distribution.manifest.v2+json, {OCI_MANIFEST}"},
        timeout=30,
    )
    r.raise_for_status()
    image.manifest = r.content
    return image


def _collect_bundle(work: Path, ref: str, files_url: str) -> tuple[Path, Path]:
    from airgap import manifest as manifest_mod
    from airgap.collect import collect
    from airgap.sources.http import HttpSource

    work.mkdir(parents=True, exist_ok=True)
    m = work / "manifest.yaml"
    doc = {
        "name": "fleet-images",
        "target": {"os": "ubuntu-22.04", "arch": "amd64", "python": HOST_PYTHON},
        "images": [ref],
        "files": [{"url": "https://example.com/tools/check.sh", "sha256": sha(SCRIPT)}],
        "mirrors": {"https://example.com": files_url},
    }
    m.write_text(json.dumps(doc, indent=2))  # JSON is YAML
    manifest = manifest_mod.load(m)
    bundle = work / "bundle"
    # tool/ comes from PyPI through pip (its own index settings), not through the mirrors above.
    collect(manifest, bundle, HttpSource(manifest.mirrors, retries=3, backoff=0.01), progress_mode="off", tool=True)
    return m, bundle


@pytest.fixture(scope="module")
def images_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImagesFleet]:
    reason = fleet_unavailable()
    if reason:
        pytest.skip(reason)
    missing = missing_tools()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/test-apt-packages.txt; scripts/test.sh installs them)")
    work = tmp_path_factory.mktemp("fleet-images")
    try:
        rootfs = host_rootfs(work)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"mmdebstrap could not make the hosts' root filesystem (no Debian archive?): {exc.stderr!r:.300}")
    upstream = work / "upstream"
    (upstream / "tools").mkdir(parents=True)
    (upstream / "tools/check.sh").write_bytes(SCRIPT)
    with contextlib.ExitStack() as stack:
        registry = stack.enter_context(run_registry(work / "registry", work / "registry-storage"))
        image = _push_image(work, registry.host)
        proxy = stack.enter_context(FaultProxy(registry.host))
        files = stack.enter_context(LocalHTTPServer(upstream))
        ref = f"{proxy.host}/{REPO}:{TAG}"
        manifest, bundle = _collect_bundle(work / "b", ref, files.url)
        fleet = stack.enter_context(run_dockerd(work / "dockerd"))
        daemons = {name: stack.enter_context(run_dockerd(work / f"dockerd-{name}")) for name in HOSTS}
        yield ImagesFleet(fleet, daemons, rootfs, manifest, bundle, image, ref, proxy, files)


def _image_id(d: Dockerd, ref: str) -> str | None:
    r = d.docker("image", "inspect", "-f", "{{.Id}}", ref, check=False)
    return r.stdout.strip() if r.returncode == 0 else None


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.network
def test_an_image_removed_by_hand_is_drift_and_the_delta_carries_only_it(
    images_fleet: ImagesFleet, tmp_path: Path
) -> None:
    from tests.test_install import prepare_root

    env = images_fleet
    mounts = {name: [(d.socket, SOCKET)] for name, d in env.daemons.items()}
    with start_hosts(env.fleet, env.rootfs, tmp_path / "hosts", list(HOSTS), mounts) as hosts:
        for h in hosts:
            prepare_root(h.root)
            # The host reaches its own daemon, and that daemon holds no image yet.
            assert h.ssh(f"test -S {SOCKET}").returncode == 0
            assert _image_id(env.daemons[h.name], env.ref) is None
        inv = _inventory(hosts, tmp_path / "hosts.ini")

        r, _ = _fleet("install", str(env.bundle), "-i", str(inv), "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        by = _hosts_of(json.loads(r.stdout))
        assert {h: v["result"] for h, v in by.items()} == dict.fromkeys(HOSTS, "installed"), by
        for name in HOSTS:
            assert by[name]["layers"].get("images") == "installed", by[name]
            d = env.daemons[name]
            assert _image_id(d, env.ref) == env.image.config_digest, name
            said = d.docker("run", "--rm", "--network", "none", env.ref, "cat", "/fleet.txt").stdout
            assert said == "loaded by airgap fleet\n"

        # On h1 only, and against h1's daemon only: the image is removed by hand.
        h1_daemon, h2_daemon = env.daemons["h1"], env.daemons["h2"]
        h1_daemon.docker("rmi", env.ref)
        assert _image_id(h1_daemon, env.ref) is None
        assert _image_id(h2_daemon, env.ref) == env.image.config_digest

        out = tmp_path / "fleet-inventory.json"
        r, _ = _fleet("status", str(env.bundle), "-i", str(inv), "--write", str(out), "--json")
        assert r.returncode == 1, r.stdout + r.stderr
        status = json.loads(r.stdout)
        assert status["drifted"] == ["h1"], status
        st = _hosts_of(status)
        assert st["h1"]["layers"] == {"files": "present", "images": "missing"}, st["h1"]
        assert st["h1"]["drift"] == ["images: not as the lock has it; an install would redo it"], st["h1"]
        assert st["h2"]["layers"] == {"files": "present", "images": "present"}, st["h2"]
        assert st["h2"]["drift"] == [] and st["h2"]["at_lock"], st["h2"]
        inventory = json.loads(out.read_text())
        assert inventory["drifted"] == ["h1"] and inventory["lock_sha256"] == status["lock_sha256"]
        needs = inventory["needs"]
        assert {n["path"] for n in needs} == env.image_paths and len(needs) == len(env.image_paths), needs
        assert all(n["layer"] == "images" and n["hosts"] == ["h1"] for n in needs), needs

    # The connected side: the delta against what the fleet has, from the same manifest and upstreams.
    env.proxy.records.clear()
    env.files.reset_stats()
    delta = tmp_path / "delta"
    r = run_airgap("collect", str(env.manifest), "-o", str(delta), "--since", str(out), "--json", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    lock = json.loads((delta / "airgap.lock.json").read_text())
    carried = {a["path"] for a in lock["artifacts"] if not a["in_base"]}
    assert carried == env.image_paths, carried
    assert all(a["layer"] == "images" for a in lock["artifacts"] if not a["in_base"])
    assert [a["layer"] for a in lock["artifacts"] if a["in_base"]] == ["files"], lock["artifacts"]
    assert lock["base"]["lock_sha256"] == inventory["lock_sha256"]
    assert not (delta / "layers/10-files").exists()
    verified = run_airgap("verify", str(delta), timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # What was fetched: nothing from the file server (its sha256 is pinned and in the base); from the
    # registry, only this image's manifest and blobs.
    assert env.files.requests == []
    paths = {q.path for q in env.proxy.records}
    assert paths and all(p.startswith(f"/v2/{REPO}/") or p == "/v2/" for p in paths), sorted(paths)
    fetched = {p.rsplit("/", 1)[1] for p in paths if "/blobs/" in p}
    assert fetched <= {*env.image.layer_digests, env.image.config_digest}, fetched
