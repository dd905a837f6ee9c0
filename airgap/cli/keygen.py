"""`airgap keygen`: an Ed25519 key pair for signing bundles."""

from __future__ import annotations

from pathlib import Path

import click

from airgap.cli.application import Application, exit_codes_help
from airgap.errors import EXIT_OK


@click.command(
    epilog=exit_codes_help(),
    help="""Make an Ed25519 key pair for signing bundles: NAME.key (secret, mode 0600) and NAME.pub.

The public key is in minisign's format: the gate can check a bundle with the stock minisign tool,
`minisign -Vm SHA256SUMS -x SHA256SUMS.sig -p NAME.pub`, as well as with `airgap verify --key NAME.pub`.
Keep NAME.key on the collecting side; carry NAME.pub to the gate and the server separately from bundles.

\b
  airgap keygen -o ~/.airgap/site-a""",
)
@click.option(
    "-o",
    "--output",
    "stem",
    type=click.Path(path_type=Path),
    default=Path("airgap"),
    show_default=True,
    help="File name without extension.",
)
@click.pass_obj
def keygen(app: Application, stem: Path) -> int:
    from airgap.signing import generate, write_keypair

    sk = generate()
    secret, public = write_keypair(sk, stem)
    out = app.output()
    out.info(f"secret key: {secret} (keep it here; mode 0600)")
    out.info(f"public key: {public} (key id {sk.public().key_id_hex})")
    return EXIT_OK
