"""SHA256SUMS: the one list that both airgap and `sha256sum -c` check a bundle against, written and read
here, the way coreutils writes and reads it.

Kept free of the lock's models (pydantic), so reading the list costs no more than parsing it: verify hashes
files while the lock is still being typed in another thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from airgap.bundle_layout import SIG_NAME, SUMS_NAME
from airgap.errors import IntegrityError

_HEX64 = re.compile(rb"[0-9a-fA-F]{64}")


def format_sums(entries: dict[str, str]) -> bytes:
    """`sha256sum` text mode lines, sorted by path so two bundles diff cleanly."""
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(entries.items())).encode()


def parse_sums(text: str, source: str = SUMS_NAME) -> dict[str, str]:
    """Path -> sha256 from a SHA256SUMS file's text (see parse_sums_bytes)."""
    return parse_sums_bytes(text.encode("utf-8", errors="surrogateescape"), source)


def parse_sums_bytes(data: bytes, source: str = SUMS_NAME) -> dict[str, str]:
    r"""Path -> sha256 from a SHA256SUMS file's bytes, read the way `sha256sum -c` reads them, so a line
    names the same file for airgap and for coreutils; anything else is refused, never guessed at.

    - Lines end at "\n" only. (str.splitlines would also end one at \x0c, \x1c, \x85 or U+2028: a name
      holding one would be read as two lines by airgap and one by coreutils.)
    - `<64 hex>  <path>` (text mode) or `<64 hex> *<path>` (binary mode); blank lines are skipped.
    - A line starting with "\" is coreutils' escaped form: in its name "\\" is a backslash, "\n" a
      newline and "\r" a carriage return. format_sums never writes one (collect refuses names that would
      need it), but a hand-made list may hold one, and it must mean what it means to coreutils.
    - Refused (IntegrityError naming every bad line): a malformed line, a path listed twice (the last
      line would silently win), a path that is absolute, has an empty, `.` or `..` component, holds a
      character safepaths refuses (controls, line separators, bidi overrides), is not UTF-8, or names
      SHA256SUMS or its signature.
    """
    from airgap.safepaths import bad_name_char

    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    bad: list[str] = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        shown = raw[:80].decode("utf-8", errors="backslashreplace")
        escaped = raw.startswith(b"\\")
        body = raw[1:] if escaped else raw
        digest, sep, rest = body.partition(b" ")
        if not sep or not _HEX64.fullmatch(digest) or len(rest) < 2 or rest[:1] not in b" *":
            bad.append(f"{source}:{n}: not a sha256sum line: {shown!r}")
            continue
        name_bytes = rest[1:]
        if escaped:
            unescaped = _unescape(name_bytes)
            if unescaped is None:
                bad.append(f"{source}:{n}: a bad backslash escape in {shown!r}")
                continue
            name_bytes = unescaped
        try:
            name = name_bytes.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(f"{source}:{n}: the path is not UTF-8: {shown!r}")
            continue
        why = _unsafe_path(name, bad_name_char)
        if why is None and name in (SUMS_NAME, SIG_NAME):
            why = f"{SUMS_NAME} cannot list itself or its signature"
        if why is not None:
            bad.append(f"{source}:{n}: {name[:100]!r}: {why}")
            continue
        if name in out:
            bad.append(f"{source}:{n}: {name!r} is listed twice (first on line {first_line[name]})")
            continue
        out[name] = digest.decode().lower()
        first_line[name] = n
    if bad:
        more = f"\n(and {len(bad) - 20} more)" if len(bad) > 20 else ""
        raise IntegrityError(
            "\n".join(bad[:20]) + more + ".",
            "The file was altered or damaged on the way; copy SHA256SUMS again from the original bundle.",
        )
    return out


def _unescape(name: bytes) -> bytes | None:
    r"""coreutils' escaped file name (after a leading backslash on the line): \\ \n \r; None if malformed."""
    out = bytearray()
    i = 0
    while i < len(name):
        c = name[i : i + 1]
        if c != b"\\":
            out += c
            i += 1
            continue
        nxt = name[i + 1 : i + 2]
        if nxt == b"\\":
            out += b"\\"
        elif nxt == b"n":
            out += b"\n"
        elif nxt == b"r":
            out += b"\r"
        else:
            return None
        i += 2
    return bytes(out)


def _unsafe_path(name: str, bad_name_char: Callable[[str], str | None]) -> str | None:
    """Why `name` cannot be a path inside a bundle, or None."""
    if name.startswith("/"):
        return "an absolute path, outside the bundle"
    parts = name.split("/")
    if ".." in parts:
        return "a path with '..', outside the bundle"
    if any(p in ("", ".") for p in parts):
        return "not a plain relative path (an empty or '.' component)"
    if bad := bad_name_char(name):
        return f"the path holds {bad}"
    return None
