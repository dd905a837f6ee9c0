"""`airgap fleet`: install one bundle on many servers through Ansible, and see what each one has."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from airgap.cli.application import Application, exit_codes_help
from airgap.cli.options import verbosity_options
from airgap.errors import EXIT_OK, BadInputError
from airgap.ui import Output

_COMMON_HELP = """
The inventory is Ansible's (INI or YAML, a file or a directory with group_vars/ and host_vars/);
users, keys, become and ansible.cfg are Ansible's as for any playbook. Host keys are checked: list the
servers in known_hosts, or name the file with --ssh-common-args '-o UserKnownHostsFile=FILE'.
Per-host variables airgap reads: airgap_root, airgap_bundle_dest, airgap_venv, airgap_install_args
(e.g. "--skip smoke"), airgap_model_dest ({repo: dir}, this host's place for a model), airgap_gpus
(its GPU count, checked by the smoke test),
airgap_reboot_command, airgap_boot_time_command, airgap_reboot_timeout,
airgap_peer_address, airgap_peer_port (where a --fan-out seed serves).
See docs/fleet.md."""


@click.group(
    epilog=exit_codes_help(),
    help="""Install one bundle on many servers with Ansible: canary first, reboots included, one report.

\b
  airgap fleet plan    BUNDLE -i hosts.ini           which hosts would get it, changing nothing
  airgap fleet install BUNDLE -i hosts.ini --canary 1 --report fleet-report.json
  airgap fleet status  BUNDLE -i hosts.ini --write fleet-inventory.json --key site.key

Needs ansible-core on the control node only (pip install 'airgap[fleet]').""",
)
def fleet() -> None:
    pass


def _connection_options(f: Any) -> Any:
    for decorator in reversed(
        [
            click.argument("bundle", type=click.Path(path_type=Path)),
            click.option(
                "-i",
                "--inventory",
                type=click.Path(path_type=Path),
                required=True,
                help="Ansible inventory (INI or YAML file, or a directory).",
            ),
            click.option("--limit", metavar="PATTERN", help="Only these hosts or groups (Ansible's --limit)."),
            click.option("--forks", type=click.IntRange(1, 1000), default=50, show_default=True, help="Hosts at once."),
            click.option(
                "--ssh-common-args",
                metavar="ARGS",
                help="Extra ssh options for every host, e.g. '-o UserKnownHostsFile=site_known_hosts'.",
            ),
            click.option("--json", "json_mode", is_flag=True, help="Print the report as one JSON object."),
        ]
    ):
        f = decorator(f)
    return f


def _rollout_options(f: Any) -> Any:
    for decorator in reversed(
        [
            click.option(
                "--canary",
                type=click.IntRange(0, None),
                default=0,
                show_default=True,
                help="Install on this many hosts first, alone; the rest only if they succeed.",
            ),
            click.option("--batch", metavar="N|P%", help="After the canary, hosts per batch (default: all the rest)."),
            click.option(
                "--max-fail-percent",
                type=click.IntRange(0, 100),
                help="Stop when more than this share of a batch failed (default: 0 with --canary, else never).",
            ),
            click.option(
                "--fan-out",
                type=click.IntRange(0, None),
                default=0,
                show_default=True,
                metavar="N",
                help="The first N hosts take the bundle from the control node (or --from) and serve it to the "
                "others while they fetch it (airgap_peer_address/airgap_peer_port, default port 8765); "
                "each file is checked against SHA256SUMS, which always comes from the control node.",
            ),
            click.option(
                "--from",
                "from_urls",
                multiple=True,
                metavar="URL",
                help="Hosts fetch the bundle's artifacts here instead of from the control node, e.g. "
                "http://depot:8080/bundle/ (`airgap serve`), or any web server over a copy of the bundle. "
                "Repeat for fallbacks; the control node copies what no URL had. Default: the manifest's "
                "depot.url + /bundle/ when it names one.",
            ),
            click.option(
                "--copy-only",
                is_flag=True,
                help="Copy everything from the control node, even when the manifest names a depot.",
            ),
            click.option("--no-doctor", is_flag=True, help="Do not run `airgap doctor` on each host afterwards."),
            click.option(
                "--report",
                "report_file",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Also write the report, as JSON, to this file (to archive).",
            ),
        ]
    ):
        f = decorator(f)
    return f


def _bundle_vars(bundle: Path) -> tuple[dict[str, Any], str, str, str | None]:
    """The playbook's variables for BUNDLE, its name, its lock digest, and its manifest's depot URL."""
    from airgap.lock import Lock

    lock, digest = Lock.read_with_digest(bundle)
    if not (bundle / "install.sh").is_file():
        raise BadInputError(
            f"{bundle}: no install.sh, so the hosts cannot set airgap up from this bundle; nothing was done.",
            "Collect the bundle with airgap's own wheels (collect --tool), which writes tool/ and install.sh.",
        )
    extra = {
        "airgap_bundle": str(bundle.resolve()),
        "airgap_bundle_name": lock.name,
        "airgap_lock_sha256": digest,
    }
    depot = lock.manifest.get("depot")
    depot_url = depot.get("url") if isinstance(depot, dict) and isinstance(depot.get("url"), str) else None
    return extra, lock.name, digest, depot_url


def fetch_urls(given: tuple[str, ...], depot_url: str | None, copy_only: bool) -> tuple[list[str], str]:
    """Where the hosts fetch the artifacts from, and why there: --from, else the manifest's `depot.url`
    (its /bundle/, as `airgap serve` answers), else nowhere (the control node copies). A URL that lacks a
    file costs a request: the control node then copies that file."""
    if copy_only:
        if given:
            raise BadInputError(
                "--copy-only and --from contradict each other.", "Give one: --from URL, or --copy-only."
            )
        return [], ""
    if given:
        return [_check_url(u) for u in given], "--from"
    if depot_url:
        return [_check_url(depot_url.rstrip("/") + "/bundle/")], "the manifest's depot; --copy-only to not use it"
    return [], ""


def fan_out_plan(hosts: list[str], seeds: int) -> tuple[list[str], list[str]]:
    """(seeds, fetchers): the first SEEDS hosts serve the others; none when there is no one to serve."""
    if seeds <= 0 or seeds >= len(hosts):
        return [], []
    return hosts[:seeds], hosts[seeds:]


def _check_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.username or parts.password:
        raise BadInputError(
            "--from: the URL carries credentials; they would reach every host's command line, Ansible's log "
            "and the fleet report.",
            "Serve the bundle without a login on the closed network (`airgap serve`), or copy it: leave --from out.",
        )
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadInputError(
            f"--from {url!r}: not an http:// or https:// URL.",
            "Give the base URL the bundle's files are served under, e.g. http://depot:8080/bundle/ "
            "(`airgap serve BUNDLE` on the depot).",
        )
    return url if url.endswith("/") else url + "/"


def _echo(app: Application) -> Any:
    if app.quiet:
        return None
    return lambda line: print(line, file=sys.stderr, flush=True)


def _run_install(
    app: Application,
    bundle: Path,
    inventory: Path,
    limit: str | None,
    forks: int,
    ssh_common_args: str | None,
    json_mode: bool,
    canary: int,
    batch: str | None,
    max_fail_percent: int | None,
    no_doctor: bool,
    report_file: Path | None,
    check: bool,
    fan_out: int = 0,
    from_urls: tuple[str, ...] = (),
    copy_only: bool = False,
) -> int:
    from airgap.fleet.playbook import INSTALL, Rollout, check_batch, inventory_hosts, run_playbook
    from airgap.fleet.report import build_report

    out = app.output(json_mode)
    extra, name, digest, depot_url = _bundle_vars(bundle)
    rollout = Rollout(canary, check_batch(batch) if batch else "", max_fail_percent)
    urls, why = fetch_urls(from_urls, depot_url, copy_only)
    hosts = inventory_hosts(inventory, limit)
    seeds, fetchers = fan_out_plan(hosts, fan_out) if not check else ([], [])
    extra.update(
        airgap_serial=rollout.serial(),
        airgap_max_fail_percentage=rollout.max_fail(),
        airgap_doctor=not no_doctor,
        airgap_from_urls=urls,
        airgap_seeds=seeds,
        airgap_fetchers=fetchers,
    )
    what = "plan (Ansible check mode, nothing changes)" if check else "install"
    out.stderr(
        f"fleet {what}: {name} (lock sha256 {digest[:12]}...) on {len(hosts)} host(s), batches {rollout.serial()}"
    )
    if seeds:
        out.stderr(f"fan-out: {', '.join(seeds)} take the bundle and serve it to the other {len(fetchers)} host(s)")
    if urls:
        out.stderr(f"artifacts from: {', '.join(urls)} ({why}; the control node copies what they lack)")
    run = run_playbook(
        INSTALL,
        inventory,
        extra,
        check=check,
        forks=forks,
        limit=limit,
        ssh_common_args=ssh_common_args,
        echo=_echo(app),
    )
    report = build_report(name, digest, hosts, run.results, run.returncode, check)
    data = report.to_dict()
    if report_file is not None:
        from airgap.fsutil import write_atomic

        write_atomic(report_file, (json.dumps(data, indent=2) + "\n").encode())
    if json_mode:
        out.emit_json(data)
    else:
        _show_report(out, report, report_file)
    return report.exit_code


def _show_report(out: Output, report: Any, report_file: Path | None) -> None:
    from airgap.fleet.report import doctor_text, layers_text

    out.heading(f"Fleet: {report.bundle} ({report.lock_sha256[:12]}...)")
    rows = []
    for h in report.hosts:
        mark = " *" if h.differs else ""
        result = h.result + (", rebooted" if h.rebooted else "")
        rows.append([h.host + mark, result, layers_text(h.layers), doctor_text(h.doctor)])
    out.table(["host", "result", "layers", "doctor"], rows)
    sources = sorted({h.copied_from for h in report.hosts if h.copied_from})
    if sources:
        out.info("")
        for source in sources:
            names = ", ".join(h.host for h in report.hosts if h.copied_from == source)
            out.info(f"bundle copied from {source}: {names}")
    failed = [h for h in report.hosts if h.failed_layer or h.result == "no result"]
    for h in failed:
        out.info("")
        where = f" at {h.failed_layer}" if h.failed_layer else ""
        out.info(f"{h.host}: {h.result}{where}: {h.detail}")
        if h.fix:
            out.info(f"  what to do: {h.fix}")
    if report.differing:
        out.info("")
        out.info("Hosts that differ from the rest (*): " + ", ".join(h.host for h in report.differing))
    counts = ", ".join(f"{n} {k}" for k, n in report.to_dict()["counts"].items())
    out.info("")
    out.info(f"{len(report.hosts)} host(s): {counts}" + (f"; report written to {report_file}" if report_file else ""))


@fleet.command(
    epilog=exit_codes_help(),
    help="""Install BUNDLE on every host of the inventory, through Ansible.

Per host: the bundle is copied (a re-run sends only files that differ) and checked against SHA256SUMS
there; `sh install.sh` sets airgap up from tool/ and installs; exit 4 (reboot due) reboots the host
(ansible.builtin.reboot) and runs the same install again; any other failure stops that host, and the
report names the layer and the fix. A host already at the bundle's lock digest is left alone, so a
re-run converges. --canary N installs on N hosts first and stops there if one fails.

So that 100 hosts do not each pull the whole bundle from the control node: --from URL has every host
fetch the artifacts from a depot (`airgap serve` answers under /bundle/; by default the manifest's
`depot.url`, when it has one), and --fan-out N has the first N
hosts take the bundle and serve it to the rest. SHA256SUMS always comes from the control node over SSH,
and every fetched file is checked against it; what could not be fetched is copied from the control node.
"""
    + _COMMON_HELP,
)
@_connection_options
@_rollout_options
@verbosity_options
@click.pass_obj
def install(app: Application, **kw: Any) -> int:
    return _run_install(app, check=False, **kw)


@fleet.command(
    epilog=exit_codes_help(),
    help="""Dry run of `fleet install`: which hosts would get BUNDLE (Ansible's check mode).

Reaches every host, reads the lock digest it is at and whether the copy would change; copies, installs
and reboots nothing.
"""
    + _COMMON_HELP,
)
@_connection_options
@_rollout_options
@verbosity_options
@click.pass_obj
def plan(app: Application, **kw: Any) -> int:
    return _run_install(app, check=True, **kw)


@fleet.command(
    epilog=exit_codes_help(),
    help="""What every host has now against BUNDLE's lock: the drift, host by host.

Each layer is asked on the host whether it is installed as the lock has it (a dry run of the install
against the copy `fleet install` left there, changing nothing): a removed image or file, another driver,
a layer that failed show up. --write FILE saves the fleet's state as JSON (with FILE.sig when --key is
given): per host, and the lock's artifacts some host lacks.
"""
    + _COMMON_HELP,
)
@_connection_options
@click.option(
    "--write",
    "write_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the fleet inventory (JSON) to this file.",
)
@click.option(
    "--key",
    type=click.Path(path_type=Path),
    help="Sign the --write file with this secret key (from airgap keygen): FILE.sig next to it.",
)
@verbosity_options
@click.pass_obj
def status(
    app: Application,
    bundle: Path,
    inventory: Path,
    limit: str | None,
    forks: int,
    ssh_common_args: str | None,
    json_mode: bool,
    write_file: Path | None,
    key: Path | None,
) -> int:
    from airgap.fleet.playbook import STATUS, inventory_hosts, run_playbook
    from airgap.fleet.status import build_status, write_inventory

    if key is not None and write_file is None:
        raise BadInputError("--key signs the --write file, and no --write FILE was given.", "Add --write FILE.")
    out = app.output(json_mode)
    extra, name, digest, _ = _bundle_vars(bundle)
    hosts = inventory_hosts(inventory, limit)
    out.stderr(f"fleet status: {name} (lock sha256 {digest[:12]}...) on {len(hosts)} host(s)")
    run = run_playbook(
        STATUS, inventory, extra, forks=forks, limit=limit, ssh_common_args=ssh_common_args, echo=_echo(app)
    )
    st = build_status(bundle, hosts, run.results)
    sig = write_inventory(st, write_file, key) if write_file is not None else None
    if json_mode:
        out.emit_json(st.to_dict())
    else:
        out.heading(f"Fleet status against {name} ({digest[:12]}...)")
        rows = [
            [
                h.host,
                "at lock" if h.at_lock else "NOT at lock",
                ", ".join(f"{k} {v}" for k, v in h.layers.items()) or "-",
                str(len(h.drift)),
            ]
            for h in st.hosts
        ]
        out.table(["host", "lock", "layers", "drift"], rows)
        for h in st.drifted:
            out.info("")
            out.info(f"{h.host}:")
            for d in h.drift:
                out.info(f"  - {d}")
        out.info("")
        out.info(f"{len(st.drifted)} of {len(st.hosts)} host(s) drifted from the lock")
        if write_file is not None:
            out.info(f"inventory written to {write_file}" + (f", signed: {sig}" if sig else " (unsigned)"))
    return 1 if st.drifted else EXIT_OK
