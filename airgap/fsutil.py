"""Writing files so that nothing half-written is ever taken for finished.

The ground floor every side of airgap stands on: a reader (a person, `sha256sum -c`, the next run) sees
the old file or the new one, never half of one, even after a power cut or a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from airgap.errors import DiskFullError, InstallError


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write via a temp file in the same directory and rename, with fsync before the rename and of the
    directory after it. `mode` None gives what the umask gives a new file (0644 under umask 022): mkstemp
    makes 0600, which would keep README.txt and SHA256SUMS from the person checking the bundle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask() if mode is None else mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"{path}: no space left on the device to write it; the previous version is unchanged.",
                "Free space or choose another output directory with -o, then run the same command again.",
            ) from None
        raise
    fsync_dir(path.parent)


_umask_mutex = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the kernel tells it (Linux 4.7+); elsewhere by
    setting and restoring it under a lock (os.umask has no read-only form)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_mutex:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every entry directly in `path`, then `path` itself: people pull the drive when we return."""
    for p in [*path.iterdir(), path]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- writing as root into trees other users can write ---------------------------------------------------
#
# After the first install a model directory belongs to the serving user (uid 1000), who may plant symbolic
# links in it between two installs. Root therefore walks every directory one component at a time through
# file descriptors opened O_NOFOLLOW, creates files only exclusively (O_CREAT|O_EXCL|O_NOFOLLOW) under random
# names inside a directory it holds open, and renames them into place relative to that same descriptor: a
# link swapped in after a check is never followed, because nothing is looked up by path twice.

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup


class SymlinkRefused(InstallError):
    """A directory on the way to a file root writes is a symbolic link root did not make."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path} is a symbolic link (planted by another user?); airgap will not write through it; "
            "remove it and run again.",
            f"See who made it (`ls -l {path}`), remove it (`rm {path}`), then run the same install again: "
            "airgap recreates what belongs there.",
        )
        self.path = path


def _trusted_link(link: os.stat_result, parent_fd: int) -> bool:
    """A link root may follow: made by root (or by whoever runs airgap) in a directory only they own, as
    the system's own `/bin -> usr/bin` or an administrator's `/data -> /mnt/disk`. A link made by anyone
    else, or sitting in a directory someone else owns (who could have moved it there), is never followed."""
    trusted = {0, os.geteuid()}
    return link.st_uid in trusted and os.fstat(parent_fd).st_uid in trusted


def open_dir(
    root: Path,
    parts: Sequence[str],
    *,
    create: bool = False,
    mode: int = 0o755,
    owner: tuple[int, int] | None = None,
    shown: Callable[[Sequence[str]], str] | None = None,
) -> int:
    """A descriptor of the directory `root/parts[0]/parts[1]/...`, walked one component at a time without
    following a link root cannot trust (SymlinkRefused). With `create`, missing directories are made one by
    one with `mode`, each given to `owner` through its own descriptor before anything is put in it. `root`
    itself is the operator's choice (`/` or --root) and is opened as given. `shown` turns the components
    walked so far into the path named in errors. The caller closes the descriptor."""

    def name_of(done: Sequence[str]) -> str:
        return shown(done) if shown else str(root.joinpath(*done))

    stack = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    done: list[str] = []
    todo = list(parts)
    links = 0
    made = ""  # the component just made, to be given to `owner` once opened
    try:
        while todo:
            name = todo.pop(0)
            if name in ("", "."):
                continue
            if name == "..":  # only from a link's target: never above the root, as in a chroot
                if len(stack) > 1:
                    os.close(stack.pop())
                    done.pop()
                continue
            here = stack[-1]
            try:
                fd = os.open(name, DIR_FLAGS, dir_fd=here)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, mode, dir_fd=here)
                    made = name
                except FileExistsError:
                    pass  # someone made it meanwhile
                todo.insert(0, name)  # open it like any other: what is there now may be a planted link
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                made = ""
                st = os.stat(name, dir_fd=here, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    where = name_of([*done, name])
                    raise InstallError(
                        f"{where} is not a directory; airgap will not replace it.",
                        f"See what it is (`ls -l {where}`), move it away, then run the same command again.",
                    ) from None
                if not _trusted_link(st, here):
                    raise SymlinkRefused(name_of([*done, name])) from None
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links", name_of(done)) from None
                target = os.readlink(name, dir_fd=here)
                if target.startswith("/"):  # a server path: from the root, as the server sees it
                    for extra in stack[1:]:
                        os.close(extra)
                    del stack[1:]
                    done.clear()
                todo[:0] = target.split("/")
                continue
            stack.append(fd)
            done.append(name)
            if made == name and owner is not None:
                os.fchown(fd, *owner)
            made = ""
        return os.dup(stack[-1])
    finally:
        for fd in stack:
            os.close(fd)


def create_temp(dir_fd: int, name: str, mode: int = 0o600) -> tuple[int, str]:
    """A new, empty file beside `name` in the directory `dir_fd`: a random name, created exclusively and
    without following a link, so nothing another user planted can be opened in its place."""
    for _ in range(100):
        tmp = temp_name(name)
        try:
            return os.open(tmp, NEW_FILE_FLAGS, mode, dir_fd=dir_fd), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", name)


def temp_name(name: str) -> str:
    """A random name beside `name`, unguessable: a link or file made under it is made exclusively (EEXIST)
    and renamed into place, so a planted name is never written through."""
    return f".{name[:180]}.{secrets.token_hex(8)}.airgap-tmp"


def unlink_quietly(name: str, dir_fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)
