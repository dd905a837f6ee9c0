"""How many files a bundle holds and how big it is, counted one way for every command that says so.

collect's summary, verify's, README.txt and plan all print a count and a size; each used to count its own
way (airgap itself in `tool/` was in none of them, a delta's files in the base bundle in some). They all
take their numbers and their words from here: `bundle_totals` for a bundle that exists (its lock),
`planned_totals` for one that does not yet (plan, where airgap's own files are not known).

What is counted: every file the bundle carries, a file stored in numbered parts once, airgap itself
(`tool/` and `install.sh`) included; not the lock, README.txt, SHA256SUMS and its signature, which say
what the bundle is rather than being part of it. SHA256SUMS therefore has `sums_lines` lines: one per
counted file, one per part instead of the file for a split one, and two more (the lock and README.txt).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airgap.units import human_size

if TYPE_CHECKING:
    from airgap.lock import Lock


@dataclass(frozen=True)
class Totals:
    """A bundle's count and size. `files`/`bytes` cover the layers' files it carries; `tool_files`/
    `tool_bytes` airgap itself (0 with --no-tool, None before collect: not known yet)."""

    files: int
    bytes: int
    tool_files: int | None
    tool_bytes: int | None
    in_base_files: int = 0  # a delta bundle's files left to its base bundle, not carried
    in_base_bytes: int = 0
    base_name: str = ""
    split_files: int = 0  # files stored as numbered parts (--max-file-size) ...
    parts: int = 0  # ... and how many parts they take
    unknown: int = 0  # plan: files whose size is not known
    estimated: int = 0  # plan: files whose size is airgap's estimate

    @property
    def all_files(self) -> int:
        """Every file counted, airgap itself included (as far as known)."""
        return self.files + (self.tool_files or 0)

    @property
    def all_bytes(self) -> int:
        return self.bytes + (self.tool_bytes or 0)

    @property
    def sums_lines(self) -> int:
        """The lines of the bundle's SHA256SUMS: each part of a split file has its own, and the lock and
        README.txt one each."""
        return self.all_files - self.split_files + self.parts + 2

    def text(self) -> str:
        """One sentence, the same in every command: "1.2 GiB in 14 files (of which airgap itself, in tool/
        and install.sh: 9 files, 11.0 MiB)"; before collect, the tool's part is said to be unknown."""
        if self.tool_files is None or self.tool_bytes is None:
            size = total_text(self.bytes, self.unknown, self.estimated)
            out = (
                f"{size} in {_files(self.files)}, plus airgap itself in tool/ and install.sh, whose files "
                "and size are known only when collect builds it (`collect --no-tool` leaves it out)"
            )
        else:
            size = total_text(self.all_bytes, self.unknown, self.estimated)
            out = f"{size} in {_files(self.all_files)}"
            if self.tool_files:
                tool = f"{_files(self.tool_files)}, {human_size(self.tool_bytes)}"
                out += f" (of which airgap itself, in tool/ and install.sh: {tool})"
            else:
                out += " (without airgap itself: collected with --no-tool)"
        if self.split_files:
            out += f"; {self.split_files} of them stored as {self.parts} numbered parts"
        if self.in_base_files:
            base = f"the base bundle '{self.base_name}'" if self.base_name else "the base bundle"
            out += (
                f"; {_files(self.in_base_files, 'more ')}, {human_size(self.in_base_bytes)}, not carried: "
                f"{base} holds them"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "all_files": self.all_files,
            "all_bytes": self.all_bytes,
            # Before collect (tool/ unknown) SHA256SUMS' length is not known either.
            "sums_lines": self.sums_lines if self.tool_files is not None else None,
            "text": self.text(),
        }


def bundle_totals(lock: Lock) -> Totals:
    """The totals of the bundle `lock` describes (finished or not: what it lists)."""
    carried = [a for a in lock.artifacts if not a.in_base]
    in_base = [a for a in lock.artifacts if a.in_base]
    split = [a for a in carried if a.parts]
    tool = lock.tool_files()
    return Totals(
        files=len(carried),
        bytes=sum(a.size for a in carried),
        tool_files=len(tool),
        tool_bytes=sum(f.size for f in tool),
        in_base_files=len(in_base),
        in_base_bytes=sum(a.size for a in in_base),
        base_name=lock.base.name if lock.base else "",
        split_files=len(split),
        parts=sum(len(a.parts) for a in split),
    )


def planned_totals(sizes: list[int | None], estimated: int = 0) -> Totals:
    """The totals plan can give before collect: the layers' files by their sizes (None: unknown), airgap
    itself not yet (collect builds it for the target)."""
    return Totals(
        files=len(sizes),
        bytes=sum(s or 0 for s in sizes),
        tool_files=None,
        tool_bytes=None,
        unknown=sum(1 for s in sizes if s is None),
        estimated=estimated,
    )


def _files(n: int, what: str = "") -> str:
    return f"{n} {what}file" if n == 1 else f"{n} {what}files"


def sizes(n: int) -> str:
    return f"{n} size" if n == 1 else f"{n} sizes"


def total_text(total: int, unknown: int, estimated: int) -> str:
    """ "8.0 MiB", "~4.1 GiB (2 sizes estimated)", "at least 3.0 MiB (2 sizes unknown)", "unknown (4 sizes
    unknown)": a partial sum is never shown as if it were the whole, and no sum of nothing as "0 B"."""
    if unknown and not total:
        return f"unknown ({sizes(unknown)} unknown)"
    text = ("~" if estimated else "") + human_size(total)
    notes = [f"{sizes(n)} {what}" for n, what in ((unknown, "unknown"), (estimated, "estimated")) if n]
    return ("at least " if unknown else "") + text + (f" ({', '.join(notes)})" if notes else "")
