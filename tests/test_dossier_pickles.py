"""Model files that can run code: a pickle carrying an `os.system` global, on a local hub served to the real
huggingface_hub client. Refused at collect unless the manifest allows it; listed (every global) by the
dossier when allowed; placed by `install` only once the dossier has scanned it."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airgap.dossier.pickles import check_safetensors, scan_pickle
from airgap.errors import InstallError
from airgap.host import Host
from airgap.install_context import InstallContext, InstallOptions
from airgap.layers.models import ModelsLayer
from airgap.lock import Lock
from tests.hub_server import HubServer

pytest.importorskip("cyclonedx")
pytest.importorskip("spdx_tools")

REPO = "acme/pickled"
# GLOBAL 'os system' then REDUCE: what `torch.load` of a hostile checkpoint would run.
EVIL = b"cos\nsystem\n(S'echo owned'\ntR."


def safetensors() -> bytes:
    raw = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(8)


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer() as server:
        server.add_commit(
            REPO,
            {
                "README.md": b"---\nlicense: mit\n---\n# pickled\n",
                "config.json": b"{}",
                "model.safetensors": safetensors(),
                "pytorch_model.bin": EVIL,
            },
        )
        yield server


def airgap(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(PYTHONUNBUFFERED="1", HF_HOME=str(tmp / "hf-home"))
    return subprocess.run([sys.executable, "-m", "airgap", *args], capture_output=True, text=True, timeout=120, env=env)


def manifest(tmp: Path, hub: HubServer, entry: str) -> Path:
    path = tmp / "manifest.yaml"
    path.write_text(
        "name: pickles\n"
        'target: {os: ubuntu-22.04, arch: amd64, python: "3.10"}\n'
        f"models:\n  - {{repo: {REPO}{entry}}}\n"
        f"mirrors:\n  https://huggingface.co: {hub.url}\n"
    )
    return path


def context(bundle: Path, root: Path) -> InstallContext:
    return InstallContext(Host(root=root), bundle, Lock.read(bundle), InstallOptions())


def test_a_pickle_is_refused_at_collect_unless_the_manifest_allows_it(hub: HubServer, tmp_path: Path) -> None:
    r = airgap(tmp_path, "collect", str(manifest(tmp_path, hub, "")), "-o", str(tmp_path / "b"), "--no-tool")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "pytorch_model.bin" in r.stderr and "allow_pickle: true" in r.stderr and "ignore" in r.stderr
    assert "Traceback" not in r.stderr
    assert not list((tmp_path / "b").rglob("pytorch_model.bin"))

    # Leaving it out is the other way.
    m = manifest(tmp_path, hub, ", ignore: ['*.bin']")
    r = airgap(tmp_path, "collect", str(m), "-o", str(tmp_path / "c"), "--no-tool")
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_allowed_pickle_is_listed_with_its_globals_and_installed_only_once_cleared(
    hub: HubServer, tmp_path: Path
) -> None:
    bundle = tmp_path / "b"
    m = manifest(tmp_path, hub, ", allow_pickle: true")
    r = airgap(tmp_path, "collect", str(m), "-o", str(bundle), "--no-tool")
    assert r.returncode == 0, r.stdout + r.stderr

    # No dossier yet: install refuses the pickle, and says how to clear it.
    root = tmp_path / "root"
    with pytest.raises(InstallError) as exc:
        ModelsLayer().install(context(bundle, root))
    assert "pytorch_model.bin" in exc.value.message and "no dossier" in exc.value.message
    assert not (root / "data/models/pickled/pytorch_model.bin").exists()

    r = airgap(tmp_path, "dossier", str(bundle))
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads((bundle / "dossier/dossier.json").read_text())
    code = {c["path"].rsplit("/", 1)[1]: c for c in d["code_files"]}
    assert code["pytorch_model.bin"]["globals"] == ["os.system"]
    assert code["pytorch_model.bin"]["dangerous"] == ["os.system"]
    assert code["pytorch_model.bin"]["allowed"] is True
    assert code["model.safetensors"]["parsed"] is True
    model_lic = {a["name"]: a["licence"]["value"] for a in d["artifacts"]}
    assert model_lic[f"{REPO}/pytorch_model.bin"] == "mit"
    page = (bundle / "dossier/dossier.html").read_text()
    assert "pytorch_model.bin" in page and "os.system" in page
    assert airgap(tmp_path, "verify", str(bundle)).returncode == 0

    # Cleared: the manifest allowed it and the dossier scanned these very bytes.
    ModelsLayer().install(context(bundle, root))
    assert (root / "data/models/pickled/pytorch_model.bin").read_bytes() == EVIL

    # A dossier that scanned other bytes does not clear this file.
    doc = json.loads((bundle / "dossier/dossier.json").read_text())
    for c in doc["code_files"]:
        c["sha256"] = "0" * 64
    (bundle / "dossier/dossier.json").write_text(json.dumps(doc))
    with pytest.raises(InstallError) as exc:
        ModelsLayer().install(context(bundle, tmp_path / "root2"))
    assert "has not scanned" in exc.value.message


# --- the scanner itself --------------------------------------------------------------------------------


def test_a_torch_zip_checkpoint_is_scanned_inside_and_plain_data_imports_nothing(tmp_path: Path) -> None:
    inner = pickle.dumps({"weight": [1.0, 2.0]}, protocol=2)
    evil_inner = b"\x80\x02cbuiltins\neval\nq\x00X\x04\x00\x00\x001+1q\x01\x85q\x02Rq\x03."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", evil_inner)
        z.writestr("archive/data/0", b"\0" * 8)
    assert scan_pickle(io.BytesIO(buf.getvalue())).globals == ["builtins.eval"]
    assert scan_pickle(io.BytesIO(inner)).globals == []
    # Protocol 4's STACK_GLOBAL takes its module and name from the stack (memoised strings included).
    import collections

    p4 = pickle.dumps([collections.OrderedDict(), collections.OrderedDict()], protocol=4)
    assert scan_pickle(io.BytesIO(p4)).globals == ["collections.OrderedDict"]
    assert scan_pickle(io.BytesIO(b"not a pickle")).error

    # torch's legacy format: five pickles back to back, then raw tensor bytes (not read as a pickle).
    legacy = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    legacy += b"\x80\x02cos\nsystem\nq\x00." + pickle.dumps(["0"], protocol=2) + b"\x80" + bytes(64)
    assert scan_pickle(io.BytesIO(legacy)).to_dict() | {} == {
        "globals": ["os.system"],
        "dangerous": ["os.system"],
        "error": "",
        "parsed": True,
    }


def test_a_safetensors_header_must_parse() -> None:
    good = safetensors()
    assert check_safetensors(io.BytesIO(good), len(good)).tensors == 1
    assert "does not fit" in check_safetensors(io.BytesIO(struct.pack("<Q", 1 << 40)), 8).error
    bad = struct.pack("<Q", 4) + b"{no}"
    assert "not JSON" in check_safetensors(io.BytesIO(bad), len(bad)).error
