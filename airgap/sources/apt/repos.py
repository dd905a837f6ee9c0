"""Where the target's packages come from: one suite of a repository (`AptRepo`), the repositories airgap
knows for a target (the distribution's archive and security pockets, NVIDIA's CUDA and container
repositories), the keyrings they are signed with, and how to get a keyring that is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from airgap.errors import BadInputError
from airgap.target import DEBIAN_KEYRING, UBUNTU_KEYRING, arch_of, distro_of


class AptError(BadInputError):
    """A closure or repository problem, fixed in the manifest (a package name, a version, a repository)."""


@dataclass(frozen=True)
class AptRepo:
    """One suite of a repository (`deb URL SUITE COMPONENTS`), or a flat repository (`deb URL /`)."""

    name: str  # the manifest's name for it: keyrings and errors use it
    url: str  # canonical base URL, no trailing slash (before mirrors)
    suite: str  # "jammy", "jammy-updates", ... or "/" for a flat repository
    components: tuple[str, ...] = ("main",)
    keyring: Path | None = None
    keyring_name: str = ""  # the apt.keyrings key that names its keyring (shared by a distro's repos)

    @property
    def flat(self) -> bool:
        return self.suite in ("/", "./", "")

    @property
    def dist_url(self) -> str:
        """Where InRelease and the index paths of the Release file are relative to."""
        return self.url if self.flat else f"{self.url}/dists/{self.suite}"

    @property
    def label(self) -> str:
        return self.name if self.flat else f"{self.name} {self.suite}"


# NVIDIA's repositories, and where their keyrings are when set up as NVIDIA's install guides say.
NVIDIA_CONTAINER_URL = "https://nvidia.github.io/libnvidia-container/stable/deb/{arch}"
NVIDIA_CONTAINER_KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
CUDA_REPO_URL = "https://developer.download.nvidia.com/compute/cuda/repos/{dir}/{arch}"
CUDA_KEYRING = "/usr/share/keyrings/cuda-archive-keyring.gpg"
KEY_HELP = {
    # Debian 12 has no ubuntu-keyring package (Debian 13 has), so the keys airgap's repository ships come first.
    "ubuntu": "airgap's repository ships Ubuntu's archive keys as manifests/keys/ubuntu-archive-keyring.asc, "
    "fingerprints in manifests/keys/README.md; on Ubuntu or Debian 13+, `apt-get install ubuntu-keyring` puts "
    "them in " + UBUNTU_KEYRING,
    "debian": "apt-get install debian-archive-keyring puts it in " + DEBIAN_KEYRING,
    "nvidia-container": "curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | "
    "gpg --dearmor -o keys/nvidia-container-toolkit.gpg",
    "cuda": "curl -fsSL https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/3bf863cc.pub "
    "| gpg --dearmor -o keys/cuda-archive-keyring.gpg",
}
# Where each built-in repository's keyring is on a PC set up as the publishers' guides say.
DEFAULT_KEYRINGS = {
    "ubuntu": UBUNTU_KEYRING,
    "debian": DEBIAN_KEYRING,
    "nvidia-container": NVIDIA_CONTAINER_KEYRING,
    "cuda": CUDA_KEYRING,
}


def builtin_repos(os_name: str, arch: str) -> dict[str, list[AptRepo]]:
    """The repositories airgap knows for the target, by name (a name may cover several suites)."""
    out: dict[str, list[AptRepo]] = {}
    distro = distro_of(os_name)
    family = os_name.split("-", 1)[0]
    if distro is not None:
        c = distro.codename
        out[family] = [
            AptRepo(family, distro.archive[arch], s, distro.components, keyring_name=family)
            for s in (c, f"{c}-updates")
        ]
        out[f"{family}-security"] = [
            AptRepo(
                f"{family}-security", distro.security[arch], f"{c}-security", distro.components, keyring_name=family
            )
        ]
        out["cuda"] = [
            AptRepo(
                "cuda",
                CUDA_REPO_URL.format(dir=distro.cuda_dir, arch=arch_of(arch).cuda_repo),
                "/",
                keyring_name="cuda",
            )
        ]
    out["nvidia-container"] = [
        AptRepo("nvidia-container", NVIDIA_CONTAINER_URL.format(arch=arch), "/", keyring_name="nvidia-container")
    ]
    return out


def require_keyring(repo: AptRepo) -> Path:
    """The repository's keyring, or a BadInputError saying how to get the publisher's key."""
    key = repo.keyring_name or repo.name
    if repo.keyring is None or not repo.keyring.is_file():
        where = f"{repo.keyring} does not exist" if repo.keyring else "no keyring is named for it"
        howto = KEY_HELP.get(key, "export the repository's signing key with `gpg --export KEYID > FILE`")
        raise BadInputError(
            f"apt repository {repo.label}: {where}, so its InRelease signature cannot be checked.",
            f"Get the publisher's key ({howto}) and name it in the manifest: `apt: {{keyrings: {{{key}: FILE}}}}` "
            "(a path relative to the manifest; binary .gpg or ASCII-armored .asc).",
        )
    return repo.keyring
