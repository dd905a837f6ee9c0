"""`fleet: true`: the bundle is also the control node's kit. tool/ carries ansible-core with airgap's own
wheels, so inside the closed network `pip install --no-index --find-links tool/ 'airgap[fleet]'` gives a
control node that runs `airgap fleet` and Ansible with nothing from outside (offline: in a network
namespace with no network at all, when root may make one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Upstream, run_airgap
from tests.test_pypi import HERE_PY

pytestmark = [pytest.mark.network, pytest.mark.slow]


def offline(*argv: str) -> list[str]:
    if os.geteuid() == 0 and shutil.which("unshare"):
        return ["unshare", "-n", *argv]
    return list(argv)


def test_a_fleet_bundle_carries_ansible_for_an_offline_control_node(upstream: Upstream, tmp_path: Path) -> None:
    manifest = upstream.manifest(tmp_path, extra="fleet: true\n")
    text = manifest.read_text().replace('python: "3.10"', f'python: "{HERE_PY}"')
    manifest.write_text(text)
    bundle = tmp_path / "bundle"
    r = run_airgap("collect", str(manifest), "-o", str(bundle), "--tool", timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    lock = json.loads((bundle / "airgap.lock.json").read_text())
    assert lock["tool"]["extras"] == ["fleet"]
    wheels = {p.name.split("-")[0].lower() for p in (bundle / "tool").glob("*.whl")}
    assert {"ansible_core", "jinja2", "resolvelib", "airgap"} <= wheels, wheels

    venv = tmp_path / "control"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip_whl = next((bundle / "tool").glob("pip-*.whl"))
    install = subprocess.run(
        offline(
            str(venv / "bin/python"),
            f"{pip_whl}/pip",
            "install",
            "--isolated",
            "--no-index",
            "--find-links",
            str(bundle / "tool"),
            "airgap[fleet]",
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    version = subprocess.run(
        [str(venv / "bin/python"), "-m", "ansible.cli.playbook", "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and "ansible-playbook" in version.stdout, version.stdout + version.stderr
    helped = subprocess.run([str(venv / "bin/airgap"), "fleet", "install", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--canary" in helped.stdout

    # Without fleet: the same manifest's tool/ carries no Ansible, and the record says so.
    manifest.write_text(text.replace("fleet: true\n", ""))
    again = run_airgap("collect", str(manifest), "-o", str(bundle), "--tool", timeout=900)
    assert again.returncode == 0, again.stderr
    assert json.loads((bundle / "airgap.lock.json").read_text())["tool"]["extras"] == []
    assert not list((bundle / "tool").glob("ansible_core-*.whl"))
