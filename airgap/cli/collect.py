"""`airgap collect`: download everything a manifest names into a bundle, checked, resumable."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from airgap.cli.application import Application, exit_codes_help
from airgap.cli.options import (
    allow_mismatch_option,
    http_source,
    require_writable,
    skip_option,
    target_status_option,
)
from airgap.errors import EXIT_OK


@click.command(
    epilog=exit_codes_help(),
    help="""Download everything MANIFEST names into a bundle directory.

Every file is hashed while it downloads, checked against a pinned sha256 or the publisher's digest where
one exists, and renamed from *.part only once it matches. A publisher's digest that cannot be had (CUDA's
md5sum.txt unreadable, or not naming the runfile) stops the collection (exit 3) unless --allow-unverified.
Interrupted? Run the same command again: files already verified are not transferred again, partial ones
resume with HTTP Range. The bundle gets
airgap.lock.json, SHA256SUMS (`sha256sum -c` works) and a README.txt for the person carrying it, and
(unless --no-tool) airgap itself under tool/ with install.sh: on the server, `sudo sh install.sh`.

Before anything is downloaded the stack is checked for version mismatches (what `airgap plan` shows):
one stops the collection (exit 2) unless --allow-mismatch, which records it in the lock.

Credentials for a mirror go in ~/.netrc, never in the manifest; they never reach the bundle.

\b
  airgap collect manifests/small-driver-cuda.yaml -o /media/usb/bundle
  airgap collect manifest.yaml -o bundle --jobs 8 --skip images,python,models""",
)
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Bundle directory (default: ./bundle-NAME).")
@click.option(
    "-j", "--jobs", default=4, show_default=True, type=click.IntRange(1, 64), help="Files downloaded in parallel."
)
@click.option(
    "--retries",
    default=5,
    show_default=True,
    type=click.IntRange(0, 100),
    help="Attempts per file after a dropped connection or a 5xx, with backoff (a host name the resolver "
    "says does not exist is not retried).",
)
@click.option(
    "--timeout", default=30.0, show_default=True, type=click.FloatRange(1), help="Seconds without data before a retry."
)
@click.option("--json", "json_mode", is_flag=True, help="Print a JSON summary instead of text.")
@click.option(
    "--max-file-size", metavar="SIZE", help="Store larger files as numbered parts: 4G for FAT32 drives, 4.7GB for DVDs."
)
@click.option(
    "--sign",
    "sign_key",
    type=click.Path(path_type=Path),
    help="Sign SHA256SUMS with this secret key (from `airgap keygen`) when the bundle is complete.",
)
@click.option(
    "--dossier",
    "with_dossier",
    is_flag=True,
    help="Also write the gate's dossier into the bundle (as `airgap dossier` does), before signing it.",
)
@click.option(
    "--since",
    type=click.Path(path_type=Path),
    help="Make a delta bundle: carry only what changed since this earlier bundle (its dir or lock), or since "
    "what a fleet has (the inventory `airgap fleet status --write` made): then also what some host lacks.",
)
@click.option(
    "--since-key",
    type=click.Path(path_type=Path),
    help="The site's public key: the --since fleet inventory must carry a good signature by it (FILE.sig).",
)
@click.option(
    "--tool/--no-tool",
    default=True,
    show_default=True,
    help="Put airgap itself in the bundle (tool/: its wheels for the target's python, fetched from "
    "PyPI) with install.sh, so `sudo sh install.sh` is all the server needs.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Collect into an existing bundle made from a manifest of another name, removing its files this "
    "manifest does not list.",
)
@click.option(
    "--allow-unverified",
    is_flag=True,
    help="Collect a file whose publisher digest cannot be had (CUDA's md5sum.txt unreadable, or not naming "
    "it) with nothing but its own sha256: warned about loudly, and the lock records why.",
)
@allow_mismatch_option
@target_status_option
@skip_option
@click.pass_obj
def collect(
    app: Application,
    manifest: Path,
    output: Path | None,
    jobs: int,
    retries: int,
    timeout: float,
    json_mode: bool,
    max_file_size: str | None,
    sign_key: Path | None,
    with_dossier: bool,
    since: Path | None,
    since_key: Path | None,
    tool: bool,
    force: bool,
    allow_unverified: bool,
    allow_mismatch: bool,
    target_status: Path | None,
    skip: str | None,
) -> int:
    from dataclasses import asdict

    from airgap import manifest as manifest_mod
    from airgap.bundle import load_base
    from airgap.collect import collect as do_collect
    from airgap.layers import parse_layer_names
    from airgap.signing import load_secret, sign_bundle
    from airgap.units import human_size, parse_part_size

    out = app.output(json_mode)
    m = manifest_mod.load(manifest)
    if tool:
        manifest_mod.check_tool_python(m)  # airgap itself must run on the server's python: refused before any download
    # Options are checked before any download: a wrong key path found after 60 GB is a wasted hour.
    limit = parse_part_size(max_file_size) if max_file_size else None
    secret = load_secret(sign_key) if sign_key else None
    if with_dossier:
        from airgap.dossier.sbom import require_libraries

        require_libraries()  # the SBOM libraries are an extra: said now, not after the download
    base = load_base(since, since_key, out.warn) if since else None
    dest = output or Path(f"bundle-{m.name}")
    require_writable(dest, "-o", directory=True)
    mode = "off" if (app.quiet or json_mode) and not sys.stderr.isatty() else "auto"
    # Every removal is shown as it happens, so it is seen even when the run fails afterwards; with --json
    # or -q on stderr, where it neither corrupts the JSON nor is silenced.
    say = out.stderr if json_mode or app.quiet else out.info

    def removed(path: str, why: str) -> None:
        say(f"removed {path} ({why})")

    report = do_collect(
        m,
        dest,
        http_source(m.mirrors, retries, timeout),
        jobs=jobs,
        skip=parse_layer_names(skip, "--skip"),
        progress_mode=mode,
        warn=out.warn,
        allow_mismatch=allow_mismatch,
        max_file_size=limit,
        since=base,
        tool=tool,
        target_status=target_status,
        force=force,
        on_remove=removed,
        allow_unverified=allow_unverified,
        status=None if json_mode or app.quiet else out.info,  # a line per phase; -q silences
    )
    if with_dossier:
        from airgap.dossier.build import run as write_dossier

        write_dossier(dest)  # verifies the bundle first and lists the dossier in SHA256SUMS
    if secret is not None:
        sign_bundle(dest, secret, m.name)
    totals = report.totals
    assert totals is not None  # a collect that returns has finished the bundle
    if json_mode:
        data = asdict(report)
        data.update(
            totals=totals.to_dict(),  # the count and size verify and README.txt give, airgap itself included
            total_bytes=totals.all_bytes,
            transferred_bytes=report.transferred,
            saved_by_base_bytes=report.saved_by_base,
            signed=secret is not None,
            ok=True,
        )
        out.emit_json(data)
        return EXIT_OK
    rows = [[f.layer, f.path, human_size(f.size), f.status] for f in report.files]
    out.table(["layer", "file", "size", "status"], rows, right={2})
    out.info(f"bundle {dest}: {totals.text()}; transferred {human_size(report.transferred)} in {report.seconds:.1f}s")
    if base is not None:
        out.info(
            f"delta against '{base[0].name}': carries {totals.files} of {totals.files + totals.in_base_files} files "
            f"of its layers, {human_size(report.saved_by_base)} saved; install it with --base"
        )
    if secret is not None:
        out.info(f"signed with key {secret.public().key_id_hex}")
    out.info(f"next: copy it, then `airgap verify {dest}` on the other side")
    return EXIT_OK
