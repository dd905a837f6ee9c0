"""The CUDA the resolved Python wheels need: read from the closure pip resolved, not from python.requirements.

`python: {requirements: [accelerate]}` names no torch, yet pip brings one, and with it the nvidia-* CUDA
wheels of whatever build PyPI serves today (its newest torch releases are CUDA 13 builds, which need driver
>= 580). The rules in `rules.py` judge what the manifest asks for; these judge what was resolved: every
torch, torchvision, torchaudio, vLLM, xformers, flash-attn and nvidia-* CUDA wheel in the closure, at
`plan` and `collect` (the python layer's artifacts) and again at install's preflight (the lock's).

A CUDA wheel below a torch-like package in the dependency graph is reported as that package's: the fix is
to pin torch to another build, not to fight over nvidia-cuda-runtime. Who pulled it in comes from each
wheel's Requires-Dist, which the python layer records (`WheelMeta.requires`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from airgap.artifact_meta import WheelMeta, read_meta
from airgap.compat import tables
from airgap.manifest import Manifest
from airgap.target import Target

PYTORCH_INDEX = "https://download.pytorch.org/whl"


class ArtifactLike(Protocol):
    """An Artifact (plan, collect) or a LockedArtifact (install): both carry layer and meta."""

    layer: str
    meta: dict[str, Any]


@dataclass
class ClosureWheel:
    name: str  # canonical
    project: str  # as its metadata spells it
    version: str  # as resolved, local label included
    requested: bool
    requires: list[str] | None  # Requires-Dist; None when the lock predates recording it
    need: tables.CudaNeed | None
    chain: list[str] = field(default_factory=list)  # canonical names, a requested wheel first, this one last

    @property
    def label(self) -> str:
        return f"{self.project} {self.version}"


@dataclass
class CudaGroup:
    """A package whose build decides a CUDA (torch), and the CUDA wheels it brings."""

    owner: ClosureWheel
    members: list[ClosureWheel] = field(default_factory=list)  # wheels with a need, the owner's own first

    @property
    def evidence(self) -> ClosureWheel | None:
        """The member with the highest need: the one to name."""
        with_need = [w for w in self.members if w.need is not None]
        if not with_need:
            return None
        # The highest CUDA; of equals, the one that says it best: a +cuXYZ, then the runtime library.
        return max(with_need, key=lambda w: (w.need.key, w is self.owner, "cuda-runtime" in w.name))  # type: ignore[union-attr]

    @property
    def need(self) -> tables.CudaNeed | None:
        best = self.evidence
        return best.need if best is not None else None


@dataclass
class Closure:
    wheels: dict[str, ClosureWheel]
    groups: list[CudaGroup]
    unresolved: bool  # the python layer's placeholder: plan --no-head resolved nothing
    chains_known: bool  # the artifacts recorded Requires-Dist

    def pulled_in(self, wheel: ClosureWheel) -> str:
        """Who pulled a wheel in, in words: "pulled in by accelerate -> torch"."""
        if wheel.requested:
            return "requested in python.requirements"
        if len(wheel.chain) >= 2:
            return "pulled in by " + " -> ".join(self.wheels[n].project for n in wheel.chain)
        roots = ", ".join(w.project for w in self.wheels.values() if w.requested) or "the requirements"
        if not self.chains_known:
            return f"a dependency of {roots} (this lock does not record which one pulled it in)"
        return f"a dependency of {roots}"


def read_closure(manifest: Manifest, artifacts: Sequence[ArtifactLike]) -> Closure | None:
    """The python layer's wheels among `artifacts`, with their chains and CUDA groups; None without any
    python artifact (the layer was skipped)."""
    wheels: dict[str, ClosureWheel] = {}
    unresolved = False
    seen_python = False
    for art in artifacts:
        if art.layer != "python":
            continue
        seen_python = True
        meta = art.meta
        if "unresolved" in meta:
            unresolved = True
            continue
        if "project" not in meta:
            continue  # requirements.lock.txt
        wm = read_meta(WheelMeta, meta, str(getattr(art, "path", "a python wheel")))
        name = canonicalize_name(wm.project)
        wheels[name] = ClosureWheel(
            name, wm.project, wm.version, wm.requested, wm.requires, tables.wheel_cuda(name, wm.version)
        )
    if not seen_python:
        return None
    chains_known = bool(wheels) and all(w.requires is not None for w in wheels.values())
    _chains(manifest, wheels)
    return Closure(wheels, _groups(wheels), unresolved, chains_known)


def _chains(manifest: Manifest, wheels: dict[str, ClosureWheel]) -> None:
    """Each wheel's shortest chain from a requested one, over Requires-Dist edges the target wants first
    (markers judged for the server), then over any edge (an extra someone asked for)."""
    try:
        target: Target | None = Target.of(manifest)
    except Exception:  # an odd target.python: chains are for messages, not worth an error here
        target = None
    strict: dict[str, list[str]] = {}
    loose: dict[str, list[str]] = {}
    for w in wheels.values():
        for raw in w.requires or ():
            try:
                req = Requirement(raw)
            except InvalidRequirement:
                continue
            dep: str = canonicalize_name(req.name)
            if dep not in wheels or dep == w.name:
                continue
            loose.setdefault(w.name, []).append(dep)
            if req.marker is None or target is None or target.wants(req.marker):
                strict.setdefault(w.name, []).append(dep)
    for w in wheels.values():
        if w.requested:
            w.chain = [w.name]
    for edges in (strict, loose):
        reached = [w for w in wheels.values() if w.chain]
        reached.sort(key=lambda w: (len(w.chain), _requirement_order(manifest, w.chain[0])))
        queue = deque(w.name for w in reached)
        while queue:
            parent = queue.popleft()
            for child in edges.get(parent, ()):
                if not wheels[child].chain:
                    wheels[child].chain = [*wheels[parent].chain, child]
                    queue.append(child)


def _requirement_order(manifest: Manifest, name: str) -> int:
    return next((i for i, _ in requirement_fields(manifest, name)), 10**6)


def requirement_fields(manifest: Manifest, name: str) -> list[tuple[int, str]]:
    """(index, text) of the python.requirements entries that name a distribution."""
    if manifest.python is None:
        return []
    out = []
    for i, raw in enumerate(manifest.python.requirements):
        try:
            req_name = canonicalize_name(Requirement(raw).name)
        except InvalidRequirement:
            continue
        if req_name == name:
            out.append((i, raw))
    return out


def _groups(wheels: dict[str, ClosureWheel]) -> list[CudaGroup]:
    """One group per owner: each CUDA-building package in the closure, and for a CUDA wheel with none
    above it, the requested wheel that pulled it in (or the wheel itself, when nothing says)."""
    groups: dict[str, CudaGroup] = {}
    for w in wheels.values():
        if w.name in tables.CUDA_BUILD_FAMILY:
            groups.setdefault(w.name, CudaGroup(w))
    # Without a chain (a lock that predates Requires-Dist), a CUDA wheel beside a torch is torch's.
    fallback = next((n for n in tables.CUDA_BUILD_FAMILY if n in wheels), None)
    for w in wheels.values():
        if w.need is None:
            continue
        chain = w.chain or ([fallback, w.name] if fallback else [w.name])
        owner = next((n for n in reversed(chain) if n in tables.CUDA_BUILD_FAMILY), chain[0])
        group = groups.setdefault(owner, CudaGroup(wheels[owner]))
        if w is group.owner:
            group.members.insert(0, w)
        else:
            group.members.append(w)
    order = {n: i for i, n in enumerate(tables.CUDA_BUILD_FAMILY)}
    return sorted(groups.values(), key=lambda g: (order.get(g.owner.name, len(order)), g.owner.name))


# --- what to suggest -------------------------------------------------------------------------------------


def torch_pin_fix(target_cuda: str) -> str:
    """How to get a torch built for `target_cuda` (X.Y or X.Y.Z): the pin and the index."""
    build = tables.cuda_build(target_cuda)
    minor = tables.cuda_minor(target_cuda)
    versions = tables.torch_versions_with_build(build)
    if not versions:
        known = sorted({b for r in tables.TORCH_RELEASES.values() for b in r.builds})
        return (
            f"no torch release in airgap's table ships a {build} build (they ship {', '.join(known)}): choose a "
            "CUDA release torch is built for"
        )
    newest = versions[-1]
    return (
        f"pin torch to a build for CUDA {minor}: add torch=={newest}.* to python.requirements and "
        f"{PYTORCH_INDEX}/{build} to python.index_urls (torch {', '.join(versions)} ship {build})"
    )


def owner_fix(group: CudaGroup, target_cuda: str | None) -> str:
    """The fix for a group whose CUDA does not fit `target_cuda` (the server's CUDA X.Y[.Z]; None when the
    manifest names neither CUDA nor driver)."""
    name, project = group.owner.name, group.owner.project
    if target_cuda is None:
        return f"pin {project} to a build for the server's CUDA (e.g. a +cuXYZ build from {PYTORCH_INDEX}/cuXYZ)"
    build = tables.cuda_build(target_cuda)
    minor = tables.cuda_minor(target_cuda)
    major = minor.split(".")[0]
    if name == "torch":
        return torch_pin_fix(target_cuda)
    if name in ("torchvision", "torchaudio", "xformers"):
        return f"take {project} from {PYTORCH_INDEX}/{build} (python.index_urls), and {torch_pin_fix(target_cuda)}"
    if name == "vllm":
        return f"pin vllm to a release built for CUDA {minor} (+cuXYZ wheels are on vLLM's GitHub releases)"
    if name == "flash-attn":
        return f"use a flash-attn wheel built for CUDA {major} and the torch you install"
    return f"pin {project} to a version whose CUDA wheels are CUDA {major} builds"


def torch_for_gpu(cc: str, last_cuda: str | None) -> str:
    """A torch build (in the tables) with kernels for compute capability `cc`, at most CUDA `last_cuda`."""
    for minor, rel in reversed(tables.TORCH_RELEASES.items()):
        for b in reversed(rel.builds):
            if last_cuda and tables.version_tuple(tables.build_cuda(b)) > tables.version_tuple(last_cuda):
                continue
            if tables.arches_cover(tables.TORCH_ARCHES.get((minor, b), ()), cc):
                return f"torch=={minor}.* from {PYTORCH_INDEX}/{b}"
    return ""
