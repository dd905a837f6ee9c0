"""The fleet report: what `fleet install` (or `fleet plan`) did on each host, and which hosts differ.

Built from the JSON result each host wrote onto the control node (playbook/install.yml's last tasks):
the install runs' `--json` output (the failed layer, its detail and its fix), whether the host rebooted,
the install state it ends with (each layer's status) and `airgap doctor --json`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from airgap.fleet.playbook import parse_json_output

# What a host came to, in the report's words.
INSTALLED = "installed"  # this run installed the bundle (rebooting on the way when `rebooted`)
UNCHANGED = "unchanged"  # already at the bundle's lock digest: nothing copied, nothing run
FAILED = "failed"
NO_RESULT = "no result"  # unreachable, or the rollout stopped before its batch
WOULD_INSTALL = "would install"  # fleet plan
UP_TO_DATE = "up to date"  # fleet plan


@dataclass
class HostReport:
    host: str
    result: str
    layers: dict[str, str] = field(default_factory=dict)  # step -> status, in install order
    rebooted: bool = False
    failed_layer: str = ""
    detail: str = ""
    fix: str = ""
    doctor: dict[str, Any] = field(default_factory=dict)  # {"pass": n, "warn": n, "fail": n, "failed": [...]}
    lock_sha256: str = ""  # the lock digest the host is at after this run ("" when unknown)
    copied_from: str = ""  # where this run's copy of the bundle came from ("" when nothing was copied)
    differs: bool = False

    def signature(self) -> tuple[Any, ...]:
        """What makes two hosts the same, for calling out the ones that differ."""
        return (self.result, tuple(self.layers.items()), tuple(self.doctor.get("failed", [])))


@dataclass
class FleetReport:
    bundle: str
    lock_sha256: str
    check_mode: bool
    hosts: list[HostReport]
    ansible_exit_code: int
    exit_code: int = 0

    @property
    def differing(self) -> list[HostReport]:
        return [h for h in self.hosts if h.differs]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["differing"] = [h.host for h in self.differing]
        data["counts"] = dict(Counter(h.result for h in self.hosts))
        return data


def _final_install(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The last install run that ran, and its --json output."""
    ran = [r for r in result.get("installs", []) if r and not r.get("skipped") and "rc" in r]
    if not ran:
        return {}, None
    last = ran[-1]
    return last, parse_json_output(last.get("stdout", ""))


def _state_layers(result: dict[str, Any]) -> dict[str, str]:
    try:
        state = json.loads(result.get("state") or "{}")
    except ValueError:
        return {}
    layers = state.get("layers", {}) if isinstance(state, dict) else {}
    return {k: str(v.get("status", "")) for k, v in layers.items() if isinstance(v, dict)}


def _doctor(result: dict[str, Any]) -> dict[str, Any]:
    run = result.get("doctor") or {}
    data = parse_json_output(run.get("stdout", "")) if "rc" in run else None
    if not data or not isinstance(data.get("checks"), list):
        return {}
    counts = Counter(str(c.get("status")) for c in data["checks"] if isinstance(c, dict))
    failed = sorted(str(c.get("name")) for c in data["checks"] if isinstance(c, dict) and c.get("status") == "fail")
    return {
        "pass": counts.get("pass", 0),
        "warn": counts.get("warn", 0),
        "fail": counts.get("fail", 0),
        "failed": failed,
    }


def host_report(host: str, result: dict[str, Any] | None, wanted: str) -> HostReport:
    if result is None:
        return HostReport(
            host,
            NO_RESULT,
            detail="no result: unreachable, or the rollout stopped before its batch (see Ansible's output)",
        )
    at_lock = result.get("was_at") == wanted
    if result.get("check_mode"):
        copy = result.get("copy") or {}
        detail = (
            "at the bundle's lock digest"
            if at_lock
            else "the bundle would be copied ("
            + ("files differ" if copy.get("changed") else "copy up to date")
            + ") and installed"
        )
        return HostReport(host, UP_TO_DATE if at_lock else WOULD_INSTALL, _state_layers(result), detail=detail)
    rep = HostReport(host, UNCHANGED if at_lock else INSTALLED, _state_layers(result), doctor=_doctor(result))
    rep.copied_from = "" if at_lock else copied_from(result)
    rep.rebooted = bool((result.get("reboot") or {}).get("rebooted"))
    last, report = _final_install(result)
    if report and isinstance(report.get("steps"), list):
        rep.layers = {str(s.get("step")): str(s.get("status")) for s in report["steps"] if isinstance(s, dict)}
    if result.get("failed_task"):
        rep.result = FAILED
        _explain_failure(rep, result, last, report)
    else:
        rep.lock_sha256 = wanted
        if at_lock:
            rep.detail = "already at the bundle's lock digest: nothing copied, nothing run"
        else:
            rep.detail = "installed" + (" (rebooted once, as the install asked)" if rep.rebooted else "")
    return rep


def copied_from(result: dict[str, Any]) -> str:
    """Where the artifacts of the host's copy came from: the URLs the fetcher took them from (a depot, the
    fan-out's seeds), else the control node; a seed says that it served the others."""
    fetch = parse_json_output(str(result.get("fetch") or "")) or {}
    sources = fetch.get("from")
    said = ", ".join(f"{url} ({n} files)" for url, n in sorted(sources.items())) if isinstance(sources, dict) else ""
    missed = fetch.get("failed")
    if isinstance(missed, list) and missed:
        said += f"{', ' if said else ''}the control node ({len(missed)} files no URL had)"
    if not said:
        said = "the control node"
    if result.get("seed"):
        said += "; served the other hosts"
    if result.get("prefetch_failed"):
        said += f" (the fan-out failed here: {result['prefetch_failed']})"
    return said


def _explain_failure(
    rep: HostReport, result: dict[str, Any], last: dict[str, Any], report: dict[str, Any] | None
) -> None:
    task = str(result.get("failed_task"))
    sums = result.get("sums") or {}
    if sums.get("rc") not in (None, 0):
        bad = (sums.get("stdout") or sums.get("stderr") or "").strip().splitlines()[:5]
        rep.failed_layer = "copy"
        rep.detail = "the copy on the host does not match SHA256SUMS: " + "; ".join(bad)
        rep.fix = "Run the same command again: the files that differ are copied again."
        return
    if report is not None:
        failed = [s for s in report.get("steps", []) if isinstance(s, dict) and s.get("status") in ("failed", "reboot")]
        if failed:
            step = failed[0]
            rep.failed_layer = str(step.get("step"))
            rep.detail = str(step.get("detail", ""))
            if step.get("status") == "reboot":
                rep.detail = "a reboot is still due after rebooting: " + rep.detail
            rep.fix = str(step.get("fix", ""))
            return
        if report.get("error"):
            # Refused before any layer ran: preflight, verification, a signature, bad options.
            rep.failed_layer = "preflight" if "Preflight" in str(report["error"]) else "install"
            rep.detail = str(report["error"])
            rep.fix = str(report.get("fix") or "")
            return
    rep.failed_layer = "-"
    said = (last.get("stderr") or "").strip().splitlines()[-3:] if last else []
    rep.detail = f"{task}: {result.get('failed_msg') or ''} {' '.join(said)}".strip()
    rep.fix = "See Ansible's output above for this host."


def build_report(
    bundle: str, wanted: str, hosts: list[str], results: dict[str, dict[str, Any]], ansible_rc: int, check: bool
) -> FleetReport:
    reports = [host_report(h, results.get(h), wanted) for h in hosts]
    _mark_differing(reports)
    rep = FleetReport(bundle, wanted, check, reports, ansible_rc)
    bad = any(h.result in (FAILED, NO_RESULT) for h in reports)
    rep.exit_code = 1 if bad else 0
    return rep


def _mark_differing(reports: list[HostReport]) -> None:
    """Hosts unlike the most common kind are called out; with no majority (all alike, or every host
    its own), only hosts that did not end well are."""
    if len(reports) < 2:
        return
    common, n = Counter(r.signature() for r in reports).most_common(1)[0]
    for r in reports:
        r.differs = r.signature() != common if n > 1 else r.result in (FAILED, NO_RESULT)


def layers_text(layers: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in layers.items()) or "-"


def doctor_text(doctor: dict[str, Any]) -> str:
    if not doctor:
        return "-"
    text = f"{doctor['pass']} pass, {doctor['warn']} warn, {doctor['fail']} fail"
    return text + (f" ({', '.join(doctor['failed'])})" if doctor.get("failed") else "")
