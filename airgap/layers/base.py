"""The shape every layer shares on the collect side."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from airgap.artifacts import Artifact
from airgap.manifest import Manifest

if TYPE_CHECKING:
    from airgap.install_context import InstallContext
    from airgap.sources.http import HttpSource


class Layer:
    """One piece of the stack. `section` is the manifest key that asks for it."""

    name: ClassVar[str]
    section: ClassVar[str]

    def wanted(self, manifest: Manifest) -> bool:
        return bool(getattr(manifest, self.section))

    # Names of the preflight checks this layer needs (see airgap/preflight.py), so `install --only images`
    # does not demand a GPU.
    preflight: ClassVar[frozenset[str]] = frozenset()
    installable: ClassVar[bool] = False

    def plan(self, manifest: Manifest) -> list[Artifact]:
        raise NotImplementedError

    def resolve(self, manifest: Manifest, source: HttpSource | None) -> list[Artifact]:
        """Artifacts with exact versions. Layers that must ask an upstream first (a model's commit, an
        image's manifest) override this; `source` is None when no network may be used (`plan --no-head`):
        return what can be known offline and say the rest in `Artifact.meta["unresolved"]`."""
        return self.plan(manifest)

    # --- install side: the bundle's lock says what to install; the host is the only way to touch the machine.

    def installed(self, ctx: InstallContext) -> str | None:
        """Why the layer needs no work (already at the bundle's version), or None to install it."""
        return None

    def install(self, ctx: InstallContext) -> str:
        """Install idempotently and return a one-line summary; raise InstallError (or RebootRequired)
        with the fix when it cannot."""
        raise NotImplementedError
