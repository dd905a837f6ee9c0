"""The shape every layer shares on the collect side."""

from __future__ import annotations

from typing import ClassVar

from airgap.artifacts import Artifact
from airgap.manifest import Manifest


class Layer:
    """One piece of the stack. `section` is the manifest key that asks for it."""

    name: ClassVar[str]
    section: ClassVar[str]
    # False for layers whose collect side a later release brings: the manifest validates them already,
    # but collect refuses them (or skips them with --skip) instead of silently leaving them out.
    collectable: ClassVar[bool] = True

    def wanted(self, manifest: Manifest) -> bool:
        return bool(getattr(manifest, self.section))

    def plan(self, manifest: Manifest) -> list[Artifact]:
        raise NotImplementedError


class PendingLayer(Layer):
    """A manifest section this version validates but cannot collect yet."""

    collectable = False

    def __init__(self, name: str, section: str | None = None) -> None:
        self.name = name  # type: ignore[misc]
        self.section = section or name  # type: ignore[misc]

    def plan(self, manifest: Manifest) -> list[Artifact]:
        return []
