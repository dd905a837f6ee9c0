"""`airgap install`: verify, preflight, then each layer in order, resumable across failures and reboots.

State lives in /var/lib/airgap/state.json (under --root), rewritten atomically after every layer, so a run
stopped anywhere (power loss, Ctrl-C, a failed layer, the reboot the driver asks for) picks up at the right
layer. The full log goes to /var/log/airgap/.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from airgap.bundle_layout import LAYER_ORDER, SUMS_NAME
from airgap.custody import TRUSTED_KEYS_DIR, Snapshot, trusted_keys
from airgap.delta import check_base
from airgap.errors import (
    EXIT_CHECK_FAILED,
    EXIT_REBOOT,
    BadInputError,
    InstallError,
    PreflightFailed,
    RebootPending,
    RebootRequired,
    VerifyFailed,
)
from airgap.host import CommandFailed, Host
from airgap.install_context import InstallContext, InstallOptions
from airgap.install_lock import hold as hold_install_lock
from airgap.layers import LAYERS, parse_layer_names
from airgap.layers.base import Layer
from airgap.lock import Lock
from airgap.preflight import ALWAYS, run_preflight, skippable
from airgap.probes import is_rooted
from airgap.signing import PublicKey
from airgap.units import now_utc
from airgap.verdict import Check, Status
from airgap.verify import verify_bundle

STEPS: tuple[str, ...] = (*LAYER_ORDER, "smoke")
STATE_PATH = "/var/lib/airgap/state.json"
LOG_DIR = "/var/log/airgap"

Say = Callable[[str], None]


@dataclass
class StepOutcome:
    step: str
    status: str  # installed, skipped, failed, reboot, not-run; in a dry run: would install, would run
    detail: str = ""
    command: str = ""
    output_tail: str = ""
    fix: str = ""
    seconds: float = 0.0


@dataclass
class InstallReport:
    bundle: str
    log: str = ""
    dry_run: bool = False
    preflight: list[Check] = field(default_factory=list)
    steps: list[StepOutcome] = field(default_factory=list)
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class State:
    """What earlier runs did on this machine. Only ever replaced whole (atomic write)."""

    bundle: str = ""
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    reboot: dict[str, str] | None = None
    updated: str = ""

    @classmethod
    def load(cls, host: Host) -> State:
        text = host.read_text(STATE_PATH)
        if not text:
            return cls()
        try:
            raw = json.loads(text)
            return cls(raw.get("bundle", ""), raw.get("layers", {}), raw.get("reboot"), raw.get("updated", ""))
        except (ValueError, AttributeError):
            # A damaged state only costs re-checking: every layer asks the machine whether it is installed.
            return cls()

    def save(self, host: Host) -> None:
        self.updated = now_utc()
        host.write_file(STATE_PATH, json.dumps(asdict(self), indent=2) + "\n", mode=0o600)


def layer_fingerprint(lock: Lock, layer: str) -> str:
    """Identifies what a layer installs: its files' digests. Same fingerprint = same version installed."""
    h = hashlib.sha256()
    for a in lock.artifacts:
        if a.layer == layer:
            h.update(f"{a.path}\0{a.sha256}\n".encode())
    return h.hexdigest()


def parse_steps(value: str | None, option: str) -> set[str]:
    return parse_layer_names(value, option, STEPS)


def select_steps(
    lock: Lock, only: set[str], skip: set[str], from_step: str | None, note: Say | None = None
) -> list[str]:
    """The steps to run, in order. A layer named in --only that the bundle lacks is refused (an install of
    nothing is no answer); one named in --skip or --from is said to `note` and otherwise ignored."""
    present = {a.layer for a in lock.artifacts} | {"smoke"}
    steps = [s for s in STEPS if s in present]
    holds = ", ".join(s for s in steps if s != "smoke") or "no layers"
    if from_step:
        if from_step not in STEPS:
            close = difflib.get_close_matches(from_step, STEPS, n=1)
            guess = f" Did you mean {close[0]!r}?" if close else ""
            raise BadInputError(f"--from: unknown layer {from_step!r}.{guess}", f"Layers: {', '.join(STEPS)}.")
        if from_step not in present and note is not None:
            note(f"--from {from_step}: the bundle has no {from_step} layer; starting at the next one it holds")
        steps = [s for s in steps if STEPS.index(s) >= STEPS.index(from_step)]
    absent = [s for s in STEPS if s in only and s not in present]
    if absent:
        raise BadInputError(
            f"--only: the bundle has no {' or '.join(absent)} layer; it holds: {holds} (and the smoke test). "
            "Nothing was installed.",
            "Name layers it holds, or get a bundle with that layer collected on the connected PC.",
        )
    if only:
        steps = [s for s in steps if s in only]
    for s in STEPS:
        if s in skip and s not in present and note is not None:
            note(f"--skip {s}: the bundle has no {s} layer; nothing to leave out")
    steps = [s for s in steps if s not in skip]
    if not steps:
        raise BadInputError(
            f"--only/--skip/--from leave nothing to install; the bundle holds: {holds} (and the smoke test).",
            "Name at least one of those layers.",
        )
    return steps


def _layer(name: str) -> Layer | None:
    return next((layer for layer in LAYERS if layer.name == name), None)


def boot_id(host: Host) -> str:
    return (host.read_text("/proc/sys/kernel/random/boot_id") or "").strip()


def install_bundle(
    bundle: Path,
    host: Host,
    *,
    only: set[str] | None = None,
    skip: set[str] | None = None,
    from_step: str | None = None,
    verify: bool = True,
    options: InstallOptions | None = None,
    say: Say = print,
    warn: Say = print,
    key: PublicKey | None = None,
    base: Path | None = None,
) -> InstallReport:
    report = InstallReport(bundle=str(bundle), dry_run=host.dry_run)
    if not (bundle / SUMS_NAME).exists() and not (bundle / "airgap.lock.json").exists():
        raise BadInputError(
            f"{bundle}: not an airgap bundle (no SHA256SUMS, no airgap.lock.json).",
            "Point at the bundle's top directory, the one holding README.txt.",
        )
    check_can_write(host)
    # One install at a time, refused at once: taken before verifying, so a second run neither waits
    # minutes to be told nor verifies a bundle that a running `--move` install is emptying. Released
    # with nothing left behind, so a refused bundle still leaves no trace on the server.
    with hold_install_lock(host):
        # Read once: SHA256SUMS, its signature and the lock come into memory here and every later decision
        # is made on these bytes; artifacts are hashed again on the read that installs them.
        keys = trusted_keys(host.path(TRUSTED_KEYS_DIR), [key] if key is not None else [])
        snapshot = Snapshot.read(bundle, keys)
        _check_signature(snapshot, warn)
        lock = snapshot.require_lock()
        # Before the minutes of hashing: a layer the bundle lacks is known from the lock alone.
        steps = select_steps(lock, only or set(), skip or set(), from_step, warn)
        if verify:
            say(f"verifying {bundle} ...")
            v = verify_bundle(snapshot)
            if not v.ok:
                lines = [f"  {p.kind.upper():<10} {p.path}: {p.detail}" for p in v.problems]
                raise VerifyFailed(
                    "The bundle failed verification; nothing was installed:\n" + "\n".join(lines),
                    "Copy the named files again from the original bundle (airgap verify BUNDLE lists them).",
                )
            say(f"verified {v.files} files in {v.seconds:.1f}s")
        else:
            warn(
                "--no-verify: the bundle was not re-hashed up front; each file is still hashed as it is "
                "installed, so a damaged one stops its layer part-way instead of before anything starts"
            )
        base_lock = check_base(lock, base)
        if base_lock is not None:
            say(f"base bundle {base}: every artifact this delta references is there, intact")
        # The log starts once the bundle is known good: a refused bundle leaves no trace on the server.
        log, report.log = open_log(host)
        host.log = log
        try:
            host.note(f"airgap install {bundle} ({lock.name}), verified: {verify}")
            host.note(f"signature: {snapshot.signature.status}: {snapshot.signature.detail}")
            return _install(bundle, host, lock, report, steps, skip or set(), options, base, base_lock)
        finally:
            host.log = None
            if log is not None:
                log.close()


def _check_signature(snapshot: Snapshot, warn: Say) -> None:
    """Signatures are policy: with a trusted key on this server (or --key), a valid signature by one of
    them is required, with or without --no-verify; without one, a signed bundle is said to be unchecked."""
    sig = snapshot.signature
    if not sig.acceptable:
        raise VerifyFailed(
            f"signature: {sig.detail}; nothing was installed.",
            "Get an intact bundle signed by a key this server trusts (see /etc/airgap/keys), or check whether "
            "the right public key was installed there.",
        )
    if sig.status == "unchecked":
        warn(f"signature NOT checked: {sig.detail}")


def _install(
    bundle: Path,
    host: Host,
    lock: Lock,
    report: InstallReport,
    steps: list[str],
    skip: set[str],
    options: InstallOptions | None,
    base: Path | None,
    base_lock: Lock | None,
) -> InstallReport:
    ctx = InstallContext(
        host=host, bundle=bundle, lock=lock, options=options or InstallOptions(), base=base, base_lock=base_lock
    )
    _check_model_dest(ctx)
    try:
        return _install_steps(ctx, report, steps, skip)
    finally:
        ctx.cleanup()  # joined copies of split files are not left behind


def _check_model_dest(ctx: InstallContext) -> None:
    """--model-dest names models of this bundle, said before anything runs (also when models is skipped)."""
    carried = {str(a.meta.get("repo", "")) for a in ctx.lock.artifacts if a.layer == "models"}
    unknown = sorted(set(ctx.options.model_dest) - carried)
    if unknown:
        raise BadInputError(
            f"--model-dest names {', '.join(unknown)}, which this bundle does not carry.",
            "Name a model of the bundle as its repo id (owner/name): "
            + (", ".join(sorted(carried)) or "this bundle has no model")
            + ".",
        )


def _install_steps(ctx: InstallContext, report: InstallReport, steps: list[str], skip: set[str]) -> InstallReport:
    host, lock = ctx.host, ctx.lock
    state = State.load(host)

    if state.reboot and not host.dry_run:
        if state.reboot.get("boot_id") and state.reboot["boot_id"] == boot_id(host):
            raise RebootPending(
                f"A reboot is still due ({state.reboot.get('reason', 'driver')}); nothing was installed.",
                "Reboot the machine, then run the same command again.",
            )
        host.note(f"rebooted since {state.reboot.get('layer')} asked for it; continuing")
        state.reboot = None

    needs: set[str] = set(ALWAYS)
    for step in steps:
        layer = _layer(step)
        if layer is not None:
            needs |= layer.preflight
    if "smoke" in steps:
        needs.add("gpu")
    report.preflight = run_preflight(ctx, steps, needs)
    failed_checks = [c for c in report.preflight if c.status is Status.FAIL]
    if failed_checks:
        report.steps = [StepOutcome(s, "not-run") for s in steps]
        lines = [f"  {c.name}: {c.message}; fix: {c.fix}" for c in failed_checks]
        raise PreflightFailed(
            "Preflight failed; nothing was changed:\n" + "\n".join(lines),
            _preflight_hint(failed_checks, steps, skip & ({a.layer for a in lock.artifacts} | {"smoke"})),
        )

    state.bundle = lock.name
    for i, step in enumerate(steps):
        try:
            outcome = _run_step(ctx, step, state)
        finally:
            ctx.release_staged()  # a layer's private copies go when it is done: a CUDA runfile is 4 GB
        report.steps.append(outcome)
        if outcome.status in ("failed", "reboot"):
            report.steps += [StepOutcome(s, "not-run") for s in steps[i + 1 :]]
            report.exit_code = EXIT_REBOOT if outcome.status == "reboot" else EXIT_CHECK_FAILED
            break
    return report


def _preflight_hint(failed: list[Check], steps: list[str], skip: set[str]) -> str:
    """Fix the checks, or leave out the layers that need them: only layers this install would run (so only
    ones the bundle holds), the --skip already given kept, and only when that spares every failed check."""
    spared = [skippable(c.name, steps) for c in failed]
    if not all(spared):
        return "Fix the above."
    leave = {name for names in spared for name in names} | skip
    return f"Fix the above, or leave out the layers that need it: --skip {','.join(s for s in STEPS if s in leave)}."


def _run_step(ctx: InstallContext, step: str, state: State) -> StepOutcome:
    from airgap.errors import Interrupted
    from airgap.signals import interrupted_by

    host = ctx.host
    start = time.monotonic()
    if step == "smoke":
        if host.dry_run:  # what it would find depends on the layers before it, which a dry run leaves out
            return StepOutcome(step, "would run", "the GPU smoke test, once the layers before it are in")
        from airgap.smoke import run_smoke

        smoke = run_smoke(host, ctx.lock, expect_gpus=ctx.options.expect_gpus)
        failed = [c for c in smoke.checks if c.status is Status.FAIL]
        if failed:
            return StepOutcome(
                step,
                "failed",
                "; ".join(f"{c.name}: {c.message}" for c in failed),
                fix=" ".join(c.fix for c in failed if c.fix),
                seconds=time.monotonic() - start,
            )
        return StepOutcome(step, "installed", "GPU smoke test passed", seconds=time.monotonic() - start)

    layer = _layer(step)
    if layer is None or not layer.installable:
        return StepOutcome(step, "skipped", "this version of airgap cannot install this layer yet")
    fingerprint = layer_fingerprint(ctx.lock, step)
    already = layer.installed(ctx)
    if already:
        _record(ctx, state, step, "installed", fingerprint, already)
        return StepOutcome(step, "skipped", already)
    host.note(f"--- {step}")
    try:
        summary = layer.install(ctx)
    except (Interrupted, KeyboardInterrupt) as exc:
        # Ctrl-C, SIGTERM or SIGHUP, in a command (passed on to it, and waited for) or in airgap itself: the
        # state says where the install stopped, and the next run asks the layer what is left (installed()).
        stop = exc if isinstance(exc, Interrupted) else interrupted_by(exc, f" during the {step} layer")
        host.note(f"{step}: {stop.message}")
        _record(ctx, state, step, "interrupted", fingerprint, stop.message)
        if stop is exc:
            raise
        raise stop from None
    except RebootRequired as exc:
        state.reboot = {"layer": step, "reason": exc.message, "boot_id": boot_id(host), "at": now_utc()}
        _record(ctx, state, step, "reboot", fingerprint, exc.message)
        return StepOutcome(step, "reboot", exc.message, fix=exc.hint or "", seconds=time.monotonic() - start)
    except InstallError as exc:
        _record(ctx, state, step, "failed", fingerprint, exc.message)
        res = exc.result
        return StepOutcome(
            step,
            "failed",
            exc.message,
            command=" ".join(res.argv) if res else "",
            output_tail=res.tail() if res else "",
            fix=exc.hint or "",
            seconds=time.monotonic() - start,
        )
    except CommandFailed as exc:
        _record(ctx, state, step, "failed", fingerprint, str(exc))
        return StepOutcome(
            step,
            "failed",
            f"a command failed (exit {exc.result.returncode})",
            command=" ".join(exc.result.argv),
            output_tail=exc.result.tail(),
            fix="see the output above and the install log",
            seconds=time.monotonic() - start,
        )
    _record(ctx, state, step, "installed", fingerprint, summary)
    status = "would install" if host.dry_run else "installed"
    return StepOutcome(step, status, summary, seconds=time.monotonic() - start)


def _record(ctx: InstallContext, state: State, step: str, status: str, fingerprint: str, detail: str) -> None:
    state.layers[step] = {"status": status, "fingerprint": fingerprint, "detail": detail, "at": now_utc()}
    state.save(ctx.host)


def check_can_write(host: Host) -> None:
    """Before the lock, the verification and the log: an install that is to change this server must be
    able to. Not root on the real / is an ordinary mistake (a missing sudo), said so, not a crash on the
    first directory it cannot make; a --root must be writable (root on a read-only medium is refused too)."""
    if host.dry_run:
        return
    if not is_rooted(host) and os.geteuid() != 0:
        raise BadInputError(
            "install needs root: it writes /usr, /etc, /var/lib/airgap and /var/log/airgap; nothing was done.",
            "Run it with sudo (or --dry-run / --root DIR you can write).",
        )
    for server_dir in ("/", LOG_DIR):
        where = host.path(server_dir)
        while not where.exists() and where != where.parent:
            where = where.parent
        if where.is_dir() and not os.access(where, os.W_OK | os.X_OK):
            raise BadInputError(
                f"{where}: cannot write there (read-only, or not this user's); install needs it for "
                f"{'the files it installs' if server_dir == '/' else 'its log'}; nothing was done.",
                "Run it with sudo (or --dry-run / --root DIR you can write).",
            )


def open_log(host: Host) -> tuple[TextIO | None, str]:
    """The install log file (a server path), or none in a dry run (which changes nothing, logs included)."""
    if host.dry_run:
        return None, ""
    # One file per run, never shared: two runs in the same second get -01 and -02 (names sort by time).
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        host.path(LOG_DIR).mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            server_path = f"{LOG_DIR}/install-{stamp}-{n:02d}.log"
            try:
                return open(host.path(server_path), "x", encoding="utf-8"), server_path
            except FileExistsError:
                continue
    except OSError as exc:
        # check_can_write tested this before the work; a directory changed since (or a full disk) lands here.
        raise BadInputError(
            f"{host.path(LOG_DIR)}: cannot make the install log there ({exc.strerror}); nothing was installed.",
            "Run it with sudo (or --root DIR you can write).",
        ) from None
    raise BadInputError(f"{host.path(LOG_DIR)}: 999 install logs made this second; refusing to make more.")
