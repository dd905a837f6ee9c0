"""`airgap demo`: the whole trip on this machine, with no internet and no GPU."""

from __future__ import annotations

from pathlib import Path

import click

from airgap.cli.application import Application, exit_codes_help


@click.command(
    epilog=exit_codes_help(),
    help="""Run the whole trip on this machine, with no internet and no GPU.

Serves sample artifacts (a driver and a CUDA installer stand-in, a Docker tgz, a file) from a local HTTP
server on 127.0.0.1, collects them through a manifest whose `mirrors:` point at it, copies the bundle
as a USB drive would, verifies the copy, installs it into a scratch directory standing in for the server
(stand-in installers that write only there; a second run skips everything), runs the smoke test there
(it fails plainly: there is no GPU), then flips one byte to show what a bad transfer looks like.

Exits 0 when every step behaved as it should (the smoke test's failure included), 1 otherwise.""",
)
@click.option(
    "--workdir", type=click.Path(path_type=Path), help="Keep the demo's files here (default: a temp dir, removed)."
)
@click.pass_obj
def demo(app: Application, workdir: Path | None) -> int:
    from airgap.demo import run_demo

    return run_demo(app.output(), workdir)
