"""Wheels as data: what a wheel file says about itself, and which distributions a target needs.

Two collectors resolve Python packages for the server: the python layer (sources/pypi.py, from pip's
`--report`) and self-install (airgap's own dependencies under tool/, from `pip download`). Both must walk
the dependency closure again with the TARGET's environment markers, because pip judges markers by the
python it runs on (airgap.target.Target.wants says why). The walk lives here, once, over anything with a
name, a version and requirements.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Protocol, TypeVar

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from airgap.errors import AirgapError
from airgap.target import Target


class Distribution(Protocol):
    """What the closure walk needs of a distribution: its canonical name, version and requirements."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> Version: ...

    @property
    def requires(self) -> Sequence[Requirement]: ...


D = TypeVar("D", bound=Distribution)


@dataclass(frozen=True)
class Dist:
    """A distribution known from its metadata alone (pip's report lists these without files)."""

    name: str  # canonical
    version: Version
    requires: Sequence[Requirement] = field(default_factory=tuple)


@dataclass
class WheelInfo:
    """A wheel file on disk and what its name and METADATA say."""

    path: Path
    name: str  # canonical
    version: Version
    tags: frozenset[Tag]
    requires: list[Requirement]
    requires_python: str


def parse_requirements(lines: Iterable[str]) -> list[Requirement]:
    """Requirements from metadata lines; one that does not parse is skipped, as pip itself would refuse
    such a distribution long before its requirements mattered."""
    out = []
    for line in lines:
        try:
            out.append(Requirement(line))
        except InvalidRequirement:
            continue
    return out


def read_wheel(path: Path) -> WheelInfo:
    name, version, _build, tags = parse_wheel_filename(path.name)
    with zipfile.ZipFile(path) as zf:
        metas = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if not metas:
            raise AirgapError(f"{path.name}: a wheel without .dist-info/METADATA.", "Delete it and collect again.")
        msg = HeaderParser().parsestr(zf.read(metas[0]).decode("utf-8", "replace"))
    requires = parse_requirements(msg.get_all("Requires-Dist") or [])
    return WheelInfo(
        path, canonicalize_name(name), version, frozenset(tags), requires, msg.get("Requires-Python") or ""
    )


def requirement_spec(req: Requirement) -> str:
    """A requirement without its marker (already evaluated for the target), for pip's command line."""
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}{req.specifier}"


def resolve_closure(
    dists: Iterable[D], roots: Sequence[Requirement], target: Target
) -> tuple[dict[str, D], list[Requirement]]:
    """Which of `dists` the target needs for `roots` (markers evaluated for the target), and what is missing.

    Per name, the newest distribution that meets every specifier seen so far; a requirement nothing meets
    is returned as missing (another pip round fetches it). Returns ({canonical name: chosen}, missing).
    """
    by_name: dict[str, list[D]] = {}
    for d in dists:
        by_name.setdefault(d.name, []).append(d)
    for candidates in by_name.values():
        candidates.sort(key=lambda d: d.version, reverse=True)
    specs: dict[str, SpecifierSet] = {}
    extras: dict[str, set[str]] = {}
    selected: dict[str, D] = {}
    missing: dict[str, Requirement] = {}
    pending = [r for r in roots if target.wants(r.marker)]
    while pending:
        req = pending.pop()
        name: str = canonicalize_name(req.name)
        specs[name] = specs.get(name, SpecifierSet()) & req.specifier
        have_extras = extras.setdefault(name, set())
        new_extras = set(req.extras) - have_extras
        choice = next((d for d in by_name.get(name, []) if specs[name].contains(d.version, prereleases=True)), None)
        if choice is None:
            missing[name] = req
            continue
        if selected.get(name) is choice and not new_extras:
            continue
        selected[name] = choice
        have_extras |= new_extras
        wanted = ["", *sorted(have_extras)]
        pending += [dep for dep in choice.requires if target.wants(dep.marker, wanted)]
    for name in list(missing):
        if name in selected and specs[name].contains(selected[name].version, prereleases=True):
            del missing[name]  # a later, looser pass found it
    return selected, list(missing.values())
