"""`airgap upload`: a verified bundle's wheels into a Python index the site already runs."""

from __future__ import annotations

from pathlib import Path

import click

from airgap.bundle_layout import TRUSTED_KEYS_DIR
from airgap.cli.application import Application, exit_codes_help
from airgap.cli.options import trust_options
from airgap.errors import EXIT_OK


@click.command(
    epilog=exit_codes_help(),
    help=f"""Upload BUNDLE's wheels to a Python index the site already runs (devpi, Nexus, Artifactory, pypiserver).

Verifies the bundle first (signature policy from --trusted-keys, default {TRUSTED_KEYS_DIR}, and --key; every
file's sha256); a bundle that fails is not uploaded (exit 1). Then each wheel the index's simple page does
not list is sent with the standard upload API (twine's), read through its lock digest as it is streamed;
a wheel the index says it has is skipped, so a second run sends nothing. Credentials: TWINE_USERNAME and
TWINE_PASSWORD, as for twine.

\b
  airgap upload /media/usb/bundle --index https://nexus.lan/repository/pypi-hosted/
  airgap upload bundle --index http://devpi.lan/root/airgap/ --simple http://devpi.lan/root/airgap/+simple/""",
)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--index", "index", required=True, metavar="URL", help="The index's upload URL.")
@click.option(
    "--simple", metavar="URL", help="The index's simple page root, to ask what it has (default: INDEX/simple/)."
)
@trust_options
@click.option("--json", "json_mode", is_flag=True, help="Print what was sent and what was there as one JSON object.")
@click.pass_obj
def upload(
    app: Application,
    bundle: Path,
    index: str,
    simple: str | None,
    key: Path | None,
    trusted_dir: Path,
    json_mode: bool,
) -> int:
    from airgap.cli.options import refuse_manifest, trusted
    from airgap.depot.content import verified_bundle
    from airgap.depot.upload import upload_wheels
    from airgap.redact import redact
    from airgap.units import human_size

    out = app.output(json_mode)
    refuse_manifest(bundle, "upload")
    keys = trusted(trusted_dir, key)
    reader = verified_bundle(bundle, keys, keys_dir=str(trusted_dir), say=out.info, warn=out.warn)
    done = upload_wheels(reader, index, simple)
    if json_mode:
        out.emit_json({"ok": True, "index": redact(index), **done.to_dict()})
        return EXIT_OK
    for name in done.sent:
        out.info(f"sent     {name}")
    for name in done.present:
        out.info(f"present  {name}")
    if done.sent:
        out.info(f"uploaded {len(done.sent)} wheels ({human_size(done.bytes)}) to {redact(index)}")
    else:
        out.info(f"nothing sent: the index at {redact(index)} has every wheel of the bundle")
    return EXIT_OK
