"""`airgap demo`: the whole trip on this machine, with no internet and no GPU."""

from __future__ import annotations

from pathlib import Path

import click

from airgap.cli.application import Application


@click.command(
    help="""Run the whole trip on this machine, with no internet and no GPU.

Serves sample artifacts (a driver and a CUDA installer stand-in, a Docker tgz, a file) from a local HTTP
server on 127.0.0.1, collects them through a manifest whose `mirrors:` point at it, copies the bundle
as a USB drive would, verifies the copy, then flips one byte to show what a bad transfer looks like.""",
)
@click.option(
    "--workdir", type=click.Path(path_type=Path), help="Keep the demo's files here (default: a temp dir, removed)."
)
@click.pass_obj
def demo(app: Application, workdir: Path | None) -> int:
    from airgap.demo import run_demo

    return run_demo(app.output(), workdir)
