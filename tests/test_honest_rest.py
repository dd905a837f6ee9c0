"""The rest of the honest answers: collect names why a host cannot be reached (the words plan uses) with a
fix that fits the cause; a file name from upstream metadata that would not read back from SHA256SUMS is
refused before anything is stored; install's preflight names only the versions it checked.

Real parts only: a port nothing listens on, a name under `.invalid` (RFC 6761: it never resolves), a local
Python index, and a bundle collected from local stand-in NVIDIA installers."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path
from urllib.parse import quote

import pytest

from airgap import manifest as manifest_mod
from airgap.collect import collect
from airgap.localserver import LocalHTTPServer
from airgap.sources.http import HttpSource
from tests.conftest import run_airgap
from tests.installers import nvidia_mirrors, publish_nvidia
from tests.test_install import prepare_root
from tests.test_pypi import HERE_PY, IndexServer, bundled_pip_wheel, make_wheel


def closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on (bound, then let go: the kernel hands it out no sooner)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def files_manifest(tmp: Path, url: str) -> Path:
    path = tmp / "manifest.yaml"
    path.write_text(
        f'name: netcause\ntarget: {{os: ubuntu-22.04, arch: amd64, python: "3.10"}}\nfiles:\n  - url: {url}\n'
    )
    return path


# --- collect names the network cause --------------------------------------------------------------------


def test_a_refused_connection_is_named_with_its_fix_not_more_retries(tmp_path: Path) -> None:
    port = closed_port()
    manifest = files_manifest(tmp_path, f"http://127.0.0.1:{port}/tools/check.sh")
    bundle = tmp_path / "bundle"
    r = run_airgap("collect", str(manifest), "-o", str(bundle), "--retries", "1")
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"layers/10-files/check.sh: http://127.0.0.1:{port}/tools/check.sh: cannot reach 127.0.0.1:{port}: " in (
        r.stderr
    )
    assert f"connection refused (2 attempts). Nothing accepts connections at 127.0.0.1:{port}" in r.stderr
    assert "--retries" not in r.stderr  # more attempts do not start a server
    assert "HTTPConnectionPool" not in r.stderr and "Max retries" not in r.stderr  # the library's words, not ours
    assert not (bundle / "layers/10-files/check.sh").exists()
    # plan names the same cause in the same words.
    plan = run_airgap("plan", str(manifest), "--json")
    assert plan.returncode == 3
    assert [u["cause"] for u in json.loads(plan.stdout)["unreachable"]] == ["connection refused"]


def test_a_name_that_does_not_resolve_is_a_dns_failure_with_the_name_to_check(tmp_path: Path) -> None:
    manifest = files_manifest(tmp_path, "https://mirror.airgap-test.invalid/tools/check.sh")
    r = run_airgap("collect", str(manifest), "-o", str(tmp_path / "bundle"), "--retries", "1")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "cannot reach mirror.airgap-test.invalid: DNS: cannot resolve the host name" in r.stderr
    assert "Check the host name mirror.airgap-test.invalid in the manifest and in `mirrors:`" in r.stderr
    assert "DNS settings" in r.stderr and "--retries" not in r.stderr
    assert "NameResolutionError" not in r.stderr
    plan = run_airgap("plan", str(manifest), "--json")
    assert plan.returncode == 3
    (cause,) = [u["cause"] for u in json.loads(plan.stdout)["unreachable"]]
    assert cause.startswith("DNS: cannot resolve the host name")


# --- a file name from upstream metadata that SHA256SUMS could not hold ---------------------------------------


# A build tag holding U+2028 (LINE SEPARATOR): pip takes the file, but Python's line reading would split
# SHA256SUMS at it, so the name would not read back the same.
BAD_WHEEL = "agbad-1.0-1\u2028x-py3-none-any.whl"


def test_a_wheel_name_with_a_line_separator_from_the_index_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    pip_whl = bundled_pip_wheel()
    if pip_whl is None:
        pytest.skip("this Python has no ensurepip wheel of pip to put in the local index")
    www = tmp_path / "www"
    files = www / "files"
    files.mkdir(parents=True)
    built = make_wheel(tmp_path, "agbad", "1.0")
    shutil.copy(built, files / BAD_WHEEL)
    shutil.copy(pip_whl, files / pip_whl.name)
    for project, name in (("agbad", BAD_WHEEL), ("pip", pip_whl.name)):
        digest = hashlib.sha256((files / name).read_bytes()).hexdigest()
        href = f"../../files/{quote(name)}#sha256={digest}"
        page = www / "simple" / project / "index.html"
        page.parent.mkdir(parents=True)
        page.write_text(f'<!DOCTYPE html><html><body>\n<a href="{href}">{name}</a><br>\n</body></html>\n')
    bundle = tmp_path / "bundle"
    with IndexServer(www) as index:
        manifest = tmp_path / "manifest.yaml"
        manifest.write_text(
            "name: badname\n"
            f'target: {{os: debian-12, arch: amd64, python: "{HERE_PY}"}}\n'
            "python:\n  requirements: [agbad]\n  index_urls: [https://pypi.example/simple]\n"
            f"mirrors:\n  https://pypi.example: {index.url}\n"
        )
        r = run_airgap("collect", str(manifest), "-o", str(bundle), timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "the upstream names a file 'agbad-1.0-1\\u2028x-py3-none-any.whl', which airgap cannot store" in r.stderr
    assert "it holds the character U+2028 (LINE SEPARATOR)" in r.stderr
    assert "python.requirements" in r.stderr  # the manifest field it came from
    stored = [p for p in bundle.rglob("*") if p.is_file()] if bundle.exists() else []
    assert not [p for p in stored if p.suffix == ".whl" or "layers" in p.parts], stored
    assert not (bundle / "SHA256SUMS").exists()


# --- install's preflight names only what it checked ------------------------------------------------------


def test_preflight_of_cuda_without_a_driver_does_not_claim_the_driver_was_checked(tmp_path: Path) -> None:
    up = tmp_path / "upstream"
    publish_nvidia(up)
    with LocalHTTPServer(up) as server:
        m = tmp_path / "manifest.yaml"
        m.write_text(
            "name: cuda-only\n"
            'target: {os: ubuntu-22.04, arch: amd64, python: "3.10", kernel: 5.15.0-122-generic}\n'
            f"cuda: {{version: 12.4.0}}\nmirrors:\n{nvidia_mirrors(server.url)}"
        )
        manifest = manifest_mod.load(m)
        collect(manifest, tmp_path / "bundle", HttpSource(manifest.mirrors, backoff=0.01), progress_mode="off")
    root = prepare_root(tmp_path / "root")
    r = run_airgap("install", str(tmp_path / "bundle"), "--root", str(root), "--dry-run", "--skip", "smoke")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "these versions fit together: CUDA (no driver in the bundle to check it against)" in out, out
    assert "driver and CUDA" not in out
