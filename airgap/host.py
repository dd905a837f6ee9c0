"""The install side's only window on the machine.

Every layer reads and changes the server through a Host: commands are logged with their output, files
are written atomically under `root` (so tests and `--root` install into a scratch tree), and with
`dry_run` every command and write is printed in order and nothing changes.

Root writes only where it means to: every file is created exclusively under a random name, without
following a link, in a directory reached one component at a time through descriptors that refuse a link
another user made (airgap.fsutil.open_dir), then renamed into place; ownership changes name one path and
never follow a link or recurse.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, TextIO

from airgap.digests import BUF
from airgap.errors import AirgapError, DiskFullError, InstallError, IntegrityError, RunResult
from airgap.fsutil import create_temp, open_dir, temp_name, unlink_quietly
from airgap.safepaths import normalise

# Where installers put commands, in the order a login shell searches them.
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")

Owner = tuple[int, int]  # uid, gid


class Host:
    def __init__(
        self,
        root: Path = Path("/"),
        dry_run: bool = False,
        log: TextIO | None = None,
        echo: TextIO | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.dry_run = dry_run
        self.log = log  # the install log: every command, its output, every file written
        self.echo = echo  # where --dry-run prints its plan
        # Told of each command `run` starts in its own process group (pid, argv) and of its end (None, ()):
        # the install lock records it. True when recorded.
        self.on_child: Callable[[int | None, Sequence[str]], bool] | None = None
        self.base_env = dict(env if env is not None else os.environ)
        self.actions: list[str] = []  # what was (or, in a dry run, would be) done, in order

    # --- paths ------------------------------------------------------------------------------------------

    def path(self, server_path: str | Path) -> Path:
        """Where an absolute path of the server lives on this machine (under --root)."""
        norm = normalise(str(server_path))  # `/data/../etc` is /etc, as safepaths checked it
        if not norm.startswith("/"):
            raise ValueError(f"server paths are absolute: {server_path}")
        return self.root / norm.lstrip("/")

    def exists(self, server_path: str | Path) -> bool:
        return self.path(server_path).exists()

    def read_text(self, server_path: str | Path, default: str | None = None) -> str | None:
        try:
            return self.path(server_path).read_text(errors="replace")
        except OSError:
            return default

    def which(self, name: str) -> str | None:
        """A command installed under the root (what the installers put there) wins over the real PATH."""
        if self.root != Path("/"):
            for d in SYSTEM_PATH:
                candidate = self.path(d) / name
                if candidate.is_file() and os.access(candidate, os.X_OK):
                    return str(candidate)
        return shutil.which(name, path=self.env().get("PATH"))

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(self.base_env)
        # Installers that can install under a prefix (the test stand-ins, staging) read AIRGAP_ROOT;
        # NVIDIA's and Docker's own ignore it and act on the running system.
        env["AIRGAP_ROOT"] = str(self.root)
        if self.root != Path("/"):
            # Commands an earlier layer installed under the root must be found by later ones.
            rooted = [str(self.path(d)) for d in SYSTEM_PATH]
            env["PATH"] = os.pathsep.join([*rooted, env.get("PATH", os.defpath)])
        env.update(extra or {})
        return env

    # --- changes ----------------------------------------------------------------------------------------

    def run(
        self,
        argv: list[str],
        *,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float | None = None,
        changes: bool = True,
    ) -> RunResult:
        """Run a command, its output kept in the log. `changes=False` marks a read-only probe, which
        runs even in a dry run (e.g. `nvidia-smi --query`).

        SIGINT, SIGTERM and SIGHUP received meanwhile are passed on to the command (its own process group),
        and airgap waits for it to exit (killing it only after a long grace), then raises Interrupted (SIGINT)
        or Terminated: an installer is never killed mid-way, nor left running. See airgap/signals.py."""
        from airgap import signals  # here: the rest of the Host does not need it

        text = shlex.join(argv)
        if changes:
            self._action(f"run: {text}", log=False)  # the log gets the "$ command" line below
        if self.dry_run and changes:
            return RunResult(argv, 0, "", 0.0)
        self._log(f"$ {text}")

        def tell(line: str) -> None:
            self._log(f"# {time.strftime('%H:%M:%S')} {line}")
            signals.tell_stderr(line)

        noted = False

        def started(pid: int) -> None:
            # The install's lock file names the command while it runs: if airgap is killed outright, the
            # next install sees it still running and waits for it (airgap/install_lock.py sets the hook).
            nonlocal noted
            noted = self.on_child(pid, argv) if self.on_child is not None else False

        start = time.monotonic()
        done: signals.Finished | None = None
        try:
            done = signals.run_relayed(argv, env=self.env(env), cwd=cwd, timeout=timeout, started=started, tell=tell)
            output = done.output + (f"\n({done.note})" if done.note else "")
            result = RunResult(argv, done.returncode, output, time.monotonic() - start)
        except FileNotFoundError:
            result = RunResult(argv, 127, f"{argv[0]}: command not found", time.monotonic() - start)
        finally:
            if noted and self.on_child is not None:
                self.on_child(None, ())
        stopped = f"; stopped by {signals.signal_name(done.stopped_by)}" if done and done.stopped_by else ""
        self._log(result.output.rstrip() + f"\n[exit {result.returncode} after {result.seconds:.1f}s{stopped}]")
        if done is not None and done.stopped_by is not None:
            how = done.note or f"exited {result.returncode}"
            ran = f" while `{signals.shown(argv)}` ran; it was passed the signal and {how}"
            raise signals.stop_error(done.stopped_by, ran)
        if check and result.returncode != 0:
            raise CommandFailed(result)
        return result

    def write_file(
        self, server_path: str | Path, data: bytes | str, mode: int = 0o644, *, owner: Owner | None = None
    ) -> None:
        """Write a file atomically (a temp name beside it, then one rename). `owner` (uid, gid) is given to
        the file, and to any directory made on the way, before it takes its real name."""
        raw = data.encode() if isinstance(data, str) else data
        self._action(f"write: {server_path} ({len(raw)} bytes, mode {mode:o}{_owned(owner)})")
        if self.dry_run:
            return
        self._put(server_path, lambda out: out.write(raw), mode=mode, owner=owner, doing="writing it")

    def copy_stream(
        self,
        open_source: Callable[[], BinaryIO],
        server_path: str | Path,
        *,
        sha256: str,
        what: str,
        mode: int = 0o644,
        owner: Owner | None = None,
    ) -> None:
        """Stream bytes into place through a temp name beside the target, hashing them on the way, and rename
        only if they hash to `sha256`: a file under its real name is complete and has the expected bytes,
        even after a power cut. `open_source` is called only when the copy happens (never in a dry run);
        `what` names the bytes in the log. Raises DiskFullError or IntegrityError, the temp file removed."""
        self._action(f"copy: {what} -> {server_path} (mode {mode:o}{_owned(owner)}, sha256 checked)")
        if self.dry_run:
            return

        def fill(out: BinaryIO) -> None:
            h = hashlib.sha256()
            with open_source() as fin:
                while chunk := fin.read(BUF):
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != sha256:
                raise _mismatch(what, h.hexdigest(), sha256)

        self._put(server_path, fill, mode=mode, owner=owner, doing=f"copying {what}")

    def move_file(
        self,
        src: Path,
        server_path: str | Path,
        *,
        sha256: str,
        what: str,
        mode: int = 0o644,
        owner: Owner | None = None,
    ) -> None:
        """Rename a file of the bundle into place (`install --move`, both on one filesystem): no byte is
        copied, and the bundle no longer holds it. The file is renamed to a temp name beside the target
        first and hashed there, so bytes changed since the bundle was verified never take the real name;
        the caller moves only files root owns (see models' `_movable`), others are copied."""
        self._action(f"move: {src.name} -> {server_path} (mode {mode:o}{_owned(owner)}, sha256 checked)")
        if self.dry_run:
            return
        dfd, name = self._open_parent(server_path, owner=owner)
        try:
            # A random name nobody can have planted; rename never follows a link at its destination.
            tmp = temp_name(name)
            os.rename(src, tmp, dst_dir_fd=dfd)
            try:
                with open(os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd), "rb") as f:
                    st = os.fstat(f.fileno())
                    # A second name (hard link) or another owner would let someone write to the file after
                    # it is hashed. Residual risk: a process that opened the file for writing before the move
                    # (only its owner, root, could) can still write through that descriptor afterwards.
                    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
                        raise IntegrityError(
                            f"{what} changed while it was moved into place (it is no longer a plain file "
                            "with one name owned by root); it was not installed.",
                            "Someone wrote to the bundle during the install: copy the bundle to a disk only root "
                            "can write, run `airgap verify` on it, and install from there.",
                        )
                    h = hashlib.sha256()
                    while chunk := f.read(BUF):
                        h.update(chunk)
                    if h.hexdigest() != sha256:
                        raise _mismatch(what, h.hexdigest(), sha256)
                    if owner is not None:
                        os.fchown(f.fileno(), *owner)
                    os.fchmod(f.fileno(), mode)
                self._rename_into(dfd, tmp, name, server_path)
            except BaseException:
                unlink_quietly(tmp, dfd)
                raise
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def discard(self, src: Path) -> None:
        """Delete a file of the bundle whose bytes are now in place (`install --move` spends the bundle)."""
        self._action(f"remove: {src}")
        if not self.dry_run:
            src.unlink()

    def hardlink(self, server_src: str | Path, server_path: str | Path) -> None:
        """Give an existing file a second name, replacing what has that name: the same bytes, no second copy
        (both on one filesystem). The new name is made under a random temp name and renamed into place."""
        self._action(f"link: {server_path} = {server_src}")
        if self.dry_run:
            return
        sfd, sname = self._open_parent(server_src, create=False)
        try:
            dfd, name = self._open_parent(server_path)
            try:
                tmp = self._exclusive(
                    name, lambda t: os.link(sname, t, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
                )
                try:
                    self._rename_into(dfd, tmp, name, server_path)
                except BaseException:
                    unlink_quietly(tmp, dfd)
                    raise
                os.fsync(dfd)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def symlink(self, link_target: str, server_path: str | Path, *, owner: Owner | None = None) -> None:
        """Make `server_path` a symbolic link holding `link_target` as given (a relative one stays valid
        under --root and inside a container mount), replacing what is there in one rename; the link itself
        is given to `owner`."""
        self._action(f"symlink: {server_path} -> {link_target}{_owned(owner, ' (owner {})')}")
        if self.dry_run:
            return
        dfd, name = self._open_parent(server_path, owner=owner)
        try:
            tmp = self._exclusive(name, lambda t: os.symlink(link_target, t, dir_fd=dfd))
            try:
                if owner is not None:
                    os.chown(tmp, *owner, dir_fd=dfd, follow_symlinks=False)
                self._rename_into(dfd, tmp, name, server_path)
            except BaseException:
                unlink_quietly(tmp, dfd)
                raise
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def chown(self, server_path: str | Path, uid: int, gid: int) -> None:
        """Give one path to uid:gid. Never follows a link, neither on the way (SymlinkRefused) nor at the end
        (a link is given itself), and never recurses: a directory another user owns can have become a link
        to anywhere since it was looked at, so callers name exactly what the install made."""
        self._action(f"chown: {uid}:{gid} {server_path}")
        if self.dry_run:
            return
        dfd, name = self._open_parent(server_path, create=False)
        try:
            os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(dfd)

    def spawn(self, argv: list[str], log_file: str | Path) -> int | None:
        """Start a long-running daemon (dockerd when systemd does not run) in its own session, its output
        appended to `log_file` (a server path). Returns its pid, or None in a dry run."""
        self._action(f"start: {shlex.join(argv)}")
        if self.dry_run:
            return None
        log_path = self.path(log_file)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env(),
                start_new_session=True,
            )
        self._log(f"# started pid {proc.pid}, output in {log_file}")
        return proc.pid

    def makedirs(self, server_path: str | Path, mode: int = 0o755, *, owner: Owner | None = None) -> None:
        """Make a directory and its missing parents one by one, each given to `owner` as it is made; a
        component that is a link root cannot trust is refused (SymlinkRefused), even when it exists."""
        if not self.path(server_path).is_dir():
            self._action(f"mkdir: {server_path}{_owned(owner, ' (owner {})')}")
        if not self.dry_run:
            os.close(self._open_dir(self._parts(server_path), create=True, mode=mode, owner=owner))

    def note(self, text: str) -> None:
        """A line for the install log only (what a layer decided, and why), with the time."""
        self._log(f"# {time.strftime('%H:%M:%S')} {text}")

    def announce(self, text: str) -> None:
        """Record a change a layer makes by its own means (copying a model, loading an image): printed as
        'would TEXT' in a dry run, logged otherwise. The layer itself must skip the change in a dry run."""
        self._action(text)

    # --- how files are put in place ----------------------------------------------------------------------

    def _parts(self, server_path: str | Path) -> list[str]:
        norm = normalise(str(server_path))
        if not norm.startswith("/"):
            raise ValueError(f"server paths are absolute: {server_path}")
        return [p for p in norm.split("/") if p]

    def _shown(self, parts: Sequence[str]) -> str:
        """The path on this machine (under --root): what an operator looks at and removes."""
        return str(self.root.joinpath(*parts))

    def _open_parent(
        self, server_path: str | Path, *, create: bool = True, owner: Owner | None = None
    ) -> tuple[int, str]:
        """A descriptor of the directory holding `server_path` (made if missing, given to `owner`), walked
        without following a link another user made, and the name in it."""
        parts = self._parts(server_path)
        if not parts:
            raise ValueError(f"not a file: {server_path}")
        return self._open_dir(parts[:-1], create=create, owner=owner), parts[-1]

    def _open_dir(self, parts: Sequence[str], *, create: bool, mode: int = 0o755, owner: Owner | None = None) -> int:
        if create and not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)  # --root names a staging tree that may not exist yet
        return open_dir(self.root, parts, create=create, mode=mode, owner=owner, shown=self._shown)

    def _put(
        self,
        server_path: str | Path,
        fill: Callable[[BinaryIO], object],
        *,
        mode: int,
        owner: Owner | None,
        doing: str,
    ) -> None:
        """Create a new file exclusively under a random name in the target's directory, `fill` it, fsync,
        give it its owner and mode, and rename it over the target: a file under its real name is complete,
        and nothing another user planted in the directory is ever opened or followed. A `fill` that raises
        leaves nothing behind."""
        dfd, name = self._open_parent(server_path, owner=owner)
        try:
            fd, tmp = create_temp(dfd, name)
            try:
                with open(fd, "wb") as out:
                    fill(out)
                    out.flush()
                    os.fsync(out.fileno())
                    if owner is not None:
                        os.fchown(out.fileno(), *owner)  # before the mode: a chown clears set-id bits
                    os.fchmod(out.fileno(), mode)
                self._rename_into(dfd, tmp, name, server_path)
            except BaseException as exc:
                unlink_quietly(tmp, dfd)
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise DiskFullError(
                        f"the disk holding {self.path(server_path).parent} filled up while {doing}.",
                        "Free space there and run the install again; files already placed are kept.",
                    ) from None
                raise
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @staticmethod
    def _exclusive(name: str, make: Callable[[str], None]) -> str:
        """Run `make` (a link or symlink creation, which fails on an existing name) on a fresh random name
        beside `name`; returns the name used."""
        for _ in range(100):
            tmp = temp_name(name)
            try:
                make(tmp)
                return tmp
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "no free temporary name", name)

    def _rename_into(self, dfd: int, tmp: str, name: str, server_path: str | Path) -> None:
        try:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except (IsADirectoryError, NotADirectoryError, OSError) as exc:
            if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise InstallError(
                f"{self.path(server_path)} is a directory where airgap must place a file; nothing was replaced.",
                "Move that directory away (it was not made by airgap), then run the install again.",
            ) from None

    def _action(self, text: str, log: bool = True) -> None:
        self.actions.append(text)
        if self.dry_run and self.echo is not None:
            print(f"  would {text}", file=self.echo, flush=True)
        if log:
            self._log(f"> {text}")

    def _log(self, text: str) -> None:
        if self.log is not None:
            self.log.write(text + "\n")
            self.log.flush()


def _owned(owner: Owner | None, fmt: str = ", owner {}") -> str:
    return fmt.format(f"{owner[0]}:{owner[1]}") if owner is not None else ""


def _mismatch(what: str, got: str, want: str) -> IntegrityError:
    return IntegrityError(
        f"{what} does not match the bundle's lock (sha256 {got}, expected {want}); it was not installed.",
        "The bundle was altered or damaged after it was verified: run `airgap verify` on it and copy the "
        "bad files again from the original.",
    )


class CommandFailed(AirgapError):
    """A command run through the Host exited non-zero; `result` holds its argv and output."""

    def __init__(self, result: RunResult) -> None:
        super().__init__(f"{shlex.join(result.argv)} exited {result.returncode}")
        self.result = result
