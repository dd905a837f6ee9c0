"""CLI commands that work on a bundle as a whole: keygen, sign."""

from __future__ import annotations

from pathlib import Path

import click

from airgap.cli import EXIT_CODES, Ctx, cli
from airgap.errors import EXIT_OK


@cli.command(
    epilog=EXIT_CODES,
    help="""Make an Ed25519 key pair for signing bundles: NAME.key (secret, mode 0600) and NAME.pub.

The public key is in minisign's format: the gate can check a bundle with the stock minisign tool,
`minisign -Vm SHA256SUMS -x SHA256SUMS.sig -p NAME.pub`, as well as with `airgap verify --key NAME.pub`.
Keep NAME.key on the collecting side; carry NAME.pub to the gate and the server separately from bundles.

\b
  airgap keygen -o ~/.airgap/site-a""",
)
@click.option("-o", "--output", "stem", type=click.Path(path_type=Path), default=Path("airgap"),
              show_default=True, help="File name without extension.")
@click.pass_obj
def keygen(obj: Ctx, stem: Path) -> int:
    from airgap.signing import generate, write_keypair

    sk = generate()
    secret, public = write_keypair(sk, stem)
    out = obj.out()
    out.info(f"secret key: {secret} (keep it here; mode 0600)")
    out.info(f"public key: {public} (key id {sk.public().key_id_hex})")
    return EXIT_OK


@cli.command(
    epilog=EXIT_CODES,
    help="""Sign BUNDLE's SHA256SUMS (which covers the lock and every file) with a secret key.

Writes SHA256SUMS.sig. `airgap verify --key NAME.pub` and `airgap install --key NAME.pub` then refuse
the bundle if the signature is missing, made by another key, or does not match.

\b
  airgap sign bundle --key ~/.airgap/site-a.key""",
)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--key", type=click.Path(path_type=Path), required=True, help="Secret key (.key from airgap keygen).")
@click.pass_obj
def sign(obj: Ctx, bundle: Path, key: Path) -> int:
    from airgap.bundle import read_lock
    from airgap.signing import load_secret, sign_bundle

    sk = load_secret(key)
    sig = sign_bundle(bundle, sk, read_lock(bundle).name)
    obj.out().info(f"signed: {sig} (key id {sk.public().key_id_hex})")
    return EXIT_OK
