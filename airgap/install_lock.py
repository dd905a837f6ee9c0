"""One `airgap install` at a time on a server: an exclusive lock on /var/lib/airgap/install.lock.

Two installs at once would run two NVIDIA installers against one kernel, or two dpkg against one database.
The lock is a flock(2) on that file, taken without waiting: a second install refuses at once and names the
first (its pid, start time and command line, which the holder writes into the file). The kernel frees a
flock when its holder ends, however it ends (kill -9, a crash), so there is never a stale lock to remove.

One gap a flock leaves: airgap killed with SIGKILL cannot stop the command it was running (commands run in
a session of their own so that a stop signal reaches all of them, see airgap/signals.py), and that command,
an NVIDIA installer, runs on after the lock is free. So the holder also writes the command it is running
into the file, and the next install refuses while that command's process group is alive.

The holder removes the file (and the directories it made for it) when it is done: a refused bundle leaves
no trace on the server. Removing a lock file is safe only with the check in `_lock`: a file locked after
its holder removed it is not the lock any more, and is given up for the one now at the path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airgap.errors import BadInputError, InstallBusy, InstallError
from airgap.fsutil import SymlinkRefused, open_dir
from airgap.signals import StopRequested, stop_error, stops_raise
from airgap.units import now_utc

if TYPE_CHECKING:
    from airgap.host import Host

LOCK_PATH = "/var/lib/airgap/install.lock"
MAX_INFO = 64 * 1024  # the holder writes well under 1 KiB of it; more is not read (bounded input)
_PROC = Path("/proc")  # the running processes are this machine's, whatever --root says


@dataclass
class _Held:
    fd: int
    dir_fd: int
    made: list[list[str]]  # the directories made for the lock, outermost first, as path components
    parent_times: tuple[int, int] | None  # atime and mtime of the directory holding the outermost one made


@contextlib.contextmanager
def hold(host: Host) -> Iterator[None]:
    """Hold the server's install lock for the block, or raise InstallBusy at once, naming who holds it.

    While it is held, SIGTERM and SIGHUP stop the install as Ctrl-C does (an exception, so the layer under way
    is recorded, see installer._run_step) and leave the block as `Terminated` (exit 143). A dry run changes
    nothing, so it neither takes the lock nor waits for it."""
    if host.dry_run:
        yield
        return
    held = _acquire(host)
    host.on_child = lambda pid, argv: note_child(host, pid, argv)
    try:
        with stops_raise():
            yield
    except StopRequested as exc:
        raise stop_error(exc.signum) from None
    finally:
        host.on_child = None
        _release(host, held)


def note_child(host: Host, pid: int | None, argv: Sequence[str] = ()) -> bool:
    """Write into the lock file the command this process now runs in its own process group `pid` (None: none
    now), when this process holds the lock (the file names its holder): a later install then knows what may
    still be running. The file is the only record; airgap keeps no state in the process. True if written."""
    if host.dry_run:
        return False
    *dirs, name = LOCK_PATH.strip("/").split("/")
    try:
        dir_fd = open_dir(host.root, dirs)
    except (OSError, InstallError):
        return False  # no install holds the lock here (doctor, smoke)
    try:
        fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    finally:
        os.close(dir_fd)
    try:
        info = _read(fd)
        if info.get("pid") != os.getpid():
            return False
        if pid is None:
            info.pop("child", None)
        else:
            info["child"] = {"pid": pid, "argv": list(argv)}
        _write(fd, info)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _acquire(host: Host) -> _Held:
    if not host.root.is_dir():
        raise BadInputError(
            f"{host.root}: no such directory to install under; nothing was done.",
            "Create it first (a staging root holds what the server's / would), or give another --root.",
        )
    *dirs, name = LOCK_PATH.strip("/").split("/")
    made = [dirs[:i] for i in range(1, len(dirs) + 1) if not os.path.lexists(host.path("/" + "/".join(dirs[:i])))]
    parent_times = None
    if made:
        with contextlib.suppress(OSError):
            st = os.stat(host.path("/" + "/".join(made[0][:-1])))
            parent_times = (st.st_atime_ns, st.st_mtime_ns)
    # Each pass opens the file at the path and locks it; another pass only when that file was removed by the
    # holder before us between the two (see `_release`).
    for _ in range(100):
        dir_fd = open_dir(host.root, dirs, create=True, shown=lambda done: "/" + "/".join(done))
        try:
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            except FileNotFoundError:  # the directory was removed as the holder before us let go
                continue
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise SymlinkRefused(LOCK_PATH) from None
                raise
            try:
                if _lock(fd, dir_fd, name):
                    info = {"pid": os.getpid(), "started": now_utc(), "argv": list(sys.orig_argv), "boot": _boot()}
                    _write(fd, info)
                    held, dir_fd = _Held(fd, dir_fd, made, parent_times), -1
                    return held
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        finally:
            if dir_fd >= 0:
                os.close(dir_fd)
    raise InstallBusy(f"{LOCK_PATH} kept being replaced while airgap tried to lock it; nothing was done.")


def _lock(fd: int, dir_fd: int, name: str) -> bool:
    """Lock the open lock file: True when it is the lock, False when it must be opened again. Raises
    InstallBusy when another install holds it or left a command running."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        raise InstallError(
            f"{LOCK_PATH} is not a plain file owned by root; airgap will not use it as its lock.",
            f"See what it is (`ls -l {LOCK_PATH}`), remove it, then run the same command again.",
        )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(_read(fd)) from None
    try:
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        return False
    previous = _read(fd)
    left = _left_running(previous)
    if left is not None:
        raise _left_behind(previous, left)
    return True


def _release(host: Host, held: _Held) -> None:
    try:
        # Removed while still locked: whoever opened it meanwhile finds it gone once they hold it, and retries.
        with contextlib.suppress(OSError):
            os.unlink(LOCK_PATH.rsplit("/", 1)[1], dir_fd=held.dir_fd)
    finally:
        os.close(held.fd)  # frees the flock
        os.close(held.dir_fd)
    for parts in reversed(held.made):  # innermost first; a directory in use (state.json) is kept
        try:
            parent = open_dir(host.root, parts[:-1])
        except (OSError, InstallError):
            return
        try:
            os.rmdir(parts[-1], dir_fd=parent)
            if parts is held.made[0] and held.parent_times is not None:
                os.utime(parent, ns=held.parent_times)  # as found: not even its time says a lock was there
        except OSError:
            return
        finally:
            os.close(parent)


def _read(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, MAX_INFO, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(fd: int, info: dict[str, Any]) -> None:
    data = (json.dumps(info) + "\n").encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


def _boot() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _left_running(previous: dict[str, Any]) -> int | None:
    """The process group of the command an earlier install was running when it died, if it still runs."""
    child = previous.get("child")
    if not isinstance(child, dict) or previous.get("boot") != _boot():  # a reboot ended everything
        return None
    pgid = child.get("pid")
    if not isinstance(pgid, int) or isinstance(pgid, bool) or pgid <= 1:
        return None
    return pgid if _group_alive(pgid) else None


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` runs (zombies do not count: nobody may be left to reap them)."""
    try:
        entries = list(os.scandir(_PROC))
    except OSError:
        return False
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            text = (_PROC / entry.name / "stat").read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[-1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _shown(value: Any, limit: int = 300) -> str:
    """A command line or value from the lock file, safe to print: control characters escaped, cut short."""
    text = shlex.join(str(a) for a in value) if isinstance(value, list) else str(value)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _holder(info: dict[str, Any]) -> str:
    if not info.get("pid"):
        return f"its details could not be read from {LOCK_PATH}"
    return f"pid {_shown(info['pid'])}, started {_shown(info.get('started', '?'))}: {_shown(info.get('argv', []))}"


def _busy(info: dict[str, Any]) -> InstallBusy:
    pid = _shown(info.get("pid", "?"))
    return InstallBusy(
        f"another airgap install is running on this server ({_holder(info)}); nothing was done.",
        f"Wait for it to finish (`ps -p {pid}` shows it; its log is in /var/log/airgap/), then run this command "
        "again. There is no stale lock to remove: the lock is freed the moment that install ends, even if it "
        "is killed.",
    )


def _left_behind(info: dict[str, Any], pgid: int) -> InstallBusy:
    child = info.get("child") or {}
    return InstallBusy(
        f"an earlier airgap install ({_holder(info)}) was killed, but the command it was running still runs: "
        f"process group {pgid}: {_shown(child.get('argv', []))}; nothing was done.",
        f"Wait for it to finish (`ps -g {pgid}` lists it), or stop it (`kill -TERM -- -{pgid}`), then run this "
        "command again: the install resumes where it stopped.",
    )
