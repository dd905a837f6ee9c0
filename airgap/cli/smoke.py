"""`airgap smoke`: the GPU smoke test, from NVML to a matmul in the installed Python environment."""

from __future__ import annotations

from pathlib import Path

import click

from airgap.cli.application import Application, exit_codes_help
from airgap.errors import EXIT_CHECK_FAILED, EXIT_OK


@click.command(
    epilog=exit_codes_help(),
    help="""GPU smoke test: is this server ready to serve models?

Checks, in order: NVML (driver version, the newest CUDA it supports vs the bundle's, per GPU: name,
memory, temperature, power, ECC errors); nvidia-smi; `docker run --rm --gpus all <the bundle's CUDA
image> nvidia-smi`; and in the installed Python environment, torch.cuda.is_available() with a small matmul
on the GPU. Each failure says what usually causes it. Exit 1 on any failure (no GPU included).

\b
  airgap smoke
  airgap smoke --expect-gpus 8            a card missing from the 8 is a failure
  airgap smoke --bundle /media/usb/bundle --json""",
)
@click.option("--bundle", type=click.Path(path_type=Path), help="Compare with this bundle's versions and images.")
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Look for installed tools under this directory.",
)
@click.option(
    "--expect-gpus",
    type=click.IntRange(1, None),
    metavar="N",
    help="This server has N GPUs: the smoke test fails when fewer answer (a card fallen off the bus).",
)
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def smoke(app: Application, bundle: Path | None, root: Path, expect_gpus: int | None, json_mode: bool) -> int:
    from airgap.host import Host
    from airgap.lock import Lock
    from airgap.smoke import run_smoke
    from airgap.verdict import Status

    out = app.output(json_mode)
    lock = Lock.read(bundle) if bundle else None
    report = run_smoke(Host(root=root), lock, expect_gpus=expect_gpus)
    if json_mode:
        out.emit_json(report.to_dict())
    else:
        out.table(["check", "result", "detail"], [[c.name, c.status, c.message] for c in report.checks])
        for c in report.checks:
            if c.status == Status.FAIL and c.fix:
                out.info(f"{c.name}: {c.fix}")
        out.info("smoke test passed" if report.ok else "smoke test FAILED")
    return EXIT_OK if report.ok else EXIT_CHECK_FAILED
