"""Bundles split for FAT32 and DVDs: parts verified one by one, joined or streamed at install."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from airgap.errors import BadInputError
from airgap.units import FAT32_MAX_FILE, parse_part_size
from tests.conftest import MiB, make_bundle, payload, run_airgap

BIG = "layers/02-driver/NVIDIA-Linux-x86_64-550.90.07.run"
FILES = {BIG: payload(3 * MiB + 5, 1), "layers/10-files/check.sh": b"#!/bin/sh\n"}


def test_sizes_as_people_write_them() -> None:
    # One unit system (airgap/units.py): decimal as media are sold, binary only when spelled out, and
    # "4G" alone means the FAT32 limit, one byte short of 4 GiB.
    assert parse_part_size("4G") == FAT32_MAX_FILE
    assert parse_part_size("4GiB") == 4 * 2**30
    assert parse_part_size("4.7GB") == parse_part_size("4.7G") == 4_700_000_000
    assert parse_part_size("700M") == 700 * 10**6
    assert parse_part_size("700MiB") == 700 * MiB
    for bad in ("lots", "700", "10K"):
        with pytest.raises(BadInputError):
            parse_part_size(bad)


def test_split_verify_names_the_bad_part_and_cat_rebuilds(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", FILES)
    r = run_airgap("split", str(bundle), "--max-file-size", "1MiB")
    assert r.returncode == 0, r.stderr
    parts = sorted(p.name for p in (bundle / "layers/02-driver").iterdir())
    assert parts == [f"NVIDIA-Linux-x86_64-550.90.07.run.00{i}" for i in range(1, 5)]
    sums = (bundle / "SHA256SUMS").read_text()
    assert f"{BIG}.001" in sums and f"  {BIG}\n" not in sums
    lock = json.loads((bundle / "airgap.lock.json").read_text())
    art = next(a for a in lock["artifacts"] if a["path"] == BIG)
    assert [p["size"] for p in art["parts"]] == [MiB, MiB, MiB, 5]
    assert run_airgap("verify", str(bundle)).returncode == 0
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle).returncode == 0
    joined = subprocess.run(f"cat {BIG}.0??", shell=True, cwd=bundle, capture_output=True).stdout
    assert joined == FILES[BIG]

    with open(bundle / f"{BIG}.002", "r+b") as f:
        f.write(b"X")
    (bundle / f"{BIG}.004").unlink()
    r = run_airgap("verify", str(bundle), "--json")
    assert r.returncode == 1
    got = {(p["kind"], p["path"]) for p in json.loads(r.stdout)["problems"]}
    assert got == {("altered", f"{BIG}.002"), ("missing", f"{BIG}.004")}


def test_resplit_and_join_leave_no_stale_parts(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", FILES)
    assert run_airgap("split", str(bundle), "--max-file-size", "1MiB").returncode == 0
    assert run_airgap("split", str(bundle), "--max-file-size", "2MiB").returncode == 0
    assert sorted(p.name[-3:] for p in (bundle / "layers/02-driver").iterdir()) == ["001", "002"]
    assert run_airgap("verify", str(bundle)).returncode == 0
    assert run_airgap("split", str(bundle), "--max-file-size", "10MiB").returncode == 0
    assert [p.name for p in (bundle / "layers/02-driver").iterdir()] == ["NVIDIA-Linux-x86_64-550.90.07.run"]
    assert (bundle / BIG).read_bytes() == FILES[BIG]
    assert run_airgap("verify", str(bundle)).returncode == 0


def test_a_part_from_another_bundle_is_named(tmp_path: Path) -> None:
    a = make_bundle(tmp_path / "a", FILES)
    b = make_bundle(tmp_path / "b", {BIG: payload(3 * MiB + 5, 2), "layers/10-files/check.sh": b"#!/bin/sh\n"})
    for x in (a, b):
        assert run_airgap("split", str(x), "--max-file-size", "1MiB").returncode == 0
    shutil.copy(b / f"{BIG}.003", a / f"{BIG}.003")
    r = run_airgap("verify", str(a), "--json")
    assert [(p["kind"], p["path"]) for p in json.loads(r.stdout)["problems"]] == [("altered", f"{BIG}.003")]


def test_split_refuses_a_damaged_bundle_and_drops_a_stale_signature(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", FILES)
    assert run_airgap("keygen", "-o", str(tmp_path / "k")).returncode == 0
    assert run_airgap("sign", str(bundle), "--key", str(tmp_path / "k.key")).returncode == 0
    r = run_airgap("split", str(bundle), "--max-file-size", "1MiB")
    assert r.returncode == 0
    assert "sign the bundle again" in r.stderr
    assert not (bundle / "SHA256SUMS.sig").exists()
    (bundle / "layers/10-files/check.sh").write_bytes(b"changed\n")
    r = run_airgap("split", str(bundle), "--max-file-size", "2MiB")
    assert r.returncode == 1 and "not splitting it" in r.stderr
