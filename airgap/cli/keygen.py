"""`airgap keygen`: an Ed25519 key pair for signing bundles."""

from __future__ import annotations

from pathlib import Path

import click

from airgap.cli.application import Application, exit_codes_help
from airgap.errors import EXIT_OK


@click.command(
    epilog=exit_codes_help(),
    help="""Make an Ed25519 key pair for signing bundles: NAME.key (secret, mode 0600) and NAME.pub.

NAME.key signs (`collect --sign NAME.key`, `airgap sign BUNDLE --key NAME.key`). It is not encrypted: keep it
on the collecting side only, never on a drive or a server, and back it up; keygen never overwrites a key.

NAME.pub is in minisign's format. Carry it to the gate and the servers separately from bundles. The gate
checks a bundle with `minisign -Vm SHA256SUMS -x SHA256SUMS.sig -p NAME.pub`, with OpenSSL 3
(docs/signing.md) or with `airgap verify --key NAME.pub`.

On each server, install it once as root; from then on a valid signature by one of the keys there is
mandatory for `airgap verify`, `airgap install` and the bundle's install.sh:

\b
  install -d -m 0755 /etc/airgap/keys
  install -m 0644 NAME.pub /etc/airgap/keys/NAME.pub

install.sh checks the signature, then the sha256 of everything in tool/, before it runs any of it: with
`openssl pkeyutl -rawin` (OpenSSL 3.0 or later), else with minisign; with neither it refuses (OpenSSL 1.1.1
cannot verify Ed25519: install minisign, or check the bundle elsewhere). See docs/signing.md.

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
