"""Is a download's start plausibly the file its name promises? Judged on the first bytes as they stream.

A mirror behind a login, a captive portal or an expired session answers 200 with a web page: without a
pinned digest nothing else would notice, and a 70-byte "session expired" page would be stored as the
driver `.run`. So a body that starts as HTML where a binary format is expected is refused, and, where no
digest checks the bytes, a body that lacks the format's magic bytes too. Only clear mismatches refuse: a
name with an unknown extension, a format without magic bytes, or a body too short to tell all pass.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SNIFF_BYTES", "Format", "format_of", "implausible"]

# Enough for the longest signature (.deb: "!<arch>\n" + "debian-binary") and a doctype after some blanks.
SNIFF_BYTES = 64

_HTML = re.compile(rb"\A(?:\xef\xbb\xbf)?\s*<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.IGNORECASE)


@dataclass(frozen=True)
class Format:
    """A kind of file by its name: what to call it in a message, and a test of its first bytes (None:
    the format has no magic bytes). `magic` answers True (matches), False (clearly not) or None (the
    bytes so far are too few to tell)."""

    kind: str
    magic: Callable[[bytes], bool | None] | None = None


def _prefix(*signatures: bytes) -> Callable[[bytes], bool | None]:
    def check(head: bytes) -> bool | None:
        for sig in signatures:
            if head.startswith(sig):
                return True
        if any(sig.startswith(head) for sig in signatures):
            return None  # a prefix of a signature: a longer body might still match
        return False

    return check


def _safetensors(head: bytes) -> bool | None:
    # An 8-byte little-endian header length, then the JSON header itself.
    if len(head) < 9:
        return None
    (length,) = struct.unpack("<Q", head[:8])
    return length > 0 and head[8:9] == b"{"


# Longest suffix first: ".tar.gz" must not be read as ".gz".
_FORMATS: tuple[tuple[str, Format], ...] = (
    # NVIDIA's .run files are makeself archives: a shell script first.
    (".run", Format("a makeself installer (.run)", _prefix(b"#!/bin/sh", b"#!/bin/bash", b"#! /bin/sh"))),
    (".tar.gz", Format("a gzip archive (.tar.gz)", _prefix(b"\x1f\x8b"))),
    (".tgz", Format("a gzip archive (.tgz)", _prefix(b"\x1f\x8b"))),
    (".deb", Format("a Debian package (.deb)", _prefix(b"!<arch>\ndebian-binary"))),
    (".whl", Format("a wheel (.whl)", _prefix(b"PK\x03\x04"))),
    (".zip", Format("a zip archive (.zip)", _prefix(b"PK\x03\x04", b"PK\x05\x06"))),
    (".safetensors", Format("a safetensors file", _safetensors)),
    (".gguf", Format("a GGUF model file", _prefix(b"GGUF"))),
    (".tar", Format("a tar archive (.tar)")),
    (".bin", Format("a binary file (.bin)")),
)


def format_of(name: str) -> Format | None:
    """The format a file name promises, or None when airgap has no opinion about it."""
    lower = name.lower()
    for suffix, fmt in _FORMATS:
        if lower.endswith(suffix):
            return fmt
    return None


def _is_html_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() in ("text/html", "application/xhtml+xml")


def implausible(
    name: str, head: bytes, content_type: str | None, *, check_magic: bool, complete: bool = False
) -> tuple[str, bool] | None:
    """Why the body starting with `head` cannot be the file `name`: (what it should have been, whether it
    is a web page), or None when it may be. `complete`: `head` is the whole body (no more bytes will
    come), so a short head is judged as it is. `check_magic`: refuse a body without the format's magic
    bytes too (done where no digest will check the bytes)."""
    fmt = format_of(name)
    if fmt is None or not head:
        return None
    if _HTML.match(head):
        return fmt.kind, True
    verdict = fmt.magic(head) if fmt.magic is not None else None
    if verdict is None and complete and fmt.magic is not None:
        verdict = False  # the whole body is shorter than the signature
    if _is_html_type(content_type) and (verdict is False or head.lstrip()[:1] == b"<"):
        # A page labelled as one: a binary served with a wrong type still carries its magic.
        return fmt.kind, True
    if check_magic and verdict is False:
        return fmt.kind, False
    return None
