"""Layers in install order; `plan_artifacts` turns a manifest into the exact list of files to fetch."""

from __future__ import annotations

import difflib

from airgap.artifacts import Artifact
from airgap.bundle_layout import LAYER_ORDER
from airgap.errors import EXIT_UPSTREAM, AirgapError, BadInputError
from airgap.layers.base import Layer, ResolveContext
from airgap.layers.container_toolkit import ContainerToolkitLayer
from airgap.layers.cuda import CudaLayer
from airgap.layers.cudnn import CudnnLayer
from airgap.layers.depot import DepotLayer
from airgap.layers.docker import DockerLayer
from airgap.layers.driver import DriverLayer
from airgap.layers.files import FilesLayer
from airgap.layers.images import ImagesLayer
from airgap.layers.models import ModelsLayer
from airgap.layers.prereqs import PrereqsLayer
from airgap.layers.python import PythonLayer
from airgap.lock import Lock
from airgap.manifest import Manifest, file_name_problem

LAYERS: tuple[Layer, ...] = (
    PrereqsLayer(),  # build tools for the driver (and any apt.packages): asked for in `apt:`
    DriverLayer(),
    CudaLayer(),
    CudnnLayer(),
    DockerLayer(),
    ContainerToolkitLayer(),
    ImagesLayer(),
    PythonLayer(),
    ModelsLayer(),
    FilesLayer(),
    DepotLayer(),  # last: the clients point at the depot once everything else is in place
)
assert tuple(layer.name for layer in LAYERS) == LAYER_ORDER


def parse_layer_names(value: str | None, option: str, known: tuple[str, ...] = LAYER_ORDER) -> set[str]:
    """`--skip images,python` -> {"images", "python"}, refusing names not in `known` (install adds smoke)."""
    if not value:
        return set()
    names = {n.strip() for n in value.split(",") if n.strip()}
    unknown = sorted(names - set(known))
    if unknown:
        guesses = [
            f"{close[0]!r}" + (f" for {u!r}" if len(unknown) > 1 else "")
            for u in unknown
            if (close := difflib.get_close_matches(u, known, n=1))
        ]
        mean = f"Did you mean {', '.join(guesses)}? " if guesses else ""
        raise BadInputError(
            f"{option}: unknown layer {', '.join(repr(u) for u in unknown)}.",
            f"{mean}Layers, in install order: {', '.join(known)}.",
        )
    return names


def wanted_layers(manifest: Manifest, skip: set[str]) -> list[Layer]:
    """The layers the manifest asks for, in install order, less those skipped."""
    return [layer for layer in LAYERS if layer.name not in skip and layer.wanted(manifest)]


def plan_artifacts(
    manifest: Manifest,
    skip: set[str] | None = None,
    ctx: ResolveContext | None = None,
    failed: list[tuple[str, AirgapError]] | None = None,
) -> list[Artifact]:
    """Every artifact the collectable layers need, with names checked for clashes. Identical artifacts
    (same path, same expected digest: a layer blob two images share) are kept once. Without `ctx`, what
    can be known offline. With `failed` (plan), a layer whose upstream fails is recorded there as (layer,
    error) and contributes nothing, so every unreachable upstream is named, not only the first."""
    if ctx is None:
        with ResolveContext(None) as offline:
            return plan_artifacts(manifest, skip, offline, failed)
    active = wanted_layers(manifest, skip or set())
    artifacts: list[Artifact] = []
    for layer in active:
        try:
            artifacts.extend(layer.resolve(manifest, ctx))
        except AirgapError as exc:  # CombinedError of several images too: its code is its gravest part's
            if failed is None or exc.exit_code != EXIT_UPSTREAM:
                raise
            failed.append((layer.name, exc))
    seen: dict[str, Artifact] = {}
    unique: list[Artifact] = []
    for art in artifacts:
        # Names from upstream metadata (a wheel's, an apt Filename:, a hub file) get the manifest's rule:
        # a name that would not read back the same from SHA256SUMS is refused before anything is stored.
        for segment in art.name.split("/"):
            if problem := file_name_problem(segment):
                raise manifest.error(
                    art.field,
                    f"the upstream names a file {art.name!a}, which airgap cannot store: {problem}; "
                    "leave that entry out or ask the publisher",
                )
        if art.path in seen:
            other = seen[art.path]
            if other.pinned is not None and other.pinned == art.pinned and other.content == art.content:
                continue
            raise manifest.error(
                art.field,
                f"two entries would both be stored as {art.path} (the other is "
                f"{manifest.location(other.field)}); give one of them a different `name:`",
            )
        seen[art.path] = art
        unique.append(art)
    return unique


def by_hand_lines(lock: Lock) -> list[str]:
    """README.txt's "by hand, in this order" lines: each layer's own, in install order."""
    lines: list[str] = []
    for layer in LAYERS:
        arts = [a for a in lock.artifacts if a.layer == layer.name]
        if arts:
            lines += [f"{layer.name:<8} {line}" for line in layer.by_hand(arts)]
    return lines
