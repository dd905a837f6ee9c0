"""The shape every layer shares, and what one plan or collect run lends the layers while they resolve."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from airgap.artifacts import Artifact
from airgap.bundle_layout import LAYERS_DIR, layer_dir
from airgap.lock import LockedArtifact
from airgap.manifest import Manifest

if TYPE_CHECKING:
    from airgap.install_context import InstallContext
    from airgap.sources.http import HttpSource

T = TypeVar("T")


def _silent(_msg: str) -> None:
    pass


class ResolveContext:
    """What one `plan` or `collect` run shares between its layers, created by that command in a `with`
    block and closed at its end: the HTTP source (None when no network may be used, `plan --no-head`),
    the server's dpkg status when the user gave one, facts worth reusing within the run (a parsed apt
    index, an image exported from a local daemon), and what must be stopped when the run ends. Nothing
    of it outlives the run: two runs in one process (tests, the demo) never see each other's state."""

    def __init__(
        self, source: HttpSource | None, *, target_status: Path | None = None, say: Callable[[str], None] | None = None
    ) -> None:
        self.source = source
        self.target_status = target_status
        # A phase that takes a while says so (collect's status lines); silent unless the command asks.
        self.say: Callable[[str], None] = say or _silent
        self._memo: dict[Hashable, Any] = {}
        self._closers: list[Callable[[], None]] = []

    def memo(self, key: Hashable, make: Callable[[], T]) -> T:
        """`make()` once per key for this run; the same object after that."""
        if key not in self._memo:
            self._memo[key] = make()
        value: T = self._memo[key]
        return value

    def on_close(self, close: Callable[[], None]) -> None:
        """Run `close` when the run ends (last registered, first run), e.g. to stop a loopback server."""
        self._closers.append(close)

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()
        self._memo.clear()

    def __enter__(self) -> ResolveContext:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Layer:
    """One piece of the stack. `section` is the manifest key that asks for it."""

    name: ClassVar[str]
    section: ClassVar[str]

    def wanted(self, manifest: Manifest) -> bool:
        return bool(getattr(manifest, self.section))

    # How to install this layer without airgap, for README.txt: a line per file ({path}), or, for layers of
    # many files, one line for the layer's directory ({dir}).
    by_hand_file: ClassVar[str] = "see the airgap documentation for this layer"
    by_hand_dir: ClassVar[str | None] = None

    def by_hand(self, artifacts: list[LockedArtifact]) -> list[str]:
        if self.by_hand_dir is not None:
            return [self.by_hand_dir.format(dir=f"{LAYERS_DIR}/{layer_dir(self.name)}")]
        return [self.by_hand_file.format(path=a.path) for a in artifacts]

    # Names of the preflight checks this layer needs (see airgap/preflight.py), so `install --only images`
    # does not demand a GPU.
    preflight: ClassVar[frozenset[str]] = frozenset()
    installable: ClassVar[bool] = False

    def plan(self, manifest: Manifest) -> list[Artifact]:
        raise NotImplementedError

    def resolve(self, manifest: Manifest, ctx: ResolveContext) -> list[Artifact]:
        """Artifacts with exact versions. Layers that must ask an upstream first (a model's commit, an
        image's manifest) override this; `ctx.source` is None when no network may be used (`plan --no-head`):
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
