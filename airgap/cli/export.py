"""`airgap export`: the depot's services as a static tree and an nginx configuration."""

from __future__ import annotations

from pathlib import Path

import click

from airgap.bundle_layout import TRUSTED_KEYS_DIR
from airgap.cli.application import Application, exit_codes_help
from airgap.cli.options import trust_options
from airgap.errors import EXIT_OK


@click.command(
    epilog=exit_codes_help(),
    help=f"""Write BUNDLE's Python index, Hugging Face endpoint and files as a static tree for a web server.

What `airgap serve` answers, as files under DIR/www/ (simple/, api/models/, the models' resolve/ paths,
files/ with SHA256SUMS), and DIR/nginx/airgap-depot.conf: an nginx server block that sends them with the
content types pip and the headers huggingface_hub need. The bundle is verified first (signature policy
from --trusted-keys, default {TRUSTED_KEYS_DIR}, and --key; every file's sha256); a bundle that fails is
not exported (exit 1). Every file is copied through its lock digest into a temporary directory beside DIR,
renamed into place only when whole; an earlier export at DIR is replaced as a whole.

With --apt-key, the bundle's .debs also become a signed apt repository under www/apt/ (docs/depot.md).

\b
  airgap export /srv/bundle --to /srv/depot
  airgap export /srv/bundle --to /srv/depot --apt-key depot@your.site
  cp /srv/depot/nginx/airgap-depot.conf /etc/nginx/conf.d/ && nginx -s reload""",
)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--to", "dest", required=True, type=click.Path(path_type=Path), help="Directory to write the tree to.")
@click.option("--server-name", default="_", show_default=True, help="nginx server_name of the depot.")
@click.option("--nginx-listen", default="80", show_default=True, help="nginx listen directive's address.")
@click.option(
    "--apt-key",
    metavar="KEY",
    help="Also write the bundle's .debs as an apt repository (www/apt/) signed by this OpenPGP key of the "
    "site's, as gpg names it (fingerprint, key ID or user ID). Never unsigned.",
)
@click.option(
    "--gnupghome",
    type=click.Path(path_type=Path),
    help="gpg home holding --apt-key's secret key (default: gpg's own, $GNUPGHOME or ~/.gnupg).",
)
@trust_options
@click.pass_obj
def export(
    app: Application,
    bundle: Path,
    dest: Path,
    server_name: str,
    nginx_listen: str,
    apt_key: str | None,
    gnupghome: Path | None,
    key: Path | None,
    trusted_dir: Path,
) -> int:
    from airgap.cli.options import refuse_manifest, trusted
    from airgap.depot.apt_repo import AptSigner
    from airgap.depot.content import verified_bundle
    from airgap.depot.export import export_depot
    from airgap.units import human_size

    out = app.output()
    refuse_manifest(bundle, "export")
    keys = trusted(trusted_dir, key)
    reader = verified_bundle(bundle, keys, keys_dir=str(trusted_dir), say=out.info, warn=out.warn)
    signer = AptSigner(apt_key, gnupghome) if apt_key else None
    if signer is not None:
        signer.fingerprint()  # a missing site key is said before anything is copied
    done = export_depot(reader, dest, server_name=server_name, listen=nginx_listen, apt_signer=signer)
    for note in done.notes:
        out.warn(note)
    out.info(f"exported {done.files} files ({human_size(done.bytes)}) to {done.dest}/www/")
    out.info(f"nginx: {done.dest}/nginx/airgap-depot.conf (include it in the http block)")
    if done.apt is not None:
        out.info(
            f"apt: {done.apt.packages} packages in {done.apt.root}, signed by {done.apt.fingerprint}; on each server "
            f"copy {done.apt.key_file.name} to /etc/apt/keyrings/ and {done.apt.root}/airgap-depot.sources "
            "(with the depot's address) to /etc/apt/sources.list.d/"
        )
    return EXIT_OK
