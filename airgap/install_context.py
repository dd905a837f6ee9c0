"""What a layer gets when it installs: the host, the verified bundle, and the lock that describes it."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from airgap.host import Host
from airgap.lock import Lock, LockedArtifact
from airgap.manifest import Manifest

T = TypeVar("T")


@dataclass
class InstallOptions:
    move: bool = False  # models: move out of the bundle instead of copying (saves space, spends the bundle)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class InstallContext:
    host: Host
    bundle: Path
    lock: Lock
    options: InstallOptions = field(default_factory=InstallOptions)
    base: Path | None = None  # for a delta bundle: the bundle holding what it does not carry
    base_lock: Lock | None = None

    @property
    def manifest(self) -> Manifest:
        """The manifest as validated at collect time (credentials redacted), typed."""
        return self.lock.recorded_manifest()

    _joined: dict[str, Path] = field(default_factory=dict)
    _memo: dict[Hashable, Any] = field(default_factory=dict)

    def memo(self, key: Hashable, make: Callable[[], T]) -> T:
        """`make()` once per key for this install run, the same object after that: what a layer learns in
        `installed()` and needs again in `install()` (a model's file hashes) lives no longer than the run."""
        if key not in self._memo:
            self._memo[key] = make()
        value: T = self._memo[key]
        return value

    def artifacts(self, layer: str) -> list[tuple[LockedArtifact, Path]]:
        """The layer's files: their lock entries and a real file for each. A file stored as parts
        (--max-file-size) is joined once, checked, next to the install (installers such as a `.run` need
        a real file); `open_artifact` reads parts as one stream instead, with no extra disk."""
        return [(a, self._path(a)) for a in self.lock.artifacts if a.layer == layer]

    def files(self, art: LockedArtifact) -> list[Path]:
        """Where the artifact's bytes are: its file or its parts, in this bundle or in the delta's base."""
        from airgap.parts import source_files

        if art.in_base and self.base is not None and self.base_lock is not None:
            return source_files(self.base, self.base_lock.by_path()[art.path])
        return source_files(self.bundle, art)

    def _path(self, art: LockedArtifact) -> Path:
        if not art.parts and not art.in_base:
            return self.bundle / art.path
        files = self.files(art)
        base_entry = self.base_lock.by_path().get(art.path) if art.in_base and self.base_lock else None
        return files[0] if base_entry is not None and not base_entry.parts else self._join(art)

    def open_artifact(self, art: LockedArtifact) -> BinaryIO:
        """The artifact's bytes as one stream, straight from its parts when split. The caller closes it."""
        import io

        from airgap.parts import PartsReader

        return io.BufferedReader(PartsReader(self.files(art)), buffer_size=1 << 20)

    def _join(self, art: LockedArtifact) -> Path:
        from airgap.parts import join_files, roomy_dir

        if art.path not in self._joined:
            if self.host.dry_run:
                return self.bundle / art.path
            where = roomy_dir([self.host.path(d) for d in ("/var/tmp", "/tmp", "/root")], art.size + (64 << 20))
            files = self.files(art)
            self.host.note(f"joining {len(files)} parts of {art.path} in {where}")
            self._joined[art.path] = join_files(files, art, where / "airgap-joined" / art.name)
        return self._joined[art.path]

    def cleanup(self) -> None:
        for path in self._joined.values():
            path.unlink(missing_ok=True)
        self._joined.clear()
