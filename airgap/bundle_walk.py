"""Every entry of a bundle, found without following a link, and checked against what SHA256SUMS lists.

Everything in a bundle is listed in SHA256SUMS, anywhere in the tree (SHA256SUMS and its signature are the
only exceptions). A file that is not listed (an `install.sh` or `evil/x` dropped at the top, a file added in
`layers/`) is `unexpected`; a listed path that is not a regular file (a symbolic link, even to a file with
the right bytes; a FIFO; a socket; a device; a directory) is `not-a-file` and is never opened.

The walk opens each directory relative to its parent with O_NOFOLLOW|O_DIRECTORY and lists it through that
descriptor, so a directory swapped for a link while we walk fails to open instead of being followed.

Operating-system litter on removable drives is named in a note, never read, and does not fail a check:
  - at the bundle's top, and only as real directories, the volume folders Windows, macOS and Linux
    create at the root of a drive: System Volume Information/, $RECYCLE.BIN/, .Trashes/, .Spotlight-V100/,
    .fseventsd/, lost+found/ (a bundle copied to the top of a drive sits beside them);
  - anywhere, and only as regular files, macOS Finder's `.DS_Store` and AppleDouble `._NAME` files, which
    a Mac writes next to every file it copies to a FAT or exFAT drive.
Nothing reads or installs a file because it is there: install works from SHA256SUMS and the lock only.
A path SHA256SUMS lists is never litter, whatever its name.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from airgap.bundle_layout import PART_SUFFIX, SIG_NAME, SUMS_NAME
from airgap.digests import file_kind
from airgap.safepaths import bad_name_char

LITTER_DIRS = frozenset(
    {"System Volume Information", "$RECYCLE.BIN", ".Trashes", ".Spotlight-V100", ".fseventsd", "lost+found"}
)
LITTER_FILE = ".DS_Store"
APPLEDOUBLE_PREFIX = "._"
# Deeper than any bundle airgap writes (layers/NN-x/ plus a model repo's own folders): a deeper tree is
# someone else's, and walking it would hold one descriptor per level.
MAX_DEPTH = 64

_O_DIRECTORY: int = getattr(os, "O_DIRECTORY", 0)
_O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Entry:
    rel: str  # path relative to the bundle, "/"-separated, as the directory listing gave it
    mode: int  # from lstat: what the entry itself is
    size: int
    target: str = ""  # a symbolic link's contents (read with readlink, never followed)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def describe(self) -> str:
        """What the entry is, for a report: "a symbolic link to '/etc/passwd'", "a FIFO (named pipe)"."""
        if stat.S_ISLNK(self.mode):
            return f"a symbolic link to {shown(self.target)!r}"
        return file_kind(self.mode)


@dataclass
class Walk:
    entries: dict[str, Entry] = field(default_factory=dict)  # all but litter and what lies below a link
    litter: list[str] = field(default_factory=list)  # directories end in "/"
    unlistable: list[tuple[str, str]] = field(default_factory=list)  # (directory, why it could not be listed)


@dataclass(frozen=True)
class Finding:
    path: str  # shown(): safe to print
    kind: str  # "not-a-file", "missing", "unexpected", "unreadable"
    detail: str
    says_what_to_do: bool = False  # the detail already ends in the fix (else the caller adds its hint)


def shown(name: str) -> str:
    """`name` safe to print on a terminal and to encode: controls, line separators, bidi overrides and the
    undecodable bytes of a non-UTF-8 name are written as escapes (a name is never allowed to move the
    cursor, recolour the terminal, or read backwards)."""
    out: list[str] = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape of a byte that is not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif bad_name_char(ch) is not None or 0xD800 <= code <= 0xDFFF:
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def _listed_dirs(listed: Iterable[str]) -> set[str]:
    dirs: set[str] = set()
    for rel in listed:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            dirs.add("/".join(parts[:i]))
    return dirs


def _is_litter(rel_dir: str, name: str, mode: int, rel: str, listed: Mapping[str, str], dirs: set[str]) -> bool:
    if rel in listed or rel in dirs:
        return False
    if stat.S_ISDIR(mode):
        return rel_dir == "" and name in LITTER_DIRS
    return stat.S_ISREG(mode) and (name == LITTER_FILE or name.startswith(APPLEDOUBLE_PREFIX))


def walk_bundle(bundle: Path, listed: Mapping[str, str]) -> Walk:
    """Every entry under `bundle` (lstat; no link followed, no file opened). `listed` (SHA256SUMS) only
    decides what may count as litter."""
    walk = Walk()
    dirs = _listed_dirs(listed)
    try:
        root_fd = os.open(bundle, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    except OSError as exc:
        walk.unlistable.append((".", f"cannot open the bundle directory ({exc.strerror})"))
        return walk
    # Depth-first, one open descriptor per level: a frame is (directory, its fd, subdirectories left).
    stack: list[tuple[str, int, list[str]]] = [("", root_fd, _list(walk, "", root_fd, listed, dirs))]
    try:
        while stack:
            rel_dir, fd, todo = stack[-1]
            if not todo:
                os.close(fd)
                stack.pop()
                continue
            name = todo.pop()
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if len(stack) >= MAX_DEPTH:
                walk.unlistable.append((rel, f"nested more than {MAX_DEPTH} directories deep; not walked"))
                continue
            try:
                sub = os.open(name, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                # Most likely swapped for a link or a file since it was listed: say so, do not follow it.
                walk.unlistable.append((rel, f"cannot open it as a directory ({exc.strerror})"))
                continue
            stack.append((rel, sub, _list(walk, rel, sub, listed, dirs)))
    finally:
        for _rel, fd, _todo in stack:
            os.close(fd)
    return walk


def _list(walk: Walk, rel_dir: str, fd: int, listed: Mapping[str, str], dirs: set[str]) -> list[str]:
    """Record the entries of the directory open on `fd`; return the names of its subdirectories."""
    subdirs: list[str] = []
    try:
        with os.scandir(fd) as it:
            found = list(it)
    except OSError as exc:
        walk.unlistable.append((rel_dir or ".", f"cannot list it ({exc.strerror})"))
        return subdirs
    for e in sorted(found, key=lambda d: d.name):
        rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
        try:
            st = e.stat(follow_symlinks=False)
        except OSError as exc:
            walk.unlistable.append((rel, f"cannot examine it ({exc.strerror})"))
            continue
        if _is_litter(rel_dir, e.name, st.st_mode, rel, listed, dirs):
            walk.litter.append(rel + "/" if stat.S_ISDIR(st.st_mode) else rel)
            continue
        target = ""
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(e.name, dir_fd=fd)
            except OSError:
                target = "?"
        walk.entries[rel] = Entry(rel, st.st_mode, st.st_size, target)
        if stat.S_ISDIR(st.st_mode):
            subdirs.append(e.name)
    return subdirs


def check_listing(walk: Walk, listed: Mapping[str, str]) -> tuple[list[Finding], dict[str, Entry]]:
    """Compare what is on disk with what SHA256SUMS lists. Returns the findings (not-a-file, missing,
    unexpected, unreadable) and the listed paths that are regular files, to be hashed."""
    findings: list[Finding] = []
    regular: dict[str, Entry] = {}
    unlistable = dict(walk.unlistable)
    for rel in listed:
        e = walk.entries.get(rel)
        if e is not None:
            if e.is_file:
                regular[rel] = e
            else:
                findings.append(
                    Finding(rel, "not-a-file", f"is {e.describe()}, not a regular file; airgap does not open it")
                )
            continue
        parts = rel.split("/")
        ancestors = ["/".join(parts[:i]) for i in range(1, len(parts))]
        blocker = next((walk.entries[a] for a in ancestors if a in walk.entries and not walk.entries[a].is_dir), None)
        closed = next((a for a in [*ancestors, rel] if a in unlistable), None)
        if blocker is not None:
            findings.append(
                Finding(
                    rel,
                    "not-a-file",
                    f"lies under {shown(blocker.rel)}, which is {blocker.describe()}; airgap does not follow it",
                )
            )
        elif closed is not None:
            findings.append(Finding(rel, "unreadable", f"{shown(closed)}: {unlistable[closed]}"))
        else:
            findings.append(Finding(rel, "missing", "listed in SHA256SUMS, not on disk"))
    for rel, e in walk.entries.items():
        if rel in listed or e.is_dir or rel in (SUMS_NAME, SIG_NAME):
            continue
        if e.is_file and rel.endswith((PART_SUFFIX, PART_SUFFIX + ".meta")):
            why = "leftover of an interrupted download; re-run collect, or delete it"
            findings.append(Finding(shown(rel), "unexpected", why, says_what_to_do=True))
            continue
        if e.is_file:
            why = "not listed in SHA256SUMS"
        elif stat.S_ISLNK(e.mode):
            why = f"{e.describe()}, not listed in SHA256SUMS; airgap never follows links in a bundle"
        else:
            why = f"{e.describe()}, not listed in SHA256SUMS; airgap never opens it"
        findings.append(Finding(shown(rel), "unexpected", why))
    named = {f.detail.partition(":")[0] for f in findings if f.kind == "unreadable"}
    for rel, why in walk.unlistable:
        if shown(rel) not in named:
            findings.append(Finding(shown(rel), "unreadable", why))
    return findings, regular


def litter_note(litter: list[str]) -> str:
    """The sentence a report carries for OS litter, or "" when there is none."""
    if not litter:
        return ""
    names = ", ".join(shown(x) for x in litter[:10]) + (f" and {len(litter) - 10} more" if len(litter) > 10 else "")
    return (
        f"left alone, not read: {names} (made by an operating system the drive was plugged into; "
        "not part of the bundle, never read or installed)"
    )
