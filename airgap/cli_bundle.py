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


@cli.command(
    epilog=EXIT_CODES,
    help="""Store every file of BUNDLE larger than --max-file-size as numbered parts (NAME.001, NAME.002, ...).

For FAT32 drives (no file over 4 GiB: --max-file-size 4G) and DVDs (4.7GB). Each part gets its own sha256
in SHA256SUMS and the lock, so `verify` names the one bad part to copy (or burn) again; by hand,
`cat NAME.0?? > NAME` rebuilds a file. Run it again with another size (or a size larger than every file)
to re-split or join: no stale parts are left. `install` reads parts directly, joining only installers
that must be real files. A signature no longer matches afterwards: sign the bundle again.

\b
  airgap split /media/usb/bundle --max-file-size 4G
  airgap split bundle --max-file-size 4.7GB""",
)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--max-file-size",
    "max_size",
    required=True,
    metavar="SIZE",
    help="Largest file the medium takes: 4G (FAT32), 4.7GB (DVD), 700M ...",
)
@click.pass_obj
def split(obj: Ctx, bundle: Path, max_size: str) -> int:
    from airgap.bundle import finalize, read_lock
    from airgap.bundle_layout import SIG_NAME
    from airgap.parts import parse_size, resplit
    from airgap.verify import verify_bundle

    limit = parse_size(max_size)
    out = obj.out()
    report = verify_bundle(bundle)
    if not report.ok:
        from airgap.errors import IntegrityError

        raise IntegrityError(
            f"{bundle}: fails verification ({len(report.problems)} problem(s)); not splitting it.",
            "Run `airgap verify` and repair the bundle first.",
        )
    lock = read_lock(bundle)
    changed = [a for a in lock.artifacts if resplit(bundle, a, limit)]
    if not changed:
        out.info(f"nothing to do: no file needs a different split at {max_size}")
        return EXIT_OK
    finalize(bundle, lock)
    for a in changed:
        out.info(f"{a.path}: {len(a.parts) or 'whole'}{' parts' if a.parts else ''}")
    sig = bundle / SIG_NAME
    if sig.exists():
        sig.unlink()
        out.warn(f"{SIG_NAME} removed: SHA256SUMS changed; sign the bundle again (airgap sign {bundle} --key KEY)")
    return EXIT_OK
