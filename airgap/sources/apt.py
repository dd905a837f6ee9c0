"""Debian packages for the TARGET release: signed indexes, apt-like dependency closures, checked `.deb`s.

The connected PC is rarely the server's release (or even Debian), so nothing here asks the local apt:
the repository indexes of the target (`InRelease` -> `Packages.xz`) are fetched through the HTTP source
(mirrors, retries), the `InRelease` signature is checked with `gpgv` against a keyring the manifest names,
every `Packages` file against the SHA256 the signed `Release` lists for it, and every `.deb` against the
SHA256 of its `Packages` entry. So a `.deb` in the bundle is exactly what the signed repository published.

The closure is computed like apt computes it (Depends and Pre-Depends, alternatives, virtual packages,
`:any`, `Architecture: all`, the newest version that satisfies everything), leaving out what the server
already has: by default the release's `Priority: required`/`important` set, or precisely the server's own
`/var/lib/dpkg/status` (`--target-status`). Recommends are not followed (apt's `--no-install-recommends`):
what a build or a runtime needs is in Depends; Recommends would pull in much more than anyone checks.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import difflib
import email.utils
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cmp_to_key
from pathlib import Path
from typing import Any

from debian.deb822 import Deb822, PkgRelation, Release
from debian.debian_support import version_compare

from airgap.artifacts import Digest
from airgap.digests import hash_file
from airgap.errors import AirgapError, BadInputError, IntegrityError, UpstreamError
from airgap.fsutil import write_atomic
from airgap.sources.http import HttpSource, redact

# Only these fields are kept from an index: a jammy main+universe index is ~100k paragraphs, and keeping
# the descriptions would triple the memory and the parse time.
FIELDS = [
    "Package",
    "Version",
    "Architecture",
    "Depends",
    "Pre-Depends",
    "Provides",
    "Conflicts",
    "Breaks",
    "Multi-Arch",
    "Priority",
    "Essential",
    "Filename",
    "Size",
    "SHA256",
    "MD5sum",
    "Status",
]
PRIORITY_RANK = {"required": 0, "important": 1, "standard": 2, "optional": 3, "extra": 4}
COMPRESSIONS = (".xz", ".gz", "")  # preferred first: smallest to carry

Relation = dict[str, Any]  # python-debian's parsed alternative: name, archqual, version (op, v), ...
OrGroup = list[Relation]


class AptError(BadInputError):
    """A closure or repository problem, fixed in the manifest (a package name, a version, a repository)."""


# --- where the target's packages come from -------------------------------------------------------------


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
_UBUNTU_KEYRING = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
_DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DISTROS: dict[str, Distro] = {
    "ubuntu-20.04": Distro(
        "focal", _UBUNTU_ARCHIVE, _UBUNTU_SECURITY, ("main", "universe"), _UBUNTU_KEYRING, "ubuntu2004", "2.31"
    ),
    "ubuntu-22.04": Distro(
        "jammy", _UBUNTU_ARCHIVE, _UBUNTU_SECURITY, ("main", "universe"), _UBUNTU_KEYRING, "ubuntu2204", "2.35"
    ),
    "ubuntu-24.04": Distro(
        "noble", _UBUNTU_ARCHIVE, _UBUNTU_SECURITY, ("main", "universe"), _UBUNTU_KEYRING, "ubuntu2404", "2.39"
    ),
    "debian-11": Distro("bullseye", _DEBIAN, _DEBIAN_SECURITY, ("main",), _DEBIAN_KEYRING, "debian11", "2.31"),
    "debian-12": Distro("bookworm", _DEBIAN, _DEBIAN_SECURITY, ("main",), _DEBIAN_KEYRING, "debian12", "2.36"),
    "debian-13": Distro("trixie", _DEBIAN, _DEBIAN_SECURITY, ("main",), _DEBIAN_KEYRING, "debian13", "2.41"),
}

# NVIDIA's repositories, and where their keyrings are when set up as NVIDIA's install guides say.
NVIDIA_CONTAINER_URL = "https://nvidia.github.io/libnvidia-container/stable/deb/{arch}"
NVIDIA_CONTAINER_KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
CUDA_REPO_URL = "https://developer.download.nvidia.com/compute/cuda/repos/{dir}/{arch}"
CUDA_REPO_ARCH = {"amd64": "x86_64", "arm64": "sbsa"}
CUDA_KEYRING = "/usr/share/keyrings/cuda-archive-keyring.gpg"
KEY_HELP = {
    "ubuntu": "apt-get install ubuntu-keyring (Debian and Ubuntu have it) puts it in " + _UBUNTU_KEYRING,
    "debian": "apt-get install debian-archive-keyring puts it in " + _DEBIAN_KEYRING,
    "nvidia-container": "curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | "
    "gpg --dearmor -o keys/nvidia-container-toolkit.gpg",
    "cuda": "curl -fsSL https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/3bf863cc.pub "
    "| gpg --dearmor -o keys/cuda-archive-keyring.gpg",
}


def distro_of(os_name: str) -> Distro | None:
    return DISTROS.get(os_name)


# --- the server's side: what it already has ---------------------------------------------------------------

_target_status: Path | None = None


def set_target_status(path: Path | None) -> None:
    """Use a copy of the server's /var/lib/dpkg/status (the CLI's `--target-status FILE`) for every
    closure this process computes: packages the server already has are then left out precisely."""
    global _target_status
    if path is not None:
        read_status_file(path)  # refuse a wrong file now, before any download
    _target_status = path


def target_status() -> Path | None:
    return _target_status


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
        out[name] = InstalledPkg(name, para.get("Version", ""), arch, _provides(para.get("Provides", "")))
    return out


def _provides(text: str) -> tuple[tuple[str, str | None], ...]:
    if not text:
        return ()
    out = []
    for group in PkgRelation.parse_relations(text):
        for rel in group:
            ver = rel.get("version")
            out.append((rel["name"], ver[1] if ver and ver[0] == "=" else None))
    return tuple(out)


# --- the indexes ----------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One version of one binary package, as an index lists it."""

    name: str
    version: str
    arch: str
    para: dict[str, str]
    repo: AptRepo
    index_url: str  # the Packages file it came from (the digest's source in the lock)
    _rel: dict[str, list[OrGroup]] = field(default_factory=dict, repr=False)

    def relations(self, fieldname: str) -> list[OrGroup]:
        if fieldname not in self._rel:
            text = self.para.get(fieldname, "")
            self._rel[fieldname] = PkgRelation.parse_relations(text) if text else []
        return self._rel[fieldname]

    @property
    def provides(self) -> tuple[tuple[str, str | None], ...]:
        return _provides(self.para.get("Provides", ""))

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
    return cmp_to_key(lambda a, b: version_compare(a.version, b.version))


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


# Parsed indexes, by the sha256 of the file they came from: prereqs, cudnn and container_toolkit all read
# the distribution's indexes, and a plan followed by a collect in one process should parse them once.
_PARSED: dict[tuple[str, str, str], list[dict[str, str]]] = {}


def load_index(repos: list[AptRepo], arch: str, source: HttpSource, cache_dir: Path | None = None) -> AptIndex:
    """Fetch, check and parse the indexes of `repos` for `arch`. Raises AptError/IntegrityError/UpstreamError
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
                paras = _parsed_index(index, source, cache, repo)
                candidates.extend(
                    Candidate(p["Package"], p["Version"], p.get("Architecture", arch), p, repo, index.url)
                    for p in paras
                    if p.get("Architecture", arch) in (arch, "all")
                )
    return AptIndex(arch, candidates, sources)


def fetch_release(repo: AptRepo, source: HttpSource, tmp: Path) -> tuple[Release, str]:
    """The repository's Release, as signed: InRelease checked with gpgv (else Release + Release.gpg)."""
    keyring = _require_keyring(repo)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", repo.label)
    inrelease = tmp / f"{safe}.InRelease"
    what = f"apt {repo.label}"
    try:
        source.fetch([f"{repo.dist_url}/InRelease"], inrelease, what=f"{what} InRelease")
        text, signer = verify_signature(keyring, inrelease, None, f"{repo.dist_url}/InRelease")
    except UpstreamError as first:
        # Some repositories (older NVIDIA ones, local mirrors) publish only Release and Release.gpg.
        release, sig = tmp / f"{safe}.Release", tmp / f"{safe}.Release.gpg"
        try:
            source.fetch([f"{repo.dist_url}/Release"], release, what=f"{what} Release")
            source.fetch([f"{repo.dist_url}/Release.gpg"], sig, what=f"{what} Release.gpg")
        except UpstreamError:
            raise AptError(
                f"{what}: no InRelease and no Release + Release.gpg at {redact(source.resolve(repo.dist_url))} "
                f"({first.message})",
                "Check the repository URL and suite in the manifest (apt.repos), and `mirrors:` if you use one.",
            ) from None
        text, signer = verify_signature(keyring, sig, release, f"{repo.dist_url}/Release")
    rel = Release(text)
    if not repo.flat and repo.suite not in (rel.get("Suite"), rel.get("Codename")):
        # A mirror answering with another suite's (validly signed) Release would give the wrong packages.
        raise IntegrityError(
            f"{what}: the signed Release is for suite {rel.get('Suite')!r} / codename {rel.get('Codename')!r}, "
            f"not {repo.suite!r}.",
            "The mirror serves another suite under this name; check its URL and `mirrors:`.",
        )
    until = _date(rel.get("Valid-Until", ""))
    if until is not None and until < dt.datetime.now(dt.timezone.utc):
        # As apt: an old, validly signed Release replayed by a stale mirror would hide security updates.
        raise IntegrityError(
            f"{what}: the signed Release expired on {rel['Valid-Until']} (Valid-Until).",
            "The mirror is stale (or this PC's clock is wrong); use an up-to-date mirror and run the command again.",
        )
    return rel, signer


def _date(text: str) -> dt.datetime | None:
    try:
        return email.utils.parsedate_to_datetime(text) if text else None
    except (TypeError, ValueError):
        return None


def _require_keyring(repo: AptRepo) -> Path:
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


def verify_signature(keyring: Path, signed: Path, data: Path | None, url: str) -> tuple[str, str]:
    """Check a clearsigned file (data None) or a detached signature with gpgv; return the signed text (what
    gpgv checked, never the bytes around it) and who signed it."""
    gpgv = shutil.which("gpgv")
    if gpgv is None:
        raise BadInputError(
            "gpgv is not installed; apt signatures cannot be checked without it.",
            "Install it (apt-get install gpgv) and run the same command again.",
        )
    with tempfile.TemporaryDirectory(prefix="airgap-gpgv-") as home:
        ring = _binary_keyring(keyring, Path(home))
        out = Path(home) / "signed.txt"
        argv = [gpgv, "--homedir", home, "--status-fd", "1", "--keyring", str(ring)]
        argv += [str(signed), str(data)] if data is not None else ["--output", str(out), str(signed)]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        status = res.stdout
        if res.returncode != 0 or "[GNUPG:] VALIDSIG" not in status:
            if "NO_PUBKEY" in status:
                why = "it is signed by a key that is not in the keyring"
            elif "BADSIG" in status:
                why = "the signature does not match the content (altered on the way, or a broken mirror)"
            elif "EXPKEYSIG" in status or "EXPSIG" in status:
                why = "the signature or its key has expired"
            else:
                why = (res.stderr.strip().splitlines() or ["no valid signature"])[-1]
            raise IntegrityError(
                f"{redact(url)}: signature check failed against {keyring}: {why}.",
                "Nothing from this repository was used. Check that the keyring is the publisher's current key, "
                "and that the mirror is not serving altered files.",
            )
        signer = next((line.split()[2] for line in status.splitlines() if line.startswith("[GNUPG:] VALIDSIG")), "?")
        text = (data if data is not None else out).read_text(encoding="utf-8", errors="replace")
    return text, signer


def _binary_keyring(keyring: Path, tmp: Path) -> Path:
    """gpgv reads binary keyrings only; publishers hand out ASCII-armored keys (.asc, 'gpgkey'): dearmor."""
    data = keyring.read_bytes()
    if b"-----BEGIN PGP PUBLIC KEY BLOCK-----" not in data:
        return keyring.resolve()
    blobs = []
    for block in re.findall(
        rb"-----BEGIN PGP PUBLIC KEY BLOCK-----(.*?)-----END PGP PUBLIC KEY BLOCK-----", data, re.S
    ):
        lines = block.strip().splitlines()
        # Armor headers ("Comment: ...") end at the first empty line; a line starting "=" is the CRC.
        if b"" in [line.strip() for line in lines]:
            lines = lines[[line.strip() for line in lines].index(b"") + 1 :]
        body = b"".join(line.strip() for line in lines if not line.startswith(b"="))
        blobs.append(base64.b64decode(body))
    out = tmp / "keyring.gpg"
    out.write_bytes(b"".join(blobs))
    return out


@dataclass(frozen=True)
class IndexFile:
    url: str  # canonical path of the index, recorded as the digest's source
    digest: Digest
    fetch_urls: tuple[str, ...]  # by-hash first where the repository offers it


def index_files(repo: AptRepo, release: Release, arch: str) -> list[IndexFile]:
    """The Packages files to read, each with the digest the signed Release gives it (xz, else gz, else plain)."""
    listed = {entry["name"]: entry for entry in release.get("SHA256", [])}
    algo = "sha256"
    if not listed:
        listed = {entry["name"]: entry for entry in release.get("MD5Sum", [])}
        algo = "md5"
    dirs = [""] if repo.flat else [f"{c}/binary-{arch}/" for c in repo.components]
    if (
        not repo.flat
        and "all" in release.get("Architectures", "").split()
        and "Packages" not in release.get("No-Support-for-Architecture-all", "")
    ):
        # As apt: `Architecture: all` packages have an index of their own (binary-all/) only when the
        # Release lists `all` and does not say they are in every binary-<arch> index.
        dirs += [
            f"{c}/binary-all/"
            for c in repo.components
            if any(f"{c}/binary-all/Packages{ext}" in listed for ext in COMPRESSIONS)
        ]
    by_hash = release.get("Acquire-By-Hash", "").lower() == "yes"
    out = []
    for d in dirs:
        for ext in COMPRESSIONS:
            entry = listed.get(f"{d}Packages{ext}")
            if entry is not None:
                url = f"{repo.dist_url}/{d}Packages{ext}"
                value = entry[algo if algo == "sha256" else "md5sum"].lower()
                digest = Digest(algo, value, f"{repo.dist_url}/InRelease", int(entry["size"]))
                # Mirrors update files one by one: the plain path may already hold the next index while
                # InRelease is still the old one. by-hash/ names are immutable (apt fetches those too).
                by_hash_url = f"{repo.dist_url}/{d}by-hash/{'SHA256' if algo == 'sha256' else 'MD5Sum'}/{value}"
                out.append(IndexFile(url, digest, (by_hash_url, url) if by_hash else (url,)))
                break
        else:
            if d.endswith(f"binary-{arch}/") or repo.flat:
                raise AptError(
                    f"apt {repo.label}: its signed Release lists no {d}Packages index"
                    + ("" if repo.flat else f" (component {d.split('/')[0]!r} for {arch})")
                    + ".",
                    "Check the components and the architecture in the manifest (apt.repos, target.arch).",
                )
    return out


def _parsed_index(index: IndexFile, source: HttpSource, cache: Path, repo: AptRepo) -> list[dict[str, str]]:
    url, digest = index.url, index.digest
    key = (url, digest.algorithm, digest.value)
    if key in _PARSED:
        return _PARSED[key]
    ext = url.rsplit("Packages", 1)[-1]
    path = cache / f"{digest.value}{ext}"
    parsed = cache / f"{digest.value}.parsed.json"
    if parsed.is_file():
        # Derived from a file that matched the signed digest; parsing a big index costs seconds, this 0.1 s.
        try:
            paras = json.loads(parsed.read_text(encoding="utf-8"))
            _PARSED[key] = paras
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
            f"apt {repo.label}: {redact(url)} matches its signed digest but does not decompress ({exc}).",
            "Report it to the repository's maintainers.",
        ) from None
    paras = [
        dict(p)
        for p in Deb822.iter_paragraphs(raw.splitlines(keepends=True), fields=FIELDS, use_apt_pkg=False)
        if "Package" in p and "Version" in p and "Filename" in p
    ]
    _PARSED[key] = paras
    with contextlib.suppress(OSError, AirgapError):  # only a cache: the next run parses again
        write_atomic(parsed, json.dumps(paras).encode())
    return paras


# --- the closure ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A package to install: `name`, `name=VERSION` (exact, or an upstream version prefix: 1.16.2 matches
    1.16.2-1), or `name (>= V)`. `why` says which manifest field asked for it."""

    name: str
    version: str | None = None  # "=" match, exact or prefix
    relation: tuple[str, str] | None = None  # (op, version)
    why: str = ""

    @classmethod
    def parse(cls, text: str, why: str = "") -> Request:
        text = text.strip()
        m = re.fullmatch(r"([a-z0-9][a-z0-9+.-]+)\s*(?:=\s*(\S+)|\((<<|<=|=|>=|>>)\s*([^)\s]+)\s*\))?", text)
        if not m:
            raise ValueError(
                f"{text!r} is not a package request; write it like `dkms`, `nvidia-container-toolkit="
                "1.16.2` or `gcc-12 (>= 12.3)`"
            )
        return cls(m.group(1), m.group(2), (m.group(3), m.group(4)) if m.group(3) else None, why)

    def matches(self, version: str) -> bool:
        if self.version is not None and not version_matches(version, self.version):
            return False
        return self.relation is None or satisfies(version, self.relation)

    def __str__(self) -> str:
        if self.version:
            return f"{self.name}={self.version}"
        if self.relation:
            return f"{self.name} ({self.relation[0]} {self.relation[1]})"
        return self.name


def version_matches(version: str, want: str) -> bool:
    """`want` is the exact version, or its upstream part up to a separator: 1.16.2 matches 1.16.2-1 and
    1:1.16.2-1ubuntu1, not 1.16.20-1; 9 matches 9.1.0.70-1."""
    if version == want:
        return True
    bare = version.split(":", 1)[1] if ":" in version and ":" not in want else version
    return bare == want or (bare.startswith(want) and bare[len(want)] in "-.~+")


def satisfies(version: str, rel: tuple[str, str] | None) -> bool:
    if rel is None:
        return True
    op, want = rel
    c = version_compare(version, want)
    return {"<<": c < 0, "<=": c <= 0, "=": c == 0, ">=": c >= 0, ">>": c > 0, "<": c <= 0, ">": c >= 0}[op]


def _rel_text(rel: Relation) -> str:
    text = rel["name"] + (f":{rel['archqual']}" if rel.get("archqual") else "")
    return text + (f" ({rel['version'][0]} {rel['version'][1]})" if rel.get("version") else "")


def group_text(group: OrGroup) -> str:
    return " | ".join(_rel_text(r) for r in group)


@dataclass
class Resolution:
    packages: list[Candidate]  # install order: dependencies before what needs them
    needed_by: dict[str, str]  # package -> "requested (field)" or the package that pulled it in
    server: str  # what the server was assumed to have
    left_out: list[str] = field(default_factory=list)  # requested but already on the server


class _Retry(Exception):
    def __init__(self, name: str, rel: tuple[str, str]) -> None:
        self.name, self.rel = name, rel


class Resolver:
    """apt's MarkInstall, simplified and made deterministic: first alternative whose newest version
    satisfies, then (unlike apt, which gives up) the newest older version that does; a virtual package goes
    to its provider (the one already chosen or installed, else by Priority, then name)."""

    MAX_RESTARTS = 50

    def __init__(self, index: AptIndex, server: ServerPackages) -> None:
        self.index = index
        self.server = server
        self.arch = index.arch

    def resolve(self, requests: list[Request]) -> Resolution:
        extra: dict[str, list[tuple[str, str]]] = {}
        for _ in range(self.MAX_RESTARTS):
            try:
                return self._attempt(requests, extra)
            except _Retry as retry:
                if retry.rel in extra.get(retry.name, []):
                    break
                extra.setdefault(retry.name, []).append(retry.rel)
        raise AptError(
            f"apt: could not settle on versions for {', '.join(sorted(extra))}: the dependencies "
            "ask for versions that contradict each other.",
            "Pin the versions in the manifest (`name=VERSION`) so that they agree.",
        )

    # One pass; a package chosen too early at a version a later dependency refuses restarts it with that
    # dependency's constraint added (`extra`), so the result is the newest set that satisfies everything.
    def _attempt(self, requests: list[Request], extra: dict[str, list[tuple[str, str]]]) -> Resolution:
        chosen: dict[str, Candidate] = {}
        provided: dict[str, list[tuple[Candidate, str | None]]] = {}
        needed_by: dict[str, str] = {}
        queue: deque[Candidate] = deque()
        problems: list[str] = []
        left_out: list[str] = []

        def add(cand: Candidate, why: str) -> None:
            chosen[cand.name] = cand
            needed_by[cand.name] = why
            for name, ver in cand.provides:
                provided.setdefault(name, []).append((cand, ver))
            queue.append(cand)

        for req in requests:
            have = self.server.packages.get(req.name)
            if have is not None and req.matches(have.version):
                left_out.append(f"{req.name} (the server has {have.version})")
                continue
            if req.name in chosen:
                if not req.matches(chosen[req.name].version):
                    problems.append(f"{req} ({req.why}) contradicts {chosen[req.name]} ({needed_by[req.name]})")
                continue
            cand, why_not = self._pick_requested(req, extra.get(req.name, []))
            if cand is None:
                problems.append(why_not)
            else:
                add(cand, f"requested ({req.why})" if req.why else "requested")

        while queue:
            cand = queue.popleft()
            for fieldname in ("Pre-Depends", "Depends"):
                for group in cand.relations(fieldname):
                    if self._satisfied(group, chosen, provided):
                        continue
                    pick = self._choose(group, chosen, extra)
                    if pick is not None:
                        add(pick, cand.name)
                        continue
                    for rel in group:  # chosen earlier at a version this dependency refuses: retry
                        other = chosen.get(rel["name"])
                        if (
                            other is not None
                            and rel.get("version")
                            and not satisfies(other.version, rel["version"])
                            and any(satisfies(c.version, rel["version"]) for c in self.index.versions(rel["name"]))
                        ):
                            raise _Retry(rel["name"], rel["version"])
                    problems.append(self._unsatisfiable(cand, fieldname, group, chosen))
        if problems:
            raise AptError(
                "apt: the packages cannot be resolved for "
                f"{self.arch} against {'; '.join(self.index.sources) or 'no repository'}:\n"
                + "\n".join(f"  - {p}" for p in dict.fromkeys(problems)),
                "Check the package names and versions in the manifest; a package that lives in another "
                "repository needs that repository in `apt.repos`.",
            )
        conflicts = self._conflicts(chosen)
        if conflicts:
            raise AptError(
                "apt: the closure has conflicts:\n" + "\n".join(f"  - {c}" for c in conflicts),
                "Drop or pin one of the packages involved (apt would refuse this set too).",
            )
        order = self._install_order(chosen, provided)
        return Resolution(order, needed_by, self.server.description, left_out)

    def _allowed_arch(self, rel: Relation) -> bool:
        qual = rel.get("archqual")
        return qual in (None, "any", "native", self.arch)

    def _candidates(self, name: str, rel: tuple[str, str] | None, extra: list[tuple[str, str]]) -> list[Candidate]:
        return [
            c
            for c in self.index.versions(name)
            if satisfies(c.version, rel) and all(satisfies(c.version, e) for e in extra)
        ]

    def _pick_requested(self, req: Request, extra: list[tuple[str, str]]) -> tuple[Candidate | None, str]:
        versions = self.index.versions(req.name)
        fits = [c for c in versions if req.matches(c.version) and all(satisfies(c.version, e) for e in extra)]
        if fits:
            return fits[0], ""
        where = f" ({req.why})" if req.why else ""
        if versions:
            listed = ", ".join(c.version for c in versions[:8]) + (" ..." if len(versions) > 8 else "")
            return None, f"{req}{where}: no such version; the repositories have {listed}"
        providers = sorted({c.name for c, _ in self.index.providers.get(req.name, [])})
        if len(providers) == 1 and req.version is None and req.relation is None:
            return self._pick_requested(Request(providers[0], why=req.why), extra)
        if providers:
            return None, f"{req.name}{where} is a virtual package provided by {', '.join(providers)}: name one of them"
        close = self.index.close_names(req.name)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return None, f"{req.name}{where}: no such package for {self.arch}{hint}"

    def _satisfied(
        self, group: OrGroup, chosen: dict[str, Candidate], provided: dict[str, list[tuple[Candidate, str | None]]]
    ) -> bool:
        for rel in group:
            if not self._allowed_arch(rel):
                continue
            name, ver = rel["name"], rel.get("version")
            c = chosen.get(name)
            if c is not None and satisfies(c.version, ver):
                return True
            have = self.server.packages.get(name)
            # A package the closure replaces is judged by its new version, not the server's old one.
            if have is not None and c is None and satisfies(have.version, ver):
                return True
            for _prov, pver in provided.get(name, []):
                if ver is None or (pver is not None and satisfies(pver, ver)):
                    return True
            for _pkg, pver in self.server.provides.get(name, []):
                if ver is None or (pver is not None and satisfies(pver, ver)):
                    return True
        return False

    def _choose(
        self, group: OrGroup, chosen: dict[str, Candidate], extra: dict[str, list[tuple[str, str]]]
    ) -> Candidate | None:
        usable = [r for r in group if self._allowed_arch(r)]
        # apt: the first alternative whose candidate (newest version) satisfies the relation.
        for rel in usable:
            if rel["name"] in chosen:
                continue
            newest = self.index.newest(rel["name"])
            if newest is not None:
                if satisfies(newest.version, rel.get("version")) and all(
                    satisfies(newest.version, e) for e in extra.get(rel["name"], [])
                ):
                    return newest
                continue
            prov = self._provider(rel, chosen)
            if prov is not None:
                return prov
        # Then an older version: NVIDIA's flat repositories keep every release, and `(= 1.16.2-1)` wants one.
        for rel in usable:
            if rel["name"] in chosen:
                continue
            fits = self._candidates(rel["name"], rel.get("version"), extra.get(rel["name"], []))
            if fits:
                return fits[0]
        return None

    def _provider(self, rel: Relation, chosen: dict[str, Candidate]) -> Candidate | None:
        ver = rel.get("version")
        options = []
        for cand, pver in self.index.providers.get(rel["name"], []):
            if ver is not None and (pver is None or not satisfies(pver, ver)):
                continue
            if cand.name in chosen or self.index.newest(cand.name) is not cand:
                continue  # apt considers only candidate versions of providers
            options.append(cand)
        options.sort(key=lambda c: (PRIORITY_RANK.get(c.priority, 5), c.name))
        return options[0] if options else None

    def _unsatisfiable(self, cand: Candidate, fieldname: str, group: OrGroup, chosen: dict[str, Candidate]) -> str:
        bits = []
        for rel in group:
            name = rel["name"]
            if not self._allowed_arch(rel):
                bits.append(f"{_rel_text(rel)} is for another architecture")
            elif name in chosen:
                bits.append(f"{name} is already chosen at {chosen[name].version}")
            elif self.index.versions(name):
                bits.append(f"{name} has only {', '.join(c.version for c in self.index.versions(name)[:5])}")
            elif name in self.server.packages:
                bits.append(f"the server has {name} {self.server.packages[name].version}")
            else:
                bits.append(f"no package {name} in the repositories")
        return f"{cand} {fieldname} {group_text(group)}: {'; '.join(bits)}"

    def _conflicts(self, chosen: dict[str, Candidate]) -> list[str]:
        out = []
        for cand in chosen.values():
            for fieldname in ("Conflicts", "Breaks"):
                for group in cand.relations(fieldname):
                    for rel in group:
                        name, ver = rel["name"], rel.get("version")
                        other = chosen.get(name)
                        if other is not None and other is not cand and satisfies(other.version, ver):
                            out.append(f"{cand} {fieldname} {_rel_text(rel)}, and the closure has {other}")
                        have = self.server.packages.get(name)
                        if other is None and have is not None and satisfies(have.version, ver):
                            out.append(f"{cand} {fieldname} {_rel_text(rel)}, and the server has {name} {have.version}")
                        if ver is None:
                            for prov in chosen.values():
                                if prov is not cand and prov.name != name and any(p == name for p, _ in prov.provides):
                                    out.append(f"{cand} {fieldname} {name}, which {prov} provides")
        return sorted(set(out))

    def _install_order(
        self, chosen: dict[str, Candidate], provided: dict[str, list[tuple[Candidate, str | None]]]
    ) -> list[Candidate]:
        """Dependencies first; packages in a dependency cycle (libc6 <-> libgcc-s1) kept together."""
        edges: dict[str, set[str]] = {}
        for cand in chosen.values():
            deps: set[str] = set()
            for fieldname in ("Pre-Depends", "Depends"):
                for group in cand.relations(fieldname):
                    for rel in group:
                        if rel["name"] in chosen and satisfies(chosen[rel["name"]].version, rel.get("version")):
                            deps.add(rel["name"])
                        deps.update(p.name for p, _ in provided.get(rel["name"], []))
            deps.discard(cand.name)
            edges[cand.name] = deps
        return [chosen[n] for scc in strongly_connected(edges) for n in sorted(scc)]


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's SCCs, iteratively; each component comes after those it depends on (reverse topological)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in edges:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    n = stack.pop()
                    on_stack.discard(n)
                    comp.append(n)
                    if n == node:
                        break
                out.append(comp)
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
    path = status if status is not None else _target_status
    return read_status_file(path) if path is not None else default_server(index)
