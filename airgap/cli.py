"""The `airgap` command line: parse, call the core, render, map errors to exit codes."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from airgap import __version__
from airgap.errors import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    AirgapError,
    BadInputError,
    ManifestError,
)
from airgap.ui import Output

EXIT_CODES = """\b
Exit codes:
  0  success
  1  a check failed (a bad or missing file, a digest mismatch, a full disk)
  2  bad input (usage, manifest, not a bundle)
  3  an upstream or network failure, after retries
  130 interrupted (Ctrl-C); run the same command again to resume"""

MAIN_HELP = f"""Carry a GPU/LLM serving stack across an air gap, and be sure it arrived intact.

\b
On the connected PC:
  airgap plan manifest.yaml              what would be fetched, from where, how big
  airgap collect manifest.yaml -o B/     download, check, write a bundle in B/
After the transfer (USB drive, DVD, share):
  airgap verify /media/B                 name every missing, truncated, altered file
On the isolated server:
  sudo sh /media/B/install.sh            set airgap up from the bundle, then install it
  sudo airgap install /media/B           every layer in order, resumable; --dry-run first
  airgap smoke / airgap doctor           GPU smoke test / readiness checks with fixes
Try it with no internet and no GPU:
  airgap demo

Example manifests are in the project's manifests/ directory.

{EXIT_CODES}
"""


class Ctx:
    def __init__(self, verbose: bool, quiet: bool) -> None:
        self.verbose = verbose
        self.quiet = quiet

    def out(self, json_mode: bool = False) -> Output:
        return Output(json_mode=json_mode, quiet=self.quiet, verbose=self.verbose)


@click.group(help=MAIN_HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="airgap")
@click.option("-v", "--verbose", is_flag=True, help="Say more (debug lines on stderr, tracebacks on internal errors).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and warnings.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    ctx.obj = Ctx(verbose, quiet)


def _target_status_option(f):  # type: ignore[no-untyped-def]
    return click.option(
        "--target-status",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="A copy of the server's /var/lib/dpkg/status: Debian packages it already has are left out "
        "(docs/packages.md says how to bring that small file out).",
    )(f)


def _use_target_status(path: Path | None) -> None:
    if path is not None:
        from airgap.sources.apt import set_target_status

        set_target_status(path)


def _skip_option(f):  # type: ignore[no-untyped-def]
    return click.option(
        "--skip",
        metavar="LAYER,..",
        help="Leave these layers out (comma-separated), e.g. --skip images,models.",
    )(f)


def _source(mirrors: dict[str, str], retries: int = 5, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    from airgap.sources.http import HttpSource

    return HttpSource(mirrors=mirrors, retries=retries, timeout=timeout)


def _allow_mismatch_option(f):  # type: ignore[no-untyped-def]
    return click.option(
        "--allow-mismatch",
        is_flag=True,
        help="Go ahead despite compatibility errors (driver too old for CUDA, torch for another CUDA, ...): "
        "they become warnings, and collect records them in the lock.",
    )(f)


@cli.command(
    epilog=EXIT_CODES,
    help="""Show what `collect` would fetch, without downloading, and whether the stack fits together.

First the resolved versions and the compatibility verdict, one line per check (ok, warn, ERROR with
the fix): driver vs CUDA's minimum, torch's CUDA build vs cuda.version, vLLM's torch pin, the target GPUs'
architectures vs CUDA and torch, each model's memory vs the GPUs' VRAM, CUDA images vs the driver. Then
each artifact: its layer, its path in the bundle, the URL it comes from (after `mirrors:`), its size
(from an HTTP HEAD, unless --no-head) and what it will be checked against; the total, and with --media
whether it fits the drive (decimal units as drives are sold: 128G = 128 x 10^9 bytes; GiB for binary).
FAT32 cannot hold a file over 4 GiB: --fat32 makes that a failure, drives of 32 GB or less get a
warning (--no-fat32 to say yours is exFAT or ext4).

Exits 2 on a compatibility error (unless --allow-mismatch), 3 if an artifact does not exist upstream,
1 if the bundle does not fit --media (or a file is too big for --fat32).

\b
  airgap plan manifests/llm-ubuntu2204-cuda124.yaml
  airgap plan manifest.yaml --media 128G
  airgap plan manifest.yaml --media 32G --fat32 --no-head
  airgap plan manifest.yaml --json | jq .total_bytes""",
)
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--no-head", is_flag=True, help="Do not contact any server (sizes stay unknown).")
@click.option("--media", metavar="SIZE", help="Size of the drive that will carry the bundle: 128G, 4.7G, 64GB, 500GiB.")
@click.option(
    "--fat32/--no-fat32",
    default=None,
    help="The drive is (not) FAT32. Default: assume FAT32 for drives of 32 GB or less, and warn.",
)
@_allow_mismatch_option
@_target_status_option
@_skip_option
@click.pass_obj
def plan(
    obj: Ctx,
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
    from airgap.bundle import human_size
    from airgap.layers import parse_layer_names
    from airgap.plan import make_plan, parse_size

    out = obj.out(json_mode)
    media_bytes = parse_size(media) if media is not None else None
    if fat32 is not None and media_bytes is None:
        raise BadInputError("--fat32/--no-fat32 need --media SIZE.", "Add the drive's size, e.g. --media 32G --fat32.")
    m = manifest_mod.load(manifest)
    _use_target_status(target_status)
    report = make_plan(
        m,
        _source(m.mirrors, retries=1, timeout=15),
        parse_layer_names(skip, "--skip"),
        head=not no_head,
        allow_mismatch=allow_mismatch,
        media=media_bytes,
        fat32=fat32,
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
        labels = {"ok": "ok", "warning": "warn", "error": "ERROR"}
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
                human_size(r.size) if r.size is not None else "?",
                r.digest,
                r.fetch_url if r.status != "missing" else f"NOT FOUND: {r.fetch_url}",
            ]
            for r in report.rows
        ]
        out.table(["layer", "artifact", "size", "checked against", "url"], rows, right={2})
        unknown = sum(1 for r in report.rows if r.size is None)
        total = human_size(report.total) + (f" (+{unknown} of unknown size)" if unknown else "")
        out.info(f"total: {total} in {len(report.rows)} files")
        if report.media is not None:
            for line in report.media.lines():
                out.info(line)
        for w in report.warnings:
            out.warn(w)
        if obj.quiet:  # -q keeps errors and warnings: the verdict's warnings go to stderr then
            for f in report.findings:
                if f.level == "warning":
                    out.warn(f.text())
    for r in report.missing:
        out.warn(f"{r.path}: not found upstream at {r.fetch_url}")
    if report.media is not None and not report.media.ok and (json_mode or obj.quiet):
        for line in report.media.lines():
            out.warn(line)
    if report.blocking:
        raise ManifestError(report.blocking)
    if report.missing:
        return 3
    if report.media is not None and not report.media.ok:
        return EXIT_CHECK_FAILED
    return EXIT_OK


@cli.command(
    epilog=EXIT_CODES,
    help="""Download everything MANIFEST names into a bundle directory.

Every file is hashed while it downloads, checked against a pinned sha256 or the publisher's digest where
one exists, and renamed from *.part only once it matches. Interrupted? Run the same command again: files
already verified are not transferred again, partial ones resume with HTTP Range. The bundle gets
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
    help="Attempts per file after a dropped connection or a 5xx, with backoff.",
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
    "--since",
    type=click.Path(path_type=Path),
    help="Make a delta bundle: carry only what changed since this earlier bundle (its dir or lock).",
)
@click.option(
    "--tool/--no-tool",
    default=True,
    show_default=True,
    help="Put airgap itself in the bundle (tool/: its wheels for the target's python, fetched from "
    "PyPI) with install.sh, so `sudo sh install.sh` is all the server needs.",
)
@_allow_mismatch_option
@_target_status_option
@_skip_option
@click.pass_obj
def collect(
    obj: Ctx,
    manifest: Path,
    output: Path | None,
    jobs: int,
    retries: int,
    timeout: float,
    json_mode: bool,
    max_file_size: str | None,
    sign_key: Path | None,
    since: Path | None,
    tool: bool,
    allow_mismatch: bool,
    target_status: Path | None,
    skip: str | None,
) -> int:
    from dataclasses import asdict

    from airgap import manifest as manifest_mod
    from airgap.bundle import human_size, load_base
    from airgap.collect import collect as do_collect
    from airgap.layers import parse_layer_names
    from airgap.parts import parse_size
    from airgap.signing import load_secret, sign_bundle

    out = obj.out(json_mode)
    m = manifest_mod.load(manifest)
    _use_target_status(target_status)
    # Options are checked before any download: a wrong key path found after 60 GB is a wasted hour.
    limit = parse_size(max_file_size) if max_file_size else None
    secret = load_secret(sign_key) if sign_key else None
    base = load_base(since) if since else None
    dest = output or Path(f"bundle-{m.name}")
    mode = "off" if (obj.quiet or json_mode) and not sys.stderr.isatty() else "auto"
    report = do_collect(
        m,
        dest,
        _source(m.mirrors, retries, timeout),
        jobs=jobs,
        skip=parse_layer_names(skip, "--skip"),
        progress_mode=mode,
        warn=out.warn,
        allow_mismatch=allow_mismatch,
        max_file_size=limit,
        since=base,
        tool=tool,
    )
    if secret is not None:
        sign_bundle(dest, secret, m.name)
    if json_mode:
        data = asdict(report)
        data.update(
            total_bytes=report.total_size,
            transferred_bytes=report.transferred,
            saved_by_base_bytes=report.saved_by_base,
            signed=secret is not None,
            ok=True,
        )
        out.emit_json(data)
        return EXIT_OK
    rows = [[f.layer, f.path, human_size(f.size), f.status] for f in report.files]
    out.table(["layer", "file", "size", "status"], rows, right={2})
    for path in report.removed_stale:
        out.info(f"removed {path} (no longer in the manifest)")
    out.info(
        f"bundle {dest}: {len(report.files)} files, {human_size(report.total_size)}; "
        f"transferred {human_size(report.transferred)} in {report.seconds:.1f}s"
    )
    if base is not None:
        carried = sum(1 for f in report.files if f.status != "in base")
        out.info(
            f"delta against '{base[0].name}': carries {carried} of {len(report.files)} files, "
            f"{human_size(report.saved_by_base)} saved; install it with --base"
        )
    if secret is not None:
        out.info(f"signed with key {secret.public().key_id_hex}")
    out.info(f"next: copy it, then `airgap verify {dest}` on the other side")
    return EXIT_OK


@cli.command(
    epilog=EXIT_CODES,
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
    obj: Ctx, bundle: Path, json_mode: bool, jobs: int | None, key: Path | None, report_file: Path | None
) -> int:
    from airgap.bundle import human_size
    from airgap.progress import Progress
    from airgap.signing import load_public
    from airgap.verify import verify_bundle, write_report

    out = obj.out(json_mode)
    public = load_public(key) if key else None
    mode = "rich" if sys.stderr.isatty() and not obj.quiet and not json_mode else "off"
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
            print(f"FAILED: {len(report.problems)} problem(s) in {report.files} files; {summary}.", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_CHECK_FAILED


@cli.command(
    help="""Run the whole trip on this machine, with no internet and no GPU.

Serves sample artifacts (a driver and a CUDA installer stand-in, a Docker tgz, a file) from a local HTTP
server on 127.0.0.1, collects them through a manifest whose `mirrors:` point at it, copies the bundle
as a USB drive would, verifies the copy, then flips one byte to show what a bad transfer looks like.""",
)
@click.option(
    "--workdir", type=click.Path(path_type=Path), help="Keep the demo's files here (default: a temp dir, removed)."
)
@click.pass_obj
def demo(obj: Ctx, workdir: Path | None) -> int:
    from airgap.demo import run_demo

    return run_demo(obj.out(), workdir)


@cli.command(
    epilog=EXIT_CODES,
    help="""Check this server is ready to serve models: FIELD notes' readiness checklist, one line per check.

GPU on the PCI bus, nouveau, nvidia-smi, NVML, driver vs the CUDA toolkit (nvcc on PATH; nvidia-smi's
"CUDA Version" is the driver's maximum, not the toolkit), cuDNN, PyTorch a CUDA build for the right CUDA,
Docker up, the nvidia runtime in /etc/docker/daemon.json and dockerd restarted since, Compose v2, your user
in the docker group, GPU temperature, throttling, ECC and memory, disk space, RAM vs VRAM, the OOM killer
in the kernel log, models readable by the containers' uid 1000. Each is pass, warn, fail or skip, with
the fix. No bundle is needed; --bundle adds what the bundle expects. Exits 1 if any check fails.

\b
  airgap doctor
  sudo airgap doctor --bundle /media/usb/bundle
  airgap doctor --json | jq '.checks[] | select(.status == "fail")'""",
)
@click.option("--bundle", type=click.Path(path_type=Path), help="A bundle whose lock says what to expect.")
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Look at this tree instead of / (a mounted image, a chroot, tests).",
)
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON object: checks, facts, ok.")
@click.pass_obj
def doctor(obj: Ctx, bundle: Path | None, root: Path, json_mode: bool) -> int:
    from airgap.bundle import read_lock
    from airgap.doctor import FAIL, PASS, SKIP, WARN, run_doctor
    from airgap.host import Host

    out = obj.out(json_mode)
    if not root.is_dir():
        raise BadInputError(f"--root {root}: not a directory.", "Give the top of the tree to check, e.g. --root /mnt.")
    lock = read_lock(bundle) if bundle is not None else None
    report = run_doctor(Host(root=root.resolve()), lock)
    report.bundle = str(bundle) if bundle is not None else None
    if json_mode:
        out.emit_json(report.to_dict())
    else:
        where = "" if report.root == "/" else f" (root {report.root})"
        out.heading(f"airgap doctor{where}" + (f", expecting bundle {bundle}" if bundle else ""))
        labels = {PASS: "pass", WARN: "warn", FAIL: "FAIL", SKIP: "skip"}
        width = max((len(c.name) for c in report.checks), default=10)
        for c in report.checks:
            out.info(f"  {labels.get(c.status, c.status):<4}  {c.name:<{width}}  {c.message}")
            if c.fix and c.status in (WARN, FAIL):
                out.info(f"  {'':<4}  {'':<{width}}  fix: {c.fix}")
        n = report.counts()
        out.info(f"{n[PASS]} pass, {n[WARN]} warn, {n[FAIL]} fail, {n[SKIP]} skipped")
        if obj.quiet:  # -q keeps what needs attention, on stderr
            for c in report.checks:
                line = f"{c.name}: {c.message}" + (f"; fix: {c.fix}" if c.fix else "")
                if c.status == FAIL:
                    print(f"fail: {line}", file=sys.stderr)
                elif c.status == WARN:
                    out.warn(line)
    if not report.ok:
        failed = ", ".join(c.name for c in report.checks if c.status == FAIL)
        print(f"not ready: {failed} failed (fixes above).", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return EXIT_OK


# Commands of the install side live in their own modules; importing them registers them on `cli`.
from airgap import cli_bundle, cli_install  # noqa: E402,F401


def main() -> None:
    try:
        rv = cli.main(standalone_mode=False)
    except click.exceptions.UsageError as exc:
        exc.show()
        sys.exit(EXIT_BAD_INPUT)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("interrupted; run the same command again to resume.", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except ManifestError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in the manifest; nothing was downloaded.", file=sys.stderr)
        sys.exit(exc.exit_code)
    except AirgapError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  fix: {exc.hint}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception:
        if "-v" in sys.argv or "--verbose" in sys.argv:
            traceback.print_exc()
        exc_type, exc_value = sys.exc_info()[:2]
        print(
            f"internal error: {exc_type.__name__ if exc_type else 'error'}: {exc_value}\n"
            "  This is a bug in airgap. Run again with -v for the traceback and report it.",
            file=sys.stderr,
        )
        sys.exit(EXIT_CHECK_FAILED)
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)
