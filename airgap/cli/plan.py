"""`airgap plan`: what `collect` would fetch, from where, how big, and whether the stack fits together."""

from __future__ import annotations

from pathlib import Path

import click

from airgap.cli.application import Application, exit_codes_help
from airgap.cli.options import allow_mismatch_option, http_source, skip_option, target_status_option
from airgap.errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_UPSTREAM, BadInputError, ManifestError


@click.command(
    epilog=exit_codes_help(),
    help="""Show what `collect` would fetch, without downloading, and whether the stack fits together.

First the resolved versions and the compatibility verdict, one line per check (ok, warn, ERROR with
the fix, skip for what cannot be known yet): driver vs CUDA's minimum, torch's CUDA build vs cuda.version,
vLLM's torch pin, every torch, vLLM and nvidia-* CUDA wheel pip resolved (a torch a dependency pulls in
included) vs the driver, cuda.version and the GPUs, the target GPUs' architectures vs CUDA and torch, each
model's memory vs the GPUs' VRAM, CUDA images vs the driver. Then
each artifact: its layer, its path in the bundle, the URL it comes from (after `mirrors:`), its size
(from an HTTP HEAD, unless --no-head) and what it will be checked against; the total, and with --media
whether it fits the drive (decimal units as drives are sold: 128G = 128 x 10^9 bytes; GiB for binary).
FAT32 cannot hold a file over 4 GiB: --fat32 makes that a failure, drives of 32 GB or less get a
warning (--no-fat32 to say yours is exFAT or ext4).

A size that no server gave is "?" (or "~SIZE" where airgap's table of runfile sizes has an estimate);
the total is then "at least ...", and --media says "cannot tell" rather than "fits".

Exits 2 on a compatibility error (unless --allow-mismatch), 3 if an artifact does not exist upstream or
a host cannot be reached (named with the cause: DNS, connection refused, TLS, proxy, timeout), 1 if the
bundle does not fit --media (or a file is too big for --fat32).

\b
  airgap plan manifests/llm-ubuntu2204-cuda124.yaml
  airgap plan manifest.yaml --media 128G
  airgap plan manifest.yaml --media 32G --fat32 --no-head
  airgap plan manifest.yaml --json | jq .total_bytes""",
)
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON object instead of a table.")
@click.option(
    "--no-head",
    is_flag=True,
    help="Do not contact any server (sizes stay unknown, models included; runfiles may be estimated).",
)
@click.option("--media", metavar="SIZE", help="Size of the drive that will carry the bundle: 128G, 4.7G, 64GB, 500GiB.")
@click.option(
    "--fat32/--no-fat32",
    default=None,
    help="The drive is (not) FAT32. Default: assume FAT32 for drives of 32 GB or less, and warn.",
)
@allow_mismatch_option
@target_status_option
@skip_option
@click.pass_obj
def plan(
    app: Application,
    manifest: Path,
    json_mode: bool,
    no_head: bool,
    media: str | None,
    fat32: bool | None,
    allow_mismatch: bool,
    target_status: Path | None,
    skip: str | None,
) -> int:
    from airgap import manifest as manifest_mod
    from airgap.layers import parse_layer_names
    from airgap.plan import make_plan
    from airgap.units import human_size, parse_size

    out = app.output(json_mode)
    media_bytes = parse_size(media, "--media", "128G") if media is not None else None
    if fat32 is not None and media_bytes is None:
        raise BadInputError("--fat32/--no-fat32 need --media SIZE.", "Add the drive's size, e.g. --media 32G --fat32.")
    m = manifest_mod.load(manifest)
    report = make_plan(
        m,
        http_source(m.mirrors, retries=1, timeout=15),
        parse_layer_names(skip, "--skip"),
        head=not no_head,
        allow_mismatch=allow_mismatch,
        media=media_bytes,
        fat32=fat32,
        target_status=target_status,
        # stdout is the plan itself: what runs meanwhile goes to stderr; -q and --json silence it
        status=None if json_mode or app.quiet else out.stderr,
    )
    if json_mode:
        out.emit_json(report.to_dict())
    else:
        out.heading(f"Plan for {report.name}")
        out.info("")
        out.heading("Resolved versions")
        width = max((len(k) for k in report.resolved), default=0)
        for key, value in report.resolved.items():
            out.info(f"  {key:<{width}}  {value}")
        out.info("")
        out.heading("Compatibility")
        labels = {"ok": "ok", "warning": "warn", "error": "ERROR", "skipped": "skip"}
        for f in report.findings:
            label = "warn*" if f.allowed else labels.get(f.level, f.level)
            out.info(f"  {label:<5}  {f.field_path}: {f.message}")
            if f.fix and f.level != "ok":
                out.info(f"         fix: {f.fix}")
        if not report.findings:
            out.info("  (nothing to check: no driver, cuda, python, target.gpus or models)")
        if any(f.allowed for f in report.findings):
            out.info("  warn* = an error accepted with --allow-mismatch")
        out.info("")
        rows = [
            [
                r.layer,
                r.path.rsplit("/", 1)[-1] + (" (>4 GiB)" if r.too_big_for_fat32 else ""),
                "?" if r.size is None else ("~" if r.size_estimated else "") + human_size(r.size),
                r.digest,
                r.fetch_url if r.status != "missing" else f"NOT FOUND: {r.fetch_url}",
            ]
            for r in report.rows
        ]
        out.table(["layer", "artifact", "size", "checked against", "url"], rows, right={2})
        if report.estimated:
            out.info("~ = an estimate from airgap's table of runfile sizes (no HEAD answered for it)")
        out.info(f"total: {report.totals().text()}")
        if report.media is not None:
            for line in report.media.lines():
                out.info(line)
        for w in report.warnings:
            out.warn(w)
        if app.quiet:  # -q keeps errors and warnings: the verdict's warnings go to stderr then
            for f in report.findings:
                if f.level == "warning":
                    out.warn(f.text())
    for r in report.missing:
        out.warn(f"{r.path}: not found upstream at {r.fetch_url}")
    if report.media is not None and not report.media.ok and (json_mode or app.quiet):
        for line in report.media.lines():
            out.warn(line)
    if json_mode or app.quiet:  # the table mode printed them with the other warnings
        for u in report.unreachable:
            out.warn(u.text())
    if report.blocking:
        raise ManifestError(report.blocking)
    for layer, message, fix in report.layer_failures:
        out.stderr(f"error: {layer}: {message}")
        if fix:
            out.stderr(f"  fix: {fix}")
    if report.missing or report.unreachable or report.layer_failures:
        if report.unreachable:
            out.stderr(
                "error: cannot reach "
                + ", ".join(f"{u.host} ({u.cause})" for u in report.unreachable)
                + "; the sizes from there are unknown and `collect` would fail the same way."
            )
            out.stderr("  fix: check the network (DNS, proxy, firewall) and `mirrors:`, then run plan again.")
        return EXIT_UPSTREAM
    if report.media is not None and not report.media.ok:
        return EXIT_CHECK_FAILED
    return EXIT_OK
