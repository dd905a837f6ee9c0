"""`airgap split`: store a bundle's large files as numbered parts that fit the medium."""

from __future__ import annotations

from pathlib import Path

import click

from airgap.bundle_layout import SIG_NAME
from airgap.cli.application import Application, exit_codes_help
from airgap.errors import EXIT_OK


@click.command(
    epilog=exit_codes_help(),
    help="""Store every file of BUNDLE larger than --max-file-size as numbered parts (NAME.001, NAME.002, ...).

For FAT32 drives (no file over 4 GiB: --max-file-size 4G) and DVDs (4.7GB). Each part gets its own sha256
in SHA256SUMS and the lock, so `verify` names the one bad part to copy (or burn) again; by hand,
`cat NAME.0?? > NAME` rebuilds a file. Run it again with another size (or a size larger than every file)
to re-split or join: no stale parts are left. Interrupted (a kill, a power cut), it loses nothing: the
bundle then says it is being split (verify: exit 1, "run the split again") and the same command resumes.
`install` reads parts directly, joining only installers that must be real files. A signature no longer
matches afterwards: sign the bundle again. While it runs it holds the bundle's lock, as collect does: a
split or collect of the same bundle meanwhile is refused (exit 2) naming the one running.

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
def split(app: Application, bundle: Path, max_size: str) -> int:
    from airgap.journal import DirectoryLock
    from airgap.split import split_bundle
    from airgap.units import parse_part_size

    limit = parse_part_size(max_size)
    out = app.output()
    # The same lock collect holds, from the check to the last write: a collect (or another split) meanwhile
    # would change files between verifying and re-hashing them, or write its lock over this one's.
    with DirectoryLock(bundle, command="split"):
        result = split_bundle(bundle, limit, max_size, out.info)
    if not result.changed:
        out.info(f"nothing to do: no file needs a different split at {max_size}")
        return EXIT_OK
    for a in result.changed:
        out.info(f"{a.path}: {len(a.parts) or 'whole'}{' parts' if a.parts else ''}")
    if result.signature_removed:
        out.warn(f"{SIG_NAME} removed: SHA256SUMS changed; sign the bundle again (airgap sign {bundle} --key KEY)")
    return EXIT_OK
