"""The python layer: wheels resolved for the TARGET interpreter and platform, a hashed lock, and an offline
install into a fresh venv (inside `unshare -n` when we are root). A local PEP 503 index on loopback serves
hand-built wheels for the offline tests; the network tests use PyPI itself."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airgap import manifest as manifest_mod
from airgap.collect import collect
from airgap.errors import BadInputError
from airgap.localserver import LocalHTTPServer, StaticFileHandler
from airgap.sources.http import HttpSource
from airgap.sources.pypi import resolve_wheels
from airgap.target import Target, platform_tags
from tests.conftest import run_airgap

HERE_PY = f"{sys.version_info.major}.{sys.version_info.minor}"
HERE_CP = f"cp{sys.version_info.major}{sys.version_info.minor}"


# --- a local index --------------------------------------------------------------------------------------


class _IndexHandler(StaticFileHandler):
    """Serves `dir/index.html` for `dir/`, as text/html: what pip asks a simple index for."""

    def _resolve(self, url_path: str) -> Path | None:
        return super()._resolve(url_path + "index.html" if url_path.endswith("/") else url_path)

    def _common_headers(self, etag: str, last_modified: str) -> None:
        if self.url_path.endswith("/"):
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
        else:
            super()._common_headers(etag, last_modified)


class IndexServer(LocalHTTPServer):
    handler_class = _IndexHandler


def make_wheel(
    out: Path,
    name: str,
    version: str,
    tag: str = "py3-none-any",
    requires: tuple[str, ...] = (),
    module: str | None = None,
) -> Path:
    """A real, minimal wheel: a module that records its version, METADATA, WHEEL and a correct RECORD."""
    mod = module or name.replace("-", "_")
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    files = {
        f"{mod}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": f"Wheel-Version: 1.0\nGenerator: airgap-tests\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    whl = out / f"{name.replace('-', '_')}-{version}-{tag}.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return whl


def write_index(root: Path, wheels: list[Path], sdists: list[Path] = ()) -> None:  # type: ignore[assignment]
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    projects: dict[str, list[Path]] = {}
    for f in [*wheels, *sdists]:
        shutil.copy(f, files / f.name)
        project = re.sub(r"[-_.]+", "-", f.name.split("-")[0]).lower()
        projects.setdefault(project, []).append(files / f.name)
    for project, paths in projects.items():
        page = root / "simple" / project / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        links = "".join(
            f'<a href="../../files/{p.name}#sha256={hashlib.sha256(p.read_bytes()).hexdigest()}">{p.name}</a><br>\n'
            for p in paths
        )
        page.write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")


def bundled_pip_wheel() -> Path | None:
    """A pip wheel on this machine (CPython's ensurepip copy, or Debian's python3-pip-whl): the local index
    serves it, as the bundle carries pip's wheel to bootstrap the server's venv offline."""
    dirs = [Path("/usr/share/python-wheels")]
    try:
        import ensurepip

        dirs.insert(0, Path(ensurepip.__file__).parent / "_bundled")
    except ImportError:
        pass
    return next((w for d in dirs for w in sorted(d.glob("pip-*.whl"))), None)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexServer]:
    pip_whl = bundled_pip_wheel()
    if pip_whl is None:
        pytest.skip("this Python has no ensurepip wheel of pip to put in the local index")
    base = tmp_path_factory.mktemp("pyindex")
    build = base / "build"
    build.mkdir()
    wheels = [
        make_wheel(build, "agdemo", "1.0", requires=("agnative>=1.0",)),
        # Compiled-style wheels: one for this Python on old glibc, one needing a glibc newer than the target's,
        # and one for another interpreter only.
        make_wheel(build, "agnative", "1.0", f"{HERE_CP}-{HERE_CP}-manylinux_2_17_x86_64.manylinux2014_x86_64"),
        make_wheel(build, "agnative", "2.0", f"{HERE_CP}-{HERE_CP}-manylinux_2_39_x86_64"),
        make_wheel(build, "agnative", "2.0", "cp39-cp39-manylinux_2_17_x86_64"),
        make_wheel(build, "agnative", "2.0", f"{HERE_CP}-{HERE_CP}-macosx_11_0_arm64"),
        pip_whl,
    ]
    sdist = build / "agsource-1.0.tar.gz"
    sdist.write_bytes(b"not really a tarball")
    write_index(base / "www", wheels, [sdist])
    with IndexServer(base / "www") as server:
        yield server


def local_manifest(work: Path, index: IndexServer, requirements: str, os_name: str = "debian-12") -> Path:
    path = work / "manifest.yaml"
    path.write_text(
        "name: py-test\n"
        f'target: {{os: {os_name}, arch: amd64, python: "{HERE_PY}"}}\n'
        f"python:\n  requirements: {requirements}\n  index_urls: [https://pypi.example/simple]\n"
        "  venv: /opt/airgap/venv\n"
        f"mirrors:\n  https://pypi.example: {index.url}\n"
    )
    return path


def in_netns(*args: str) -> list[str]:
    if os.geteuid() == 0 and shutil.which("unshare"):
        return ["unshare", "-n", *args]
    return list(args)


def test_platform_tags_list_every_manylinux_the_glibc_runs() -> None:
    tags = platform_tags("amd64", "2.35")
    assert tags[0] == "manylinux_2_35_x86_64" and "manylinux_2_5_x86_64" in tags
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert tags[-1] == "linux_x86_64"  # the PyTorch index's CUDA wheels
    arm = platform_tags("arm64", "2.31")
    assert arm[0] == "manylinux_2_31_aarch64" and arm[-2:] == ["manylinux2014_aarch64", "linux_aarch64"]
    assert "manylinux_2_16_aarch64" not in arm


def test_wheels_are_chosen_for_the_target_and_locked_with_hashes(index: IndexServer, tmp_path: Path) -> None:
    m = manifest_mod.load(local_manifest(tmp_path, index, "[agdemo]"))
    bundle = tmp_path / "bundle"
    collect(m, bundle, HttpSource(m.mirrors, backoff=0.01), progress_mode="off")
    names = sorted(p.name for p in (bundle / "layers/08-python").iterdir())
    # glibc 2.36 (debian-12) cannot run manylinux_2_39: agnative 2.0 is passed over for 1.0.
    assert f"agnative-1.0-{HERE_CP}-{HERE_CP}-manylinux_2_17_x86_64.manylinux2014_x86_64.whl" in names
    assert "agdemo-1.0-py3-none-any.whl" in names and "requirements.lock.txt" in names
    lock_text = (bundle / "layers/08-python/requirements.lock.txt").read_text()
    pins = re.findall(r"^(\S+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", lock_text, re.M)
    assert {p[0] for p in pins} == {"agdemo", "agnative", "pip"}
    for _name, _version, digest in pins:
        assert any(
            hashlib.sha256(f.read_bytes()).hexdigest() == digest for f in (bundle / "layers/08-python").glob("*.whl")
        )
    lock = json.loads((bundle / "airgap.lock.json").read_text())
    demo = next(a for a in lock["artifacts"] if a["name"].startswith("agdemo"))
    assert demo["upstream_digest"]["algorithm"] == "sha256" and demo["meta"]["requested"] is True
    assert run_airgap("verify", str(bundle)).returncode == 0


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        (
            "agnative==2.0",
            [
                "no wheel of agnative==2.0 fits the target",
                f"{HERE_CP}/abi3/none with manylinux_2_36",
                "agnative 2.0: wheels for cp39, " + HERE_CP,
                "manylinux_2_39_x86_64",
            ],
        ),
        ("agsource", ["no wheel of agsource fits", "agsource 1.0: no wheels, and a source distribution"]),
        ("agnowhere", ["no project named agnowhere"]),
    ],
)
def test_no_wheel_for_the_target_names_package_tags_and_what_exists(
    index: IndexServer, tmp_path: Path, requirement: str, expected: list[str]
) -> None:
    target = Target(HERE_PY, "amd64", "2.36")
    with pytest.raises(BadInputError) as exc:
        resolve_wheels([requirement], ["https://pypi.example/simple"], target, {"https://pypi.example": index.url})
    for text in expected:
        assert text in exc.value.message


def test_install_offline_into_a_fresh_venv_then_again(index: IndexServer, tmp_path: Path) -> None:
    m = manifest_mod.load(local_manifest(tmp_path, index, "[agdemo]"))
    bundle = tmp_path / "bundle"
    collect(m, bundle, HttpSource(m.mirrors, backoff=0.01), progress_mode="off")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    args = [sys.executable, "-m", "airgap", "install", str(bundle), "--root", str(root), "--only", "python", "--json"]
    r = subprocess.run(in_netns(*args), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    step = json.loads(r.stdout)["steps"][0]
    assert step["status"] == "installed", step
    assert "imported agdemo" in step["detail"]
    vpy = root / "opt/airgap/venv/bin/python"
    out = subprocess.run(
        [vpy, "-c", "import agdemo, agnative, pip; print(agnative.VERSION)"], capture_output=True, text=True
    )
    assert out.stdout.strip() == "1.0", out.stderr
    again = subprocess.run(in_netns(*args), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    step = json.loads(again.stdout)["steps"][0]
    assert step["status"] == "skipped" and "at the lock's versions" in step["detail"]


# --- PyPI itself ----------------------------------------------------------------------------------------


def wheel_tags(name: str) -> tuple[set[str], set[str], set[str]]:
    py, abi, plat = name[:-4].split("-")[-3:]
    return set(py.split(".")), set(abi.split(".")), set(plat.split("."))


@pytest.mark.network
def test_pypi_wheels_for_python_310_manylinux(tmp_path: Path) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text(
        'name: py310\ntarget: {os: ubuntu-22.04, arch: amd64, python: "3.10"}\n'
        "python: {requirements: [numpy, pydantic-core]}\n"
    )
    m = manifest_mod.load(path)
    bundle = tmp_path / "bundle"
    collect(m, bundle, HttpSource(backoff=0.5), progress_mode="off")
    wheels = sorted((bundle / "layers/08-python").glob("*.whl"))
    names = {w.name.split("-")[0].lower() for w in wheels}
    assert {"numpy", "pydantic_core", "typing_extensions", "pip"} <= names
    accepted = set(platform_tags("amd64", "2.35")) | {"any"}
    for w in wheels:
        py, abi, plat = wheel_tags(w.name)
        assert py & {"cp310", "py3", "py310", "py2"}, w.name
        assert abi & {"cp310", "abi3", "none"}, w.name
        assert plat & accepted, w.name
    assert any("manylinux" in w.name and "cp310" in w.name for w in wheels if w.name.startswith("numpy"))
    lock = (bundle / "layers/08-python/requirements.lock.txt").read_text()
    assert re.search(r"^numpy==\S+ \\\n    --hash=sha256:[0-9a-f]{64}$", lock, re.M)
    assert run_airgap("verify", str(bundle)).returncode == 0


@pytest.mark.network
def test_pypi_collect_for_this_python_then_install_with_no_network(tmp_path: Path) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text(
        f'name: pyhere\ntarget: {{os: debian-12, arch: amd64, python: "{HERE_PY}"}}\n'
        "python: {requirements: [pydantic-core, markupsafe], venv: /srv/venv}\n"
    )
    m = manifest_mod.load(path)
    bundle = tmp_path / "bundle"
    collect(m, bundle, HttpSource(backoff=0.5), progress_mode="off")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    args = [sys.executable, "-m", "airgap", "install", str(bundle), "--root", str(root), "--only", "python", "--json"]
    r = subprocess.run(in_netns(*args), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    step = json.loads(r.stdout)["steps"][0]
    assert step["status"] == "installed", step
    vpy = root / "srv/venv/bin/python"
    out = subprocess.run(
        [vpy, "-c", "import pydantic_core, markupsafe; print(markupsafe.escape('<a>'))"], capture_output=True, text=True
    )
    assert out.stdout.strip() == "&lt;a&gt;", out.stderr


@pytest.mark.network
def test_markers_are_judged_for_the_target_python_not_this_one() -> None:
    """anyio needs exceptiongroup only below Python 3.11: collecting from a newer Python for a 3.10 server
    must still bring it (pip alone judges markers with the Python it runs on)."""
    if sys.version_info < (3, 11):
        pytest.skip("needs a collecting Python newer than the 3.10 target")
    wheels = resolve_wheels(["anyio==4.4.0"], ["https://pypi.org/simple"], Target("3.10", "amd64", "2.35"), {})
    names = {w.project.lower().replace("_", "-") for w in wheels.wheels}
    assert {"anyio", "exceptiongroup", "typing-extensions", "idna", "sniffio"} <= names
    newer = resolve_wheels(["anyio==4.4.0"], ["https://pypi.org/simple"], Target("3.12", "amd64", "2.35"), {})
    assert "exceptiongroup" not in {w.project.lower() for w in newer.wheels}
