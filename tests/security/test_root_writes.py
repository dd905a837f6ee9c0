"""Invariant 4: root writes only where it means to.

The attackers here: the serving user (uid 1000 owns the model directories after the first install) planting
symbolic links between two installs, and whoever holds the drive editing the lock (and rewriting SHA256SUMS to
match) to aim root at system locations. Each test performs the attack against a real install into a scratch
root and checks the refusal, and that a root-only file outside what airgap installs kept its bytes, mode and
owner.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airgap import manifest as manifest_mod
from airgap.collect import collect
from airgap.errors import InstallError
from airgap.host import Host
from airgap.install_context import InstallContext, InstallOptions
from airgap.layers.models import ModelsLayer
from airgap.localserver import LocalHTTPServer
from airgap.lock import Lock
from airgap.sources.http import HttpSource
from airgap.sums import format_sums, parse_sums
from tests.conftest import run_airgap
from tests.hub_server import HubServer
from tests.test_install import prepare_root
from tests.test_models import FOLDER, REPO, make_bundle, repo_files

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="installs as root and plants links as uid 1000: run the tests as root (CI does)"
)

SERVING = 1000  # the uid serving containers run as, owner of the model directories
DEST = "data/models/tiny-llm"
STORAGE = "data/hf/hub/models--acme--tiny-llm"
SECRET = b"root only: the serving user must never read or own this\n"


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer() as server:
        server.add_commit(REPO, repo_files())
        yield server


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A root-only directory outside the install root holding a 0600 root file: what a planted link aims at."""
    d = tmp_path / "secret"
    d.mkdir(mode=0o700)
    for name in ("config.json", "model.onnx", "main"):
        (d / name).write_bytes(SECRET)
        (d / name).chmod(0o600)
    return d


def untouched(secret: Path) -> None:
    st = secret.lstat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o700)
    assert sorted(p.name for p in secret.iterdir()) == ["config.json", "main", "model.onnx"]
    for p in secret.iterdir():
        st = p.lstat()
        assert p.read_bytes() == SECRET, p
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o600), p


def as_serving_user(cwd: Path, script: str) -> None:
    """Run `script` as uid 1000 with no groups, in `cwd` (entered as root: the scratch tree's parents are
    root-only, so the script works with relative paths, as the serving user works in its own directory)."""
    r = subprocess.run(
        ["setpriv", "--reuid", str(SERVING), "--regid", str(SERVING), "--clear-groups", "sh", "-euc", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr


def install(bundle: Path, root: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return run_airgap("install", str(bundle), "--root", str(root), "--only", "models", *more)


def scratch_root(tmp: Path) -> Path:
    return prepare_root(tmp / "root", gpu=False)


def tamper_lock(bundle: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """What whoever holds the drive can do to an unsigned bundle: edit the lock, and write SHA256SUMS to match."""
    lock_path = bundle / "airgap.lock.json"
    lock = json.loads(lock_path.read_text())
    edit(lock)
    data = (json.dumps(lock, indent=2) + "\n").encode()
    lock_path.write_bytes(data)
    sums = parse_sums((bundle / "SHA256SUMS").read_text())
    sums["airgap.lock.json"] = hashlib.sha256(data).hexdigest()
    (bundle / "SHA256SUMS").write_bytes(format_sums(sums))


def tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under `root` with its owner, group and mode, links not followed."""
    out = {}
    for p in root.rglob("*"):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_uid, st.st_gid, st.st_mode)
    return out


# --- the serving user plants links between two installs ------------------------------------------------


def test_a_link_planted_at_the_old_temp_name_is_never_written_through(
    hub: HubServer, tmp_path: Path, secret: Path
) -> None:
    bundle = make_bundle(hub, tmp_path)
    root = scratch_root(tmp_path)
    first = install(bundle, root)
    assert first.returncode == 0, first.stdout + first.stderr
    dest = root / DEST
    assert dest.stat().st_uid == SERVING

    # The temp names airgap used to use were predictable; the serving user plants links at them and makes
    # the next install rewrite config.json.
    as_serving_user(
        dest,
        f"ln -s {secret}/config.json .config.json.airgap-tmp\n"
        f"ln -s {secret}/config.json .config.json.tmp\n"
        "printf '{}' > config.json\n",
    )
    second = install(bundle, root)
    assert second.returncode == 0, second.stdout + second.stderr
    untouched(secret)
    assert (dest / "config.json").read_bytes() == repo_files()["config.json"]
    st = (dest / "config.json").lstat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (SERVING, SERVING, 0o644)
    # The planted links are left as they were, and no temp file of airgap's is left behind.
    assert os.readlink(dest / ".config.json.airgap-tmp") == f"{secret}/config.json"
    assert sorted(p.name for p in dest.iterdir() if p.name.startswith(".config")) == [
        ".config.json.airgap-tmp",
        ".config.json.tmp",
    ]


def test_a_model_subdirectory_replaced_by_a_link_is_refused(hub: HubServer, tmp_path: Path, secret: Path) -> None:
    bundle = make_bundle(hub, tmp_path)
    root = scratch_root(tmp_path)
    assert install(bundle, root).returncode == 0
    dest = root / DEST
    as_serving_user(dest, f"mv onnx onnx.mine\nln -s {secret} onnx\n")

    second = install(bundle, root)
    assert second.returncode == 1, second.stdout + second.stderr
    out = " ".join((second.stdout + second.stderr).split())
    assert f"{dest}/onnx is a symbolic link (planted by another user?)" in out
    assert "will not write through it" in out
    untouched(secret)
    assert os.readlink(dest / "onnx") == str(secret)  # refused, not "repaired" by following it

    # Removing the link, as the message says, and running again puts the model right.
    (dest / "onnx").unlink()
    third = install(bundle, root)
    assert third.returncode == 0, third.stdout + third.stderr
    assert (dest / "onnx/model.onnx").read_bytes() == repo_files()["onnx/model.onnx"]
    assert (dest / "onnx").lstat().st_uid == SERVING
    untouched(secret)


def test_a_model_subdirectory_replaced_by_a_file_is_refused_not_replaced(hub: HubServer, tmp_path: Path) -> None:
    bundle = make_bundle(hub, tmp_path)
    root = scratch_root(tmp_path)
    assert install(bundle, root).returncode == 0
    dest = root / DEST
    as_serving_user(dest, "mv onnx onnx.mine\nprintf 'mine' > onnx\n")
    second = install(bundle, root)
    assert second.returncode == 1, second.stdout + second.stderr
    assert f"{dest}/onnx is not a directory; airgap will not replace it" in " ".join(second.stdout.split())
    assert (dest / "onnx").read_bytes() == b"mine"


@pytest.mark.parametrize("replaced", ["", "/blobs", "/snapshots"])
def test_a_cache_directory_replaced_by_a_link_is_neither_written_nor_chowned(
    hub: HubServer, tmp_path: Path, secret: Path, replaced: str
) -> None:
    """The serving user owns HF_HOME/hub (airgap made it for them) and swaps the model's cache directory, or one
    inside it, for a link to a root-only directory: root's old `chown -R` of the cache handed that over."""
    bundle = make_bundle(hub, tmp_path, ", hf_home: /data/hf")
    root = scratch_root(tmp_path)
    first = install(bundle, root)
    assert first.returncode == 0, first.stdout + first.stderr
    target = root / (STORAGE + replaced)
    assert target.parent.stat().st_uid == SERVING
    as_serving_user(target.parent, f"mv {target.name} {target.name}.mine\nln -s {secret} {target.name}\n")

    second = install(bundle, root)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "is a symbolic link (planted by another user?)" in " ".join(second.stdout.split())
    untouched(secret)


def test_a_new_owner_is_given_file_by_file_never_through_a_link(hub: HubServer, tmp_path: Path, secret: Path) -> None:
    """`owner:` changed between two installs: what is in place is given to the new owner one named path at a
    time; a link the serving user added inside the model directory is given itself, never its target."""
    bundle = make_bundle(hub, tmp_path)
    root = scratch_root(tmp_path)
    assert install(bundle, root).returncode == 0
    dest = root / DEST
    as_serving_user(dest, f"ln -s {secret} extra\nln -s {secret}/config.json extra.json\n")
    tamper_lock(bundle, lambda lock: _set_model(lock, owner="1234:2345"))

    second = install(bundle, root)
    assert second.returncode == 0, second.stdout + second.stderr
    for path in [dest, dest / "onnx", *(dest / p for p in repo_files())]:
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (1234, 2345), path
    untouched(secret)
    assert (dest / "extra").lstat().st_uid == SERVING  # not the lock's: left alone


# --- the lock aims root at system locations ------------------------------------------------------------


def _set_model(lock: dict[str, Any], **fields: str) -> None:
    (spec,) = lock["manifest"]["models"]
    spec.update(fields)


@pytest.mark.parametrize("dest", ["/etc", "/usr/bin", "//etc", "/.", "/data/../etc"])
def test_a_system_location_as_dest_is_refused_and_nothing_is_chowned(hub: HubServer, tmp_path: Path, dest: str) -> None:
    bundle = make_bundle(hub, tmp_path)
    tamper_lock(bundle, lambda lock: _set_model(lock, dest=dest))
    root = scratch_root(tmp_path)
    (root / "etc/shadow").write_bytes(SECRET)
    (root / "etc/shadow").chmod(0o600)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/sudo").write_bytes(b"#!/bin/sh\n")
    before = tree(root)

    r = install(bundle, root)
    assert r.returncode == 2, r.stdout + r.stderr
    out = " ".join((r.stdout + r.stderr).split())
    assert "dest" in out and dest in out
    after = tree(root)
    assert {p: after[p] for p in before} == before  # no owner or mode changed
    assert not [p for p, (uid, _, _) in after.items() if uid == SERVING]
    assert {p for p in after if p.startswith(("etc", "usr"))} == {p for p in before if p.startswith(("etc", "usr"))}
    assert (root / "etc/shadow").read_bytes() == SECRET


@pytest.mark.parametrize("field", ["revision", "commit"])
def test_a_revision_or_commit_that_climbs_out_of_the_cache_is_refused(
    hub: HubServer, tmp_path: Path, field: str
) -> None:
    """refs/<revision> and snapshots/<commit> are paths root makes: `../` from the lock must not reach outside
    --root (six levels up from refs/ is the directory holding the root)."""
    bundle = make_bundle(hub, tmp_path, ", hf_home: /data/hf")
    climb = "../../../../../../escaped"

    def edit(lock: dict[str, Any]) -> None:
        for art in lock["artifacts"]:
            if art["layer"] == "models":
                art["meta"][field] = climb
                if "model" in art["meta"]:
                    art["meta"]["model"][field] = climb

    tamper_lock(bundle, edit)
    root = scratch_root(tmp_path)
    r = install(bundle, root)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{field} '{climb}' is refused" in " ".join((r.stdout + r.stderr).split())
    assert not (tmp_path / "escaped").exists()
    assert not (root / "data").exists()  # refused before anything of the model was made


def test_a_branch_name_is_fine_as_the_refs_file_name(hub: HubServer, tmp_path: Path) -> None:
    bundle = make_bundle(hub, tmp_path, ", hf_home: /data/hf")
    root = scratch_root(tmp_path)
    r = install(bundle, root)
    assert r.returncode == 0, r.stdout + r.stderr
    ref = root / STORAGE / "refs/main"
    assert ref.read_text() == hub.repos[REPO].refs["main"]
    assert (ref.lstat().st_uid, ref.parent.lstat().st_uid) == (SERVING, SERVING)


# --- install --move -----------------------------------------------------------------------------------


def test_move_hashes_the_file_before_it_takes_its_name(hub: HubServer, tmp_path: Path) -> None:
    """A bundle file changed after the bundle was verified (same size, other bytes) is renamed beside its
    target, hashed there, and removed instead of installed."""
    bundle = make_bundle(hub, tmp_path)
    shard = bundle / FOLDER / "model-00001-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    root = tmp_path / "root"
    ctx = InstallContext(Host(root=root), bundle, Lock.read(bundle), InstallOptions(move=True))
    with pytest.raises(InstallError) as exc:
        ModelsLayer().install(ctx)
    assert "does not match the bundle's lock" in exc.value.message
    dest = root / DEST
    assert not (dest / shard.name).exists()
    assert not [p for p in dest.iterdir() if "airgap-tmp" in p.name]


def test_move_copies_a_bundle_file_root_does_not_own(hub: HubServer, tmp_path: Path) -> None:
    """Another user who owns a bundle file could keep it open for writing and change it after the hash: it
    is copied (hashed on the way) instead of renamed."""
    bundle = make_bundle(hub, tmp_path)
    shard = bundle / FOLDER / "model-00001-of-00002.safetensors"
    os.chown(shard, SERVING, SERVING)
    inode = shard.stat().st_ino
    root = tmp_path / "root"
    ModelsLayer().install(InstallContext(Host(root=root), bundle, Lock.read(bundle), InstallOptions(move=True)))
    placed = root / DEST / shard.name
    assert placed.read_bytes() == repo_files()[shard.name]
    assert placed.stat().st_ino != inode and placed.stat().st_uid == SERVING
    assert not shard.exists()  # --move still spends the bundle's copy


# --- the Docker tgz -----------------------------------------------------------------------------------

DOCKER_VERSION = "25.0.3"


def _docker_tgz(extra: dict[str, bytes]) -> bytes:
    """Docker's static tgz layout with stand-ins: the daemon exits at once, the client answers the version
    check the layer makes; `extra` are further files in docker/."""
    files = {
        "dockerd": b"#!/bin/sh\nexit 0\n",
        "docker": f"#!/bin/sh\necho {DOCKER_VERSION}\n".encode(),
        "containerd": b"#!/bin/sh\n",
        "runc": b"#!/bin/sh\n",
        **extra,
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("docker")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for name, data in files.items():
            member = tarfile.TarInfo(f"docker/{name}")
            member.size, member.mode = len(data), 0o755
            tar.addfile(member, io.BytesIO(data))
    return buf.getvalue()


def test_a_file_in_the_docker_tgz_that_is_not_a_docker_binary_never_lands_in_usr_bin(tmp_path: Path) -> None:
    up = tmp_path / "upstream"
    tgz = up / f"docker/linux/static/stable/x86_64/docker-{DOCKER_VERSION}.tgz"
    tgz.parent.mkdir(parents=True)
    tgz.write_bytes(_docker_tgz({"ld.so.preload": b"/tmp/evil.so\n"}))
    with LocalHTTPServer(up) as server:
        m = tmp_path / "manifest.yaml"
        m.write_text(
            "name: docker-tgz\n"
            'target: {os: ubuntu-22.04, arch: amd64, python: "3.10"}\n'
            f"docker: {{version: {DOCKER_VERSION}}}\n"
            f"mirrors:\n  https://download.docker.com: {server.url}/docker\n"
        )
        manifest = manifest_mod.load(m)
        collect(manifest, tmp_path / "bundle", HttpSource(manifest.mirrors, backoff=0.01), progress_mode="off")
    root = scratch_root(tmp_path)
    r = run_airgap("install", str(tmp_path / "bundle"), "--root", str(root), "--only", "docker")
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.access(root / "usr/bin/dockerd", os.X_OK)
    assert not (root / "usr/bin/ld.so.preload").exists() and not (root / "etc/ld.so.preload").exists()
    assert sorted(p.name for p in (root / "usr/bin").iterdir()) == ["containerd", "docker", "dockerd", "runc"]
    (log,) = (root / "var/log/airgap").glob("install-*.log")
    assert "'docker/ld.so.preload' is not one of Docker's binaries; left out" in log.read_text()
