"""The server's side: what it already has, so a closure leaves it out. Precisely the server's own
`/var/lib/dpkg/status` when the user copied it over (`--target-status`), else the release's
`Priority: required`/`important` set, which every install of the release has.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from debian.deb822 import Deb822

from airgap.errors import BadInputError
from airgap.sources.apt.control import FIELDS, parse_provides
from airgap.sources.apt.indexes import AptIndex


@dataclass(frozen=True)
class InstalledPkg:
    name: str
    version: str
    arch: str
    provides: tuple[tuple[str, str | None], ...] = ()


@dataclass
class ServerPackages:
    """What the server has, by name, with the virtual packages those provide."""

    packages: dict[str, InstalledPkg]
    description: str  # for the lock and messages: where this knowledge comes from
    provides: dict[str, list[tuple[InstalledPkg, str | None]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for pkg in self.packages.values():
            for name, ver in pkg.provides:
                self.provides.setdefault(name, []).append((pkg, ver))


def read_status_file(path: Path) -> ServerPackages:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInputError(
            f"--target-status {path}: cannot read it ({exc.strerror}).",
            "Copy the server's /var/lib/dpkg/status to this PC and give that file.",
        ) from None
    pkgs = parse_status(data)
    if not pkgs and data.strip():
        raise BadInputError(
            f"--target-status {path}: no installed package in it; it does not look like a dpkg status file.",
            "Copy /var/lib/dpkg/status from the server itself (a text file of `Package:`/`Status:` stanzas).",
        )
    digest = hashlib.sha256(data).hexdigest()
    return ServerPackages(
        pkgs, f"the server's dpkg status {path.name} (sha256 {digest[:16]}..., {len(pkgs)} packages installed)"
    )


def parse_status(data: bytes) -> dict[str, InstalledPkg]:
    """Installed packages of a dpkg status file (`Status: install ok installed`, or held)."""
    out: dict[str, InstalledPkg] = {}
    for para in Deb822.iter_paragraphs(data.splitlines(keepends=True), fields=FIELDS, use_apt_pkg=False):
        status = para.get("Status", "").split()
        if len(status) != 3 or status[2] != "installed" or "Package" not in para:
            continue
        name = para["Package"]
        arch = para.get("Architecture", "all")
        # A foreign-arch copy (libc6:i386) must not hide the native one.
        if name in out and out[name].arch != "all" and arch not in ("all", out[name].arch):
            continue
        out[name] = InstalledPkg(name, para.get("Version", ""), arch, parse_provides(para.get("Provides", "")))
    return out


def default_server(index: AptIndex) -> ServerPackages:
    """Without the server's status: assume what every install of the release has, Priority required and
    important, at the release's newest version."""
    pkgs = {}
    for name, versions in index.by_name.items():
        newest = versions[0]
        if newest.priority in ("required", "important"):
            pkgs[name] = InstalledPkg(name, newest.version, newest.arch, newest.provides)
    release = ", ".join(s.split(" (")[0] for s in index.sources)
    return ServerPackages(
        pkgs, f"default: the {len(pkgs)} packages of Priority required/important of {release} assumed installed"
    )


def server_packages(index: AptIndex, status: Path | None = None) -> ServerPackages:
    return read_status_file(status) if status is not None else default_server(index)
