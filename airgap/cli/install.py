"""`airgap install`: install a bundle on this server, layer by layer, resumable, without the network."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from airgap.cli.application import Application, exit_codes_help
from airgap.cli.options import refuse_manifest
from airgap.errors import EXIT_REBOOT, EXIT_TERMINATED, AirgapError, BadInputError
from airgap.ui import Output


def parse_model_dest(given: tuple[str, ...]) -> dict[str, str]:
    dests: dict[str, str] = {}
    for item in given:
        repo, sep, path = item.partition("=")
        if not sep or not repo.strip() or not path.strip():
            raise BadInputError(
                f"--model-dest {item!r}: not REPO=DIR.",
                "Give the model's repo id and this server's directory for it, e.g. "
                "--model-dest mistralai/Mistral-7B-Instruct-v0.3=/data2/models/mistral.",
            )
        if repo.strip() in dests:
            raise BadInputError(f"--model-dest names {repo.strip()} twice.", "Give one directory per model.")
        dests[repo.strip()] = path.strip()
    return dests


@click.command(
    epilog=exit_codes_help(EXIT_REBOOT, EXIT_TERMINATED),
    help="""Install BUNDLE on this server, layer by layer, without touching the network.

Verifies the bundle first (refuses a bad one, and an unsigned or badly signed one when this server
trusts a key in /etc/airgap/keys), runs preflight checks (root, OS, GPU on PCI, nouveau,
Secure Boot, kernel headers, disk space) for the layers chosen, then installs in order:
prereqs, driver, cuda, cudnn, docker, container_toolkit, images, python, models, files, and ends with
the GPU smoke test. A layer already at the bundle's version is skipped. Progress is kept in
/var/lib/airgap/state.json, so after a failure, Ctrl-C, power loss or the reboot the driver asks for,
the same command picks up where it stopped. The full log is in /var/log/airgap/. Every file is hashed
again on the read that installs it (installers run from a private copy), so a bundle changed after
verification stops the layer instead of running other bytes. One install runs at a time.

\b
  sudo airgap install /media/usb/bundle
  sudo airgap install bundle --only images,models
  airgap install bundle --dry-run                 print every command and file, change nothing
  airgap install bundle --root /tmp/stage --skip driver,smoke""",
)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--only", metavar="LAYER,..", help="Install just these layers.")
@click.option("--skip", metavar="LAYER,..", help="Leave these layers out.")
@click.option("--from", "from_step", metavar="LAYER", help="Start at this layer (the earlier ones are left alone).")
@click.option("--dry-run", is_flag=True, help="Print every command and file write, in order; change nothing.")
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Install under this directory instead of / (staging, tests). NVIDIA's installers still act "
    "on the running system.",
)
@click.option(
    "--no-verify",
    is_flag=True,
    help="Skip re-hashing the whole bundle up front. The signature policy still applies and every file is "
    "still hashed as it is installed; a damaged one then stops its layer part-way.",
)
@click.option(
    "--key",
    type=click.Path(path_type=Path),
    help="A public key to trust besides those in /etc/airgap/keys (under --root): with any trusted key, "
    "the bundle is refused unless SHA256SUMS.sig is a valid signature by one of them.",
)
@click.option(
    "--base",
    type=click.Path(path_type=Path),
    help="For a delta bundle (collect --since): the earlier bundle holding what it does not carry.",
)
@click.option("--move", is_flag=True, help="Move model files out of the bundle instead of copying (saves space).")
@click.option(
    "--model-dest",
    "model_dest",
    multiple=True,
    metavar="REPO=DIR",
    help="Install this model into DIR on this server instead of the manifest's dest (repeatable), e.g. "
    "--model-dest mistralai/Mistral-7B-Instruct-v0.3=/data2/models/mistral.",
)
@click.option(
    "--expect-gpus",
    type=click.IntRange(1, None),
    metavar="N",
    help="This server has N GPUs: the smoke test fails when fewer answer (a card fallen off the bus).",
)
@click.option("--json", "json_mode", is_flag=True, help="Print the report as one JSON object.")
@click.pass_obj
def install(
    app: Application,
    bundle: Path,
    only: str | None,
    skip: str | None,
    from_step: str | None,
    dry_run: bool,
    root: Path,
    no_verify: bool,
    key: Path | None,
    base: Path | None,
    move: bool,
    model_dest: tuple[str, ...],
    expect_gpus: int | None,
    json_mode: bool,
) -> int:
    from airgap.host import Host
    from airgap.install_context import InstallOptions
    from airgap.installer import install_bundle, parse_steps
    from airgap.signing import load_public
    from airgap.verdict import Status

    out = app.output(json_mode)
    refuse_manifest(bundle, "install")
    # A dry run's plan (host.actions) is printed after the preflight table, which decides whether any of it
    # would happen. With --json, stdout is the JSON alone: the "would ..." lines go to stderr as they come.
    host = Host(root=root, dry_run=dry_run, echo=sys.stderr if json_mode else None)
    if dry_run:
        out.heading("Dry run: nothing will be changed.")
    try:
        report = install_bundle(
            bundle,
            host,
            only=parse_steps(only, "--only"),
            skip=parse_steps(skip, "--skip"),
            from_step=from_step,
            verify=not no_verify,
            options=InstallOptions(move=move, model_dest=parse_model_dest(model_dest), expect_gpus=expect_gpus),
            say=out.info,
            warn=out.warn,
            key=load_public(key) if key else None,
            base=base,
        )
    except AirgapError:
        if dry_run and host.actions:  # a layer stopped the dry run: what it had planned until then
            _show_plan(out, host.actions, "Until it stopped, the install would:")
        raise
    log_path = report.log
    if json_mode:
        out.emit_json(report.to_dict())
        return report.exit_code
    out.heading("Preflight")
    out.table(
        ["check", "result", "detail"],
        [
            [c.name, c.status, c.message + (f" (fix: {c.fix})" if c.fix and c.status != Status.PASS else "")]
            for c in report.preflight
        ],
    )
    if dry_run:
        _show_plan(out, host.actions, "The install would:")
    out.heading("Layers")
    out.table(["layer", "status", "detail"], [[s.step, s.status, s.detail] for s in report.steps])
    for s in report.steps:
        if s.status in ("failed", "reboot"):
            out.info("")
            out.info(f"{s.step}: {s.detail}")
            if s.command:
                out.info(f"  command: {s.command}")
            if s.output_tail:
                out.info("  last output:")
                for line in s.output_tail.splitlines():
                    out.info(f"    {line}")
            if s.fix:
                out.info(f"  what to do: {s.fix}")
    if log_path:
        out.info(f"full log: {root / log_path.lstrip('/') if str(root) != '/' else log_path}")
    return report.exit_code


def _show_plan(out: Output, actions: list[str], heading: str) -> None:
    out.heading(heading)
    for action in actions:
        out.info(f"  would {action}")
    if not actions:
        out.info("  change nothing: every layer is in place already")
