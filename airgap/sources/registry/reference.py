"""Image references read as Docker reads them, and which scheme a registry is spoken to over.

`ubuntu` is `registry-1.docker.io/library/ubuntu:latest`; a registry on localhost or 127.0.0.0/8 is spoken
to over plain HTTP as Docker does, any other over HTTPS unless the manifest lists it in
`insecure_registries:`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from airgap.target import arch_of

DOCKER_HUB = "registry-1.docker.io"
HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_DOMAIN_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::\d+)?$"
)


@dataclass(frozen=True)
class ImageRef:
    """An image reference split as Docker splits it."""

    written: str  # as the manifest wrote it
    registry: str  # the host[:port] to talk to (Docker Hub: registry-1.docker.io)
    repository: str  # path in that registry ("library/ubuntu")
    tag: str | None
    digest: str | None  # "sha256:<hex>"

    @property
    def is_hub(self) -> bool:
        return self.registry == DOCKER_HUB

    @property
    def domain(self) -> str:
        return "docker.io" if self.is_hub else self.registry

    @property
    def name(self) -> str:
        """The repository name as `docker images` shows it: `ubuntu`, `vllm/vllm-openai`, `nvcr.io/nvidia/cuda`."""
        if self.is_hub:
            return self.repository.removeprefix("library/")
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def docker_tag(self) -> str:
        """`name:tag` to tag the loaded image with. `docker tag` cannot set a digest, so a digest-only
        reference becomes `name:sha256-<hex>` (the convention cosign and others use)."""
        if self.tag:
            return f"{self.name}:{self.tag}"
        if self.digest:
            return f"{self.name}:{self.digest.replace(':', '-')}"
        return f"{self.name}:latest"

    def pinned(self, digest: str) -> str:
        """Fully qualified `domain/repository@sha256:...`: what the bundle holds, whatever the tag does later."""
        return f"{self.domain}/{self.repository}@{digest}"

    def base_url(self, insecure: Iterable[str] = ()) -> str:
        """Canonical API URL of the repository (before `mirrors:`)."""
        return f"{scheme_for(self.registry, insecure)}://{self.registry}/v2/{self.repository}"

    def __str__(self) -> str:
        return self.written


def parse_ref(text: str) -> ImageRef:
    """Parse `ubuntu`, `vllm/vllm-openai:v0.6.3`, `nvcr.io/nvidia/cuda:12.4.0-base`, `host:5000/a/b@sha256:...`.
    Raises ValueError with a sentence saying what is wrong."""
    written = text.strip()
    rest, _, digest = written.partition("@")
    if digest and not DIGEST_RE.match(digest):
        raise ValueError(f"{digest!r} is not a sha256 digest; write it like @sha256:<64 hex characters>")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise ValueError(f"{tag!r} is not a valid tag (letters, digits, '_', '.', '-', at most 128)")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, remainder
        if not _DOMAIN_RE.match(domain):
            raise ValueError(f"{domain!r} is not a registry host; write it like registry.example.com:5000")
    else:
        domain, path = "docker.io", rest
    if domain.lower() in HUB_NAMES:
        domain = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"  # Docker Hub's official images live under library/
    if not _PATH_RE.match(path):
        raise ValueError(f"{path!r} is not a repository name; use lower-case letters, digits and . _ - separated by /")
    return ImageRef(written, domain, path, tag, digest or None)


def _host_only(registry: str) -> str:
    if registry.startswith("["):
        return registry[1:].split("]", 1)[0]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def scheme_for(registry: str, insecure: Iterable[str] = ()) -> str:
    """http for loopback (Docker does the same) and for registries listed in `insecure_registries:`."""
    host = _host_only(registry).lower()
    if host == "localhost" or host.endswith(".localhost"):
        return "http"
    try:
        if ipaddress.ip_address(host).is_loopback:
            return "http"
    except ValueError:
        pass
    for entry in insecure:
        entry = entry.strip().lower()
        entry = entry.split("://", 1)[-1].rstrip("/")
        if entry in (registry.lower(), host):
            return "http"
    return "https"


def platform_of(spec_platform: str | None, arch: str) -> str:
    """The image platform to pull: the manifest's `platform:`, else the target arch's."""
    return spec_platform or arch_of(arch).oci
