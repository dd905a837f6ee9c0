"""The lock is the typed contract between the two machines: a damaged lock is named with its field, a lock
from a newer airgap asks for an upgrade, and nothing reads it as untyped dicts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from airgap.bundle import finalize
from airgap.errors import BadInputError
from airgap.lock import LOCK_FORMAT, Lock, LockedArtifact, Part
from tests.conftest import make_bundle, run_airgap


def _edit_lock(bundle: Path, change: dict[str, object]) -> None:
    path = bundle / "airgap.lock.json"
    raw = json.loads(path.read_text())
    raw.update(change)
    path.write_text(json.dumps(raw))


def _first_artifact(bundle: Path, change: dict[str, object]) -> None:
    path = bundle / "airgap.lock.json"
    raw = json.loads(path.read_text())
    raw["artifacts"][0].update(change)
    path.write_text(json.dumps(raw))


def test_a_lock_round_trips_typed(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", {"layers/02-driver/x.run": b"x" * 10})
    lock = Lock.read(bundle)
    assert lock.format == LOCK_FORMAT and lock.status == "complete"
    (art,) = lock.artifacts
    assert isinstance(art, LockedArtifact) and art.size == 10
    assert art.stored_files() == [Part(path=art.path, size=10, sha256=art.sha256)]
    again = Lock.parse(lock.to_json(), "again")
    assert again == lock


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"parts": "layers/02-driver/x.run.001"}, "artifacts.0.parts"),
        ({"size": "ten"}, "artifacts.0.size"),
        ({"size": -1}, "artifacts.0.size"),
        ({"upstream_digest": {"algorithm": "sha256"}}, "artifacts.0.upstream_digest.value"),
    ],
)
def test_a_damaged_artifact_entry_is_named_with_its_field(
    tmp_path: Path, change: dict[str, object], field: str
) -> None:
    bundle = make_bundle(tmp_path / "b", {"layers/02-driver/x.run": b"x" * 10})
    _first_artifact(bundle, change)
    with pytest.raises(BadInputError) as exc:
        Lock.read(bundle)
    assert f"field {field}" in exc.value.message and "damaged lock file" in exc.value.message


def test_a_tool_record_of_the_wrong_shape_is_named(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", {"layers/02-driver/x.run": b"x"})
    _edit_lock(bundle, {"tool": ["tool/airgap.whl"]})
    with pytest.raises(BadInputError) as exc:
        Lock.read(bundle)
    assert "field tool" in exc.value.message


def test_deep_nesting_is_damage_not_a_crash(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", {"layers/02-driver/x.run": b"x"})
    (bundle / "airgap.lock.json").write_text('{"name": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(BadInputError) as exc:
        Lock.read(bundle)
    assert "damaged lock file" in exc.value.message


def test_a_lock_from_a_newer_airgap_asks_for_an_upgrade_not_a_new_copy(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", {"layers/02-driver/x.run": b"x"})
    _edit_lock(bundle, {"format": LOCK_FORMAT + 1, "airgap_version": "9.0", "a_field_from_the_future": 1})
    with pytest.raises(BadInputError) as exc:
        Lock.read(bundle)
    assert "made by airgap 9.0 or newer" in exc.value.message
    assert "Upgrade airgap" in (exc.value.hint or "")
    assert "damaged" not in exc.value.message


def test_the_cli_names_a_damaged_lock_without_a_traceback(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", {"layers/02-driver/x.run": b"x"})
    _first_artifact(bundle, {"parts": "oops"})
    r = run_airgap("smoke", "--bundle", str(bundle))
    assert r.returncode == 2, r.stderr
    assert "field artifacts.0.parts" in r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr


def test_the_install_side_reads_the_recorded_manifest_typed(tmp_path: Path) -> None:
    lock = Lock(
        name="t",
        target={"os": "ubuntu-22.04"},
        manifest={"name": "t", "target": {"os": "ubuntu-22.04"}, "driver": {"version": "550.90.07"}},
    )
    m = lock.recorded_manifest()
    assert m.driver is not None and m.driver.version == "550.90.07"
    assert m.target.python == "3.10"  # the schema's default, not a dict lookup's fallback
    bad = Lock(name="t", target={}, manifest={"name": "t", "target": {"os": "ubuntu-22.04"}, "driver": 3})
    with pytest.raises(BadInputError) as exc:
        bad.recorded_manifest()
    assert "field manifest.driver" in exc.value.message


def test_finalize_lists_parts_and_tool_files_from_typed_records(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", {"layers/02-driver/x.run": b"x" * 4})
    lock = Lock.read(bundle)
    (art,) = lock.artifacts
    whole = bundle / art.path
    (bundle / f"{art.path}.001").write_bytes(b"xx")
    (bundle / f"{art.path}.002").write_bytes(b"xx")
    whole.unlink()
    sha_xx = hashlib.sha256(b"xx").hexdigest()
    art.parts = [
        Part(path=f"{art.path}.001", size=2, sha256=sha_xx),
        Part(path=f"{art.path}.002", size=2, sha256=sha_xx),
    ]
    finalize(bundle, lock)
    sums = (bundle / "SHA256SUMS").read_text()
    assert f"{art.path}.001" in sums and f"{art.path}.002" in sums and f"  {art.path}\n" not in sums
    assert run_airgap("verify", str(bundle)).returncode == 0
