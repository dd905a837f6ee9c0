"""What a manifest or a lock may name: install directories away from system locations, file names airgap
can read back, revisions that are commit hashes.

A manifest or lock is written by someone else (a mistake, or malice) and root acts on it on the server, so
the same checks run at collect (in the manifest) and again at install (on the lock, which may have been
edited on the way). Paths are normalised first: `//etc`, `/./etc` and `/data/../etc` are all `/etc`.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata

# Anything under these is the system's: root must never create, chmod or chown there for a model.
SYSTEM_TREES = (
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/boot",
    "/dev",
    "/proc",
    "/sys",
    "/run",
)
# These may hold an install directory below them (`/data/models`), but are never one themselves: a chown -R
# of `/home` or `/var` hands every user's files to the serving user.
SYSTEM_TOPS = (
    "/",
    "/var",
    "/home",
    "/opt",
    "/srv",
    "/root",
    "/data",
    "/mnt",
    "/media",
    "/tmp",
    "/var/lib",
    "/var/tmp",
    "/usr/local",
)

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def normalise(path: str) -> str:
    """`path` as the kernel would resolve it lexically: one leading slash, no `.`, `..` or `//`."""
    norm = posixpath.normpath(path)
    if norm.startswith("//"):  # POSIX keeps a leading `//`; Linux treats it as `/`
        norm = "/" + norm.lstrip("/")
    return norm


def system_location(path: str) -> str | None:
    """Why an absolute install directory is refused (the system location it is or lies in), or None."""
    norm = normalise(path)
    if norm in SYSTEM_TOPS:
        return f"{norm} itself is a system directory"
    for tree in SYSTEM_TREES:
        if norm == tree or norm.startswith(tree + "/"):
            return f"it lies in {tree}, which belongs to the operating system"
    return None


def install_dir_problem(path: str) -> str | None:
    """Why `path` cannot be a directory root installs into and hands to the serving user, or None."""
    if not path.startswith("/"):
        return "it must be an absolute path (e.g. /data/models)"
    if bad := bad_name_char(path):
        return f"it holds {bad}"
    return system_location(path)


# Characters that make a name unreadable or misleading: C0/C1 controls (incl. tab, \x0c, \x1c, \x85), line and
# paragraph separators, and the bidi overrides and isolates that make `evil\u202etxt.exe` read as `evilexe.txt`.
_BIDI = {
    "\u200e",
    "\u200f",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u061c",
}


def bad_name_char(name: str) -> str | None:
    """A description of the first character in `name` that airgap refuses in file names, or None."""
    if name.isascii() and name.isprintable():
        return None  # the common case, checked in C: printable ASCII has no control, separator or bidi character
    for ch in name:
        cat = unicodedata.category(ch)
        if cat == "Cc" or cat in ("Zl", "Zp") or ch in _BIDI:
            return f"the character U+{ord(ch):04X} ({unicodedata.name(ch, 'control character')})"
    return None


def relative_path_problem(rel: str) -> str | None:
    """Why `rel` (a name or path a lock gives) cannot be written beneath an output directory, or None:
    absolute, an empty, `.` or `..` component, or a character airgap refuses in names. Whoever can edit an
    unsigned bundle writes its lock; a depot export run as root must not follow it out of its directory."""
    if rel.startswith("/"):
        return "an absolute path"
    if any(part in ("", ".", "..") for part in rel.split("/")):
        return "not a plain relative path (an empty, '.' or '..' component)"
    return bad_name_char(rel)


def is_commit(revision: str) -> bool:
    """A full 40-hex commit hash: the only revision a lock may carry (a branch or `../x` is not one)."""
    return bool(COMMIT_RE.match(revision))
