"""What a layer gets when it installs: the host, the verified bundle, and the lock that describes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    def artifacts(self, layer: str) -> list[tuple[LockedArtifact, Path]]:
        """The layer's files: their lock entries and where they are in the bundle."""
        return [(a, self.bundle / a.path) for a in self.lock.artifacts if a.layer == layer]


class InstallError(AirgapError):
    """A layer failed. `result` is the command that failed, when one did: its last lines are shown."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, result: RunResult | None = None) -> None:
        super().__init__(message, hint)
        self.result = result


class RebootRequired(AirgapError):
    """The layer did what it could and the machine must reboot before the next step (e.g. nouveau)."""

    exit_code = 4
