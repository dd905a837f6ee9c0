"""A lock edited to lead the depot's writers out of their directory: whoever can change an unsigned bundle
writes its lock (and SHA256SUMS to match), and `airgap export` runs as root on the depot. A file name with
`..` is refused and nothing is written; a registry name that is only dots is refused in the manifest (it
names a directory under /etc/docker/certs.d)."""

from __future__ import annotations

from pathlib import Path

from airgap.bundle import finalize
from airgap.lock import Lock
from tests.conftest import make_bundle, run_airgap


def test_export_refuses_a_lock_that_names_a_file_outside_the_export(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", {"layers/10-files/check.sh": b"#!/bin/sh\necho ok\n"})
    lock = Lock.read(bundle)
    lock.artifacts[0].name = "../../../escape.sh"  # path (what SHA256SUMS lists) unchanged
    finalize(bundle, lock)  # the attacker rewrites SHA256SUMS to match: verify passes
    assert run_airgap("verify", str(bundle), "--trusted-keys", str(tmp_path / "none")).returncode == 0

    dest = tmp_path / "depot" / "export"
    r = run_airgap("export", str(bundle), "--to", str(dest), "--trusted-keys", str(tmp_path / "none"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not a plain relative path" in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.rglob("escape.sh"))
    assert not dest.exists() and not list((tmp_path / "depot").glob(".export.*"))


def test_a_depot_registry_of_dots_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        'name: x\ntarget: {os: ubuntu-22.04, arch: amd64, python: "3.10"}\n'
        "depot: {url: 'http://depot:8080', registry: '..'}\n"
    )
    r = run_airgap("plan", str(manifest))
    assert r.returncode == 2 and "depot.registry" in r.stderr and "HOST[:PORT]" in r.stderr, r.stderr
