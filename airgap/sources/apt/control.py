"""The control-file vocabulary the apt modules share: which fields are kept from a paragraph, parsed
relations (`Depends: a (>= 1) | b`), what a package provides, and when a version satisfies a relation.

Indexes, the server's dpkg status, the closure and the install side all read the same fields the same
way; this module is that one way, and imports nothing of airgap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from debian.deb822 import PkgRelation
from debian.debian_support import version_compare

if TYPE_CHECKING:
    from typing import TypeAlias

    # python-debian declares its parsed relation (name, archqual, version (op, v), ...) for type checkers only.
    Relation: TypeAlias = PkgRelation.ParsedRelation
    OrGroup: TypeAlias = list[Relation]

# Only these fields are kept from an index: a jammy main+universe index is ~100k paragraphs, and keeping
# the descriptions would triple the memory and the parse time.
FIELDS = [
    "Package",
    "Version",
    "Architecture",
    "Depends",
    "Pre-Depends",
    "Provides",
    "Conflicts",
    "Breaks",
    "Multi-Arch",
    "Priority",
    "Essential",
    "Filename",
    "Size",
    "SHA256",
    "MD5sum",
    "Status",
]


def parse_relations(text: str) -> list[OrGroup]:
    """A relation field's groups of alternatives; an empty field has none."""
    return PkgRelation.parse_relations(text) if text.strip() else []


def parse_provides(text: str) -> tuple[tuple[str, str | None], ...]:
    """(name, version) of each virtual package a `Provides:` field names; the version only for `(= V)`,
    the one form Debian policy allows there."""
    out = []
    for group in parse_relations(text):
        for rel in group:
            ver = rel.get("version")
            out.append((rel["name"], ver[1] if ver and ver[0] == "=" else None))
    return tuple(out)


def satisfies(version: str, rel: tuple[str, str] | None) -> bool:
    if rel is None:
        return True
    op, want = rel
    c = version_compare(version, want)
    return {"<<": c < 0, "<=": c <= 0, "=": c == 0, ">=": c >= 0, ">>": c > 0, "<": c <= 0, ">": c >= 0}[op]


def rel_text(rel: Relation) -> str:
    text = rel["name"] + (f":{rel['archqual']}" if rel.get("archqual") else "")
    version = rel.get("version")
    return text + (f" ({version[0]} {version[1]})" if version else "")


def group_text(group: OrGroup) -> str:
    return " | ".join(rel_text(r) for r in group)
