"""`airgap sign`: sign a bundle's SHA256SUMS with a secret key."""

from __future__ import annotations

from pathlib import Path

import click

from airgap.cli.application import Application, exit_codes_help
from airgap.errors import EXIT_OK


@click.command(
    epilog=exit_codes_help(),
    help="""Sign BUNDLE's SHA256SUMS (which covers the lock and every file) with a secret key.

Writes SHA256SUMS.sig. `airgap verify --key NAME.pub` and `airgap install --key NAME.pub` then refuse
the bundle if the signature is missing, made by another key, or does not match.

\b
  airgap sign bundle --key ~/.airgap/site-a.key""",
)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--key", type=click.Path(path_type=Path), required=True, help="Secret key (.key from airgap keygen).")
@click.pass_obj
def sign(app: Application, bundle: Path, key: Path) -> int:
    from airgap.lock import Lock
    from airgap.signing import load_secret, sign_bundle

    sk = load_secret(key)
    sig = sign_bundle(bundle, sk, Lock.read(bundle).name)
    app.output().info(f"signed: {sig} (key id {sk.public().key_id_hex})")
    return EXIT_OK
