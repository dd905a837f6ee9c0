"""The closure: which packages, at which versions, in which order, make the requested packages installable
on the server, computed the way apt computes it (Depends and Pre-Depends, alternatives, virtual packages,
`:any`, `Architecture: all`, the newest version that satisfies everything), leaving out what the server
already has. Recommends are not followed (apt's `--no-install-recommends`): what a build or a runtime needs
is in Depends; Recommends would pull in much more than anyone checks.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airgap.sources.apt.control import group_text, rel_text, satisfies
from airgap.sources.apt.indexes import AptIndex, Candidate
from airgap.sources.apt.repos import AptError
from airgap.sources.apt.status import ServerPackages

if TYPE_CHECKING:
    from airgap.sources.apt.control import OrGroup, Relation

PRIORITY_RANK = {"required": 0, "important": 1, "standard": 2, "optional": 3, "extra": 4}


@dataclass(frozen=True)
class Request:
    """A package to install: `name`, `name=VERSION` (exact, or an upstream version prefix: 1.16.2 matches
    1.16.2-1), or `name (>= V)`. `why` says which manifest field asked for it."""

    name: str
    version: str | None = None  # "=" match, exact or prefix
    relation: tuple[str, str] | None = None  # (op, version)
    why: str = ""

    @classmethod
    def parse(cls, text: str, why: str = "") -> Request:
        text = text.strip()
        m = re.fullmatch(r"([a-z0-9][a-z0-9+.-]+)\s*(?:=\s*(\S+)|\((<<|<=|=|>=|>>)\s*([^)\s]+)\s*\))?", text)
        if not m:
            raise ValueError(
                f"{text!r} is not a package request; write it like `dkms`, `nvidia-container-toolkit="
                "1.16.2` or `gcc-12 (>= 12.3)`"
            )
        return cls(m.group(1), m.group(2), (m.group(3), m.group(4)) if m.group(3) else None, why)

    def matches(self, version: str) -> bool:
        if self.version is not None and not version_matches(version, self.version):
            return False
        return self.relation is None or satisfies(version, self.relation)

    def __str__(self) -> str:
        if self.version:
            return f"{self.name}={self.version}"
        if self.relation:
            return f"{self.name} ({self.relation[0]} {self.relation[1]})"
        return self.name


def version_matches(version: str, want: str) -> bool:
    """`want` is the exact version, or its upstream part up to a separator: 1.16.2 matches 1.16.2-1 and
    1:1.16.2-1ubuntu1, not 1.16.20-1; 9 matches 9.1.0.70-1."""
    if version == want:
        return True
    bare = version.split(":", 1)[1] if ":" in version and ":" not in want else version
    return bare == want or (bare.startswith(want) and bare[len(want)] in "-.~+")


@dataclass
class Resolution:
    packages: list[Candidate]  # install order: dependencies before what needs them
    needed_by: dict[str, str]  # package -> "requested (field)" or the package that pulled it in
    server: str  # what the server was assumed to have
    left_out: list[str] = field(default_factory=list)  # requested but already on the server


class _Retry(Exception):
    def __init__(self, name: str, rel: tuple[str, str]) -> None:
        self.name, self.rel = name, rel


class Resolver:
    """apt's MarkInstall, simplified and made deterministic: first alternative whose newest version
    satisfies, then (unlike apt, which gives up) the newest older version that does; a virtual package goes
    to its provider (the one already chosen or installed, else by Priority, then name)."""

    MAX_RESTARTS = 50

    def __init__(self, index: AptIndex, server: ServerPackages) -> None:
        self.index = index
        self.server = server
        self.arch = index.arch

    def resolve(self, requests: list[Request]) -> Resolution:
        extra: dict[str, list[tuple[str, str]]] = {}
        for _ in range(self.MAX_RESTARTS):
            try:
                return self._attempt(requests, extra)
            except _Retry as retry:
                if retry.rel in extra.get(retry.name, []):
                    break
                extra.setdefault(retry.name, []).append(retry.rel)
        raise AptError(
            f"apt: could not settle on versions for {', '.join(sorted(extra))}: the dependencies "
            "ask for versions that contradict each other.",
            "Pin the versions in the manifest (`name=VERSION`) so that they agree.",
        )

    # One pass; a package chosen too early at a version a later dependency refuses restarts it with that
    # dependency's constraint added (`extra`), so the result is the newest set that satisfies everything.
    def _attempt(self, requests: list[Request], extra: dict[str, list[tuple[str, str]]]) -> Resolution:
        chosen: dict[str, Candidate] = {}
        provided: dict[str, list[tuple[Candidate, str | None]]] = {}
        needed_by: dict[str, str] = {}
        queue: deque[Candidate] = deque()
        problems: list[str] = []
        left_out: list[str] = []

        def add(cand: Candidate, why: str) -> None:
            chosen[cand.name] = cand
            needed_by[cand.name] = why
            for name, ver in cand.provides:
                provided.setdefault(name, []).append((cand, ver))
            queue.append(cand)

        for req in requests:
            have = self.server.packages.get(req.name)
            if have is not None and req.matches(have.version):
                left_out.append(f"{req.name} (the server has {have.version})")
                continue
            if req.name in chosen:
                if not req.matches(chosen[req.name].version):
                    problems.append(f"{req} ({req.why}) contradicts {chosen[req.name]} ({needed_by[req.name]})")
                continue
            cand, why_not = self._pick_requested(req, extra.get(req.name, []))
            if cand is None:
                problems.append(why_not)
            else:
                add(cand, f"requested ({req.why})" if req.why else "requested")

        while queue:
            cand = queue.popleft()
            for fieldname in ("Pre-Depends", "Depends"):
                for group in cand.relations(fieldname):
                    if self._satisfied(group, chosen, provided):
                        continue
                    pick = self._choose(group, chosen, extra)
                    if pick is not None:
                        add(pick, cand.name)
                        continue
                    for rel in group:  # chosen earlier at a version this dependency refuses: retry
                        other, want = chosen.get(rel["name"]), rel.get("version")
                        if (
                            other is not None
                            and want
                            and not satisfies(other.version, want)
                            and any(satisfies(c.version, want) for c in self.index.versions(rel["name"]))
                        ):
                            raise _Retry(rel["name"], want)
                    problems.append(self._unsatisfiable(cand, fieldname, group, chosen))
        if problems:
            raise AptError(
                "apt: the packages cannot be resolved for "
                f"{self.arch} against {'; '.join(self.index.sources) or 'no repository'}:\n"
                + "\n".join(f"  - {p}" for p in dict.fromkeys(problems)),
                "Check the package names and versions in the manifest; a package that lives in another "
                "repository needs that repository in `apt.repos`.",
            )
        conflicts = self._conflicts(chosen)
        if conflicts:
            raise AptError(
                "apt: the closure has conflicts:\n" + "\n".join(f"  - {c}" for c in conflicts),
                "Drop or pin one of the packages involved (apt would refuse this set too).",
            )
        order = self._install_order(chosen, provided)
        return Resolution(order, needed_by, self.server.description, left_out)

    def _allowed_arch(self, rel: Relation) -> bool:
        qual = rel.get("archqual")
        return qual in (None, "any", "native", self.arch)

    def _candidates(self, name: str, rel: tuple[str, str] | None, extra: list[tuple[str, str]]) -> list[Candidate]:
        return [
            c
            for c in self.index.versions(name)
            if satisfies(c.version, rel) and all(satisfies(c.version, e) for e in extra)
        ]

    def _pick_requested(self, req: Request, extra: list[tuple[str, str]]) -> tuple[Candidate | None, str]:
        versions = self.index.versions(req.name)
        fits = [c for c in versions if req.matches(c.version) and all(satisfies(c.version, e) for e in extra)]
        if fits:
            return fits[0], ""
        where = f" ({req.why})" if req.why else ""
        if versions:
            listed = ", ".join(c.version for c in versions[:8]) + (" ..." if len(versions) > 8 else "")
            return None, f"{req}{where}: no such version; the repositories have {listed}"
        providers = sorted({c.name for c, _ in self.index.providers.get(req.name, [])})
        if len(providers) == 1 and req.version is None and req.relation is None:
            return self._pick_requested(Request(providers[0], why=req.why), extra)
        if providers:
            return None, f"{req.name}{where} is a virtual package provided by {', '.join(providers)}: name one of them"
        close = self.index.close_names(req.name)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return None, f"{req.name}{where}: no such package for {self.arch}{hint}"

    def _satisfied(
        self, group: OrGroup, chosen: dict[str, Candidate], provided: dict[str, list[tuple[Candidate, str | None]]]
    ) -> bool:
        for rel in group:
            if not self._allowed_arch(rel):
                continue
            name, ver = rel["name"], rel.get("version")
            c = chosen.get(name)
            if c is not None and satisfies(c.version, ver):
                return True
            have = self.server.packages.get(name)
            # A package the closure replaces is judged by its new version, not the server's old one.
            if have is not None and c is None and satisfies(have.version, ver):
                return True
            for _prov, pver in provided.get(name, []):
                if ver is None or (pver is not None and satisfies(pver, ver)):
                    return True
            for _pkg, pver in self.server.provides.get(name, []):
                if ver is None or (pver is not None and satisfies(pver, ver)):
                    return True
        return False

    def _choose(
        self, group: OrGroup, chosen: dict[str, Candidate], extra: dict[str, list[tuple[str, str]]]
    ) -> Candidate | None:
        usable = [r for r in group if self._allowed_arch(r)]
        # apt: the first alternative whose candidate (newest version) satisfies the relation.
        for rel in usable:
            if rel["name"] in chosen:
                continue
            newest = self.index.newest(rel["name"])
            if newest is not None:
                if satisfies(newest.version, rel.get("version")) and all(
                    satisfies(newest.version, e) for e in extra.get(rel["name"], [])
                ):
                    return newest
                continue
            prov = self._provider(rel, chosen)
            if prov is not None:
                return prov
        # Then an older version: NVIDIA's flat repositories keep every release, and `(= 1.16.2-1)` wants one.
        for rel in usable:
            if rel["name"] in chosen:
                continue
            fits = self._candidates(rel["name"], rel.get("version"), extra.get(rel["name"], []))
            if fits:
                return fits[0]
        return None

    def _provider(self, rel: Relation, chosen: dict[str, Candidate]) -> Candidate | None:
        ver = rel.get("version")
        options = []
        for cand, pver in self.index.providers.get(rel["name"], []):
            if ver is not None and (pver is None or not satisfies(pver, ver)):
                continue
            if cand.name in chosen or self.index.newest(cand.name) is not cand:
                continue  # apt considers only candidate versions of providers
            options.append(cand)
        options.sort(key=lambda c: (PRIORITY_RANK.get(c.priority, 5), c.name))
        return options[0] if options else None

    def _unsatisfiable(self, cand: Candidate, fieldname: str, group: OrGroup, chosen: dict[str, Candidate]) -> str:
        bits = []
        for rel in group:
            name = rel["name"]
            if not self._allowed_arch(rel):
                bits.append(f"{rel_text(rel)} is for another architecture")
            elif name in chosen:
                bits.append(f"{name} is already chosen at {chosen[name].version}")
            elif self.index.versions(name):
                bits.append(f"{name} has only {', '.join(c.version for c in self.index.versions(name)[:5])}")
            elif name in self.server.packages:
                bits.append(f"the server has {name} {self.server.packages[name].version}")
            else:
                bits.append(f"no package {name} in the repositories")
        return f"{cand} {fieldname} {group_text(group)}: {'; '.join(bits)}"

    def _conflicts(self, chosen: dict[str, Candidate]) -> list[str]:
        out = []
        for cand in chosen.values():
            for fieldname in ("Conflicts", "Breaks"):
                for group in cand.relations(fieldname):
                    for rel in group:
                        name, ver = rel["name"], rel.get("version")
                        other = chosen.get(name)
                        if other is not None and other is not cand and satisfies(other.version, ver):
                            out.append(f"{cand} {fieldname} {rel_text(rel)}, and the closure has {other}")
                        have = self.server.packages.get(name)
                        if other is None and have is not None and satisfies(have.version, ver):
                            out.append(f"{cand} {fieldname} {rel_text(rel)}, and the server has {name} {have.version}")
                        if ver is None:
                            for prov in chosen.values():
                                if prov is not cand and prov.name != name and any(p == name for p, _ in prov.provides):
                                    out.append(f"{cand} {fieldname} {name}, which {prov} provides")
        return sorted(set(out))

    def _install_order(
        self, chosen: dict[str, Candidate], provided: dict[str, list[tuple[Candidate, str | None]]]
    ) -> list[Candidate]:
        """Dependencies first; packages in a dependency cycle (libc6 <-> libgcc-s1) kept together."""
        edges: dict[str, set[str]] = {}
        for cand in chosen.values():
            deps: set[str] = set()
            for fieldname in ("Pre-Depends", "Depends"):
                for group in cand.relations(fieldname):
                    for rel in group:
                        if rel["name"] in chosen and satisfies(chosen[rel["name"]].version, rel.get("version")):
                            deps.add(rel["name"])
                        deps.update(p.name for p, _ in provided.get(rel["name"], []))
            deps.discard(cand.name)
            edges[cand.name] = deps
        return [chosen[n] for scc in strongly_connected(edges) for n in sorted(scc)]


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's SCCs, iteratively; each component comes after those it depends on (reverse topological)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in edges:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    n = stack.pop()
                    on_stack.discard(n)
                    comp.append(n)
                    if n == node:
                        break
                out.append(comp)
    return out
