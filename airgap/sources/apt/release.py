"""A repository's signed `Release`: fetched as `InRelease` (else `Release` + `Release.gpg`), its signature
checked with `gpgv` against the keyring the manifest names, refused when it is for another suite or has
expired, and read for the `Packages` files it lists with their digests.

Everything a closure trusts hangs from this signature: each index is checked against the digest the signed
Release gives it (airgap/sources/apt/indexes.py), each `.deb` against its index entry.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Release

from airgap.artifacts import Digest
from airgap.errors import BadInputError, IntegrityError, UpstreamError
from airgap.sources.apt.repos import AptError, AptRepo, require_keyring
from airgap.sources.http import HttpSource, redact, scrub
from airgap.sources.request import NotFound

COMPRESSIONS = (".xz", ".gz", "")  # preferred first: smallest to carry


def fetch_release(repo: AptRepo, source: HttpSource, tmp: Path) -> tuple[Release, str]:
    """The repository's Release, as signed: InRelease checked with gpgv (else Release + Release.gpg). The
    keyring is required only once something signed has arrived: offline, "cannot reach HOST" is the first
    thing to fix, and the missing key the second."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", repo.label)
    inrelease = tmp / f"{safe}.InRelease"
    what = f"apt {repo.label}"
    try:
        source.fetch([f"{repo.dist_url}/InRelease"], inrelease, what=f"{what} InRelease")
        text, signer = verify_signature(require_keyring(repo), inrelease, None, f"{repo.dist_url}/InRelease")
    except UpstreamError as first:
        if not isinstance(first, NotFound):
            # The host could not be reached, or kept failing: an upstream problem (exit 3) with its cause and
            # fix, not a wrong URL in the manifest; asking for Release instead would fail the same way.
            raise UpstreamError(f"apt repository {repo.label}: {first.message}", first.hint) from None
        # Some repositories (older NVIDIA ones, local mirrors) publish only Release and Release.gpg.
        release, sig = tmp / f"{safe}.Release", tmp / f"{safe}.Release.gpg"
        try:
            source.fetch([f"{repo.dist_url}/Release"], release, what=f"{what} Release")
            source.fetch([f"{repo.dist_url}/Release.gpg"], sig, what=f"{what} Release.gpg")
        except UpstreamError as second:
            if not isinstance(second, NotFound):
                raise UpstreamError(f"apt repository {repo.label}: {second.message}", second.hint) from None
            raise AptError(
                f"{what}: no InRelease and no Release + Release.gpg at {redact(source.resolve(repo.dist_url))} "
                f"({first.message})",
                "Check the repository URL and suite in the manifest (apt.repos), and `mirrors:` if you use one.",
            ) from None
        text, signer = verify_signature(require_keyring(repo), sig, release, f"{repo.dist_url}/Release")
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
                why = scrub((res.stderr.strip().splitlines() or ["no valid signature"])[-1])
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
