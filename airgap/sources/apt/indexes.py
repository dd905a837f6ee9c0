"""The target's package indexes: every version of every binary package the loaded repositories list for
one architecture (`AptIndex` of `Candidate`s), fetched through the HTTP source, each `Packages` file checked
against the digest its signed Release gives it, parsed once per run.

Two caches, neither process-wide: on disk, content-addressed files (an index, and what parsing it gave)
reused across runs only while they hash to the signed digest; in memory, the parsed paragraphs reused
within one run through the `memo` the run lends (the layers pass their `ResolveContext.memo`), since
prereqs, cudnn and container_toolkit all read the distribution's indexes.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import gzip
import json
import lzma
import os
import tempfile
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from debian.deb822 import Deb822
from debian.debian_support import version_compare

from airgap.artifacts import Digest
from airgap.digests import hash_file
from airgap.errors import AirgapError, IntegrityError
from airgap.fsutil import write_atomic
from airgap.sources.apt.control import FIELDS, parse_provides, parse_relations
from airgap.sources.apt.release import IndexFile, fetch_release, index_files
from airgap.sources.apt.repos import AptRepo
from airgap.sources.http import HttpSource, redact, scrub

if TYPE_CHECKING:
    from airgap.sources.apt.control import OrGroup

T = TypeVar("T")
Paragraph = dict[str, str]  # one package's kept fields (control.FIELDS), as the index gives them


class Memo(Protocol):
    """Facts reused within one run: `make()` once per key, the same object after that."""

    def __call__(self, key: Hashable, make: Callable[[], T], /) -> T: ...


@dataclass
class Candidate:
    """One version of one binary package, as an index lists it."""

    name: str
    version: str
    arch: str
    para: Paragraph
    repo: AptRepo
    index_url: str  # the Packages file it came from (the digest's source in the lock)
    _rel: dict[str, list[OrGroup]] = field(default_factory=dict, repr=False)

    def relations(self, fieldname: str) -> list[OrGroup]:
        if fieldname not in self._rel:
            text = self.para.get(fieldname, "")
            self._rel[fieldname] = parse_relations(text)
        return self._rel[fieldname]

    @property
    def provides(self) -> tuple[tuple[str, str | None], ...]:
        return parse_provides(self.para.get("Provides", ""))

    @property
    def multi_arch(self) -> str:
        return self.para.get("Multi-Arch", "no")

    @property
    def priority(self) -> str:
        return self.para.get("Priority", "optional")

    @property
    def filename(self) -> str:
        return self.para["Filename"]

    @property
    def file_name(self) -> str:
        return self.filename.rsplit("/", 1)[-1]

    @property
    def url(self) -> str:
        # Filename is relative to the repository's root; NVIDIA's flat repositories write it as ./x.deb.
        rel = self.filename[2:] if self.filename.startswith("./") else self.filename.lstrip("/")
        return f"{self.repo.url}/{rel}"

    @property
    def size(self) -> int | None:
        size = self.para.get("Size", "")
        return int(size) if size.isdigit() else None

    def digest(self) -> Digest:
        if self.para.get("SHA256"):
            return Digest("sha256", self.para["SHA256"].lower(), self.index_url)
        return Digest("md5", self.para["MD5sum"].lower(), self.index_url)

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.arch})"


def _vkey() -> Any:
    return functools.cmp_to_key(lambda a, b: version_compare(a.version, b.version))


class AptIndex:
    """Every candidate of the loaded repositories for one architecture (and `all`)."""

    def __init__(self, arch: str, candidates: Iterable[Candidate], sources: list[str]) -> None:
        self.arch = arch
        self.sources = sources  # what was read, for messages: "ubuntu jammy (InRelease signed by ...)"
        self.by_name: dict[str, list[Candidate]] = {}
        self.providers: dict[str, list[tuple[Candidate, str | None]]] = {}
        seen: set[tuple[str, str, str]] = set()
        for cand in candidates:
            key = (cand.name, cand.version, cand.arch)
            if key in seen:  # the same build in -updates and -security: keep the first
                continue
            seen.add(key)
            self.by_name.setdefault(cand.name, []).append(cand)
            for name, ver in cand.provides:
                self.providers.setdefault(name, []).append((cand, ver))
        for versions in self.by_name.values():
            versions.sort(key=_vkey(), reverse=True)  # newest first: apt's candidate is the first

    def versions(self, name: str) -> list[Candidate]:
        return self.by_name.get(name, [])

    def newest(self, name: str) -> Candidate | None:
        versions = self.versions(name)
        return versions[0] if versions else None

    def close_names(self, name: str) -> list[str]:
        return difflib.get_close_matches(name, self.by_name.keys(), n=3, cutoff=0.75)


def default_cache_dir() -> Path:
    base = os.environ.get("AIRGAP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "airgap"
    )
    return Path(base) / "apt"


def load_index(
    repos: list[AptRepo], arch: str, source: HttpSource, cache_dir: Path | None = None, *, memo: Memo | None = None
) -> AptIndex:
    """Fetch, check and parse the indexes of `repos` for `arch`; with the run's `memo`, an index another
    layer of the same run already parsed is not parsed again. Raises AptError/IntegrityError/UpstreamError
    with what to do when a signature, a digest or a file is wrong."""
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    candidates: list[Candidate] = []
    sources: list[str] = []
    with tempfile.TemporaryDirectory(prefix="airgap-apt-") as tmp:
        for repo in repos:
            release, signer = fetch_release(repo, source, Path(tmp))
            sources.append(f"{repo.label} ({redact(repo.url)}, signed by {signer})")
            for index in index_files(repo, release, arch):
                key = ("apt-index", index.url, index.digest.algorithm, index.digest.value)
                parse = functools.partial(_parsed_index, index, source, cache, repo)
                paras = memo(key, parse) if memo is not None else parse()
                candidates.extend(
                    Candidate(p["Package"], p["Version"], p.get("Architecture", arch), p, repo, index.url)
                    for p in paras
                    if p.get("Architecture", arch) in (arch, "all")
                )
    return AptIndex(arch, candidates, sources)


def _parsed_index(index: IndexFile, source: HttpSource, cache: Path, repo: AptRepo) -> list[Paragraph]:
    """The kept fields of each package of one index, from the parse cache, else from the (cached or
    fetched) file once it hashes to the signed digest."""
    url, digest = index.url, index.digest
    ext = url.rsplit("Packages", 1)[-1]
    path = cache / f"{digest.value}{ext}"
    parsed = cache / f"{digest.value}.parsed.json"
    if parsed.is_file():
        # Derived from a file that matched the signed digest; parsing a big index costs seconds, this 0.1 s.
        try:
            paras: list[Paragraph] = json.loads(parsed.read_text(encoding="utf-8"))
            return paras
        except (OSError, ValueError):
            parsed.unlink(missing_ok=True)
    # Content-addressed: a cached file is reused only if it still hashes to what the signed Release says.
    if not (path.is_file() and hash_file(path, digest.algorithm) == digest.value):
        path.unlink(missing_ok=True)
        source.fetch(
            list(index.fetch_urls), path, what=f"apt {repo.label} {url[len(repo.dist_url) + 1 :]}", expected=digest
        )
    raw = path.read_bytes()
    try:
        if ext == ".xz":
            raw = lzma.decompress(raw)
        elif ext == ".gz":
            raw = gzip.decompress(raw)
    except (lzma.LZMAError, OSError, EOFError) as exc:
        raise IntegrityError(
            f"apt {repo.label}: {redact(url)} matches its signed digest but does not decompress ({scrub(str(exc))}).",
            "Report it to the repository's maintainers.",
        ) from None
    paras = [
        dict(p)
        for p in Deb822.iter_paragraphs(raw.splitlines(keepends=True), fields=FIELDS, use_apt_pkg=False)
        if "Package" in p and "Version" in p and "Filename" in p
    ]
    with contextlib.suppress(OSError, AirgapError):  # only a cache: the next run parses again
        write_atomic(parsed, json.dumps(paras).encode())
    return paras
