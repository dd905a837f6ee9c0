"""The public archive keys shipped in manifests/keys/: each file holds exactly the publisher's keys, by
fingerprint, and the reference manifest finds every keyring it names inside the repository, so it plans on a
machine without Ubuntu's or NVIDIA's keyring packages (Debian 12 has no ubuntu-keyring)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from airgap import manifest as manifest_mod
from airgap.errors import IntegrityError
from airgap.layers.debs import repos_for
from airgap.sources.apt.release import verify_signature

ROOT = Path(__file__).resolve().parent.parent
KEYS = ROOT / "manifests" / "keys"
REFERENCE = ROOT / "manifests" / "llm-ubuntu2204-cuda124.yaml"

# The publishers' fingerprints, written here by hand and compared with their own statements of them
# (manifests/keys/README.md says where), not read from the README: a key swapped in the repository together
# with its README row still fails this table.
FINGERPRINTS = {
    "ubuntu-archive-keyring.asc": {
        "790BC7277767219C42C86F933B4FE6ACC0B21F32",  # Ubuntu Archive Automatic Signing Key (2012)
        "F6ECB3762474EDA9D21B7022871920D1991BC93C",  # Ubuntu Archive Automatic Signing Key (2018)
    },
    "nvidia-container-toolkit-keyring.asc": {
        "C95B321B61E88C1809C4F759DDCAE044F796ECB0",  # NVIDIA CORPORATION (Open Source Projects), libnvidia-container
    },
}

# NVIDIA's signed index of https://nvidia.github.io/libnvidia-container/stable/deb/amd64 as published
# (InRelease, signed 2024-11-15): real publisher data, so the shipped key is shown to verify what the
# repository serves, through airgap's own dearmor and gpgv.
NVIDIA_CONTAINER_INRELEASE = """\
-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA512

Architectures: amd64
Codename: stable
Components: main
Date: Fri, 27 Apr 2018 21:29:25 +0000
Description: NVIDIA container runtime library repository
Label: NVIDIA CORPORATION <cudatools@nvidia.com>
Origin: https://nvidia.github.io/libnvidia-container/stable
Version: 1.0
SHA512:
 ae49a472ffafbace21ee922dd815732c487f0ef8801aa7124be93804adb0ef8eed61f7cb642209b8d4fe00aaa68db916c24d44b6b1a6189a1d034d04912ea952            90397 Packages
 971f6cf9f4ec50acc590ceb88f667f90dbbac4e2e2495756cc398dc783b57628b307a6662f3203c4ff1b4e2655bab228dd17c81ce6f97addfa53f75e488f6d60            14820 Packages.xz
-----BEGIN PGP SIGNATURE-----

iQIzBAEBCgAdFiEEyVsyG2HojBgJxPdZ3crgRPeW7LAFAmc33NoACgkQ3crgRPeW
7LDrcw//ccSDxbkJuS/ahNtRNT8SNc2dJJuxY3iN+YPSTzYZcl7iY+uipbhvlqq9
BvCTvykoAzWpyoo2NPTu2VhICxG9wcW9r43mXWBknAO2uk+2l98iPlQlmjPnd+Y4
kjdVd65ca1hKCIYWcEkrluKEzhvNqVe5Oz5a5zMg1BjzwsepPDdi3kBAaau0cLpr
AH6rxsCZXMPHeB73exKy1pEwn65z8bDBqcRTikuVlyPRhyadX/J431H6esizvfw3
QpZCA63uuUtSDZQ9eDj2zOPNOUKc85ZoYxz9bx5DU/YCFGFgBIl5RzfgzQoQjQJP
MJrE/wnaYoac4BoOLsryuXv3U/KJLIa31NzFoyrBfxlvYMUPFv0y6WOb9Fxi2wPH
nPTkon/jh+r2MXK1s/lV39CJ9zBPqTw7Cw+/spuNV+jxoN53vpxPxvFVmM+U8a76
NDz+V/TAstv6hjOONtL3jajJFLvCNxiDhDRv9xc41kjhF+qEz7qgmzW8Vm659Qbw
SUAUp6hq32I7TvtfjykGxGWUWYpYUrFA4AglgHc3D7Mj8dM4feQJXwSk8IXqnMGc
Ta1UonABSNt2iqs0Oco8udp4VYY5d8idQ7a54sFtcLjI69UDgOAA7ixLTZhQOVab
2oOjjAcKZ/e58Rxujlw8CsELaSUjkpP3ME9NZJfyvnTr6XYhE4w=
=9qIR
-----END PGP SIGNATURE-----
"""  # noqa: E501 (signed text: its lines are NVIDIA's, unwrappable)


def primary_fingerprints(path: Path, home: Path) -> set[str]:
    """The primary keys' fingerprints in a key file, as gpg reads it (subkeys left out)."""
    home.mkdir(mode=0o700, exist_ok=True)
    res = subprocess.run(
        ["gpg", "--batch", "--show-keys", "--with-colons", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GNUPGHOME": str(home)},  # never the developer's own keyring
        check=True,
    )
    found: set[str] = set()
    after_pub = False
    for line in res.stdout.splitlines():
        kind = line.split(":", 1)[0]
        if kind == "pub":
            after_pub = True
        elif kind == "fpr" and after_pub:
            found.add(line.split(":")[9])
            after_pub = False
        elif kind in ("sub", "uid"):
            after_pub = False
    return found


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_shipped_key_has_exactly_the_published_fingerprints(name: str, tmp_path: Path) -> None:
    assert primary_fingerprints(KEYS / name, tmp_path / "gnupg") == FINGERPRINTS[name]


def test_every_shipped_key_file_is_in_the_table() -> None:
    shipped = {p.name for p in KEYS.iterdir() if p.name != "README.md"}
    assert shipped == set(FINGERPRINTS)


def test_readme_names_each_file_and_fingerprint() -> None:
    readme = (KEYS / "README.md").read_text()
    for name, fprs in FINGERPRINTS.items():
        assert f"`{name}`" in readme
        for fpr in fprs:
            assert f"`{fpr}`" in readme


def test_reference_manifest_names_only_keyrings_in_the_repository() -> None:
    m = manifest_mod.load(REFERENCE)
    assert m.apt is not None
    keyrings = m.apt.keyrings
    assert {"ubuntu", "nvidia-container"} <= set(keyrings)
    for name, value in keyrings.items():
        path = Path(value)
        assert not path.is_absolute(), f"{name}: {value} is a path of the machine, not of the repository"
        resolved = (m.source.parent / path).resolve()
        assert resolved.is_file(), f"{name}: {value} does not exist next to the manifest"
        assert resolved.is_relative_to(ROOT), f"{name}: {value} points outside the repository"


def test_reference_manifest_repositories_resolve_to_the_shipped_keys() -> None:
    m = manifest_mod.load(REFERENCE)
    repos = repos_for(m, ("cuda", "nvidia-container"))
    by_name = {r.name: r for r in repos}
    want = {
        "ubuntu": KEYS / "ubuntu-archive-keyring.asc",
        "ubuntu-security": KEYS / "ubuntu-archive-keyring.asc",
        "nvidia-container": KEYS / "nvidia-container-toolkit-keyring.asc",
    }
    for name, key in want.items():
        got = by_name[name].keyring
        assert got is not None and got.resolve() == key.resolve(), f"{name}: {got}"


def test_shipped_nvidia_key_verifies_the_repository_index(tmp_path: Path) -> None:
    signed = tmp_path / "InRelease"
    signed.write_text(NVIDIA_CONTAINER_INRELEASE)
    url = "https://nvidia.github.io/libnvidia-container/stable/deb/amd64/InRelease"
    text, signer = verify_signature(KEYS / "nvidia-container-toolkit-keyring.asc", signed, None, url)
    assert signer == "C95B321B61E88C1809C4F759DDCAE044F796ECB0"
    assert "Origin: https://nvidia.github.io/libnvidia-container/stable" in text


def test_other_publishers_key_does_not_verify_it(tmp_path: Path) -> None:
    signed = tmp_path / "InRelease"
    signed.write_text(NVIDIA_CONTAINER_INRELEASE)
    url = "https://nvidia.github.io/libnvidia-container/stable/deb/amd64/InRelease"
    with pytest.raises(IntegrityError, match="not in the keyring"):
        verify_signature(KEYS / "ubuntu-archive-keyring.asc", signed, None, url)
