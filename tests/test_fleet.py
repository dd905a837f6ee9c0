"""`airgap fleet` against real hosts: Debian 12 containers reached over SSH on loopback (tests/fleet_hosts.py).

The bundle is collected through the real collect path from stand-in NVIDIA installers (tests/installers.py),
with tool/ built for the hosts' python 3.11 (from PyPI: `network`), so each host sets airgap up from the
bundle as a real server does. Each host installs into a scratch server root (`airgap_root`); its reboot is
simulated (a new boot id for that root; tests/fleet_hosts.py says how).

The fast tests at the top need neither hosts nor network: the report and rollout logic, bad input.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airgap.fleet.playbook import Rollout
from airgap.fleet.report import build_report
from airgap.fleet.status import host_status
from airgap.signing import SignatureError, check_signature, load_public
from tests.conftest import run_airgap
from tests.fleet_hosts import MOUNT, SshHost, fleet_unavailable, host_rootfs, start_hosts, write_inventory

HOST_PYTHON = "3.11"  # Debian 12's python3, which tool/ is built for
DRIVER = "550.90.07"

# --- no hosts needed ----------------------------------------------------------------------------------------


def test_rollout_batches_canary_first_and_stops_on_its_failure() -> None:
    assert Rollout().serial() == ["100%"] and Rollout().max_fail() == 100
    assert Rollout(canary=1).serial() == [1, "100%"] and Rollout(canary=1).max_fail() == 0
    assert Rollout(canary=2, batch="10").serial() == [2, 10]
    assert Rollout(canary=1, batch="25%", max_fail_percent=30).max_fail() == 30


def _install_result(host: str, steps: list[dict[str, str]], rc: int, failed: str = "") -> dict[str, object]:
    return {
        "host": host,
        "check_mode": False,
        "was_at": "",
        "wanted": "d" * 64,
        "installs": [{"rc": rc, "stdout": json.dumps({"steps": steps}), "stderr": ""}, {"skipped": True}],
        "reboot": {},
        "doctor": {},
        "state": "",
        "failed_task": failed,
        "failed_msg": "",
    }


def test_report_names_the_failed_layer_and_its_fix_and_calls_the_host_out() -> None:
    ok = [{"step": "driver", "status": "installed"}, {"step": "cuda", "status": "installed"}]
    bad = [
        {"step": "driver", "status": "failed", "detail": "the NVIDIA installer failed (exit 1).", "fix": "headers"},
        {"step": "cuda", "status": "not-run"},
    ]
    results = {
        "a": _install_result("a", ok, 0),
        "b": _install_result("b", bad, 1, failed="Install the bundle"),
        "c": _install_result("c", ok, 0),
    }
    rep = build_report("x", "d" * 64, ["a", "b", "c", "d"], results, 2, False)
    by = {h.host: h for h in rep.hosts}
    assert by["a"].result == "installed" and not by["a"].differs
    assert (by["b"].result, by["b"].failed_layer, by["b"].fix) == ("failed", "driver", "headers")
    assert by["d"].result == "no result"
    assert [h.host for h in rep.differing] == ["b", "d"]
    assert rep.exit_code == 1
    assert rep.to_dict()["counts"] == {"installed": 2, "failed": 1, "no result": 1}


def test_report_says_where_each_copy_came_from_including_what_no_url_had() -> None:
    from airgap.fleet.report import host_report

    ok = [{"step": "driver", "status": "installed"}]
    seed = {**_install_result("s", ok, 0), "seed": True, "fetch": json.dumps({"files": 2, "from": {"http://d/": 2}})}
    peer = {**_install_result("p", ok, 0), "fetch": json.dumps({"files": 2, "from": {"http://s:8765/": 2}})}
    fallback = {**_install_result("f", ok, 0), "prefetch_failed": "Fetch what the copy lacks: non-zero return code"}
    assert host_report("s", seed, "d" * 64).copied_from == "http://d/ (2 files); served the other hosts"
    assert host_report("p", peer, "d" * 64).copied_from == "http://s:8765/ (2 files)"
    assert host_report("f", fallback, "d" * 64).copied_from == (
        "the control node (the fan-out failed here: Fetch what the copy lacks: non-zero return code)"
    )
    partly = {
        **_install_result("x", ok, 0),
        "fetch": json.dumps(
            {"files": 1, "from": {"http://d/": 1}, "failed": [{"path": "a.run", "tried": ["http://d/a.run: HTTP 404"]}]}
        ),
    }
    said = host_report("x", partly, "d" * 64).copied_from
    assert said == "http://d/ (1 files), the control node (1 files no URL had)"


def test_fan_out_seeds_are_the_first_hosts_and_none_when_no_one_is_left_to_serve() -> None:
    from airgap.cli.fleet import fan_out_plan

    assert fan_out_plan(["a", "b", "c", "d"], 2) == (["a", "b"], ["c", "d"])
    assert fan_out_plan(["a", "b"], 0) == ([], [])
    assert fan_out_plan(["a", "b"], 2) == ([], [])  # every host a seed: nobody to serve, a plain copy


def test_from_must_be_an_http_url(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    from tests.conftest import make_bundle

    make_bundle(bundle, {"layers/10-files/a": b"a"})
    (bundle / "install.sh").write_text("#!/bin/sh\n")
    (tmp_path / "hosts.ini").write_text("[gpu]\nh1 ansible_host=127.0.0.1\n")
    r = run_airgap("fleet", "install", str(bundle), "-i", str(tmp_path / "hosts.ini"), "--from", "/srv/bundle")
    assert r.returncode == 2 and "--from '/srv/bundle': not an http:// or https:// URL" in r.stderr, r.stderr


def test_hosts_fetch_from_the_manifests_depot_unless_told_otherwise() -> None:
    """A bundle whose manifest names a depot is fetched from its /bundle/ (what `airgap serve` answers);
    --from chooses another place, --copy-only none."""
    from airgap.cli.fleet import fetch_urls
    from airgap.errors import BadInputError

    depot = "http://depot.site:8080"
    assert fetch_urls((), depot, False) == (["http://depot.site:8080/bundle/"], fetch_urls((), depot, False)[1])
    assert "the manifest's depot" in fetch_urls((), depot, False)[1]
    assert fetch_urls(("http://other:1/b",), depot, False) == (["http://other:1/b/"], "--from")
    assert fetch_urls((), depot, True) == ([], "")
    assert fetch_urls((), None, False) == ([], "")
    with pytest.raises(BadInputError):
        fetch_urls(("http://other:1/b",), depot, True)
    with pytest.raises(BadInputError) as err:
        fetch_urls(("http://admin:hunter2@depot:8080/bundle/",), None, False)
    assert "credentials" in err.value.message and "hunter2" not in err.value.message + err.value.hint


def test_status_reads_a_missing_layer_from_the_dry_run() -> None:
    dry = {
        "steps": [
            {"step": "driver", "status": "skipped", "detail": "driver 1 is already loaded"},
            {"step": "cuda", "status": "would install"},
            {"step": "smoke", "status": "would run"},
        ]
    }
    result = {
        "marker": json.dumps({"lock_sha256": "d" * 64}),
        "state": "",
        "copy_lock_sha256": "d" * 64,
        "dry_run": {"rc": 0, "stdout": json.dumps(dry)},
    }
    st = host_status("a", result, "d" * 64)
    assert st.at_lock and st.layers == {"driver": "present", "cuda": "missing"}
    assert st.drift == ["cuda: not as the lock has it; an install would redo it"]


def test_bad_inventory_and_non_bundle_are_bad_input(tmp_path: Path) -> None:
    pytest.importorskip("ansible")
    r = run_airgap("fleet", "install", str(tmp_path), "-i", str(tmp_path / "none.ini"))
    assert r.returncode == 2 and "not an airgap bundle" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_an_inventory_with_no_hosts_is_bad_input(tmp_path: Path) -> None:
    pytest.importorskip("ansible")
    from airgap.errors import BadInputError
    from airgap.fleet.playbook import inventory_hosts

    inv = tmp_path / "empty.ini"
    inv.write_text("[gpu]\n")
    with pytest.raises(BadInputError, match="names no hosts"):
        inventory_hosts(inv)
    with pytest.raises(BadInputError, match="no such inventory"):
        inventory_hosts(tmp_path / "missing.ini")


def test_yaml_inventory_with_groups_and_limit_in_inventory_order(tmp_path: Path) -> None:
    pytest.importorskip("ansible")
    from airgap.fleet.playbook import inventory_hosts

    inv = tmp_path / "hosts.yml"
    inv.write_text(
        "all:\n  children:\n    canary:\n      hosts:\n        gpu09: {ansible_host: 10.0.0.9}\n"
        "    gpu:\n      hosts:\n        gpu01: {}\n        gpu02: {airgap_install_args: --skip models}\n"
        "      vars: {ansible_user: admin}\n"
    )
    assert inventory_hosts(inv) == ["gpu09", "gpu01", "gpu02"]
    assert inventory_hosts(inv, "gpu") == ["gpu01", "gpu02"]


def test_the_small_files_travel_in_deterministic_tars_and_the_list_of_sums_in_the_meta_one(tmp_path: Path) -> None:
    import tarfile

    from airgap.fleet import playbook
    from tests.conftest import make_bundle

    bundle = make_bundle(
        tmp_path / "bundle", {"layers/10-files/a.txt": b"a\n", "layers/10-files/b.bin": b"b" * 100_000}
    )
    (tmp_path / "s1").mkdir()
    (tmp_path / "s2").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(playbook, "SMALL_FILE", 50_000)
        packed = playbook.pack_bundle(bundle, tmp_path / "s1")
        again = playbook.pack_bundle(bundle, tmp_path / "s2")
    assert packed.large == ["layers/10-files/b.bin"]
    assert packed.meta is not None and again.meta is not None and packed.meta.read_bytes() == again.meta.read_bytes()
    assert packed.small is not None and again.small is not None
    assert packed.small.read_bytes() == again.small.read_bytes()
    with tarfile.open(packed.meta) as t:
        meta = t.getnames()
    with tarfile.open(packed.small) as t:
        small = t.getnames()
    # What a host fetching from a depot or a peer still takes from the control node: the list of sums, the
    # lock, every directory; never an artifact.
    assert "SHA256SUMS" in meta and "airgap.lock.json" in meta and "layers" in meta and "layers/10-files" in meta
    assert not any(n.startswith("layers/10-files/") for n in meta)
    assert small == ["layers/10-files/a.txt"]


def test_a_host_nobody_answers_for_is_no_result_and_the_others_are_unaffected(tmp_path: Path) -> None:
    """An SSH port with nothing behind it: Ansible marks the host unreachable; airgap says so and exits 1."""
    pytest.importorskip("ansible")
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client")
    from tests.conftest import make_bundle
    from tests.fleet_hosts import free_port

    bundle = make_bundle(tmp_path / "bundle", {"layers/10-files/a.txt": b"a\n"})
    (bundle / "install.sh").write_text("exit 0\n")
    inv = tmp_path / "hosts.ini"
    inv.write_text(
        f"[gpu]\ndown ansible_host=127.0.0.1 ansible_port={free_port()} ansible_user=nobody\n"
        "[gpu:vars]\nansible_ssh_common_args='-o BatchMode=yes -o ConnectTimeout=5'\n"
    )
    r = run_airgap("fleet", "install", str(bundle), "-i", str(inv), "--json", timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    (host,) = json.loads(r.stdout)["hosts"]
    assert (host["host"], host["result"]) == ("down", "no result")
    assert "UNREACHABLE" in r.stderr  # Ansible's own output, on stderr


# --- real hosts ---------------------------------------------------------------------------------------------


def _build_fleet_bundle(work: Path) -> Path:
    """Driver and CUDA stand-ins collected through collect, with tool/ and install.sh for python 3.11."""
    from airgap import manifest as manifest_mod
    from airgap.collect import collect
    from airgap.localserver import LocalHTTPServer
    from airgap.sources.http import HttpSource
    from tests.installers import nvidia_mirrors, publish_nvidia
    from tests.test_install import CUDA, KERNEL

    up = work / "upstream"
    publish_nvidia(up)
    with LocalHTTPServer(up) as server:
        m = work / "manifest.yaml"
        m.write_text(
            "name: fleet-test\n"
            f'target: {{os: ubuntu-22.04, arch: amd64, python: "{HOST_PYTHON}", kernel: {KERNEL}}}\n'
            f"driver: {{version: {DRIVER}}}\ncuda: {{version: {CUDA}}}\n"
            f"mirrors:\n{nvidia_mirrors(server.url)}"
        )
        manifest = manifest_mod.load(m)
        # tool/ comes from PyPI through pip (its own index settings), not through the mirrors above.
        source = HttpSource(manifest.mirrors, backoff=0.01)
        collect(manifest, work / "bundle", source, progress_mode="off", tool=True)
    return work / "bundle"


@pytest.fixture(scope="module")
def fleet_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, Path, Path]]:
    """(the private dockerd, the hosts' root filesystem tarball, the bundle)."""
    reason = fleet_unavailable()
    if reason:
        pytest.skip(reason)
    from tests.dockerd import run_dockerd

    work = tmp_path_factory.mktemp("fleet")
    try:
        rootfs = host_rootfs(work)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"mmdebstrap could not make the hosts' root filesystem (no Debian archive?): {exc.stderr!r:.300}")
    bundle = _build_fleet_bundle(work / "b")
    with run_dockerd(work / "dockerd") as d:
        yield d, rootfs, bundle


def _prepare(hosts: list[SshHost], nouveau: tuple[str, ...] = (), broken: tuple[str, ...] = ()) -> None:
    """Each host's server root: as tests/test_install.py's, with nouveau loaded on some (a reboot is due after
    the driver layer) and, on `broken` ones, /usr/bin/nvidia-smi a directory: the driver installer cannot
    write it there, so the driver layer fails (the loaded driver reports nothing)."""
    from tests.test_install import prepare_root

    for h in hosts:
        prepare_root(h.root, nouveau=h.name in nouveau)
        if h.name in broken:
            (h.root / "usr/bin/nvidia-smi").mkdir(parents=True)


def _inventory(hosts: list[SshHost], path: Path) -> Path:
    return write_inventory(
        hosts,
        path,
        {
            "airgap_root": f"{MOUNT}/root",
            "airgap_install_args": '"--skip smoke"',  # no GPU in a container: the smoke test would fail
            "airgap_reboot_command": f"'sh {MOUNT}/reboot.sh'",
            "airgap_boot_time_command": f"'cat {MOUNT}/root/proc/sys/kernel/random/boot_id'",
        },
    )


def _fleet(*args: str, timeout: float = 900) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    r = run_airgap("fleet", *args, timeout=timeout)
    return r, time.monotonic() - start


def _hosts_of(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in report["hosts"]}


def _changed_counts(ansible_output: str) -> dict[str, int]:
    """Ansible's PLAY RECAP: host -> changed=N."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", ansible_output, re.M)}


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.network
def test_fleet_install_reboot_failure_rerun_and_status(fleet_env: tuple[object, Path, Path], tmp_path: Path) -> None:
    d, rootfs, bundle = fleet_env
    with start_hosts(d, rootfs, tmp_path / "hosts", ["h1", "h2", "h3"]) as hosts:  # type: ignore[arg-type]
        _prepare(hosts, nouveau=("h2",), broken=("h3",))
        inv = _inventory(hosts, tmp_path / "hosts.ini")
        h1, h2, h3 = hosts

        # A dry run first: every host would get it, nothing changes on any.
        r, _ = _fleet("plan", str(bundle), "-i", str(inv), "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        assert {h: v["result"] for h, v in _hosts_of(json.loads(r.stdout)).items()} == dict.fromkeys(
            ("h1", "h2", "h3"), "would install"
        )
        assert not (h1.root / "var/lib/airgap").exists()

        report_file = tmp_path / "fleet-report.json"
        r, _ = _fleet("install", str(bundle), "-i", str(inv), "--report", str(report_file))
        assert r.returncode == 1, r.stdout + r.stderr  # h3 failed
        report = json.loads(report_file.read_text())
        by = _hosts_of(report)
        assert by["h1"]["result"] == "installed" and not by["h1"]["rebooted"]
        assert by["h1"]["layers"] == {"driver": "installed", "cuda": "installed"}, by["h1"]
        # h2: the driver layer asked for a reboot (exit 4); the playbook rebooted it and the install completed.
        assert by["h2"]["result"] == "installed" and by["h2"]["rebooted"], by["h2"]
        assert (h2.dir / "reboots").read_text() == "rebooted\n"
        assert (h2.root / "usr/bin/nvidia-smi").is_file()
        # h3: the report names the layer and the fix; the others finished.
        assert by["h3"]["result"] == "failed" and by["h3"]["failed_layer"] == "driver", by["h3"]
        assert "reports nothing" in by["h3"]["detail"] and by["h3"]["fix"]
        assert report["differing"] == ["h3"] or "h3" in report["differing"]
        assert "h3 *" in r.stdout and "Hosts that differ from the rest" in r.stdout
        assert f"h3: failed at driver: {by['h3']['detail']}" in r.stdout
        for h in (h1, h2):
            marker = json.loads((h.root / "var/lib/airgap/fleet.json").read_text())
            assert marker["lock_sha256"] == report["lock_sha256"]
        assert not (h3.root / "var/lib/airgap/fleet.json").exists()

        # Fix h3 by hand; the same command converges: h3 installs, h1 and h2 are left alone.
        shutil.rmtree(h3.root / "usr/bin/nvidia-smi")
        r, _ = _fleet("install", str(bundle), "-i", str(inv), "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        assert {h: v["result"] for h, v in _hosts_of(json.loads(r.stdout)).items()} == {
            "h1": "unchanged",
            "h2": "unchanged",
            "h3": "installed",
        }

        # A third run changes nothing anywhere (Ansible's own count).
        r, _ = _fleet("install", str(bundle), "-i", str(inv), "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        assert set(v["result"] for v in _hosts_of(json.loads(r.stdout)).values()) == {"unchanged"}
        assert _changed_counts(r.stderr) == {"h1": 0, "h2": 0, "h3": 0}, r.stderr[-3000:]

        # Status: all at the lock; then a file removed by hand on h1 is drift, named in a signed inventory.
        r, _ = _fleet("status", str(bundle), "-i", str(inv), "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["drifted"] == []
        (h1.root / "usr/local/cuda-12.4/bin/nvcc").unlink()
        assert run_airgap("keygen", "-o", str(tmp_path / "site")).returncode == 0
        out = tmp_path / "fleet-inventory.json"
        r, _ = _fleet("status", str(bundle), "-i", str(inv), "--write", str(out), "--key", str(tmp_path / "site.key"))
        assert r.returncode == 1, r.stdout + r.stderr
        assert "h1:" in r.stdout and "cuda: not as the lock has it" in r.stdout
        inventory = json.loads(out.read_text())
        assert inventory["kind"] == "airgap-fleet-inventory" and inventory["drifted"] == ["h1"]
        by_host = {h["host"]: h for h in inventory["hosts"]}
        assert by_host["h1"]["layers"] == {"driver": "present", "cuda": "missing"}
        assert by_host["h2"]["layers"] == {"driver": "present", "cuda": "present"}
        assert [n["layer"] for n in inventory["needs"]] == ["cuda"] and inventory["needs"][0]["hosts"] == ["h1"]
        public, sig_bytes = load_public(tmp_path / "site.pub"), (tmp_path / "fleet-inventory.json.sig").read_bytes()
        info = check_signature(public, out.read_bytes(), sig_bytes, "fleet-inventory.json.sig")
        assert "fleet-inventory:fleet-test" in info.trusted_comment
        with pytest.raises(SignatureError):
            check_signature(public, out.read_bytes().replace(b'"h1"', b'"hX"'), sig_bytes, "fleet-inventory.json.sig")


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.network
def test_a_failing_canary_stops_the_rollout(fleet_env: tuple[object, Path, Path], tmp_path: Path) -> None:
    d, rootfs, bundle = fleet_env
    with start_hosts(d, rootfs, tmp_path / "hosts", ["c1", "c2", "c3"]) as hosts:  # type: ignore[arg-type]
        _prepare(hosts, broken=("c1",))  # c1 is first in the inventory: the canary
        inv = _inventory(hosts, tmp_path / "hosts.ini")
        r, _ = _fleet("install", str(bundle), "-i", str(inv), "--canary", "1", "--json")
        assert r.returncode == 1, r.stdout + r.stderr
        results = {h: v["result"] for h, v in _hosts_of(json.loads(r.stdout)).items()}
        assert results == {"c1": "failed", "c2": "no result", "c3": "no result"}
        for h in hosts[1:]:
            assert not (h.root / "var/lib/airgap").exists()  # the rollout stopped before them


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.network
def test_three_hosts_take_about_as_long_as_one(fleet_env: tuple[object, Path, Path], tmp_path: Path) -> None:
    """Prints the ratio (the hosts work in parallel) and the CPU time behind it; asserts outcomes only: timing
    varies with the machine. Here every host shares this machine's cores, so CPU-bound work (install.sh
    setting airgap up from tool/) bounds the ratio from below by the CPU per host over the cores."""
    import os

    from tests.fleet_hosts import cpu_seconds

    d, rootfs, bundle = fleet_env
    with start_hosts(d, rootfs, tmp_path / "hosts", ["t1", "t2", "t3", "t4"]) as hosts:  # type: ignore[arg-type]
        _prepare(hosts)
        walls: dict[int, float] = {}
        for group in (hosts[:1], hosts[1:]):
            inv = _inventory(group, tmp_path / f"hosts-{len(group)}.ini")
            host_cpu = [cpu_seconds(d, h) for h in group]  # type: ignore[arg-type]
            mine = os.times()
            r, walls[len(group)] = _fleet("install", str(bundle), "-i", str(inv), "--json", "--no-doctor")
            assert r.returncode == 0, r.stdout + r.stderr
            assert {v["result"] for v in _hosts_of(json.loads(r.stdout)).values()} == {"installed"}
            done = os.times()
            control = done.children_user + done.children_system - mine.children_user - mine.children_system
            used = [
                f"{after - before:.1f}s" if before is not None and after is not None else "?"
                for before, after in zip(host_cpu, [cpu_seconds(d, h) for h in group], strict=True)  # type: ignore[arg-type]
            ]
            print(
                f"\nfleet install, {len(group)} host(s): {walls[len(group)]:.1f}s wall; CPU: control node "
                f"{control:.1f}s, hosts {', '.join(used)}; {os.cpu_count()} cores here",
                file=sys.stderr,
            )
        print(f"fleet install: time(3 hosts) / time(1 host) = {walls[3] / walls[1]:.2f}", file=sys.stderr)


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.network
def test_fan_out_from_a_depot_through_one_seed(fleet_env: tuple[object, Path, Path], tmp_path: Path) -> None:
    """`--from DEPOT/bundle/ --fan-out 1`: the seed fetches the artifacts from the depot (`airgap serve`), the
    other hosts fetch them from the seed; the control node sends each host only SHA256SUMS, the lock,
    install.sh and README.txt. Every host installs; the seed stops serving when the others have their copy."""
    from tests.registry_fixtures import free_port
    from tests.test_depot import Served

    d, rootfs, bundle = fleet_env
    depot = Served(bundle, tmp_path)
    try:
        assert depot.url, depot.proc.stderr.read() if depot.proc.stderr else ""
        with start_hosts(d, rootfs, tmp_path / "hosts", ["f1", "f2", "f3"]) as hosts:  # type: ignore[arg-type]
            _prepare(hosts)
            ports = {h.name: free_port() for h in hosts}
            inv = write_inventory(
                hosts,
                tmp_path / "hosts.ini",
                {
                    "airgap_root": f"{MOUNT}/root",
                    "airgap_install_args": '"--skip smoke"',
                },
                "[peers]\n" + "".join(f"{n} airgap_peer_port={p}\n" for n, p in ports.items()),
            )
            from_url = f"{depot.url}/bundle/"
            r, _ = _fleet("install", str(bundle), "-i", str(inv), "--from", from_url, "--fan-out", "1", "--json")
            assert r.returncode == 0, r.stdout + r.stderr
            by = _hosts_of(json.loads(r.stdout))
            assert {h: v["result"] for h, v in by.items()} == dict.fromkeys(("f1", "f2", "f3"), "installed")
            lock = json.loads((bundle / "airgap.lock.json").read_text())
            wheels = [f for f in lock["tool"]["files"] if f["path"].startswith("tool/")]
            artifacts = len(lock["artifacts"]) + len(wheels)  # tool/ wheels are fetched too
            assert by["f1"]["copied_from"] == f"{from_url} ({artifacts} files); served the other hosts", by["f1"]
            for name in ("f2", "f3"):
                assert by[name]["copied_from"] == f"http://127.0.0.1:{ports['f1']}/ ({artifacts} files)", by[name]
            # The depot served the artifacts once, to the seed; the seed's server is gone.
            fetched = [line for line in depot.log if " /bundle/" in line]
            assert len(fetched) == artifacts, depot.log
            seed_pid = hosts[0].ssh("ls /var/lib/airgap/bundles/", check=False).stdout
            assert ".peer.pid" not in seed_pid, seed_pid
            for h in hosts:
                assert (h.root / "usr/bin/nvidia-smi").is_file(), h.name
    finally:
        depot.stop()


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.network
def test_a_seed_that_cannot_serve_and_a_dead_depot_leave_the_copy_to_the_control_node(
    fleet_env: tuple[object, Path, Path], tmp_path: Path
) -> None:
    """The seed's port is taken and the depot does not answer: nobody can fetch, so both hosts are copied
    from the control node as without a fan-out, install, and the report says so."""
    import socket

    from tests.registry_fixtures import free_port

    d, rootfs, bundle = fleet_env
    with start_hosts(d, rootfs, tmp_path / "hosts", ["g1", "g2"]) as hosts:  # type: ignore[arg-type]
        _prepare(hosts)
        ports = {h.name: free_port() for h in hosts}
        inv = write_inventory(
            hosts,
            tmp_path / "hosts.ini",
            {"airgap_root": f"{MOUNT}/root", "airgap_install_args": '"--skip smoke"'},
            "[peers]\n" + "".join(f"{n} airgap_peer_port={p}\n" for n, p in ports.items()),
        )
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", ports["g1"]))
            taken.listen()
            dead = f"http://127.0.0.1:{free_port()}/bundle/"  # a depot that does not answer
            r, _ = _fleet("install", str(bundle), "-i", str(inv), "--fan-out", "1", "--from", dead, "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        by = _hosts_of(json.loads(r.stdout))
        assert {h: v["result"] for h, v in by.items()} == {"g1": "installed", "g2": "installed"}
        lock = json.loads((bundle / "airgap.lock.json").read_text())
        n = len(lock["artifacts"]) + len([f for f in lock["tool"]["files"] if f["path"].startswith("tool/")])
        from_control = f"the control node ({n} files no URL had)"
        # g1, the seed, took its copy from the control node before it tried to serve; the install found it there.
        assert by["g1"]["copied_from"].startswith("the control node (the fan-out failed here: Serve the bundle")
        assert by["g2"]["copied_from"] == from_control


def test_per_host_variables_become_install_options(tmp_path: Path) -> None:
    """The playbook's own vars.yml, as Ansible templates it for a host with `airgap_model_dest` and
    `airgap_install_args`: the install gets --model-dest REPO=DIR (a path with a space stays one argument)."""
    pytest.importorskip("ansible")
    import os

    from airgap.fleet.playbook import playbook_path

    (tmp_path / "hosts.ini").write_text(
        "[gpu]\ngpu01 ansible_connection=local ansible_python_interpreter=" + sys.executable + "\n"
    )
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars/gpu01.yml").write_text(
        'airgap_model_dest: {"acme/tiny-llm": "/srv/big disk/tiny"}\nairgap_install_args: "--skip smoke"\n'
        "airgap_gpus: 8\n"
    )
    (tmp_path / "show.yml").write_text(
        "- hosts: all\n  gather_facts: false\n"
        f"  vars_files: [{playbook_path('vars.yml')}]\n"
        "  tasks:\n    - ansible.builtin.copy:\n"
        f"        dest: {tmp_path / 'argv.json'}\n"
        "        content: '{{ airgap_install_argv | to_json }}'\n"
    )
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    extra = json.dumps({"airgap_bundle_name": "b", "airgap_lock_sha256": "d" * 64})
    inventory, show = str(tmp_path / "hosts.ini"), str(tmp_path / "show.yml")
    r = subprocess.run(
        [sys.executable, "-m", "ansible.cli.playbook", "-i", inventory, "-e", extra, show],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[2:] == [
        "--json",
        "--skip",
        "smoke",
        "--expect-gpus=8",
        "--model-dest=acme/tiny-llm=/srv/big disk/tiny",
    ], argv
