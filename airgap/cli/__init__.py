"""The `airgap` command line: one module per command, registered on one click group here.

A command parses its options, calls the core, and renders what comes back through the `Application`
(application.py) it receives; it never imports another command's module. Every failure leaves a command
as an exception and becomes a message and an exit code in one place, `Application.fail`, called by
`main()`. The codes themselves live in airgap/errors.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from airgap import __version__
from airgap.cli import collect, demo, doctor, install, keygen, plan, sign, smoke, split, verify
from airgap.cli.application import Application, exit_codes_help
from airgap.errors import EXIT_MEANINGS, EXIT_OK

MAIN_HELP = f"""Carry a GPU/LLM serving stack across an air gap, and be sure it arrived intact.

\b
On the connected PC:
  airgap plan manifest.yaml              what would be fetched, from where, how big
  airgap collect manifest.yaml -o B/     download, check, write a bundle in B/
After the transfer (USB drive, DVD, share):
  airgap verify /media/B                 name every missing, truncated, altered file
On the isolated server:
  sudo sh /media/B/install.sh            set airgap up from the bundle, then install it
  sudo airgap install /media/B           every layer in order, resumable; --dry-run first
  airgap smoke / airgap doctor           GPU smoke test / readiness checks with fixes
Try it with no internet and no GPU:
  airgap demo

Example manifests are in the project's manifests/ directory.

{exit_codes_help(*EXIT_MEANINGS)}
"""


@click.group(help=MAIN_HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="airgap")
@click.option("-v", "--verbose", is_flag=True, help="Say more (debug lines on stderr, tracebacks on internal errors).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and warnings.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    # main() passes its Application in; invoked some other way (click's test runner), the group makes one.
    app = ctx.ensure_object(Application)
    app.verbose = verbose
    app.quiet = quiet


# Each module holds one command, of the same name; the modules stay reachable as airgap.cli.<name>.
cli.add_command(plan.plan)
cli.add_command(collect.collect)
cli.add_command(verify.verify)
cli.add_command(demo.demo)
cli.add_command(doctor.doctor)
cli.add_command(install.install)
cli.add_command(smoke.smoke)
cli.add_command(keygen.keygen)
cli.add_command(sign.sign)
cli.add_command(split.split)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The `airgap` console script and `python -m airgap`: run one command and exit with its code."""
    app = Application()
    try:
        rv = cli.main(args=argv, standalone_mode=False, obj=app)
    except (Exception, KeyboardInterrupt) as exc:
        sys.exit(app.fail(exc))
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)
