"""`airgap doctor`: is this server ready to serve models? One line per check, each with its fix."""

from __future__ import annotations

from pathlib import Path

import click

from airgap.cli.application import Application, exit_codes_help
from airgap.errors import EXIT_CHECK_FAILED, EXIT_OK, BadInputError


@click.command(
    epilog=exit_codes_help(),
    help="""Check this server is ready to serve models: a readiness checklist, one line per check.

GPU on the PCI bus, nouveau, nvidia-smi, NVML, driver vs the CUDA toolkit (nvcc on PATH; nvidia-smi's
"CUDA Version" is the driver's maximum, not the toolkit), cuDNN, PyTorch a CUDA build for the right CUDA,
Docker up, the nvidia runtime in /etc/docker/daemon.json and dockerd restarted since, Compose v2, your user
in the docker group, GPU temperature, throttling, ECC and memory, disk space, RAM vs VRAM, the OOM killer
in the kernel log, models readable by the containers' uid 1000. Each is pass, warn, fail or skip, with
the fix. No bundle is needed; --bundle adds what the bundle expects. Exits 1 if any check fails.

\b
  airgap doctor
  sudo airgap doctor --bundle /media/usb/bundle
  airgap doctor --json | jq '.checks[] | select(.status == "fail")'""",
)
@click.option("--bundle", type=click.Path(path_type=Path), help="A bundle whose lock says what to expect.")
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Look at this tree instead of / (a mounted image, a chroot, tests).",
)
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON object: checks, facts, ok.")
@click.pass_obj
def doctor(app: Application, bundle: Path | None, root: Path, json_mode: bool) -> int:
    from airgap.doctor import run_doctor
    from airgap.host import Host
    from airgap.lock import Lock
    from airgap.verdict import Status

    out = app.output(json_mode)
    if not root.is_dir():
        raise BadInputError(f"--root {root}: not a directory.", "Give the top of the tree to check, e.g. --root /mnt.")
    lock = Lock.read(bundle) if bundle is not None else None
    report = run_doctor(Host(root=root.resolve()), lock)
    report.bundle = str(bundle) if bundle is not None else None
    if json_mode:
        out.emit_json(report.to_dict())
    else:
        where = "" if report.root == "/" else f" (root {report.root})"
        out.heading(f"airgap doctor{where}" + (f", expecting bundle {bundle}" if bundle else ""))
        labels = {Status.PASS: "pass", Status.WARN: "warn", Status.FAIL: "FAIL", Status.SKIP: "skip"}
        width = max((len(c.name) for c in report.checks), default=10)
        for c in report.checks:
            out.info(f"  {labels.get(c.status, c.status):<4}  {c.name:<{width}}  {c.message}")
            if c.fix and c.status in (Status.WARN, Status.FAIL):
                out.info(f"  {'':<4}  {'':<{width}}  fix: {c.fix}")
        n = report.counts()
        out.info(f"{n[Status.PASS]} pass, {n[Status.WARN]} warn, {n[Status.FAIL]} fail, {n[Status.SKIP]} skipped")
        if app.quiet:  # -q keeps what needs attention, on stderr
            for c in report.checks:
                line = f"{c.name}: {c.message}" + (f"; fix: {c.fix}" if c.fix else "")
                if c.status == Status.FAIL:
                    out.stderr(f"fail: {line}")
                elif c.status == Status.WARN:
                    out.warn(line)
    if not report.ok:
        failed = ", ".join(c.name for c in report.checks if c.status == Status.FAIL)
        out.stderr(f"not ready: {failed} failed (fixes above).")
        return EXIT_CHECK_FAILED
    return EXIT_OK
