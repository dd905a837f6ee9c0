"""`airgap dossier`: what a reviewer signs off on, written into the bundle."""

from __future__ import annotations

from pathlib import Path

import click

from airgap.cli.application import Application, exit_codes_help
from airgap.cli.options import trust_options, trusted
from airgap.errors import EXIT_OK


@click.command(
    epilog=exit_codes_help(),
    help="""Write BUNDLE's dossier: what is in it, from where, under which licence, with which known vulnerabilities.

The bundle is verified first (a bundle that fails `airgap verify` is refused). Then one self-contained
HTML page (dossier/dossier.html: no network, no script; prints to PDF), the same as JSON, and CycloneDX and
SPDX SBOMs covering every artifact and every package inside each image are written into the bundle and
listed in SHA256SUMS. A signature no longer matches afterwards: it is removed, or made again with
--sign-key.

\b
  airgap dossier bundle/ --against /media/approved/bundle --osv PyPI-all.zip --osv Debian-all.zip
  airgap dossier bundle/ --scanner-result grype.json --sign-key ~/.airgap/site-a.key -o review/""",
)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--against",
    type=click.Path(path_type=Path),
    help="The last approved bundle (its directory, or its airgap.lock.json): the dossier shows what changed.",
)
@click.option(
    "--osv",
    "osv_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="An OSV advisory export: a zip (OSV's <ecosystem>/all.zip) or a directory of OSV JSON files. Repeatable.",
)
@click.option(
    "--scanner-result",
    type=click.Path(path_type=Path),
    help="A site scanner's JSON result to fold in (Grype run on dossier/sbom.cdx.json).",
)
@click.option("--sign-key", type=click.Path(path_type=Path), help="Sign the bundle again with this secret key.")
@trust_options
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path),
    help="Also copy the dossier's files to this directory.",
)
@click.pass_obj
def dossier(
    app: Application,
    bundle: Path,
    against: Path | None,
    osv_paths: tuple[Path, ...],
    scanner_result: Path | None,
    sign_key: Path | None,
    key: Path | None,
    trusted_dir: Path,
    out_dir: Path | None,
) -> int:
    from airgap.dossier.build import run

    out = app.output()
    keys = trusted(trusted_dir, key)
    result = run(
        bundle,
        against=against,
        osv_paths=list(osv_paths),
        scanner_result=scanner_result,
        sign_key=sign_key,
        keys=keys,
        keys_dir=str(trusted_dir),
    )
    for rel in result.files:
        out.info(f"wrote {bundle / rel}")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for rel, data in result.files.items():
            (out_dir / Path(rel).name).write_bytes(data)
        out.info(f"copied to {out_dir}")
    for w in result.warnings:
        out.warn(w)
    if result.signature_removed and not result.signed:
        out.warn(f"SHA256SUMS.sig removed: SHA256SUMS changed; sign the bundle again (airgap sign {bundle} --key KEY)")
    if result.signed:
        out.info("signed again: SHA256SUMS.sig covers the dossier")
    return EXIT_OK
