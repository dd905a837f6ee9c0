"""SIGINT, SIGTERM and SIGHUP: airgap stops cleanly, and never leaves a command it started running.

Python runs signal handlers in the main thread only, so handlers are set there (never from another thread,
where `signal.signal` refuses) for the span of a `with` block, and the previous ones are put back after it.
A signal ignored when the block starts stays ignored (`nohup` ignores SIGHUP): the operator chose that, and
the commands airgap runs inherit it.

- `stops_raise()`: while an install holds its lock, SIGTERM and SIGHUP stop it the way Ctrl-C does, by an
  exception raised in the main thread (`StopRequested`, a KeyboardInterrupt, so that no `except Exception`
  swallows it), so that the layer under way is recorded and the lock released. By default they would end the
  process on the spot, its state unsaved.
- `run_relayed()`: while a command runs (NVIDIA's installers, dpkg), a stop signal is passed on to the
  command's process group and airgap waits for the command to exit; only then does it stop itself, with
  `Interrupted` (SIGINT) or `Terminated` (SIGTERM, SIGHUP). The command runs in a session of its own, so
  that the signal reaches all of it (a makeself archive runs the real installer as its child) and so that it
  has no terminal to wait on. A command still running `grace` seconds after the first signal is killed, with
  a note saying so.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from airgap.errors import Interrupted, Terminated

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# How long a command may take to exit after the stop signal was passed on: NVIDIA's installers undo what they
# started (a half-built kernel module, an unpacked tree) and must not be killed while they do.
STOP_GRACE = 120.0
# How often the wait for a command looks up from it: to tell the operator a signal was passed on, and to
# count the grace. Not a synchronisation: the command's exit ends the wait at once.
TICK = 0.5
# After SIGKILL, how long to wait for the last output: a daemon the command started may hold its pipe.
DRAIN = 10.0

Handler = Callable[[int, FrameType | None], Any] | int | None

RESUME_HINT = "Run the same command again: what finished is kept, and it resumes where it stopped."


class StopRequested(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread as Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def stop_error(signum: int, detail: str = "") -> Interrupted:
    """The error a stop signal ends a command with: Interrupted (exit 130) for SIGINT, Terminated (143) else."""
    cls = Interrupted if signum == signal.SIGINT else Terminated
    return cls(f"stopped by {signal_name(signum)}{detail}.", RESUME_HINT)


def interrupted_by(exc: KeyboardInterrupt, detail: str = "") -> Interrupted:
    """The error for a KeyboardInterrupt: Ctrl-C's, or SIGTERM's or SIGHUP's raised by `stops_raise`."""
    return stop_error(exc.signum if isinstance(exc, StopRequested) else signal.SIGINT, detail)


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _set(handlers: Mapping[int, Handler]) -> None:
    for sig, handler in handlers.items():
        # None: the handler was not set from Python; the default is the closest there is to put back.
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _take(signals: tuple[int, ...], handler: Callable[[int, FrameType | None], Any]) -> dict[int, Handler]:
    """Set `handler` for each signal not ignored now; return what was there, to be put back."""
    previous: dict[int, Handler] = {}
    for sig in signals:
        current = signal.getsignal(sig)
        if current == signal.SIG_IGN:
            continue
        previous[sig] = current
        signal.signal(sig, handler)
    return previous


@contextmanager
def stops_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise StopRequested in the main thread while the block runs (Ctrl-C already raises
    KeyboardInterrupt). Outside the main thread, nothing changes."""
    if not in_main_thread():
        yield
        return

    def raise_stop(signum: int, frame: FrameType | None) -> None:
        raise StopRequested(signum)

    previous = _take((signal.SIGTERM, signal.SIGHUP), raise_stop)
    try:
        yield
    finally:
        _set(previous)


class Relay:
    """While the block runs, stop signals are recorded and passed on to one process group (`attach`) instead
    of stopping airgap. Signals that came before `attach` are passed on by it."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.active = False  # handlers set: only in the main thread
        self._pgid: int | None = None
        self._previous: dict[int, Handler] = {}

    def __enter__(self) -> Relay:
        if in_main_thread():
            self._previous = _take(STOP_SIGNALS, self._on_signal)
            self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        _set(self._previous)
        self._previous = {}
        self.active = False

    def attach(self, pgid: int) -> None:
        self._pgid = pgid
        # A signal between these two lines is passed on twice, never lost.
        for sig in list(self.received):
            self._pass_on(sig)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self._pgid is not None:
            self._pass_on(signum)

    def _pass_on(self, sig: int) -> None:
        assert self._pgid is not None
        with suppress(ProcessLookupError):  # it has exited already
            os.killpg(self._pgid, sig)


@dataclass
class Finished:
    """How a command run by `run_relayed` ended."""

    returncode: int
    output: str
    stopped_by: int | None  # the first stop signal airgap received (and passed on) while it ran
    note: str  # what airgap did to it, for the log and the error: "" when it ended by itself


def tell_stderr(text: str) -> None:
    """A line for the operator while airgap waits; a closed terminal (SIGHUP) must not turn it into an error."""
    with suppress(OSError, ValueError):
        print(f"airgap: {text}", file=sys.stderr, flush=True)


def run_relayed(
    argv: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout: float | None = None,
    grace: float = STOP_GRACE,
    started: Callable[[int], None] | None = None,
    tell: Callable[[str], None] = tell_stderr,
) -> Finished:
    """Run `argv` to its end, stdout and stderr together, stdin empty. Stop signals received meanwhile are
    passed on to it (see the module's docstring). Past `timeout` seconds it is killed (returncode 124).
    `started(pid)` is called once it runs in its own process group (pid = process group id). Raises
    FileNotFoundError when there is no such command."""
    with Relay() as relay:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            text=True,
            errors="replace",
            # Its own process group only where signals are relayed to it; elsewhere it stays in airgap's, and
            # a Ctrl-C at the terminal reaches it directly, as before.
            start_new_session=relay.active,
        )

        def kill() -> None:
            with suppress(ProcessLookupError):
                if relay.active:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()

        try:
            if relay.active:
                relay.attach(proc.pid)
                if started is not None:
                    started(proc.pid)
            return _wait(proc, argv, relay, kill, timeout, grace, tell)
        except BaseException:
            # Whatever ends airgap's wait early (a bug, an exception from a handler), the command must not
            # run on unwatched.
            kill()
            proc.wait()
            raise


def _wait(
    proc: subprocess.Popen[str],
    argv: list[str],
    relay: Relay,
    kill: Callable[[], None],
    timeout: float | None,
    grace: float,
    tell: Callable[[str], None],
) -> Finished:
    start = time.monotonic()
    deadline = start + timeout if timeout is not None else None
    kill_at: float | None = None  # set by the first stop signal
    drain_until: float | None = None  # set once it is killed
    seen = 0
    partial: bytes | str | None = None  # what it printed so far, as the last TimeoutExpired holds it
    note = ""
    timed_out = False
    while True:
        now = time.monotonic()
        ends = [t for t in (deadline, kill_at, drain_until) if t is not None]
        wait: float | None = min(ends) - now if ends else None
        if relay.active:
            wait = TICK if wait is None else min(wait, TICK)
        try:
            out, _ = proc.communicate(timeout=max(wait, 0.0) if wait is not None else None)
            break
        except subprocess.TimeoutExpired as exc:
            partial = exc.output
        now = time.monotonic()
        if len(relay.received) > seen:
            seen = len(relay.received)
            if kill_at is None and drain_until is None:
                kill_at = now + grace
                name = signal_name(relay.received[0])
                tell(
                    f"{name}: passed on to `{shown(argv)}` (pid {proc.pid}); waiting for it to exit, "
                    f"at most {grace:.0f}s, then it is killed"
                )
        if drain_until is not None:
            if now >= drain_until:
                # Killed, yet its output pipe stays open: something it started holds it. Stop reading.
                out = partial.decode(errors="replace") if isinstance(partial, bytes) else (partial or "")
                proc.wait()
                break
            continue
        if kill_at is not None and now >= kill_at:
            note = f"was killed: still running {grace:.0f}s after it was passed {signal_name(relay.received[0])}"
            tell(f"`{shown(argv)}` (pid {proc.pid}) {note}")
        elif deadline is not None and now >= deadline:
            note = f"killed after {timeout}s"
            timed_out = True
        else:
            continue
        kill()
        kill_at = deadline = None
        drain_until = time.monotonic() + DRAIN
    returncode = 124 if timed_out else proc.returncode
    stopped_by = relay.received[0] if relay.received else None
    return Finished(returncode, out or "", stopped_by, note)


def shown(argv: list[str], limit: int = 120) -> str:
    text = shlex.join(argv)
    return text if len(text) <= limit else text[: limit - 3] + "..."
