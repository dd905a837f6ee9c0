"""`collect --since FLEET_INVENTORY`: the inventory `airgap fleet status --write` makes inside the closed
network drives, on the connected side, a delta that carries what changed since the fleet's bundle and what
some host lacks, and nothing else; an inventory altered on the way is refused. (The hosts themselves are in
tests/test_fleet.py; here the inventory is written from a status as fleet status builds it.)"""

from __future__ import annotations

import json
from pathlib import Path

from airgap.fleet.status import FleetStatus, HostStatus, write_inventory
from airgap.lock import Lock
from tests.conftest import Upstream, run_airgap


def inventory(bundle: Path, out: Path, lacking_layer: str) -> Path:
    lock, digest = Lock.read_with_digest(bundle)
    needs = [
        {"layer": a.layer, "path": a.path, "sha256": a.sha256, "size": a.size, "hosts": ["gpu02"]}
        for a in lock.artifacts
        if a.layer == lacking_layer
    ]
    hosts = [
        HostStatus("gpu01", digest, True, {"driver": "present", "cuda": "present"}),
        HostStatus("gpu02", digest, True, {"driver": "present", "cuda": "missing"}, ["cuda: not as the lock has it"]),
    ]
    text = (bundle / "airgap.lock.json").read_bytes().decode()
    status = FleetStatus(lock.name, digest, hosts, needs, "2026-12-03T05:00:00Z", text)
    write_inventory(status, out, None)
    return out


def test_the_delta_carries_what_a_host_lacks_and_nothing_unchanged(upstream: Upstream, tmp_path: Path) -> None:
    manifest = upstream.manifest(tmp_path)
    fleet_bundle = tmp_path / "fleet-bundle"
    assert run_airgap("collect", str(manifest), "-o", str(fleet_bundle)).returncode == 0
    inv = inventory(fleet_bundle, tmp_path / "fleet-inventory.json", "cuda")

    delta = tmp_path / "delta"
    r = run_airgap("collect", str(manifest), "-o", str(delta), "--since", str(inv), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    lock = json.loads((delta / "airgap.lock.json").read_text())
    carried = sorted(a["layer"] for a in lock["artifacts"] if not a["in_base"])
    assert carried == ["cuda"], carried  # unchanged upstream, but gpu02 lacks it
    assert all(a["in_base"] for a in lock["artifacts"] if a["layer"] != "cuda")
    assert lock["base"]["lock_sha256"] == Lock.read_with_digest(fleet_bundle)[1]
    assert run_airgap("verify", str(delta)).returncode == 0
    # It installs on a host against the fleet's bundle as its base (as `fleet install` leaves it there).
    root = tmp_path / "r"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=ubuntu\nVERSION_ID="22.04"\n')
    args = ("install", str(delta), "--root", str(root), "--only", "files", "--dry-run", "--json")
    dry = run_airgap(*args, "--base", str(fleet_bundle))
    assert dry.returncode == 0, dry.stdout + dry.stderr
    # Without the fleet's bundle as its base it is refused, naming what it needs.
    alone = run_airgap(*args)
    assert alone.returncode == 2 and "--base" in alone.stdout + alone.stderr, alone.stdout + alone.stderr


def test_an_inventory_altered_on_the_way_is_refused(upstream: Upstream, tmp_path: Path) -> None:
    manifest = upstream.manifest(tmp_path)
    fleet_bundle = tmp_path / "fleet-bundle"
    assert run_airgap("collect", str(manifest), "-o", str(fleet_bundle)).returncode == 0
    inv = inventory(fleet_bundle, tmp_path / "fleet-inventory.json", "cuda")
    data = json.loads(inv.read_text())
    data["lock"] = data["lock"].replace('"status": "complete"', '"status": "complete" ', 1)
    inv.write_text(json.dumps(data))
    r = run_airgap("collect", str(manifest), "-o", str(tmp_path / "delta"), "--since", str(inv))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "its lock does not match the lock_sha256 it records" in r.stderr and "Traceback" not in r.stderr

    (tmp_path / "other.json").write_text('{"hello": 1}')
    r = run_airgap("collect", str(manifest), "-o", str(tmp_path / "delta"), "--since", str(tmp_path / "other.json"))
    assert r.returncode == 2 and "not a fleet inventory" in r.stderr, r.stderr


def test_the_inventory_signature_counts_when_the_site_key_is_given(upstream: Upstream, tmp_path: Path) -> None:
    """--since-key makes FILE.sig mandatory and checked over the bytes read; without it, a signature that
    was not checked is said to be not checked, never passed over in silence."""
    from airgap.fleet.status import FleetStatus

    manifest = upstream.manifest(tmp_path)
    fleet_bundle = tmp_path / "fleet-bundle"
    assert run_airgap("collect", str(manifest), "-o", str(fleet_bundle)).returncode == 0
    assert run_airgap("keygen", "-o", str(tmp_path / "site")).returncode == 0
    assert run_airgap("keygen", "-o", str(tmp_path / "other")).returncode == 0
    lock, digest = Lock.read_with_digest(fleet_bundle)
    text = (fleet_bundle / "airgap.lock.json").read_bytes().decode()
    status = FleetStatus(lock.name, digest, [HostStatus("gpu01", digest, True)], [], "2026-12-03T05:00:00Z", text)
    inv = tmp_path / "fleet-inventory.json"
    write_inventory(status, inv, tmp_path / "site.key")

    def since(*extra: str) -> tuple[int, str]:
        r = run_airgap("collect", str(manifest), "-o", str(tmp_path / "delta"), "--since", str(inv), *extra)
        assert "Traceback" not in r.stderr
        return r.returncode, r.stdout + r.stderr

    rc, said = since("--since-key", str(tmp_path / "site.pub"))
    assert rc == 0, said
    rc, said = since()
    assert rc == 0 and "fleet-inventory.json.sig was NOT checked" in said, said
    rc, said = since("--since-key", str(tmp_path / "other.pub"))
    assert rc == 1 and "fleet-inventory.json.sig" in said, said
    # Altered after signing (a host renamed: the lock and its digest untouched, so only the signature sees it).
    inv.write_bytes(inv.read_bytes().replace(b'"gpu01"', b'"gpu66"'))
    rc, said = since("--since-key", str(tmp_path / "site.pub"))
    assert rc == 1 and "fleet-inventory.json.sig" in said, said
    (tmp_path / "fleet-inventory.json.sig").unlink()
    rc, said = since("--since-key", str(tmp_path / "site.pub"))
    assert rc == 1 and "no signature fleet-inventory.json.sig" in said, said
    # --since-key names an inventory's key: with a bundle as the base, it is a mistake said as one.
    r = run_airgap(
        "collect", str(manifest), "-o", str(tmp_path / "d2"), "--since", str(fleet_bundle), "--since-key", "x.pub"
    )
    assert r.returncode == 2 and "not an inventory" in r.stderr, r.stderr
