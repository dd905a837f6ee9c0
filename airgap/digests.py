"""Hashing files: one reader for every digest airgap computes over a file on disk.

hashlib releases the GIL while it digests a buffer, so callers may hash in threads; each call reuses one
buffer (or the caller's), so memory stays flat whatever the file's size.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from pathlib import Path

from airgap.errors import BadInputError, IntegrityError

BUF = 1 << 20


def hash_file(path: Path, algorithm: str = "sha256", buf: bytearray | None = None) -> str:
    """Hex digest of a file's bytes with any hashlib algorithm (sha256, md5, sha512, ...)."""
    h = hashlib.new(algorithm)
    buf = buf if buf is not None else bytearray(BUF)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def sha256_file(path: Path, buf: bytearray | None = None) -> str:
    return hash_file(path, "sha256", buf)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- reading inside a bundle without following links ---------------------------------------------------
#
# Whoever holds the drive can replace any file by a symbolic link (to /etc/shadow, to /dev/zero), a FIFO
# (a read would wait forever) or a device. So below the bundle's top directory nothing is opened by name:
# each component is opened with O_PATH|O_NOFOLLOW (which opens nothing for reading, has no side effect on
# a FIFO or device, and gives a link itself rather than its target), checked with fstat, and only a regular
# file is then opened for reading, through that very inode.

_O_PATH: int = getattr(os, "O_PATH", 0)
_O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK: int = getattr(os, "O_NONBLOCK", 0)
_O_DIRECTORY: int = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)
_O_NOCTTY: int = getattr(os, "O_NOCTTY", 0)
# Without O_PATH (not Linux) a component is opened for reading: O_NONBLOCK keeps a FIFO from hanging us.
_PROBE = (_O_PATH or (os.O_RDONLY | _O_NONBLOCK | _O_NOCTTY)) | _O_NOFOLLOW | _O_CLOEXEC


def file_kind(mode: int) -> str:
    """What an lstat/fstat mode is, in the words a report uses."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


class NotRegularFile(OSError):
    """`path` (relative to the root it was opened under) is not what it must be: `what` says what it is.
    `within` is True when a directory on the way is the culprit, not the file itself."""

    def __init__(self, path: str, what: str, within: bool = False) -> None:
        super().__init__(errno.EINVAL, f"{path} is {what}")
        self.path = path
        self.what = what
        self.within = within


def open_beneath(root: Path, rel: str) -> int:
    """A read-only fd of the regular file `rel` under the directory `root`, reached without following any
    link below `root` (`root` itself is the caller's choice and may be one). Raises NotRegularFile when
    `rel` or a directory on its way is a link, FIFO, socket, device (or, for `rel`, a directory), and
    FileNotFoundError / other OSError as the system reports them. The caller closes the fd."""
    with BeneathOpener(root, cache=0) as opener:
        return opener.open(rel)


class BeneathOpener:
    """open_beneath for many files under one root: the directories on the way are opened (without following
    links) once and their fds kept, so a file costs a probe, an fstat and the reopen instead of a walk from
    the top. A kept fd is the directory inode that was checked: a directory swapped for a link later is not
    followed, exactly as in a fresh walk that happened earlier. Thread-safe; close() releases the fds."""

    def __init__(self, root: Path, cache: int = 256) -> None:
        self._root = root
        self._limit = cache
        self._dirs: dict[str, int] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> BeneathOpener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            fds, self._dirs = list(self._dirs.values()), {}
        for fd in fds:
            os.close(fd)

    def open(self, rel: str) -> int:
        parts = rel.split("/")
        if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"not a plain relative path: {rel!r}")
        parent = "/".join(parts[:-1])
        with self._lock:
            cached = self._dirs.get(parent)
            dir_fd = os.dup(cached) if cached is not None else -1
        if dir_fd < 0:
            dir_fd = self._walk_dirs(parts[:-1])
            if self._limit:
                with self._lock:
                    if parent not in self._dirs and len(self._dirs) < self._limit:
                        self._dirs[parent] = os.dup(dir_fd)
        try:
            return _open_last(dir_fd, parts, rel)
        finally:
            os.close(dir_fd)

    def _walk_dirs(self, parts: list[str]) -> int:
        """An fd of the directory `parts` under the root, each component checked to be a directory."""
        cur = os.open(self._root, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        try:
            for i, name in enumerate(parts):
                try:
                    fd = os.open(name, _PROBE, dir_fd=cur)
                except OSError as exc:
                    if exc.errno == errno.ELOOP:  # only without O_PATH: O_NOFOLLOW met a link
                        raise NotRegularFile("/".join(parts[: i + 1]), "a symbolic link", within=True) from None
                    raise
                try:
                    st = os.fstat(fd)
                    if not stat.S_ISDIR(st.st_mode):
                        raise NotRegularFile("/".join(parts[: i + 1]), file_kind(st.st_mode), within=True)
                except BaseException:
                    os.close(fd)
                    raise
                os.close(cur)
                cur = fd
        except BaseException:
            os.close(cur)
            raise
        return cur


def _open_last(dir_fd: int, parts: list[str], rel: str) -> int:
    """The readable fd of the last component of `parts`, a regular file in `dir_fd`, never followed."""
    name = parts[-1]
    try:
        fd = os.open(name, _PROBE, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(rel, "a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(rel, file_kind(st.st_mode))
        return _reopen_for_reading(fd, name, dir_fd, st)
    finally:
        os.close(fd)


def _reopen_for_reading(fd: int, name: str, dir_fd: int, st: os.stat_result) -> int:
    """An O_RDONLY fd of the same inode as the probe `fd` (a regular file)."""
    if not _O_PATH:
        return os.dup(fd)  # the probe was opened for reading already
    try:
        # The documented way to turn an O_PATH fd into a readable one: the inode already checked, not a name.
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | _O_CLOEXEC)
    except FileNotFoundError:
        pass  # no /proc (a minimal container): open the name again, without following, and compare inodes
    new = os.open(name, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_NOCTTY | _O_CLOEXEC, dir_fd=dir_fd)
    again = os.fstat(new)
    if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(again.st_mode):
        os.close(new)
        raise NotRegularFile(name, "replaced while it was being opened")
    return new


def read_beneath(root: Path, rel: str, limit: int) -> bytes:
    """The bytes of the regular file `rel` under `root` (see open_beneath), at most `limit` + 1 of them, so a
    caller can tell "exactly at the limit" from "over it" without ever holding more."""
    fd = open_beneath(root, rel)
    with os.fdopen(fd, "rb", buffering=0) as f:
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0 and (chunk := f.read(min(left, BUF))):
            chunks.append(chunk)
            left -= len(chunk)
    return b"".join(chunks)


def hash_fd(fd: int, algorithm: str = "sha256", buf: bytearray | None = None) -> str:
    """Hex digest of what is left to read on `fd` (the caller closes it)."""
    h = hashlib.new(algorithm)
    buf = buf if buf is not None else bytearray(BUF)
    view = memoryview(buf)
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    while n := os.readv(fd, [buf]):
        h.update(view[:n])
    return h.hexdigest()


def sha256_beneath(root: Path, rel: str, buf: bytearray | None = None) -> str:
    """sha256 of the regular file `rel` under `root`, opened without following links (see open_beneath)."""
    fd = open_beneath(root, rel)
    try:
        return hash_fd(fd, "sha256", buf)
    finally:
        os.close(fd)


def read_bundle_file(bundle: Path, name: str, limit: int) -> bytes | None:
    """One read of a top-level bundle file: None when it does not exist; IntegrityError when it is not a
    regular file (a link, FIFO, device, directory) or is over `limit` bytes."""
    try:
        data = read_beneath(bundle, name, limit)
    except FileNotFoundError:
        return None
    except NotRegularFile as exc:
        raise IntegrityError(
            f"{bundle / name}: is {exc.what}, not a regular file; airgap does not follow or read it.",
            "Someone replaced it on the medium: get an intact copy of the bundle from the collecting side.",
        ) from None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise BadInputError(f"{bundle}: not a directory.", "Give the path of the bundle's top directory.") from None
        raise IntegrityError(
            f"{bundle / name}: cannot read it ({exc.strerror}).",
            "Check that the medium is readable and that you may read the bundle's files.",
        ) from None
    if len(data) > limit:
        raise IntegrityError(
            f"{bundle / name}: larger than {limit} bytes, far larger than any airgap writes; not reading it.",
            "The file was replaced or damaged: copy the bundle again from the original.",
        )
    return data
