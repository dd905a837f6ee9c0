"""Collect at scale: every phase says what it does (piped too), tool/ is not rebuilt when nothing it depends
on changed, and no wheel crosses the wire twice in one collect (pip reads metadata, the download is ours).

The local index serves no PEP 658 metadata, like the indexes that made pip read gigabytes to resolve; pip's
metadata then comes from HTTP range requests on the wheel. tool/ is built from a local wheelhouse of
stand-in wheels for airgap's requirements (pip's own config variables point `pip download` at it), so
nothing here needs the network."""

from __future__ import annotations

import hashlib
import os
import random
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from airgap.selfinstall.own_wheel import project_metadata
from airgap.target import Target
from tests.conftest import run_airgap
from tests.test_pypi import HERE_PY, IndexServer, bundled_pip_wheel, make_wheel, write_index

BIG = 3 << 20  # incompressible bytes in agbig's wheel: reading it whole to learn its requirements shows


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexServer]:
    pip_whl = bundled_pip_wheel()
    if pip_whl is None:
        pytest.skip("this Python has no ensurepip wheel of pip to put in the local index")
    base = tmp_path_factory.mktemp("phases-index")
    build = base / "build"
    build.mkdir()
    big = make_wheel(build, "agbig", "1.0")
    with zipfile.ZipFile(big, "a", compression=zipfile.ZIP_STORED) as z:
        z.writestr("agbig/blob.bin", random.Random(0).randbytes(BIG))
    wheels = [make_wheel(build, "agdemo", "1.0", requires=("agbig>=1.0",)), big, pip_whl]
    write_index(base / "www", wheels)
    with IndexServer(base / "www") as server:
        yield server


@pytest.fixture
def wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-ins for airgap's requirements at their lowest allowed versions, and pip; `pip download` for
    tool/ finds them through pip's environment variables (the python layer ignores those on purpose)."""
    pip_whl = bundled_pip_wheel()
    if pip_whl is None:
        pytest.skip("this Python has no ensurepip wheel of pip")
    house = tmp_path / "wheelhouse"
    house.mkdir()
    target = Target(HERE_PY, "amd64", "2.36")
    for spec in project_metadata().requires_dist:
        req = Requirement(spec)
        if not target.wants(req.marker):
            continue
        floor = next((s.version for s in req.specifier if s.operator in (">=", "==")), "1.0")
        make_wheel(house, req.name, floor)
    (house / pip_whl.name).write_bytes(pip_whl.read_bytes())
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    return house


def write_manifest(work: Path, index: IndexServer) -> Path:
    path = work / "manifest.yaml"
    path.write_text(
        "name: phases\n"
        f'target: {{os: debian-12, arch: amd64, python: "{HERE_PY}"}}\n'
        "python:\n  requirements: [agdemo]\n  index_urls: [https://pypi.example/simple]\n"
        f"mirrors:\n  https://pypi.example: {index.url}\n"
    )
    return path


def tool_state(bundle: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted((bundle / "tool").iterdir())}


def test_phases_are_told_when_piped_and_tool_is_reused_when_nothing_changed(
    index: IndexServer, wheelhouse: Path, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path, index)
    bundle = tmp_path / "bundle"
    first = run_airgap("collect", str(manifest), "-o", str(bundle), "--tool", timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    for line in (
        "resolving python ...",
        f"resolving wheels for cp{HERE_PY.replace('.', '')} manylinux_2_36_x86_64 (pip) ...",
        f"building tool/ for python {HERE_PY} x86_64 (glibc 2.36) ...",
        "downloading 3 files ...",
        "writing the lock and SHA256SUMS ...",
    ):
        assert line in out, out
    assert "tool/ unchanged" not in out
    airgap_whl = next((bundle / "tool").glob("airgap-*.whl"))
    assert {p.name.split("-")[0].lower() for p in (bundle / "tool").iterdir()} >= {"airgap", "pip", "click"}
    before = tool_state(bundle)

    again = run_airgap("collect", str(manifest), "-o", str(bundle), "--tool", timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "tool/ unchanged: reused" in again.stdout, again.stdout
    assert "building tool/" not in again.stdout
    assert "checking 3 files already in the bundle ..." in again.stdout, again.stdout
    assert tool_state(bundle) == before and airgap_whl.is_file()
    assert run_airgap("verify", str(bundle)).returncode == 0

    # A tool/ file that no longer hashes as recorded is not reused: tool/ is built again.
    airgap_whl.write_bytes(airgap_whl.read_bytes() + b"x")
    third = run_airgap("collect", str(manifest), "-o", str(bundle), "--tool", timeout=600)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "building tool/" in third.stdout and "tool/ unchanged" not in third.stdout
    assert run_airgap("verify", str(bundle)).returncode == 0


def test_quiet_collect_says_nothing(index: IndexServer, tmp_path: Path) -> None:
    r = run_airgap("-q", "collect", str(write_manifest(tmp_path, index)), "-o", str(tmp_path / "b"), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resolving" not in r.stdout + r.stderr and "downloading" not in r.stdout + r.stderr


def test_each_wheel_is_downloaded_once_and_resolving_reads_only_metadata(index: IndexServer, tmp_path: Path) -> None:
    index.reset_stats()
    r = run_airgap("collect", str(write_manifest(tmp_path, index)), "-o", str(tmp_path / "bundle"), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    wheel_gets = [q for q in index.requests if q.method == "GET" and q.path.endswith(".whl")]
    whole = sorted(q.path for q in wheel_gets if q.range is None)
    assert len(whole) == len(set(whole)) == 3, whole  # agdemo, agbig, pip: once each, by airgap's download
    big = next(p for p in whole if "agbig" in p)
    size = (tmp_path / "bundle/layers/08-python" / big.rsplit("/", 1)[-1]).stat().st_size
    # pip's range requests for agbig's METADATA are a few kB; reading the wheel would be its size again.
    assert size < index.bytes_sent(big) < size + BIG // 10


def test_an_index_with_pep_658_metadata_is_read_without_touching_the_wheels(tmp_path: Path) -> None:
    pip_whl = bundled_pip_wheel()
    if pip_whl is None:
        pytest.skip("this Python has no ensurepip wheel of pip to put in the local index")
    build = tmp_path / "build"
    build.mkdir()
    wheels = [make_wheel(build, "agdemo", "1.0", requires=("agdep",)), make_wheel(build, "agdep", "1.0"), pip_whl]
    www = tmp_path / "www"
    write_index(www, wheels)
    for page in (www / "simple").glob("*/index.html"):
        html = page.read_text()
        for whl in wheels:
            with zipfile.ZipFile(whl) as z:
                meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA")))
            (www / "files" / f"{whl.name}.metadata").write_bytes(meta)
            digest = hashlib.sha256(meta).hexdigest()
            html = html.replace(f'">{whl.name}<', f'" data-dist-info-metadata="sha256={digest}">{whl.name}<')
        page.write_text(html)
    with IndexServer(www) as server:
        r = run_airgap("collect", str(write_manifest(tmp_path, server)), "-o", str(tmp_path / "bundle"), timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        wheel_gets = [q for q in server.requests if q.method == "GET" and q.path.endswith(".whl")]
        metadata = [q for q in server.requests if q.path.endswith(".metadata")]
    assert sorted(q.path.rsplit("/", 1)[-1] for q in wheel_gets) == sorted(w.name for w in wheels)
    assert all(q.range is None for q in wheel_gets) and len(metadata) == 3
