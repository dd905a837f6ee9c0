"""The install side's only window on the machine.

Every layer reads and changes the server through a Host: commands are logged with their output, files
are written atomically under `root` (so tests and `--root` install into a scratch tree), and with
`dry_run` every command and write is printed in order and nothing changes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO, TextIO

from airgap.digests import BUF
from airgap.errors import AirgapError, DiskFullError, IntegrityError, RunResult
from airgap.fsutil import write_atomic

# Where installers put commands, in the order a login shell searches them.
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


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
        self.base_env = dict(env if env is not None else os.environ)
        self.actions: list[str] = []  # what was (or, in a dry run, would be) done, in order

    # --- paths ------------------------------------------------------------------------------------------

    def path(self, server_path: str | Path) -> Path:
        """Where an absolute path of the server lives on this machine (under --root)."""
        p = Path(server_path)
        if not p.is_absolute():
            raise ValueError(f"server paths are absolute: {server_path}")
        return self.root / p.relative_to("/")

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
        runs even in a dry run (e.g. `nvidia-smi --query`)."""
        text = shlex.join(argv)
        if changes:
            self._action(f"run: {text}", log=False)  # the log gets the "$ command" line below
        if self.dry_run and changes:
            return RunResult(argv, 0, "", 0.0)
        self._log(f"$ {text}")
        start = time.monotonic()
        try:
            proc = subprocess.run(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self.env(env),
                cwd=cwd,
                timeout=timeout,
                text=True,
                errors="replace",
                stdin=subprocess.DEVNULL,
            )
            result = RunResult(argv, proc.returncode, proc.stdout, time.monotonic() - start)
        except FileNotFoundError:
            result = RunResult(argv, 127, f"{argv[0]}: command not found", time.monotonic() - start)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
            result = RunResult(argv, 124, out + f"\n(killed after {timeout}s)", time.monotonic() - start)
        self._log(result.output.rstrip() + f"\n[exit {result.returncode} after {result.seconds:.1f}s]")
        if check and result.returncode != 0:
            raise CommandFailed(result)
        return result

    def write_file(self, server_path: str | Path, data: bytes | str, mode: int = 0o644) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self._action(f"write: {server_path} ({len(raw)} bytes, mode {mode:o})")
        if self.dry_run:
            return
        target = self.path(server_path)
        write_atomic(target, raw)
        os.chmod(target, mode)

    def copy_file(self, src: Path, server_path: str | Path, mode: int = 0o644) -> None:
        """Copy a file from the bundle into place: to a temp name beside the target, then renamed, so a
        half-copied binary is never found under its real name."""
        self._action(f"copy: {src.name} -> {server_path} (mode {mode:o})")
        if self.dry_run:
            return
        target = self.path(server_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.airgap-tmp")
        shutil.copyfile(src, tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, target)

    def copy_stream(
        self,
        open_source: Callable[[], BinaryIO],
        server_path: str | Path,
        *,
        sha256: str,
        what: str,
        mode: int = 0o644,
    ) -> None:
        """Stream bytes into place through a temp name beside the target, hashing them on the way, and rename
        only if they hash to `sha256`: a file under its real name is complete and has the expected bytes,
        even after a power cut. `open_source` is called only when the copy happens (never in a dry run);
        `what` names the bytes in the log. Raises DiskFullError or IntegrityError, the temp file removed."""
        self._action(f"copy: {what} -> {server_path} (mode {mode:o}, sha256 checked)")
        if self.dry_run:
            return
        target = self.path(server_path)
        tmp = target.with_name(f".{target.name}.airgap-tmp")
        h = hashlib.sha256()
        try:
            with open_source() as fin, open(tmp, "wb") as fout:
                while chunk := fin.read(BUF):
                    h.update(chunk)
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(
                    f"the disk holding {target.parent} filled up while copying {what}.",
                    "Free space there and run the install again; files already placed are kept.",
                ) from None
            raise
        if h.hexdigest() != sha256:
            tmp.unlink(missing_ok=True)
            raise IntegrityError(
                f"{what} does not match the bundle's lock (sha256 {h.hexdigest()}, expected {sha256}); "
                "it was not installed.",
                "The bundle was altered or damaged after it was verified: run `airgap verify` on it and copy the "
                "bad files again from the original.",
            )
        os.chmod(tmp, mode)
        os.replace(tmp, target)

    def move_file(self, src: Path, server_path: str | Path, mode: int = 0o644) -> None:
        """Rename a file of the bundle into place (`install --move`, both on one filesystem): no byte is
        copied, and the bundle no longer holds it."""
        self._action(f"move: {src.name} -> {server_path} (mode {mode:o})")
        if self.dry_run:
            return
        os.chmod(src, mode)
        os.replace(src, self.path(server_path))

    def discard(self, src: Path) -> None:
        """Delete a file of the bundle whose bytes are now in place (`install --move` spends the bundle)."""
        self._action(f"remove: {src}")
        if not self.dry_run:
            src.unlink()

    def hardlink(self, server_src: str | Path, server_path: str | Path) -> None:
        """Give an existing file a second name, replacing what has that name: the same bytes, no second copy
        (both on one filesystem)."""
        self._action(f"link: {server_path} = {server_src}")
        if self.dry_run:
            return
        target = self.path(server_path)
        target.unlink(missing_ok=True)
        os.link(self.path(server_src), target)

    def symlink(self, link_target: str, server_path: str | Path) -> None:
        """Make `server_path` a symbolic link holding `link_target` as given (a relative one stays valid
        under --root and inside a container mount), replacing what is there in one rename."""
        self._action(f"symlink: {server_path} -> {link_target}")
        if self.dry_run:
            return
        link = self.path(server_path)
        tmp = link.with_name(f".{link.name}.airgap-tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(link_target, tmp)
        os.replace(tmp, link)

    def chown(self, server_path: str | Path, uid: int, gid: int, *, recursive: bool = False) -> None:
        """Give a path to uid:gid; with `recursive`, everything under it too (a symbolic link below the top
        itself, never what it points to)."""
        self._action(f"chown{' -R' if recursive else ''}: {uid}:{gid} {server_path}")
        if self.dry_run:
            return
        top = self.path(server_path)
        os.chown(top, uid, gid)
        if recursive:
            for dirpath, dirs, files in os.walk(top):
                for name in dirs + files:
                    os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)

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

    def makedirs(self, server_path: str | Path, mode: int = 0o755) -> None:
        if self.path(server_path).is_dir():
            return
        self._action(f"mkdir: {server_path}")
        if not self.dry_run:
            self.path(server_path).mkdir(parents=True, exist_ok=True, mode=mode)

    def note(self, text: str) -> None:
        """A line for the install log only (what a layer decided, and why), with the time."""
        self._log(f"# {time.strftime('%H:%M:%S')} {text}")

    def announce(self, text: str) -> None:
        """Record a change a layer makes by its own means (copying a model, loading an image): printed as
        'would TEXT' in a dry run, logged otherwise. The layer itself must skip the change in a dry run."""
        self._action(text)

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


class CommandFailed(AirgapError):
    """A command run through the Host exited non-zero; `result` holds its argv and output."""

    def __init__(self, result: RunResult) -> None:
        super().__init__(f"{shlex.join(result.argv)} exited {result.returncode}")
        self.result = result
