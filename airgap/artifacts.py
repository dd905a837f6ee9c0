"""What a layer asks the collector to fetch, and what the collector learned about it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airgap.bundle_layout import layer_dir


@dataclass(frozen=True)
class Digest:
    """An expected digest and where it came from (so the lock can say what a file was checked against)."""

    algorithm: str  # "sha256", "md5", or "git-sha1" (git's blob id: sha1 of b"blob <size>\0" + data)
    value: str
    source: str  # "manifest", or the URL of the publisher's checksum file / metadata API
    size: int | None = None  # needed by "git-sha1", whose header carries the size


@dataclass(frozen=True)
class PublishedDigest:
    """Where a publisher lists digests for its files (e.g. CUDA's md5sum.txt), to look up at collect time."""

    algorithm: str
    list_url: str
    file_name: str


@dataclass
class Artifact:
    layer: str
    name: str  # the file name in the bundle, as the publisher names it
    urls: list[str]  # canonical URLs (before mirrors), tried in order: the first that exists wins
    # The manifest field that asked for it, for error messages. (It shadows dataclasses.field in this class
    # body, hence dataclasses.field below.)
    field: tuple[str | int, ...]
    pinned: Digest | None = None  # a sha256 pinned in the manifest always wins
    published: PublishedDigest | None = None
    no_digest_reason: str = ""  # why nothing can be checked, when neither of the above exists
    upstream: Digest | None = dataclasses.field(default=None, compare=False)  # resolved at collect time
    size: int | None = dataclasses.field(default=None, compare=False)  # from HEAD at plan time, exact after collect
    # Request headers for this artifact only (e.g. Authorization from HF_TOKEN). Never recorded, never shown.
    headers: dict[str, str] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    # A requests auth object (e.g. a registry's Bearer-token challenge flow). Never recorded.
    auth: Any = dataclasses.field(default=None, repr=False, compare=False)
    # Bytes the layer generates itself (an OCI index, a requirements lock): written, not downloaded.
    content: bytes | None = dataclasses.field(default=None, repr=False, compare=False)
    # A file on this machine holding the bytes (a blob a local Docker daemon exported for this run): copied
    # and checked like a download, never sent through HTTP. `urls` still name it for the lock.
    local: Path | None = dataclasses.field(default=None, repr=False, compare=False)
    # Facts for the lock's entry (e.g. the model commit, an image's config digest). Must hold no secret.
    meta: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def path(self) -> str:
        """Path inside the bundle, always with '/' (it is written into SHA256SUMS and the lock)."""
        return f"layers/{layer_dir(self.layer)}/{self.name}"

    @property
    def expected(self) -> Digest | None:
        return self.pinned or self.upstream
