"""The models layer against a local hub driven through the real huggingface_hub client: pinning, digests,
faults, gated repos, and install into a scratch root (ownership, idempotence, move, HF cache offline)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airgap import manifest as manifest_mod
from airgap.collect import CollectReport, collect
from airgap.errors import InstallError, ManifestError, UpstreamError
from airgap.host import Host
from airgap.install_context import InstallContext, InstallOptions
from airgap.layers.base import ResolveContext
from airgap.layers.models import ModelsLayer, format_params, model_summaries
from airgap.lock import Lock
from airgap.parts import resplit
from airgap.sources.http import HttpSource
from tests.conftest import payload, sha
from tests.hub_server import HubServer, git_blob_id

REPO = "acme/tiny-llm"
GATED = "acme/gated-llm"
TOKEN = "hf_testTOKENdoNotLeak0123456789abcdef"
SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"
FOLDER = "layers/09-models/acme--tiny-llm"

# Two shards, mostly F16 with an F32 norm, as real checkpoints are.
TENSORS_1 = {"model.embed.weight": ("F16", [256, 512]), "model.norm.weight": ("F32", [512])}
TENSORS_2 = {"lm_head.weight": ("F16", [128, 512])}
PARAMS = 256 * 512 + 512 + 128 * 512
BYTES = {"F16": 2, "F32": 4, "BF16": 2}


def safetensors(tensors: dict[str, tuple[str, list[int]]], seed: int) -> bytes:
    """A real safetensors file: 8-byte little-endian header length, JSON header, then the tensors."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = 1
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n * BYTES[dtype]]}
        offset += n * BYTES[dtype]
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    return struct.pack("<Q", len(raw)) + raw + payload(offset, seed)


def repo_files() -> dict[str, bytes]:
    shard1, shard2 = safetensors(TENSORS_1, 11), safetensors(TENSORS_2, 12)
    index = {
        "metadata": {"total_size": len(shard1) + len(shard2)},
        "weight_map": {**dict.fromkeys(TENSORS_1, SHARD1), **dict.fromkeys(TENSORS_2, SHARD2)},
    }
    return {
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "README.md": b"# tiny-llm\nA test model.\n",
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"], "torch_dtype": "float16"}).encode(),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE"}}).encode(),
        "model.safetensors.index.json": json.dumps(index).encode(),
        SHARD1: shard1,
        SHARD2: shard2,
        # A second copy of the weights, as Mistral's repos carry: it must not double the parameter count.
        "consolidated.safetensors": safetensors({**TENSORS_1, **TENSORS_2}, 15),
        "onnx/model.onnx": payload(3000, 13),
    }


@pytest.fixture
def hub() -> Iterator[HubServer]:
    # page_size 3 makes every tree listing span pages, so the client's Link pagination is exercised.
    with HubServer(page_size=3) as server:
        server.add_commit(REPO, repo_files())
        server.add_commit(REPO, {**repo_files(), "config.json": b'{"dev": true}'}, branch="dev")
        server.add_commit(GATED, {"config.json": b"{}", "model.safetensors": safetensors(TENSORS_2, 14)})
        server.gate(GATED, TOKEN)
        yield server


def write_manifest(tmp: Path, hub: HubServer, models: str) -> Path:
    path = tmp / "manifest.yaml"
    path.write_text(
        "name: models-test\n"
        'target: {os: ubuntu-22.04, arch: amd64, python: "3.10"}\n'
        f"models:{models}\n"
        "mirrors:\n"
        f"  https://huggingface.co: {hub.url}\n"
    )
    return path


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """No token, endpoint or offline switch from the calling shell; a fresh HF_HOME (no saved login)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    return {**env, "PYTHONUNBUFFERED": "1", "HF_HOME": str(tmp / "hf-home-client"), **extra}


def airgap_cli(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airgap", *args], capture_output=True, text=True, timeout=120, env=clean_env(tmp, **env)
    )


def collect_here(manifest: Path, out: Path) -> CollectReport:
    m = manifest_mod.load(manifest)
    return collect(m, out, HttpSource(m.mirrors, retries=3, backoff=0.01), jobs=4, progress_mode="off")


@pytest.fixture(autouse=True)
def _no_caller_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


# --- collect --------------------------------------------------------------------------------------------


def test_collect_pins_the_commit_and_every_files_digest_and_verify_passes(hub: HubServer, tmp_path: Path) -> None:
    m = write_manifest(tmp_path, hub, f" [{REPO}]")
    bundle = tmp_path / "bundle"
    r = airgap_cli(tmp_path, "collect", str(m), "-o", str(bundle), "--json")
    assert r.returncode == 0, r.stderr
    commit = hub.repos[REPO].refs["main"]
    files = repo_files()

    lock = json.loads((bundle / "airgap.lock.json").read_text())
    arts = {a["meta"]["path_in_repo"]: a for a in lock["artifacts"]}
    assert set(arts) == set(files)
    tree = f"https://huggingface.co/api/models/{REPO}/tree/{commit}"
    for path, data in files.items():
        a = arts[path]
        assert a["path"] == f"{FOLDER}/{path}"
        assert (bundle / a["path"]).read_bytes() == data
        assert a["sha256"] == sha(data) and a["size"] == len(data)
        assert a["url"] == f"https://huggingface.co/{REPO}/resolve/{commit}/{path}"  # canonical, not the mirror
        assert a["meta"]["commit"] == commit and a["meta"]["revision"] == "main"
        lfs = path.endswith((".safetensors", ".onnx"))
        want = (
            {"algorithm": "sha256", "value": sha(data)}
            if lfs
            else {"algorithm": "git-sha1", "value": git_blob_id(data)}
        )
        assert a["upstream_digest"] == {**want, "source": tree}, path
    first = lock["artifacts"][0]
    assert first["meta"]["model"] == {
        "repo": REPO,
        "revision": "main",
        "commit": commit,
        "params": PARAMS,
        "dtype": "F16",
        "dtypes": {"F16": 256 * 512 + 128 * 512, "F32": 512},
        "weight_bytes": 2 * (256 + 128) * 512 + 4 * 512,
        "params_from": [SHARD1, SHARD2],
        "files": len(files),
        "size": sum(len(d) for d in files.values()),
    }
    assert [a for a in lock["artifacts"] if "model" in a["meta"]] == [first]

    assert any("cursor=" in q.query for q in hub.requests if "/tree/" in q.path)  # paginated listing followed
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle).returncode == 0
    v = airgap_cli(tmp_path, "verify", str(bundle))
    assert v.returncode == 0, v.stdout + v.stderr


def test_a_branch_is_pinned_to_the_commit_it_names_at_collect_time(hub: HubServer, tmp_path: Path) -> None:
    m = write_manifest(tmp_path, hub, f"\n  - {{repo: {REPO}, revision: dev, allow: ['*.json']}}")
    collect_here(m, tmp_path / "bundle")
    dev = hub.repos[REPO].refs["dev"]
    assert dev != hub.repos[REPO].refs["main"]
    lock = Lock.read(tmp_path / "bundle")
    assert {a.meta["commit"] for a in lock.artifacts} == {dev}
    assert all(a.url.startswith(f"https://huggingface.co/{REPO}/resolve/{dev}/") for a in lock.artifacts)
    assert (tmp_path / "bundle" / FOLDER / "config.json").read_bytes() == b'{"dev": true}'

    # The branch moves on: the next collection pins the new commit and fetches the file that changed.
    new = hub.add_commit(REPO, {**repo_files(), "config.json": b'{"dev": 2}'}, branch="dev")
    collect_here(m, tmp_path / "bundle")
    lock = Lock.read(tmp_path / "bundle")
    assert {a.meta["commit"] for a in lock.artifacts} == {new}
    assert (tmp_path / "bundle" / FOLDER / "config.json").read_bytes() == b'{"dev": 2}'


def test_allow_and_ignore_select_files_as_snapshot_download_would(hub: HubServer, tmp_path: Path) -> None:
    m = manifest_mod.load(
        write_manifest(
            tmp_path,
            hub,
            f"\n  - {{repo: {REPO}, allow: ['*.safetensors', '*.json', "
            "'onnx/*'], ignore: ['tokenizer*', 'consolidated*']}",
        )
    )
    arts = ModelsLayer().resolve(m, ResolveContext(HttpSource(m.mirrors, retries=0)))
    assert [a.name for a in arts] == [
        f"acme--tiny-llm/{p}"
        for p in ("config.json", SHARD1, SHARD2, "model.safetensors.index.json", "onnx/model.onnx")
    ]
    assert arts[0].meta["model"]["params"] == PARAMS  # both shards counted, whatever file sorts first

    none = manifest_mod.load(write_manifest(tmp_path, hub, f"\n  - {{repo: {REPO}, allow: ['*.gguf']}}"))
    with pytest.raises(ManifestError) as exc:
        ModelsLayer().resolve(none, ResolveContext(HttpSource(none.mirrors, retries=0)))
    text = str(exc.value)
    assert "manifest.yaml:4: models[0].allow:" in text
    assert "no file of acme/tiny-llm" in text and "config.json" in text


def test_wrong_bytes_are_refused_and_nothing_is_kept(hub: HubServer, tmp_path: Path) -> None:
    hub.corrupt(REPO, SHARD2)  # an LFS file: checked against the hub's sha256
    hub.corrupt(REPO, "config.json")  # a git file: checked against its blob id
    m = write_manifest(tmp_path, hub, f" [{REPO}]")
    r = airgap_cli(tmp_path, "collect", str(m), "-o", str(tmp_path / "bundle"), "--retries", "1")
    assert r.returncode == 1, r.stderr
    assert f"{FOLDER}/{SHARD2}: the bytes from" in r.stderr
    assert f"do not match the expected sha256 (https://huggingface.co/api/models/{REPO}/tree/" in r.stderr
    assert f"{FOLDER}/config.json: the bytes from" in r.stderr and "expected git-sha1" in r.stderr
    assert "Traceback" not in r.stderr
    for name in (SHARD2, "config.json"):
        assert not (tmp_path / "bundle" / FOLDER / name).exists()
        assert not (tmp_path / "bundle" / FOLDER / (name + ".part")).exists()
    assert not (tmp_path / "bundle" / "SHA256SUMS").exists()
    assert (tmp_path / "bundle" / FOLDER / SHARD1).read_bytes() == repo_files()[SHARD1]  # the rest is kept


def test_a_cut_connection_resumes_where_it_stopped(hub: HubServer, tmp_path: Path) -> None:
    data = repo_files()[SHARD1]
    cut_at = 100_000  # beyond the safetensors header (read for the parameter count), inside the tensors
    hub.cut(REPO, SHARD1, at=cut_at)
    header_range = f"bytes=8-{7 + struct.unpack('<Q', data[:8])[0]}"
    collect_here(write_manifest(tmp_path, hub, f" [{REPO}]"), tmp_path / "bundle")
    body = [
        q
        for q in hub.requests
        if q.content == sha(data) and q.method == "GET" and q.range not in ("bytes=0-7", header_range)
    ]
    assert [(q.range, q.status, q.bytes_sent) for q in body] == [
        (None, 200, cut_at),
        (f"bytes={cut_at}-", 206, len(data) - cut_at),
    ]
    assert all(q.host.startswith("localhost:") for q in body)  # followed the hub's redirect to its CDN
    assert (tmp_path / "bundle" / FOLDER / SHARD1).read_bytes() == data


def test_gated_repo_needs_a_token_which_is_never_written_or_shown(hub: HubServer, tmp_path: Path) -> None:
    m = write_manifest(tmp_path, hub, f" [{GATED}]")
    bundle = tmp_path / "bundle"

    r = airgap_cli(tmp_path, "collect", str(m), "-o", str(bundle))
    assert r.returncode == 3
    assert "acme/gated-llm is a gated model" in r.stderr and "no HF_TOKEN is set" in r.stderr
    assert "Accept the licence on https://huggingface.co/acme/gated-llm" in r.stderr
    assert "Traceback" not in r.stderr
    assert not any(q.path.startswith("/acme/gated-llm/resolve/") for q in hub.requests)  # refused before fetching

    r = airgap_cli(tmp_path, "collect", str(m), "-o", str(bundle), HF_TOKEN="hf_someoneElsesToken")
    assert r.returncode == 3
    assert "acme/gated-llm is a gated model and the token airgap sent" in r.stderr and "no access" in r.stderr
    assert "hf_someoneElsesToken" not in r.stdout + r.stderr

    r = airgap_cli(tmp_path, "collect", str(m), "-o", str(bundle), "--json", HF_TOKEN=TOKEN)
    assert r.returncode == 0, r.stderr
    assert TOKEN not in r.stdout + r.stderr
    for p in bundle.rglob("*"):
        if p.is_file():
            assert TOKEN.encode() not in p.read_bytes(), p
    resolves = [q for q in hub.requests if q.path.startswith("/acme/gated-llm/resolve/") and q.method == "GET"]
    assert resolves and all(q.authorization == f"Bearer {TOKEN}" for q in resolves)
    # The hub's CDN is another host: the token must not follow the redirect there.
    cdn = [q for q in hub.requests if q.is_cdn]
    assert cdn and all(q.authorization is None for q in cdn)
    assert (bundle / "layers/09-models/acme--gated-llm/model.safetensors").is_file()


def test_a_hub_having_a_bad_minute_is_retried(hub: HubServer, tmp_path: Path) -> None:
    hub.fail(f"/api/models/{REPO}/revision/", status=503, times=2)
    hub.fail(f"/api/models/{REPO}/tree/", status=502, times=1)
    m = manifest_mod.load(write_manifest(tmp_path, hub, f" [{REPO}]"))
    arts = ModelsLayer().resolve(m, ResolveContext(HttpSource(m.mirrors, retries=3, backoff=0.01)))
    assert len(arts) == len(repo_files())
    assert [q.status for q in hub.requests if "/revision/" in q.path] == [503, 503, 200]

    hub.fail(f"/api/models/{REPO}/revision/", status=500, times=10)
    with pytest.raises(UpstreamError, match=r"failed after 2 attempts \(last: HTTP 500\)"):
        ModelsLayer().resolve(m, ResolveContext(HttpSource(m.mirrors, retries=1, backoff=0.01)))


def test_missing_repo_and_revision_say_what_to_check(hub: HubServer, tmp_path: Path) -> None:
    for models, expected in (
        (
            " [acme/nope]",
            "acme/nope: no such model repository on https://huggingface.co, or it is private and no HF_TOKEN is set.",
        ),
        (f"\n  - {{repo: {REPO}, revision: v9}}", "acme/tiny-llm: revision 'v9' does not exist"),
    ):
        m = manifest_mod.load(write_manifest(tmp_path, hub, models))
        with pytest.raises(UpstreamError) as exc:
            ModelsLayer().resolve(m, ResolveContext(HttpSource(m.mirrors, retries=0)))
        assert expected in exc.value.message
        assert exc.value.hint and "manifest" in exc.value.hint


def test_private_repo_through_hf_endpoint_with_a_token(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.make_private(REPO, TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)  # huggingface_hub's own switch, instead of `mirrors:`
    path = tmp_path / "manifest.yaml"
    path.write_text(f"name: t\ntarget: {{os: ubuntu-22.04}}\nmodels: [{REPO}]\n")
    m = manifest_mod.load(path)
    with pytest.raises(UpstreamError, match="or it is private and no HF_TOKEN is set"):
        ModelsLayer().resolve(m, ResolveContext(HttpSource(m.mirrors, retries=0)))

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.reset_requests()
    bundle = tmp_path / "bundle"
    collect(m, bundle, HttpSource(m.mirrors, retries=0), progress_mode="off")
    lock = Lock.read(bundle)
    commit = hub.repos[REPO].refs["main"]
    assert {a.url.rsplit("/", 1)[0] for a in lock.artifacts if "/" not in a.meta["path_in_repo"]} == {
        f"{hub.url}/{REPO}/resolve/{commit}"
    }
    assert TOKEN.encode() not in (bundle / "airgap.lock.json").read_bytes()
    assert all(q.authorization == f"Bearer {TOKEN}" for q in hub.requests if not q.is_cdn)


def test_a_repo_listed_twice_is_a_manifest_error(hub: HubServer, tmp_path: Path) -> None:
    m = manifest_mod.load(write_manifest(tmp_path, hub, f"\n  - {REPO}\n  - {{repo: {REPO}, revision: dev}}"))
    with pytest.raises(ManifestError, match=r"manifest.yaml:5: models\[1\].repo: acme/tiny-llm is listed twice"):
        ModelsLayer().resolve(m, ResolveContext(HttpSource(m.mirrors, retries=0)))


def test_rerun_transfers_nothing(hub: HubServer, tmp_path: Path) -> None:
    m = write_manifest(tmp_path, hub, f" [{REPO}]")
    collect_here(m, tmp_path / "bundle")
    hub.reset_requests()
    report = collect_here(m, tmp_path / "bundle")
    assert {f.status for f in report.files} == {"present"} and report.transferred == 0
    content = [q for q in hub.requests if q.content and q.method == "GET"]
    # Only the safetensors headers are read again (for the parameter count), never a file's body.
    headers = [struct.unpack("<Q", repo_files()[s][:8])[0] for s in (SHARD1, SHARD2)]
    assert sorted(q.range for q in content) == sorted(["bytes=0-7"] * 2 + [f"bytes=8-{7 + n}" for n in headers])
    assert sum(q.bytes_sent for q in content) == sum(8 + n for n in headers)


def test_plan_shows_each_model_file_size_and_the_parameter_count(hub: HubServer, tmp_path: Path) -> None:
    m = write_manifest(tmp_path, hub, f" [{REPO}]")
    r = airgap_cli(tmp_path, "plan", str(m), "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    sizes = {row["path"]: row["size"] for row in plan["rows"] if row["layer"] == "models"}
    assert sizes == {f"{FOLDER}/{p}": len(d) for p, d in repo_files().items()}
    assert plan["total_bytes"] == sum(sizes.values())
    assert not any(q.content and q.method == "GET" and not q.range for q in hub.requests)  # no body fetched

    manifest = manifest_mod.load(m)
    (summary,) = model_summaries(
        ModelsLayer().resolve(manifest, ResolveContext(HttpSource(manifest.mirrors, retries=0)))
    )
    assert (summary.params, summary.dtype, summary.files) == (PARAMS, "F16", len(repo_files()))
    assert f"{format_params(PARAMS)} parameters F16" in summary.line() and format_params(PARAMS) == "197K"

    offline = airgap_cli(tmp_path, "plan", str(m), "--no-head", "--json")
    assert offline.returncode == 0, offline.stderr
    # Offline the hub cannot list the files: one row per model, of unknown size, so no total leaves it out.
    rows = [row for row in json.loads(offline.stdout)["rows"] if row["layer"] == "models"]
    assert [(row["path"], row["size"]) for row in rows] == [(FOLDER, None)]


# --- install --------------------------------------------------------------------------------------------


def make_bundle(hub: HubServer, tmp: Path, extra: str = "") -> Path:
    m = write_manifest(tmp, hub, f"\n  - {{repo: {REPO}{extra}}}")
    collect_here(m, tmp / "bundle")
    return tmp / "bundle"


def context(bundle: Path, root: Path, **options: bool) -> InstallContext:
    return InstallContext(Host(root=root), bundle, Lock.read(bundle), InstallOptions(**options))


def test_install_places_the_files_owned_by_1000_and_skips_them_next_time(hub: HubServer, tmp_path: Path) -> None:
    bundle = make_bundle(hub, tmp_path)
    root = tmp_path / "root"
    layer = ModelsLayer()
    ctx = context(bundle, root)
    assert layer.installed(ctx) is None
    summary = layer.install(ctx)
    assert f"{len(repo_files())} files" in summary and "/data/models/tiny-llm" in summary

    dest = root / "data/models/tiny-llm"
    for path, data in repo_files().items():
        f = dest / path
        assert f.read_bytes() == data
        st = f.stat()
        assert (st.st_uid, st.st_gid) == (1000, 1000), path
        assert st.st_mode & 0o777 == 0o644
    for d in (dest, dest / "onnx"):
        assert (d.stat().st_uid, d.stat().st_gid) == (1000, 1000)
    assert (bundle / FOLDER / SHARD1).is_file()  # copied, not moved

    # A fresh layer (a new `airgap install` run) re-checks by hashing, and has nothing to do.
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.rglob("*")}
    again = ModelsLayer()
    assert "already in place with the right sha256" in (again.installed(context(bundle, root)) or "")
    assert "0 files" in again.install(context(bundle, root))
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.rglob("*")} == before

    # A file altered in place is found and replaced; the others are left alone.
    (dest / "config.json").write_bytes(b"{}")
    third = ModelsLayer()
    assert third.installed(context(bundle, root)) is None
    assert "1 files" in third.install(context(bundle, root))
    assert (dest / "config.json").read_bytes() == repo_files()["config.json"]
    assert (dest / SHARD1).stat().st_ino == before[dest / SHARD1][0]


def test_install_move_takes_the_files_out_of_the_bundle(hub: HubServer, tmp_path: Path) -> None:
    bundle = make_bundle(hub, tmp_path, ", dest: /srv/llm, owner: '1234:2345'")
    root = tmp_path / "root"
    layer = ModelsLayer()
    inodes = {path: (bundle / FOLDER / path).stat().st_ino for path in repo_files()}
    layer.install(context(bundle, root, move=True))
    for path, data in repo_files().items():
        placed = root / "srv/llm" / path
        assert placed.read_bytes() == data
        assert placed.stat().st_ino == inodes[path]  # renamed, not copied
        assert (placed.stat().st_uid, placed.stat().st_gid) == (1234, 2345)
        assert not (bundle / FOLDER / path).exists()
    assert ModelsLayer().installed(context(bundle, root, move=True))


def test_install_streams_a_shard_split_for_fat32_from_its_parts(hub: HubServer, tmp_path: Path) -> None:
    bundle = make_bundle(hub, tmp_path)
    lock = Lock.read(bundle)
    (shard,) = [a for a in lock.artifacts if a.name.endswith(SHARD1)]
    assert resplit(bundle, shard, 100_000)  # as `airgap split --max-file-size` stores it on FAT32 or DVDs
    assert len(shard.parts) == 3 and not (bundle / shard.path).exists()
    root = tmp_path / "root"
    ModelsLayer().install(InstallContext(Host(root=root), bundle, lock, InstallOptions(move=True)))
    assert (root / "data/models/tiny-llm" / SHARD1).read_bytes() == repo_files()[SHARD1]
    assert not any((bundle / p.path).exists() for p in shard.parts)  # moved: the parts are spent
    assert not list(root.rglob("*airgap-staging*"))  # streamed, never copied privately first


def test_install_dry_run_changes_nothing(hub: HubServer, tmp_path: Path) -> None:
    bundle = make_bundle(hub, tmp_path)
    root = tmp_path / "root"
    ctx = InstallContext(Host(root=root, dry_run=True), bundle, Lock.read(bundle))
    ModelsLayer().install(ctx)
    assert not (root / "data").exists()
    assert any("/data/models/tiny-llm" in a for a in ctx.host.actions)


def test_dry_run_and_the_log_show_every_change_to_the_server(hub: HubServer, tmp_path: Path) -> None:
    bundle = make_bundle(hub, tmp_path, ", hf_home: /data/hf")
    root = tmp_path / "root"
    commit = hub.repos[REPO].refs["main"]
    storage = "/data/hf/hub/models--acme--tiny-llm"
    shard_blob = f"{storage}/blobs/{sha(repo_files()[SHARD1])}"
    dry = InstallContext(Host(root=root, dry_run=True), bundle, Lock.read(bundle))
    ModelsLayer().install(dry)
    assert not (root / "data").exists()
    actions = dry.host.actions
    for path in repo_files():
        assert any(a.startswith(f"copy: {FOLDER}/{path} -> /data/models/tiny-llm/{path}") for a in actions), path
    assert f"link: {shard_blob} = /data/models/tiny-llm/{SHARD1}" in actions
    assert f"symlink: {storage}/snapshots/{commit}/onnx/model.onnx -> ../../../blobs/" in "\n".join(actions)
    # Ownership is given as each thing is made, never by a recursive chown a planted link could redirect.
    assert "mkdir: /data/models/tiny-llm (owner 1000:1000)" in actions and "mkdir: /data/models" in actions
    assert f"mkdir: {storage}/blobs (owner 1000:1000)" in actions
    assert f"write: {storage}/refs/main (40 bytes, mode 644, owner 1000:1000)" in actions
    assert not [a for a in actions if a.startswith("chown")]

    # What a dry run says would be done is what a real install does, in the same order, and logs.
    real = InstallContext(Host(root=root, log=io.StringIO()), bundle, Lock.read(bundle))
    ModelsLayer().install(real)
    assert real.host.actions == actions
    log = real.host.log.getvalue()  # type: ignore[union-attr]
    assert f"> link: {shard_blob}" in log and "> mkdir: /data/models/tiny-llm (owner 1000:1000)" in log


def test_hashes_are_believed_only_within_one_install_run(hub: HubServer, tmp_path: Path) -> None:
    """One layer object serves every run of a process: a file altered between two runs, even keeping its
    size and mtime, is hashed again by the next run and put right."""
    bundle = make_bundle(hub, tmp_path)
    root = tmp_path / "root"
    layer = ModelsLayer()
    layer.install(context(bundle, root))
    config = root / "data/models/tiny-llm/config.json"
    st = config.stat()
    with open(config, "r+b") as f:
        f.write(b"X")
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (config.stat().st_ino, config.stat().st_size, config.stat().st_mtime_ns) == (
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
    )
    assert layer.installed(context(bundle, root)) is None
    assert "1 files" in layer.install(context(bundle, root))
    assert config.read_bytes() == repo_files()["config.json"]


def test_install_into_a_hugging_face_cache_found_offline_by_repo_id(hub: HubServer, tmp_path: Path) -> None:
    bundle = make_bundle(hub, tmp_path, ", hf_home: /data/hf")
    root = tmp_path / "root"
    ModelsLayer().install(context(bundle, root))
    commit = hub.repos[REPO].refs["main"]
    storage = root / "data/hf/hub/models--acme--tiny-llm"
    assert (storage / "refs/main").read_text() == commit
    blob = storage / "blobs" / sha(repo_files()[SHARD1])
    assert blob.stat().st_ino == (root / "data/models/tiny-llm" / SHARD1).stat().st_ino  # hard link, not a copy
    assert (blob.stat().st_uid, (storage / "refs").stat().st_uid) == (1000, 1000)
    assert (storage / "blobs" / git_blob_id(repo_files()["config.json"])).is_file()

    script = (
        "import sys\n"
        "from huggingface_hub import hf_hub_download, snapshot_download\n"
        f"print(open(hf_hub_download({REPO!r}, 'onnx/model.onnx'), 'rb').read().hex())\n"
        f"print(snapshot_download({REPO!r}))\n"
    )
    env = clean_env(tmp_path, HF_HOME=str(root / "data/hf"), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    onnx_hex, snapshot = r.stdout.split()
    assert bytes.fromhex(onnx_hex) == repo_files()["onnx/model.onnx"]
    assert Path(snapshot) == storage / "snapshots" / commit
    assert {p.relative_to(snapshot).as_posix() for p in Path(snapshot).rglob("*") if p.is_file()} == set(repo_files())
    assert ModelsLayer().installed(context(bundle, root))

    # A model file edited in place changes its hard-linked blob too: both are put right.
    with open(root / "data/models/tiny-llm" / SHARD1, "r+b") as f:
        f.write(b"\0" * 16)
    layer = ModelsLayer()
    assert layer.installed(context(bundle, root)) is None
    layer.install(context(bundle, root))
    assert blob.read_bytes() == repo_files()[SHARD1] == (root / "data/models/tiny-llm" / SHARD1).read_bytes()
    assert (storage / "snapshots" / commit / SHARD1).read_bytes() == repo_files()[SHARD1]


@pytest.mark.root
def test_install_refuses_to_start_when_the_disk_is_too_small(hub: HubServer, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a size-limited tmpfs")
    bundle = make_bundle(hub, tmp_path)
    root = tmp_path / "root"
    small = root / "data"
    small.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with pytest.raises(InstallError) as exc:
            ModelsLayer().install(context(bundle, root))
        need = sum(len(d) for d in repo_files().values())
        assert f"({need} bytes) there" in exc.value.message
        assert "free" in exc.value.message and "Nothing was copied" in exc.value.message
        assert not any(small.iterdir())
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_the_stand_in_hub_serves_the_real_client(hub: HubServer, tmp_path: Path) -> None:
    from huggingface_hub import snapshot_download

    path = Path(snapshot_download(REPO, endpoint=hub.url, cache_dir=tmp_path / "cache", token=False))
    for name, data in repo_files().items():
        assert (path / name).read_bytes() == data
    assert hashlib.sha256((path / SHARD1).read_bytes()).hexdigest() == sha(repo_files()[SHARD1])


def test_model_dest_puts_a_model_where_this_server_wants_it(hub: HubServer, tmp_path: Path) -> None:
    """`install --model-dest REPO=DIR` (a fleet's per-host `airgap_model_dest`): the manifest's dest is the
    default, this server's own place wins; it is checked as a manifest's dest is, and must name a model of the
    bundle."""
    from tests.conftest import run_airgap

    bundle = make_bundle(hub, tmp_path)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=ubuntu\nVERSION_ID="22.04"\n')
    base = ("install", str(bundle), "--root", str(root), "--only", "models", "--json")
    r = run_airgap(*base, "--model-dest", f"{REPO}=/srv/other/tiny")
    assert r.returncode == 0, r.stdout + r.stderr
    for path, data in repo_files().items():
        assert (root / "srv/other/tiny" / path).read_bytes() == data
    assert not (root / "data/models/tiny-llm").exists()

    for bad, said in (
        (f"{REPO}=/etc/ssl", "--model-dest"),
        (f"{REPO}=relative/dir", "not an absolute path"),
        ("someone/else=/srv/x", "which this bundle does not carry"),
        ("no-equals-sign", "not REPO=DIR"),
    ):
        r = run_airgap(*base, "--model-dest", bad)
        assert r.returncode == 2 and said in r.stdout + r.stderr, (bad, r.stdout + r.stderr)
        assert "Traceback" not in r.stderr
    assert not (root / "etc/ssl").exists()
    # Said before anything runs, also when the models layer is left out.
    r = run_airgap("install", str(bundle), "--root", str(root), "--skip", "models", "--model-dest", "x/y=/srv/x")
    assert r.returncode == 2 and "which this bundle does not carry" in r.stderr, r.stdout + r.stderr
