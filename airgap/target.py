"""The target: facts about the server airgap collects for, which every source and layer consults.

One home for what a manifest's `target:` implies: the distribution release (its archive, keyring,
NVIDIA's CUDA repository directory, its glibc), the names its architecture goes by in each tool it meets
(dpkg, `uname -m` and wheel tags, image indexes, NVIDIA's download trees), and what a wheel or a
requirement must fit there: platform and interpreter tags, PEP 508 marker environments.

This is the ground floor: it imports nothing of airgap's but its errors, and sources, layers and
self-install all ask it rather than keeping a table of their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from packaging.markers import Marker
from packaging.tags import Tag, compatible_tags, cpython_tags

from airgap.errors import BadInputError

if TYPE_CHECKING:
    from airgap.manifest import Manifest


@dataclass(frozen=True)
class Distro:
    codename: str
    archive: dict[str, str]  # arch -> archive URL
    security: dict[str, str]
    components: tuple[str, ...]
    keyring: str  # where the distribution's keyring package puts it
    cuda_dir: str  # NVIDIA's CUDA repository directory for this release
    glibc: str


_UBUNTU_ARCHIVE = {"amd64": "http://archive.ubuntu.com/ubuntu", "arm64": "http://ports.ubuntu.com/ubuntu-ports"}
_UBUNTU_SECURITY = {"amd64": "http://security.ubuntu.com/ubuntu", "arm64": "http://ports.ubuntu.com/ubuntu-ports"}
_DEBIAN = {"amd64": "http://deb.debian.org/debian", "arm64": "http://deb.debian.org/debian"}
_DEBIAN_SECURITY = {"amd64": "http://deb.debian.org/debian-security", "arm64": "http://deb.debian.org/debian-security"}
UBUNTU_KEYRING = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DISTROS: dict[str, Distro] = {
    "ubuntu-20.04": Distro(
        "focal", _UBUNTU_ARCHIVE, _UBUNTU_SECURITY, ("main", "universe"), UBUNTU_KEYRING, "ubuntu2004", "2.31"
    ),
    "ubuntu-22.04": Distro(
        "jammy", _UBUNTU_ARCHIVE, _UBUNTU_SECURITY, ("main", "universe"), UBUNTU_KEYRING, "ubuntu2204", "2.35"
    ),
    "ubuntu-24.04": Distro(
        "noble", _UBUNTU_ARCHIVE, _UBUNTU_SECURITY, ("main", "universe"), UBUNTU_KEYRING, "ubuntu2404", "2.39"
    ),
    "debian-11": Distro("bullseye", _DEBIAN, _DEBIAN_SECURITY, ("main",), DEBIAN_KEYRING, "debian11", "2.31"),
    "debian-12": Distro("bookworm", _DEBIAN, _DEBIAN_SECURITY, ("main",), DEBIAN_KEYRING, "debian12", "2.36"),
    "debian-13": Distro("trixie", _DEBIAN, _DEBIAN_SECURITY, ("main",), DEBIAN_KEYRING, "debian13", "2.41"),
}


def distro_of(os_name: str) -> Distro | None:
    return DISTROS.get(os_name)


# glibc of the releases airgap has no apt catalogue for (RPM-based). A major release keeps its glibc for its
# whole life, so rhel-9 and rhel-9.4 have the same.
_RPM_FAMILIES = ("rhel", "rocky", "almalinux")
_RPM_GLIBC = {"8": "2.28", "9": "2.34"}


def glibc_of(os_name: str) -> str | None:
    """The glibc `target.os` ships ("2.35" for ubuntu-22.04), or None for a release airgap does not know."""
    distro = DISTROS.get(os_name)
    if distro is not None:
        return distro.glibc
    family, _, release = os_name.partition("-")
    if family in _RPM_FAMILIES:
        return _RPM_GLIBC.get(release.split(".")[0])
    return None


# --- architecture names ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arch:
    """One CPU architecture under each name the tools airgap meets give it."""

    debian: str  # dpkg and apt, and the manifest's target.arch: amd64
    machine: str  # `uname -m`, wheel platform tags, PEP 508's platform_machine, Docker's static builds: x86_64
    oci: str  # a platform in an image index: linux/amd64
    cuda_repo: str  # the directory of NVIDIA's CUDA repositories under repos/<release>/: x86_64, sbsa
    driver_dir: str  # the directory of NVIDIA's driver runfiles on download.nvidia.com: Linux-x86_64
    manylinux_floor: int  # the oldest glibc 2.N a manylinux tag exists for on it (PEP 600): 5, 17


ARCHES: dict[str, Arch] = {
    "amd64": Arch("amd64", "x86_64", "linux/amd64", "x86_64", "Linux-x86_64", 5),
    "arm64": Arch("arm64", "aarch64", "linux/arm64", "sbsa", "aarch64", 17),
}


def find_arch(name: str) -> Arch | None:
    """The architecture by Debian's name (the manifest's) or the kernel's (`uname -m`); None if unknown."""
    return next((a for a in ARCHES.values() if name in (a.debian, a.machine)), None)


def arch_of(name: str) -> Arch:
    """The architecture by Debian's name (the manifest's) or the kernel's (`uname -m`)."""
    arch = find_arch(name)
    if arch is not None:
        return arch
    known = ", ".join(f"{a.debian} ({a.machine})" for a in ARCHES.values())
    raise BadInputError(f"architecture {name!r} is not one airgap knows.", f"Use one of {known}.")


# --- wheels: platform and interpreter tags ------------------------------------------------------------------

# The legacy manylinux names (PEP 513, 571, 599) for the glibc 2.N they stand for.
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_PYTHON_RE = re.compile(r"(\d+)\.(\d+)")
_GLIBC_RE = re.compile(r"2\.(\d+)")


def python_xy(python: str) -> tuple[int, int]:
    """MAJOR.MINOR as numbers: 3.10 -> (3, 10)."""
    m = _PYTHON_RE.fullmatch(python.strip())
    if not m:
        raise BadInputError(f"target python {python!r}: expected MAJOR.MINOR, like 3.10.")
    return int(m[1]), int(m[2])


def glibc_minor(glibc: str) -> int:
    """The minor version of a glibc 2.N: 2.35 -> 35."""
    m = _GLIBC_RE.fullmatch(glibc.strip())
    if not m:
        raise BadInputError(f"glibc {glibc!r}: expected 2.N, like 2.35 (`ldd --version` on the server).")
    return int(m[1])


def platform_tags(arch: str, glibc: str, *, manylinux_only: bool = False) -> list[str]:
    """Every platform tag pip on a glibc `glibc` server of `arch` accepts, in pip's order of preference.

    That is manylinux_2_<glibc> down to the oldest manylinux of the architecture, each legacy name right
    after the manylinux_2_N it stands for, then linux_<machine> (what the PyTorch index's CUDA wheels carry):
    the list `packaging.tags` gives pip on the server itself. pip does not widen `--platform
    manylinux_2_28_x86_64` to the older tags a glibc 2.28 system also runs, so a resolution for the server
    must pass each one. manylinux_only leaves out linux_<machine>, which on an index other than PyTorch's
    marks a wheel built for one machine and its glibc.
    """
    a = arch_of(arch)
    tags: list[str] = []
    for minor in range(glibc_minor(glibc), a.manylinux_floor - 1, -1):
        tags.append(f"manylinux_2_{minor}_{a.machine}")
        if minor in _LEGACY_MANYLINUX:
            tags.append(f"{_LEGACY_MANYLINUX[minor]}_{a.machine}")
    if not manylinux_only:
        tags.append(f"linux_{a.machine}")
    return tags


@dataclass(frozen=True)
class Target:
    """The server a bundle is for, as far as wheels, requirements and packages must fit it.

    python: "3.10" (CPython). arch: amd64/arm64 (x86_64/aarch64 are read as those). glibc: the server's,
    which decides the manylinux tags it runs; None when neither python.glibc nor a known target.os says.
    platforms: python.platforms, the platform tags to accept instead of the ladder glibc implies.
    """

    python: str
    arch: str = "amd64"
    glibc: str | None = None
    os: str | None = None
    platforms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        major, minor = python_xy(self.python)
        object.__setattr__(self, "python", f"{major}.{minor}")
        if self.glibc is not None:
            glibc_minor(self.glibc)
        object.__setattr__(self, "arch", arch_of(self.arch).debian)

    @classmethod
    def of(cls, manifest: Manifest) -> Target:
        """The target a manifest describes: its `target:`, and the server facts its python section states."""
        t, spec = manifest.target, manifest.python
        glibc = (spec.glibc if spec is not None else None) or glibc_of(t.os)
        platforms = tuple(spec.platforms or ()) if spec is not None else ()
        return cls(t.python, t.arch, glibc, t.os, platforms)

    @property
    def arch_names(self) -> Arch:
        return arch_of(self.arch)

    @property
    def machine(self) -> str:
        return self.arch_names.machine

    @property
    def distro(self) -> Distro | None:
        return distro_of(self.os) if self.os else None

    @property
    def python_xy(self) -> tuple[int, int]:
        return python_xy(self.python)

    @property
    def abi(self) -> str:
        """CPython's ABI tag for the target's python: cp310."""
        major, minor = self.python_xy
        return f"cp{major}{minor}"

    def platform_tags(self) -> list[str]:
        """The platform tags the server accepts: python.platforms when stated, else every one its glibc runs."""
        if self.platforms:
            return list(self.platforms)
        if self.glibc is None:
            raise BadInputError(
                f"the glibc of {self.os or 'the target'} is not known to airgap, and it decides which manylinux "
                "wheels the server runs.",
                'Add `glibc: "2.35"` (what `ldd --version` prints on the server) to the python section.',
            )
        return platform_tags(self.arch, self.glibc)

    def wheel_tags(self) -> list[Tag]:
        """Every wheel tag CPython X.Y on the server accepts, most preferred first (what its pip looks for)."""
        plats = self.platform_tags()
        return [
            *cpython_tags(self.python_xy, abis=[self.abi], platforms=plats),
            *compatible_tags(self.python_xy, self.abi, plats),
        ]

    def describe(self) -> str:
        tags = self.platform_tags()
        shown = ", ".join(tags[:3]) + (f" ... {tags[-1]}" if len(tags) > 3 else "")
        return f"CPython {self.python} ({self.abi}, abi3, none), platforms {shown}"

    # --- environment markers --------------------------------------------------------------------------------

    @cached_property
    def marker_environments(self) -> tuple[dict[str, str], ...]:
        """PEP 508 marker values of the server's python. Its patch release is unknown, so two: X.Y.0 and
        X.Y.99; a requirement is kept when either says so (an extra wheel costs little, a missing one breaks
        the install)."""
        major, minor = self.python_xy
        base = {
            "implementation_name": "cpython",
            "os_name": "posix",
            "platform_machine": self.machine,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_version": f"{major}.{minor}",
            "sys_platform": "linux",
        }
        return tuple(
            dict(base, python_full_version=f"{major}.{minor}.{p}", implementation_version=f"{major}.{minor}.{p}")
            for p in (0, 99)
        )

    def wants(self, marker: Marker | None, extras: Iterable[str] = ("",)) -> bool:
        """Whether a requirement with this marker applies on the server (with any of `extras` asked for).

        Markers must be judged here, not by the python running airgap: pip evaluates them with its own
        interpreter even under --python-version (pip issue #11664), so a 3.11 PC collecting for a 3.10
        server would leave out exceptiongroup and tomli.
        """
        if marker is None:
            return True
        wanted = list(extras)
        return any(marker.evaluate(dict(env, extra=extra)) for env in self.marker_environments for extra in wanted)
