"""Debian packages for the TARGET release: signed indexes, apt-like dependency closures, checked `.deb`s.

The connected PC is rarely the server's release (or even Debian), so nothing here asks the local apt:
the repository indexes of the target (`InRelease` -> `Packages.xz`) are fetched through the HTTP source
(mirrors, retries), the `InRelease` signature is checked with `gpgv` against a keyring the manifest names,
every `Packages` file against the SHA256 the signed `Release` lists for it, and every `.deb` against the
SHA256 of its `Packages` entry. So a `.deb` in the bundle is exactly what the signed repository published.

The closure is computed like apt computes it, leaving out what the server already has: by default the
release's `Priority: required`/`important` set, or precisely the server's own `/var/lib/dpkg/status`
(`--target-status`).

Modules, each importing only those before it: `control` (the control-field vocabulary: fields, relations,
version satisfaction), `repos` (repositories, NVIDIA's, keyrings), `release` (the signed Release, gpgv,
which index files), `indexes` (candidates, fetching and parsing the indexes), `status` (what the server
has), `closure` (the resolver). This package re-exports what the layers and the commands use.
"""

from airgap.sources.apt.closure import Request, Resolution, Resolver, strongly_connected, version_matches
from airgap.sources.apt.control import group_text, parse_provides, parse_relations, satisfies
from airgap.sources.apt.indexes import AptIndex, Candidate, Memo, default_cache_dir, load_index
from airgap.sources.apt.release import fetch_release, index_files, verify_signature
from airgap.sources.apt.repos import (
    CUDA_KEYRING,
    CUDA_REPO_URL,
    DEFAULT_KEYRINGS,
    KEY_HELP,
    NVIDIA_CONTAINER_KEYRING,
    NVIDIA_CONTAINER_URL,
    AptError,
    AptRepo,
    builtin_repos,
)
from airgap.sources.apt.status import (
    InstalledPkg,
    ServerPackages,
    default_server,
    parse_status,
    read_status_file,
    server_packages,
)

__all__ = [
    "CUDA_KEYRING",
    "CUDA_REPO_URL",
    "DEFAULT_KEYRINGS",
    "KEY_HELP",
    "NVIDIA_CONTAINER_KEYRING",
    "NVIDIA_CONTAINER_URL",
    "AptError",
    "AptIndex",
    "AptRepo",
    "Candidate",
    "InstalledPkg",
    "Memo",
    "Request",
    "Resolution",
    "Resolver",
    "ServerPackages",
    "builtin_repos",
    "default_cache_dir",
    "default_server",
    "fetch_release",
    "group_text",
    "index_files",
    "load_index",
    "parse_provides",
    "parse_relations",
    "parse_status",
    "read_status_file",
    "satisfies",
    "server_packages",
    "strongly_connected",
    "verify_signature",
    "version_matches",
]
