"""`fleet status`: what every host has now against the bundle's lock, and the fleet inventory file.

Drift is found by the layers themselves: on each host, `airgap install --dry-run --no-verify` against the
copy of the bundle `fleet install` left there asks every layer whether it is installed (the same check an
install makes before it skips a layer), so a removed image or file, or another driver, shows as a layer
that "would install". The host's recorded lock digest and its install state add what the last install did.

The inventory file is JSON, signed like a bundle (Ed25519, minisign format, FILE.sig): for the connected
side, what each host lacks, by artifact of the lock (`needs`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from airgap.bundle_layout import LOCK_NAME
from airgap.errors import BadInputError, IntegrityError
from airgap.fleet.playbook import parse_json_output
from airgap.fsutil import write_atomic
from airgap.lock import Lock
from airgap.units import now_utc

INVENTORY_KIND = "airgap-fleet-inventory"
INVENTORY_FORMAT = 1

PRESENT = "present"  # the layer says it is installed, as the lock has it
MISSING = "missing"  # the layer would install: something of it is missing or differs
UNKNOWN = "unknown"


@dataclass
class HostStatus:
    host: str
    lock_sha256: str = ""  # what fleet install recorded on the host
    at_lock: bool = False
    layers: dict[str, str] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)
    reachable: bool = True


@dataclass
class FleetStatus:
    bundle: str
    lock_sha256: str
    hosts: list[HostStatus]
    needs: list[dict[str, Any]] = field(default_factory=list)  # artifacts some host lacks, with those hosts
    created: str = ""
    # The fleet's bundle's lock, as its bytes: `collect --since INVENTORY` builds the delta against it.
    lock_text: str = ""

    @property
    def drifted(self) -> list[HostStatus]:
        return [h for h in self.hosts if h.drift]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": INVENTORY_KIND,
            "format": INVENTORY_FORMAT,
            "created": self.created,
            "bundle": self.bundle,
            "lock_sha256": self.lock_sha256,
            "hosts": [asdict(h) for h in self.hosts],
            "drifted": [h.host for h in self.drifted],
            "needs": self.needs,
            "lock": self.lock_text,
        }


def host_status(host: str, result: dict[str, Any] | None, wanted: str) -> HostStatus:
    st = HostStatus(host)
    if result is None:
        st.reachable = False
        st.drift.append("no answer: unreachable (see Ansible's output)")
        return st
    try:
        marker = json.loads(result.get("marker") or "{}")
    except ValueError:
        marker = {}
    st.lock_sha256 = str(marker.get("lock_sha256", "")) if isinstance(marker, dict) else ""
    st.at_lock = st.lock_sha256 == wanted
    if not st.lock_sha256:
        st.drift.append("never installed by `airgap fleet install` (no /var/lib/airgap/fleet.json)")
    elif not st.at_lock:
        st.drift.append(f"installed at another lock (sha256 {st.lock_sha256[:12]}...), not this bundle's")
    try:
        state = json.loads(result.get("state") or "{}")
    except ValueError:
        state = {}
    recorded = state.get("layers", {}) if isinstance(state, dict) else {}
    for step, info in recorded.items():
        if isinstance(info, dict) and info.get("status") in ("failed", "interrupted", "reboot"):
            st.drift.append(f"{step}: the last install left it {info['status']}: {info.get('detail', '')}".strip())
    dry = result.get("dry_run") or {}
    report = parse_json_output(dry.get("stdout", "")) if "rc" in dry else None
    if report is None:
        if result.get("copy_lock_sha256") != wanted:
            st.drift.append("this bundle's copy is not on the host: its layers were not checked")
        else:
            st.drift.append("the layers could not be checked: " + " ".join((dry.get("stderr") or "").split())[-300:])
        return st
    if report.get("error"):
        st.drift.append(f"the layers could not be checked: {report['error']}")
        return st
    for step in report.get("steps", []):
        if not isinstance(step, dict) or step.get("step") == "smoke":
            continue  # the smoke test is a run, not something a host has
        name, status = str(step.get("step")), str(step.get("status"))
        if status == "skipped" and "cannot install" not in str(step.get("detail", "")):
            st.layers[name] = PRESENT
        elif status in ("would install", "would run"):
            st.layers[name] = MISSING
            st.drift.append(f"{name}: not as the lock has it; an install would redo it")
        else:
            st.layers[name] = UNKNOWN
    return st


def build_status(bundle: Path, hosts: list[str], results: dict[str, dict[str, Any]]) -> FleetStatus:
    lock, wanted = Lock.read_with_digest(bundle)
    statuses = [host_status(h, results.get(h), wanted) for h in hosts]
    needs: list[dict[str, Any]] = []
    for art in lock.artifacts:
        lacking = [h.host for h in statuses if h.layers.get(art.layer) == MISSING]
        if lacking:
            needs.append(
                {"layer": art.layer, "path": art.path, "sha256": art.sha256, "size": art.size, "hosts": lacking}
            )
    lock_text = (bundle / LOCK_NAME).read_bytes().decode("utf-8")
    return FleetStatus(lock.name, wanted, statuses, needs, now_utc(), lock_text)


def read_inventory(path: Path, key: Path | None = None, warn: Callable[[str], None] | None = None) -> tuple[Lock, str]:
    """A fleet inventory as the base of `collect --since`: the fleet's bundle's lock (checked against the
    digest the inventory records) without the artifacts some host lacks, so the delta carries those too,
    and that lock's sha256 (which an install's --base must match).

    With `key` (the site's public key), FILE.sig must be a good signature of the bytes read here by that key
    (SignatureError, exit 1, otherwise); without it, a FILE.sig present is said to be not checked."""
    where = str(path)
    try:
        raw_file = path.read_bytes()
        data = json.loads(raw_file)
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{where}: not a fleet inventory ({exc}).", _WRITE_ONE) from None
    _check_inventory_signature(path, raw_file, key, warn)
    if not isinstance(data, dict) or data.get("kind") != INVENTORY_KIND:
        raise BadInputError(f"{where}: not a fleet inventory (no kind {INVENTORY_KIND!r}).", _WRITE_ONE)
    text = data.get("lock")
    if not isinstance(text, str) or not text:
        raise BadInputError(f"{where}: this inventory carries no lock (written by an older airgap).", _WRITE_ONE)
    raw = text.encode("utf-8")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != data.get("lock_sha256"):
        raise IntegrityError(
            f"{where}: its lock does not match the lock_sha256 it records: the file was altered.",
            "Write the inventory again with `airgap fleet status --write` and check its signature.",
        )
    lock = Lock.parse(raw, f"{where} (its lock)")
    needed = {str(n.get("path")) for n in data.get("needs") or [] if isinstance(n, dict)}
    kept = [a for a in lock.artifacts if a.path not in needed]
    return lock.model_copy(update={"artifacts": kept}), digest


def _check_inventory_signature(path: Path, raw: bytes, key: Path | None, warn: Callable[[str], None] | None) -> None:
    sig = path.with_name(path.name + ".sig")
    if key is None:
        if sig.exists() and warn is not None:
            warn(f"{path}: its signature {sig.name} was NOT checked (give --since-key with the site's public key)")
        return
    from airgap.signing import SignatureError, check_signature, load_public

    public = load_public(key)
    try:
        sig_bytes = sig.read_bytes()
    except OSError:
        raise SignatureError(
            f"{path}: --since-key was given and there is no signature {sig.name} next to it.",
            "Carry FILE.sig with the inventory (`airgap fleet status --write FILE --key site.key` writes it).",
        ) from None
    check_signature(public, raw, sig_bytes, sig.name)


_WRITE_ONE = "Give the file `airgap fleet status --write FILE` wrote inside the closed network, or a bundle."


def write_inventory(status: FleetStatus, path: Path, key: Path | None) -> Path | None:
    """Write the inventory file, and its signature FILE.sig when a secret key is given."""
    data = (json.dumps(status.to_dict(), indent=2) + "\n").encode()
    write_atomic(path, data)
    if key is None:
        return None
    from airgap.signing import load_secret, sign

    sk = load_secret(key)
    comment = f"timestamp:{now_utc()}\tfile:{path.name}\tfleet-inventory:{status.bundle}"
    sig = path.with_name(path.name + ".sig")
    write_atomic(sig, sign(sk, data, comment).encode())
    return sig
