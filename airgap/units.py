"""Sizes and times as people read and write them: one unit system for every option and every report.

Decimal units (kB, MB, GB, TB, and a bare K/M/G/T) mean powers of 1000, as drives and DVDs are sold (a
"128 GB" stick holds 128 x 10^9 bytes, a DVD 4.7 x 10^9); binary units are spelled out (KiB, MiB, GiB,
TiB). Reports print binary units with their "iB", so nothing is ambiguous on either side.
"""

from __future__ import annotations

import datetime as dt
import re

from airgap.errors import BadInputError

# The largest file FAT32 can hold: one byte short of 4 GiB.
FAT32_MAX_FILE = (4 << 30) - 1

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(text: str, option: str, example: str) -> int:
    """'128G', '4.7GB', '500 MiB' -> bytes. A unit is required: '128' alone is surely not 128 bytes.
    `option` names the option in the error; `example` is a right way to write it for that option."""
    m = _SIZE_RE.fullmatch(text or "")
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise BadInputError(
            f"{option} {text!r}: not a size.",
            f"Write it like {option} {example}: K, M, G, T (or kB, MB, GB, TB) are decimal, as media are "
            "sold; KiB, MiB, GiB, TiB are binary.",
        )
    if unit in ("", "b"):
        raise BadInputError(
            f"{option} {text!r}: a size needs a unit; {text} bytes is surely not meant.",
            f"Write it like {option} {example} (decimal, as media are sold) or with GiB for binary.",
        )
    return int(float(m.group(1)) * _UNITS[unit])


def parse_part_size(text: str, option: str = "--max-file-size") -> int:
    """The largest file a medium takes. '4G' means "fits FAT32" (4 GiB - 1 byte), the one limit people
    write that way; every other value is read by `parse_size`."""
    if re.fullmatch(r"\s*4\s*G\s*", text or "", re.IGNORECASE):
        return FAT32_MAX_FILE
    size = parse_size(text, option, "4G (FAT32) or 4.7GB (a DVD)")
    if size < 10**6:
        raise BadInputError(f"{option} {text!r} is too small for a part size.", "Use at least 1M.")
    return size


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def now_utc() -> str:
    """An ISO 8601 UTC timestamp to the second, as the lock and state files record times."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
