"""The collect side's smaller traps, each through the real CLI against the local upstream.

A target python airgap's own tool/ cannot run on is refused at the manifest, before any download; a CUDA
runfile whose publisher md5 cannot be had stops the collection unless --allow-unverified says otherwise;
install.sh passes over a python that exists but does not run; and the help texts and docs say what the code
does.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import airgap
from airgap.layers.docker import PLUGIN_DIR
from airgap.selfinstall.install_sh import COMMANDS, write_install_sh
from airgap.selfinstall.own_wheel import project_metadata
from airgap.sums import format_sums
from airgap.verdict import Status
from tests.conftest import CUDA, CUDA_MD5, IN_BUNDLE, Upstream, run_airgap
from tests.security.test_install_sh import pip_wheel

REPO = Path(__file__).resolve().parent.parent


def collect(up: Upstream, tmp: Path, manifest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_airgap("collect", str(manifest), "-o", str(tmp / "bundle"), "--retries", "1", *args)


# --- target.python ----------------------------------------------------------------------------------------


def test_target_python_airgap_cannot_run_on_is_refused_at_the_manifest(upstream: Upstream, tmp_path: Path) -> None:
    requires = project_metadata().requires_python
    assert requires.startswith(">=3.")  # what pyproject.toml says; the message must quote it
    m = upstream.manifest(tmp_path)
    m.write_text(m.read_text().replace('python: "3.10"', 'python: "3.8"'))
    r = collect(upstream, tmp_path, m, "--tool")
    assert r.returncode == 2, r.stderr
    assert "manifest.yaml:2: target.python:" in r.stderr
    assert f"python {requires}" in r.stderr and '"3.8"' in r.stderr
    assert "set target.python to" in r.stderr and "--no-tool" in r.stderr
    assert "Traceback" not in r.stderr
    assert upstream.server.requests == []  # refused before anything was fetched
    assert not (tmp_path / "bundle").exists()
    # Without tool/ nothing of airgap runs on the server: the same manifest collects.
    r = collect(upstream, tmp_path, m, "--no-tool")
    assert r.returncode == 0, r.stderr


# --- the publisher's md5 -----------------------------------------------------------------------------------


def test_cuda_md5_that_cannot_be_read_stops_the_collection(upstream: Upstream, tmp_path: Path) -> None:
    (upstream.root / CUDA_MD5).unlink()  # the mirror answers 404 for md5sum.txt
    m = upstream.manifest(tmp_path, mirrors_auth="builder:s3cr3t-pass@")
    r = collect(upstream, tmp_path, m)
    assert r.returncode == 3, r.stderr
    assert (
        "layers/03-cuda/cuda_12.4.0_550.54.14_linux.run: the publisher's checksum list "
        "https://developer.download.nvidia.com/compute/cuda/12.4.0/docs/sidebar/md5sum.txt could not be read"
    ) in r.stderr
    assert "md5sum.txt (404" in r.stderr, r.stderr  # the cause
    assert "--allow-unverified" in r.stderr and "cuda.sha256" in r.stderr
    assert "s3cr3t" not in r.stderr and "Traceback" not in r.stderr
    assert not [q for q in upstream.server.requests if q.path == upstream.path(CUDA)]  # nothing downloaded
    assert not (tmp_path / "bundle/SHA256SUMS").exists()


def test_allow_unverified_collects_it_loudly_and_the_lock_says_why(upstream: Upstream, tmp_path: Path) -> None:
    (upstream.root / CUDA_MD5).unlink()
    m = upstream.manifest(tmp_path, mirrors_auth="builder:s3cr3t-pass@")
    r = collect(upstream, tmp_path, m, "--allow-unverified", "--json")
    assert r.returncode == 0, r.stderr
    assert "UNVERIFIED: layers/03-cuda/cuda_12.4.0_550.54.14_linux.run" in r.stderr
    assert "s3cr3t" not in r.stderr + r.stdout
    bundle = tmp_path / "bundle"
    assert (bundle / IN_BUNDLE[CUDA]).read_bytes() == upstream.files[CUDA]
    lock_text = (bundle / "airgap.lock.json").read_text()
    assert "s3cr3t" not in lock_text
    (cuda,) = [a for a in json.loads(lock_text)["artifacts"] if a["layer"] == "cuda"]
    assert cuda["upstream_digest"] is None
    note = cuda["upstream_digest_note"]
    assert "md5sum.txt could not be read" in note and "--allow-unverified" in note
    assert any("UNVERIFIED" in w for w in json.loads(r.stdout)["warnings"])


def test_runfile_missing_from_the_md5_list_is_unverified_too(upstream: Upstream, tmp_path: Path) -> None:
    (upstream.root / CUDA_MD5).write_text("0123456789abcdef0123456789abcdef  local_installers/other.run\n")
    r = collect(upstream, tmp_path, upstream.manifest(tmp_path))
    assert r.returncode == 3, r.stderr
    assert "cuda_12.4.0_550.54.14_linux.run is not listed in the publisher's checksum list" in r.stderr
    # A pinned sha256 needs no publisher digest.
    from tests.conftest import sha

    m = upstream.manifest(tmp_path, cuda=f"{{version: 12.4.0, sha256: '{sha(upstream.files[CUDA])}'}}")
    assert collect(upstream, tmp_path, m).returncode == 0


# --- install.sh's python ------------------------------------------------------------------------------------


def _bundle_and_path(tmp: Path, pythons: dict[str, str]) -> tuple[Path, Path, Path]:
    """A bundle for python 3.10 whose tool/ pip leaves marks, and a PATH of the server's tools plus `pythons`
    (name -> a script's text, or '@' + a program to link to)."""
    bundle = tmp / "bundle"
    marks = tmp / "marks"
    (bundle / "tool").mkdir(parents=True)
    marks.mkdir()
    (bundle / "tool/pip-99.0-py3-none-any.whl").write_bytes(pip_wheel(marks))
    (bundle / f"tool/airgap-{airgap.__version__}-py3-none-any.whl").write_bytes(b"airgap stand-in")
    write_install_sh(bundle, airgap.__version__, "3.10")
    sums = {f"tool/{p.name}": p for p in (bundle / "tool").iterdir()}
    sums["install.sh"] = bundle / "install.sh"
    from airgap.digests import sha256_file

    (bundle / "SHA256SUMS").write_bytes(format_sums({k: sha256_file(v) for k, v in sums.items()}))
    path = tmp / "bin"
    path.mkdir()
    for n in COMMANDS:
        target = shutil.which(n)
        assert target, f"{n} is not installed here"
        (path / n).symlink_to(target)
    for name, body in pythons.items():
        if body.startswith("@"):
            (path / name).symlink_to(body[1:])
        else:
            (path / name).write_text(body)
            (path / name).chmod(0o755)
    return bundle, path, marks


def _run_install_sh(bundle: Path, path: Path, venv: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(path), "HOME": "/nonexistent", "LANG": "C.UTF-8", "AIRGAP_VENV": str(venv)}
    sh = shutil.which("dash") or "/bin/sh"
    return subprocess.run(
        [sh, str(bundle / "install.sh"), "--dry-run"],
        env=env,
        cwd=bundle.parent,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


BROKEN = "#!/bin/sh\necho 'python3.10: error while loading shared libraries' >&2\nexit 1\n"


def test_install_sh_passes_over_a_python_that_does_not_run(tmp_path: Path) -> None:
    bundle, path, marks = _bundle_and_path(tmp_path, {"python3.10": BROKEN, "python3": "@" + sys.executable})
    venv = tmp_path / "venv"
    r = _run_install_sh(bundle, path, venv)
    assert r.returncode == 0, r.stderr
    assert f"{path}/python3.10 does not run" in r.stderr
    assert f"creating {venv} with {path}/python3 " in r.stderr
    assert sorted(p.name for p in marks.iterdir()) == ["airgap", "pip"]  # installed, then `airgap install` ran
    assert (venv / "pyvenv.cfg").is_file()


def test_install_sh_with_no_python_that_runs_names_the_broken_one(tmp_path: Path) -> None:
    bundle, path, marks = _bundle_and_path(tmp_path, {"python3.10": BROKEN, "python3": BROKEN})
    venv = tmp_path / "venv"
    r = _run_install_sh(bundle, path, venv)
    assert r.returncode == 1, r.stderr
    assert "no working python3 on this server" in r.stderr
    assert f"{path}/python3.10" in r.stderr and f"{path}/python3 " in r.stderr
    assert list(marks.iterdir()) == [] and not venv.exists()


# --- help texts and docs ------------------------------------------------------------------------------------


def test_help_texts_say_what_the_commands_do() -> None:
    r = run_airgap("demo", "--help")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "verifies the copy, installs it" in text and "runs the smoke test" in text
    main = run_airgap("--help").stdout
    assert re.search(r"^\s+4\s+a reboot is due", main, re.M), main
    collect_help = " ".join(run_airgap("collect", "--help").stdout.split())
    assert "--allow-unverified" in collect_help and "md5sum.txt" in collect_help


def test_docs_put_the_compose_plugin_where_the_code_does() -> None:
    install_md = (REPO / "docs/install.md").read_text()
    assert f"`{PLUGIN_DIR}/docker-compose`" in install_md
    assert "/usr/local/lib/docker/cli-plugins" not in install_md
    # doctor's fix for a missing Compose names the same directory
    from airgap.doctor import docker as doctor_docker

    docker = types.SimpleNamespace(
        docker="/usr/bin/docker", compose=(1, "'compose' is not a command"), legacy_compose=None
    )
    (check,) = doctor_docker.compose(types.SimpleNamespace(docker=docker))  # type: ignore[arg-type]
    assert check.status == Status.FAIL and f"{PLUGIN_DIR}/" in check.fix


# Notes that lived outside the project while it was written, spelled so this file does not name them itself.
NOTES = [n + ".md" for n in ("FIELD", "FACTS", "DESIGN", "STRUCTURE", "SECURITY")] + [
    "../" + "shared",
    "FIELD" + " notes",
]


@pytest.mark.parametrize("where", ["README.md", "CHANGELOG.md", "docs", "airgap", "tests", "manifests"])
def test_the_project_docs_stand_alone(where: str) -> None:
    root = REPO / where
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    found = []
    for p in files:
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            continue
        for name in NOTES:
            # docs/security.md is the project's own; only the upper-case notes file was outside it.
            if name in text:
                found.append(f"{p.relative_to(REPO)}: {name}")
    assert found == []
