"""`airgap verify`: re-hash a bundle and name every file that is not as collected."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from airgap.cli.application import Application, exit_codes_help
from airgap.errors import EXIT_CHECK_FAILED, EXIT_OK


@click.command(
    epilog=exit_codes_help(),
    help="""Re-hash every file of BUNDLE and name each one that is not as collected.

Problems are reported by path and kind: missing, truncated (shorter than recorded), altered (other
bytes), unexpected (a file in layers/ that the bundle does not list), unreadable (an I/O error).
Hashing runs on all cores. Exit 0 only when every file holds.

\b
  airgap verify /media/usb/bundle
  airgap verify bundle --json > report.json""",
)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON object: files, bytes, problems, ok.")
@click.option("-j", "--jobs", type=click.IntRange(1, 256), help="Hashing threads (default: one per core).")
@click.option(
    "--key",
    type=click.Path(path_type=Path),
    help="Public key (.pub from `airgap keygen`): the bundle must carry a valid signature by it.",
)
@click.option(
    "--report",
    "report_file",
    type=click.Path(path_type=Path),
    help="Also write the verification report (what was checked, when, by which key) to this file.",
)
@click.pass_obj
def verify(
    app: Application, bundle: Path, json_mode: bool, jobs: int | None, key: Path | None, report_file: Path | None
) -> int:
    from airgap.progress import Progress
    from airgap.signing import load_public
    from airgap.units import human_size
    from airgap.verify import verify_bundle, write_report

    out = app.output(json_mode)
    public = load_public(key) if key else None
    mode = "rich" if sys.stderr.isatty() and not app.quiet and not json_mode else "off"
    with Progress("verify", None, mode=mode) as progress:
        report = verify_bundle(bundle, jobs=jobs, on_bytes=progress.advance, key=public, key_file=str(key or ""))
    if report_file:
        write_report(report, report_file)
    if json_mode:
        out.emit_json(report.to_dict())
    else:
        for p in report.problems:
            out.info(f"{p.kind.upper():<10} {p.path}: {p.detail}")
        rate = report.bytes / report.seconds if report.seconds else 0
        summary = (
            f"{report.files} files, {human_size(report.bytes)} hashed in {report.seconds:.1f}s ({human_size(rate)}/s)"
        )
        if report.signature and report.signature.get("valid") == "yes":
            out.info(
                f"signature: valid, key {report.signature['key_id']} ({report.signature.get('trusted_comment', '')})"
            )
        if report.ok:
            out.info(f"OK: {summary}; the bundle is complete and intact.")
        else:
            out.stderr(f"FAILED: {len(report.problems)} problem(s) in {report.files} files; {summary}.")
    return EXIT_OK if report.ok else EXIT_CHECK_FAILED
