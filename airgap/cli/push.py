"""`airgap push`: a verified bundle's images into an OCI registry of the closed network."""

from __future__ import annotations

from pathlib import Path

import click

from airgap.cli.application import Application, exit_codes_help
from airgap.cli.options import refuse_manifest, trust_options


@click.command(
    epilog=exit_codes_help(),
    help="""Push every image of BUNDLE into the OCI registry --registry, by digest, then tag it.

Verifies the bundle first, as install does (a bundle that fails is refused before anything is sent),
then, per image: each blob is asked for first and sent only when the registry lacks it (mounted from
another repository of the same push where the registry offers it, large ones in chunks), each blob
hashed again on the read that sends it; then the manifest by its digest; then the tags. A second run
sends nothing and says so. Images keep their repository path under the registry (and --registry's
prefix): 10.0.0.5:5000/mirror + nvcr.io/nvidia/cuda:12.4.0 is 10.0.0.5:5000/mirror/nvidia/cuda:12.4.0.

Credentials come from AIRGAP_REGISTRY_AUTH='HOST=USER:PASSWORD', REGISTRY_AUTH_FILE, or
$DOCKER_CONFIG/config.json (~/.docker/config.json), as `docker login` writes it. HTTPS is used, checked
against the system's CAs or --ca-file; plain HTTP only with --insecure, or for a registry on this machine
(localhost, 127.0.0.1), as Docker does. A tag that points at another image stops the push unless
--on-existing-tag says otherwise.

\b
  airgap push /media/usb/bundle --registry depot.example.lan:5000
  airgap push bundle --registry depot.lan/mirror --ca-file site-ca.pem --json
  airgap push bundle --registry 10.0.0.5:5000 --insecure --on-existing-tag overwrite""",
)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--registry", required=True, metavar="HOST[:PORT][/PREFIX]", help="The registry to push into.")
@click.option(
    "--on-existing-tag",
    type=click.Choice(["skip", "overwrite", "fail"]),
    default="fail",
    show_default=True,
    help="A tag already pointing at another image: leave it (skip), move it (overwrite), or push nothing "
    "and exit 1 naming it (fail). A tag already at the bundle's digest is left as it is in every case.",
)
@click.option(
    "--ca-file", type=click.Path(path_type=Path), help="PEM file of the CA that signed the registry's certificate."
)
@click.option("--insecure", is_flag=True, help="Speak plain HTTP to the registry (no TLS at all).")
@trust_options
@click.option("--json", "json_mode", is_flag=True, help="Print the report as one JSON object.")
@click.pass_obj
def push(
    app: Application,
    bundle: Path,
    registry: str,
    on_existing_tag: str,
    ca_file: Path | None,
    insecure: bool,
    key: Path | None,
    trusted_dir: Path,
    json_mode: bool,
) -> int:
    from airgap.push import push_bundle
    from airgap.signing import load_public

    out = app.output(json_mode)
    refuse_manifest(bundle, "push")
    report = push_bundle(
        bundle,
        registry,
        on_existing_tag=on_existing_tag,  # type: ignore[arg-type]  # click.Choice checked it
        ca_file=ca_file,
        insecure=insecure,
        key=load_public(key) if key else None,
        trusted_dir=trusted_dir,
        say=out.info,
        warn=out.warn,
    )
    if json_mode:
        out.emit_json(report.to_dict())
        return 0
    out.table(["reference", "digest", "tag"], [[r.reference or r.pinned, r.digest, r.tag] for r in report.refs])
    if report.transferred:
        out.info(
            f"pushed to {report.registry}: {report.blobs_sent} blob(s) sent ({report.bytes_sent} bytes), "
            f"{report.blobs_mounted} mounted, {report.blobs_present} already there; {report.manifests_sent} "
            f"manifest(s), {report.tags_set} tag(s) set."
        )
    else:
        out.info(f"nothing transferred: every blob, manifest and tag was already in {report.registry}.")
    return 0
