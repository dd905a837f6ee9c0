"""`airgap verify`: re-hash a bundle, name every file that is not as collected, and say what the signature
does (and does not) vouch for."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from airgap.bundle_layout import TRUSTED_KEYS_DIR
from airgap.cli.application import Application, exit_codes_help
from airgap.cli.options import refuse_manifest, require_writable, trust_options, trusted
from airgap.errors import EXIT_CHECK_FAILED, EXIT_OK


@click.command(
    epilog=exit_codes_help(),
    help=f"""Re-hash every file of BUNDLE and name each one that is not as collected.

SHA256SUMS, its signature and the lock are read once; every judgement is made on those bytes. Every
file in the bundle must be listed in SHA256SUMS (only SHA256SUMS and SHA256SUMS.sig are not). Problems
are reported by path and kind: signature, not-a-file (a listed path that is a symbolic link, FIFO,
device or directory: never opened or followed), missing, truncated (shorter than recorded), altered
(other bytes), unexpected (anything SHA256SUMS does not list, anywhere: an added install.sh is one),
unreadable (an I/O error). Folders an operating system leaves on a drive (System Volume Information,
.Trashes, lost+found, ._* files, ...) are named in a note, never read, and do not fail the check.

Signatures are policy: the public keys in --trusted-keys (default {TRUSTED_KEYS_DIR}) and --key are
trusted. With any trusted key, a valid signature by one of them is required. With none, a signature
cannot be checked: the output says "signature NOT checked", and an OK then means only that the files
match SHA256SUMS, not who made the bundle.

Hashing runs on all cores. Exit 0 only when every file holds and the signature is acceptable.

\b
  airgap verify /media/usb/bundle
  airgap verify /media/usb/bundle --key site-a.pub --report report.json
  airgap verify bundle --json > report.json""",
)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--json",
    "json_mode",
    is_flag=True,
    help="Print one JSON object: files, bytes (hashed), totals (the bundle's count and size, as collect and "
    "README.txt give them), problems, signature, notes, ok.",
)
@click.option("-j", "--jobs", type=click.IntRange(1, 256), help="Hashing threads (default: one per core).")
@trust_options
@click.option(
    "--report",
    "report_file",
    type=click.Path(path_type=Path),
    help="Also write the verification report (what was checked, when, by which key) to this file.",
)
@click.pass_obj
def verify(
    app: Application,
    bundle: Path,
    json_mode: bool,
    jobs: int | None,
    key: Path | None,
    trusted_dir: Path,
    report_file: Path | None,
) -> int:
    from airgap.bundle_walk import shown
    from airgap.custody import Snapshot
    from airgap.progress import Progress
    from airgap.units import human_size
    from airgap.verify import verify_bundle, write_report

    out = app.output(json_mode)
    refuse_manifest(bundle, "verify")
    if report_file:
        require_writable(report_file, "--report", directory=False)  # before the hashing, not after it
    keys = trusted(trusted_dir, key)
    snapshot = Snapshot.read(bundle, keys, keys_dir=str(trusted_dir))
    mode = "rich" if sys.stderr.isatty() and not app.quiet and not json_mode else "off"
    with Progress("verify", None, mode=mode) as progress:
        report = verify_bundle(snapshot, jobs=jobs, on_bytes=progress.advance)
    if report_file:
        write_report(report, report_file)
    from airgap.totals import bundle_totals

    # The bundle's count and size as collect and README.txt give them (airgap itself included), from the lock
    # read with the sums; none when the lock could not be trusted (then the problems say why).
    totals = bundle_totals(snapshot.lock) if snapshot.lock is not None else None
    if json_mode:
        data = report.to_dict()
        data["totals"] = totals.to_dict() if totals is not None else None
        out.emit_json(data)
        return EXIT_OK if report.ok else EXIT_CHECK_FAILED
    for p in report.problems:
        out.info(f"{p.kind.upper():<10} {p.path}: {p.detail}")
    rate = report.bytes / report.seconds if report.seconds else 0
    summary = f"{report.files} files, {human_size(report.bytes)} hashed in {report.seconds:.1f}s ({human_size(rate)}/s)"
    sig = snapshot.signature
    if report.ok:
        if sig.status == "valid":
            out.info(f"OK: {summary}; the bundle is complete and intact, and signed by a trusted key.")
        else:
            out.info(f"OK: {summary}; every file matches SHA256SUMS.")
    else:
        out.stderr(f"FAILED: {len(report.problems)} problem(s) in {report.files} files; {summary}.")
    if totals is not None:
        # The hashed count is of SHA256SUMS' lines; this is the bundle's own, as collect and README.txt say it.
        out.info(
            f"bundle: {totals.text()}; SHA256SUMS lists these (a split file by its parts), the lock and README.txt"
        )
    # Never "valid" unless a trusted key checked it; an unchecked signature says nothing about who made it.
    if sig.status == "valid":
        out.info(f"signature: valid, key {sig.key_id} ({shown(sig.trusted_comment.replace(chr(9), ' '))})")
    elif sig.status == "unchecked":
        out.info(f"signature NOT checked: {sig.detail}. Anyone who can change the bundle can change SHA256SUMS too.")
    elif sig.status == "unsigned":
        why = "; this check says the copy is complete, not who made it" if report.ok else ""
        out.info(f"signature: none: {sig.detail}{why}.")
    for note in report.notes:
        out.info(f"note: {note}")
    return EXIT_OK if report.ok else EXIT_CHECK_FAILED
