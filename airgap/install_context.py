"""What a layer gets when it installs: the host, the verified bundle, and the lock that describes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from airgap.bundle import Lock, LockedArtifact
from airgap.errors import AirgapError
from airgap.host import Host, RunResult


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

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as validated at collect time (credentials redacted)."""
        return self.lock.manifest

    _joined: dict[str, Path] = field(default_factory=dict)

    def artifacts(self, layer: str) -> list[tuple[LockedArtifact, Path]]:
        """The layer's files: their lock entries and a real file for each. A file stored as parts
        (--max-file-size) is joined once, checked, next to the install (installers such as a `.run` need
        a real file); `open_artifact` reads parts as one stream instead, with no extra disk."""
        return [(a, self.bundle / a.path if not a.parts else self._join(a))
                for a in self.lock.artifacts if a.layer == layer]

    def open_artifact(self, art: LockedArtifact) -> BinaryIO:
        """The artifact's bytes as one stream, straight from its parts when split. The caller closes it."""
        import io

        from airgap.parts import PartsReader, source_files

        return io.BufferedReader(PartsReader(source_files(self.bundle, art)), buffer_size=1 << 20)

    def _join(self, art: LockedArtifact) -> Path:
        from airgap.parts import join_to, roomy_dir

        if art.path not in self._joined:
            if self.host.dry_run:
                return self.bundle / art.path
            base = roomy_dir([self.host.path(d) for d in ("/var/tmp", "/tmp", "/root")], art.size + (64 << 20))
            self.host.note(f"joining {len(art.parts)} parts of {art.path} in {base}")
            self._joined[art.path] = join_to(self.bundle, art, base / "airgap-joined" / art.name)
        return self._joined[art.path]

    def cleanup(self) -> None:
        for path in self._joined.values():
            path.unlink(missing_ok=True)
        self._joined.clear()


class InstallError(AirgapError):
    """A layer failed. `result` is the command that failed, when one did: its last lines are shown."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, result: RunResult | None = None) -> None:
        super().__init__(message, hint)
        self.result = result


class RebootRequired(AirgapError):
    """The layer did what it could and the machine must reboot before the next step (e.g. nouveau)."""

    exit_code = 4
