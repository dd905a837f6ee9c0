"""Delta bundles: carry only what changed; install on top of the old bundle, which must hold the rest."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tests.conftest import CUDA, CUDA_MD5, DOCKER, DRIVER, IN_BUNDLE, SCRIPT, MiB, Upstream, payload, run_airgap
from tests.test_install import prepare_root


def collect(up: Upstream, tmp: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run_airgap("collect", str(up.manifest(tmp)), "-o", str(out), *extra)


def test_a_delta_carries_only_the_changed_artifact(upstream: Upstream, tmp_path: Path) -> None:
    old = tmp_path / "old"
    assert collect(upstream, tmp_path, old).returncode == 0
    # Upstream changes one file (a new CUDA runfile build; its md5 list changes with it).
    new_cuda = payload(4 * MiB + 9, 77)
    (upstream.root / CUDA).write_bytes(new_cuda)
    (upstream.root / CUDA_MD5).write_text(
        f"{hashlib.md5(new_cuda).hexdigest()}  local_installers/cuda_12.4.0_550.54.14_linux.run\n"
    )
    upstream.server.reset_stats()
    new = tmp_path / "new"
    r = collect(upstream, tmp_path, new, "--since", str(old), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    carried = sorted(p.relative_to(new).as_posix() for p in (new / "layers").rglob("*") if p.is_file())
    assert carried == [IN_BUNDLE[CUDA]]
    assert summary["saved_by_base_bytes"] == sum(len(upstream.files[k]) for k in (DRIVER, DOCKER, SCRIPT))
    # Known unchanged by digest (the pinned script) was not even downloaded; the driver (no digest) had to be.
    fetched = {q.path for q in upstream.server.requests if q.method == "GET"}
    assert upstream.path(SCRIPT) not in fetched
    assert upstream.path(DRIVER) in fetched
    lock = json.loads((new / "airgap.lock.json").read_text())
    assert lock["base"]["name"] == "test-stack"
    assert {a["path"]: a["in_base"] for a in lock["artifacts"]} == {
        IN_BUNDLE[DRIVER]: True,
        IN_BUNDLE[CUDA]: False,
        IN_BUNDLE[DOCKER]: True,
        IN_BUNDLE[SCRIPT]: True,
    }
    assert "DELTA BUNDLE: carries 1 of 4 files" in (new / "README.txt").read_text()
    assert run_airgap("verify", str(new)).returncode == 0


def test_a_delta_installs_on_top_of_its_base(tmp_path: Path) -> None:
    from airgap import manifest as manifest_mod
    from airgap.bundle import load_base
    from airgap.collect import collect as do_collect
    from airgap.localserver import LocalHTTPServer
    from airgap.sources.http import HttpSource
    from tests.installers import nvidia_mirrors, publish_nvidia

    up = tmp_path / "up"
    publish_nvidia(up)
    with LocalHTTPServer(up) as server:
        m = tmp_path / "m.yaml"
        m.write_text(
            "name: delta\ntarget: {os: ubuntu-22.04}\ndriver: {version: 550.90.07}\n"
            f"cuda: {{version: 12.4.0}}\nmirrors:\n{nvidia_mirrors(server.url)}"
        )
        manifest = manifest_mod.load(m)
        old, new = tmp_path / "old", tmp_path / "new"
        do_collect(manifest, old, HttpSource(manifest.mirrors, backoff=0.01), progress_mode="off")
        publish_nvidia(up)  # a new makeself build of the same CUDA release: other bytes, other md5
        do_collect(manifest, new, HttpSource(manifest.mirrors, backoff=0.01), progress_mode="off", since=load_base(old))
    assert not (new / "layers/02-driver").exists()  # unchanged driver not carried

    root = prepare_root(tmp_path / "root")
    r = run_airgap("install", str(new), "--root", str(root), "--skip", "smoke")
    assert r.returncode == 2 and "--base /path/of/old/bundle" in r.stderr
    r = run_airgap("install", str(new), "--root", str(root), "--skip", "smoke", "--base", str(old))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / "usr/bin/nvidia-smi").exists()  # the driver came from the base bundle
    assert (root / "usr/local/cuda-12.4/bin/nvcc").exists()  # CUDA from the delta


def test_a_base_that_lacks_or_altered_an_artifact_is_refused(upstream: Upstream, tmp_path: Path) -> None:
    old = tmp_path / "old"
    assert collect(upstream, tmp_path, old).returncode == 0
    (upstream.root / DOCKER).write_bytes(b"\x1f\x8b" + payload(MiB, 55))
    new = tmp_path / "new"
    assert collect(upstream, tmp_path, new, "--since", str(old / "airgap.lock.json")).returncode == 0
    broken = tmp_path / "broken"
    shutil.copytree(old, broken)
    (broken / IN_BUNDLE[DRIVER]).unlink()
    root = prepare_root(tmp_path / "root")
    r = run_airgap("install", str(new), "--root", str(root), "--base", str(broken))
    assert r.returncode == 1
    assert f"{IN_BUNDLE[DRIVER]} (missing)" in r.stderr
    with open(broken / IN_BUNDLE[CUDA], "r+b") as f:
        f.write(b"X")
    shutil.copy(old / IN_BUNDLE[DRIVER], broken / IN_BUNDLE[DRIVER])
    r = run_airgap("install", str(new), "--root", str(root), "--base", str(broken))
    assert r.returncode == 1 and f"{IN_BUNDLE[CUDA]} (altered)" in r.stderr
    other = tmp_path / "other"
    assert collect(upstream, tmp_path, other).returncode == 0
    r = run_airgap("install", str(new), "--root", str(root), "--base", str(other))
    assert r.returncode == 1 and "not the base this delta was made against" in r.stderr
    assert not (root / "var/lib/airgap").exists()


def test_since_a_delta_is_refused(upstream: Upstream, tmp_path: Path) -> None:
    old = tmp_path / "old"
    assert collect(upstream, tmp_path, old).returncode == 0
    (upstream.root / DOCKER).write_bytes(b"\x1f\x8b" + payload(MiB, 56))
    assert collect(upstream, tmp_path, tmp_path / "d1", "--since", str(old)).returncode == 0
    r = collect(upstream, tmp_path, tmp_path / "d2", "--since", str(tmp_path / "d1"))
    assert r.returncode == 2 and "is itself a delta bundle" in r.stderr


def test_collect_with_max_file_size_and_sign_in_one_go(upstream: Upstream, tmp_path: Path) -> None:
    assert run_airgap("keygen", "-o", str(tmp_path / "k")).returncode == 0
    out = tmp_path / "b"
    r = collect(upstream, tmp_path, out, "--max-file-size", "1MiB", "--sign", str(tmp_path / "k.key"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "layers/03-cuda").iterdir()) == [
        f"cuda_12.4.0_550.54.14_linux.run.00{i}" for i in range(1, 6)
    ]
    assert run_airgap("verify", str(out), "--key", str(tmp_path / "k.pub")).returncode == 0
    upstream.server.reset_stats()
    again = collect(upstream, tmp_path, out, "--max-file-size", "1MiB", "--json")
    assert again.returncode == 0, again.stderr
    assert {f["status"] for f in json.loads(again.stdout)["files"]} == {"present"}
    assert upstream.server.bytes_sent() < 1024  # the parts were recognised: nothing downloaded again
