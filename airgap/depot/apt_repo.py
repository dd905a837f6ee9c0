"""A signed apt repository of a bundle's `.deb`s, for the closed network's other hosts.

Sites with several servers point each one at an internal apt repository instead of installing `.deb`s
host by host. What apt needs, and what this writes (a "dists" layout, so by-hash works):

    apt/
      pool/main/<file>.deb                                  the bundle's packages, hashed as copied
      dists/<suite>/main/binary-<arch>/Packages{,.gz}       one stanza per package (dpkg-deb's fields,
                                                            plus Filename, Size, MD5sum, SHA1, SHA256)
      dists/<suite>/main/binary-<arch>/by-hash/SHA256/<h>   the same indexes by digest (Acquire-By-Hash)
      dists/<suite>/Release, InRelease, Release.gpg         signed with the site's OpenPGP key
      airgap-depot.gpg                                      that key's public half, for `signed-by=`
      airgap-depot.sources                                  a deb822 source to copy to the hosts

The repository is always signed: apt's `[trusted=yes]` turns off the check that keeps a tampered index
from being installed, which is exactly what these sites' policies forbid. The site key is one gpg already
holds (`gpg --list-secret-keys`); airgap never makes or stores a private key.

Every `.deb` is read through the lock's digest (chain of custody): a file that changed since the bundle
was verified stops the export before anything is renamed into place. The tree is built in a temporary
directory beside the destination and renamed at the end, so a failure leaves no half-written repository.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path

from airgap.errors import BadInputError, InstallError, IntegrityError
from airgap.install_context import CheckedReader
from airgap.lock import Lock, LockedArtifact
from airgap.parts import PartsReader, source_files
from airgap.safepaths import relative_path_problem

COMPONENT = "main"
KEY_FILE = "airgap-depot.gpg"
SOURCES_FILE = "airgap-depot.sources"
BUF = 1 << 20
# Fields apt's solver and dpkg read from the index; dpkg-deb prints them in the package's own order.
_ADDED = ("Filename", "Size", "MD5sum", "SHA1", "SHA256")


@dataclass(frozen=True)
class AptSigner:
    """The site's OpenPGP key, as gpg names it (fingerprint, key ID or user ID), in `gnupghome` (None:
    gpg's own, $GNUPGHOME or ~/.gnupg)."""

    key: str
    gnupghome: Path | None = None

    def gpg(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        gpg = shutil.which("gpg")
        if gpg is None:
            raise BadInputError(
                "gpg is not installed; it signs the apt repository's index.",
                "Install it (apt-get install gpg) on this host, then run the command again.",
            )
        argv = [gpg, "--batch", "--no-tty", "--yes"]
        if self.gnupghome is not None:
            argv += ["--homedir", str(self.gnupghome)]
        return subprocess.run([*argv, *args], input=stdin, capture_output=True, check=False)

    def fingerprint(self) -> str:
        """The signing key's fingerprint; BadInputError when gpg has no secret key by that name."""
        r = self.gpg("--with-colons", "--list-secret-keys", self.key)
        fprs = [
            line.split(":")[9] for line in r.stdout.decode(errors="replace").splitlines() if line.startswith("fpr:")
        ]
        if r.returncode != 0 or not fprs:
            where = self.gnupghome or "gpg's keyring ($GNUPGHOME or ~/.gnupg)"
            raise BadInputError(
                f"--apt-key {self.key}: no secret key by that name in {where}; the apt repository must be "
                "signed by the site's key.",
                "List the keys with `gpg --list-secret-keys`, or make a site key once with "
                "`gpg --quick-gen-key 'Depot <depot@your.site>' ed25519 sign never` and keep it with the depot.",
            )
        return fprs[0]


@dataclass
class AptRepo:
    """What was written: where, for which suite and architectures, signed by which key."""

    root: Path
    suite: str
    architectures: list[str]
    packages: int
    fingerprint: str
    files: list[str] = field(default_factory=list)  # pool paths, relative to root

    @property
    def key_file(self) -> Path:
        return self.root / KEY_FILE

    def sources(self, base_url: str, key_path: str = f"/etc/apt/keyrings/{KEY_FILE}") -> str:
        """A deb822 source for a host, with the key at `key_path` (where the host keeps the copied key)."""
        return (
            f"Types: deb\nURIs: {base_url}\nSuites: {self.suite}\nComponents: {COMPONENT}\n"
            f"Architectures: {' '.join(self.architectures)}\nSigned-By: {key_path}\n"
        )


def debs_of(lock: Lock) -> list[LockedArtifact]:
    """The bundle's `.deb` files (a delta bundle's inherited ones are not in it)."""
    return [a for a in lock.artifacts if a.name.endswith(".deb") and not a.in_base]


def write_apt_repo(bundle: Path, lock: Lock, dest: Path, signer: AptSigner, suite: str = "airgap") -> AptRepo:
    """Write the signed repository of the bundle's `.deb`s to `dest` (replaced as a whole when it exists).
    The bundle is the caller's verified one: each `.deb` is still hashed against the lock as it is copied."""
    debs = debs_of(lock)
    if not debs:
        raise BadInputError(
            f"{bundle}: the bundle holds no .deb files, so there is no apt repository to make.",
            "Leave the apt repository out, or collect a manifest with apt packages (prereqs, cudnn, "
            "container_toolkit).",
        )
    fingerprint = signer.fingerprint()
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        stanzas: dict[str, list[bytes]] = {}
        files = []
        for art in debs:
            if "/" in art.name or (problem := relative_path_problem(art.name)):
                raise IntegrityError(
                    f"the bundle's lock names the .deb {art.name[:120]!r}, which cannot be a file of the "
                    f"repository: {problem or 'a path, not a name'}; nothing was written.",
                    "The lock was altered (a collect never writes such a name): copy the bundle again.",
                )
            rel = f"pool/{COMPONENT}/{art.name}"
            stanza, arch = _copy_deb(bundle, art, work / rel, rel)
            stanzas.setdefault(arch, []).append(stanza)
            files.append(rel)
        archs = sorted(a for a in stanzas if a != "all") or [str(lock.target.get("arch") or "amd64")]
        dist = work / "dists" / suite
        index_lines: list[str] = []
        for arch in archs:
            text = b"\n".join(stanzas.get(arch, []) + stanzas.get("all", []))
            index_lines += _write_index(dist, f"{COMPONENT}/binary-{arch}", text)
        release = _release(lock, suite, archs, index_lines)
        (dist / "Release").write_bytes(release)
        _sign(signer, dist)
        exported = signer.gpg("--export", fingerprint)
        if exported.returncode != 0 or not exported.stdout:
            raise InstallError(f"gpg could not export the public key {fingerprint}.", _gpg_said(exported))
        (work / KEY_FILE).write_bytes(exported.stdout)
        repo = AptRepo(dest, suite, archs, len(debs), fingerprint, files)
        (work / SOURCES_FILE).write_text(repo.sources("http://DEPOT-HOST:PORT/apt"))
        os.chmod(work, 0o755)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(dest, old)
            os.rename(work, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(work, dest)
        return repo
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _copy_deb(bundle: Path, art: LockedArtifact, out: Path, rel: str) -> tuple[bytes, str]:
    """Copy one `.deb` through its lock digest; its index stanza and architecture."""
    out.parent.mkdir(parents=True, exist_ok=True)
    md5, sha1 = hashlib.md5(usedforsecurity=False), hashlib.sha1(usedforsecurity=False)
    with (
        io.BufferedReader(CheckedReader(art, PartsReader(source_files(bundle, art))), BUF) as src,
        open(out, "wb") as f,
    ):
        while chunk := src.read(BUF):
            md5.update(chunk)
            sha1.update(chunk)
            f.write(chunk)
    r = subprocess.run(["dpkg-deb", "-f", str(out)], capture_output=True, check=False)
    if r.returncode != 0:
        raise InstallError(
            f"{art.path}: dpkg-deb cannot read its control fields ({r.stderr.decode(errors='replace').strip()[:200]}).",
            "The file matches the lock, so it was collected this way: collect the bundle again, or leave it out.",
        )
    fields = [line for line in r.stdout.rstrip(b"\n").split(b"\n") if line.split(b":", 1)[0].decode() not in _ADDED]
    arch = next((line.split(b":", 1)[1].strip().decode() for line in fields if line.startswith(b"Architecture:")), "")
    if not arch:
        raise InstallError(f"{art.path}: its control file has no Architecture field.", "Leave this package out.")
    added = [
        f"Filename: {rel}",
        f"Size: {art.size}",
        f"MD5sum: {md5.hexdigest()}",
        f"SHA1: {sha1.hexdigest()}",
        f"SHA256: {art.sha256}",
    ]
    return b"\n".join(fields) + b"\n" + "\n".join(added).encode() + b"\n", arch


def _write_index(dist: Path, sub: str, packages: bytes) -> list[str]:
    """Packages and Packages.gz under dist/sub, with by-hash copies; the Release lines for them."""
    d = dist / sub
    (d / "by-hash" / "SHA256").mkdir(parents=True, exist_ok=True)
    lines = []
    # mtime=0: the same bundle gives the same bytes, so a re-export changes nothing a mirror must fetch.
    for name, data in (("Packages", packages), ("Packages.gz", gzip.compress(packages, mtime=0))):
        (d / name).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        (d / "by-hash" / "SHA256" / digest).write_bytes(data)
        lines.append(f" {digest} {len(data)} {sub}/{name}")
    return lines


def _release(lock: Lock, suite: str, archs: list[str], sha256_lines: list[str]) -> bytes:
    try:
        when = datetime.fromisoformat(lock.created.replace("Z", "+00:00"))
    except ValueError:
        when = datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    fields = [
        "Origin: airgap",
        f"Label: airgap {lock.name}",
        f"Suite: {suite}",
        f"Codename: {suite}",
        # The bundle's collection time, not now: apt refuses a Release dated in the future, and an export
        # made twice from one bundle is the same repository.
        f"Date: {format_datetime(when.astimezone(timezone.utc), usegmt=True)}",
        f"Architectures: {' '.join(archs)}",
        f"Components: {COMPONENT}",
        f"Description: the .deb files of airgap bundle {lock.name}",
        "Acquire-By-Hash: yes",
        "SHA256:",
        *sha256_lines,
    ]
    return ("\n".join(fields) + "\n").encode()


def _sign(signer: AptSigner, dist: Path) -> None:
    release = dist / "Release"
    for args in (
        ("--digest-algo", "SHA256", "--local-user", signer.key, "--clearsign", "-o", str(dist / "InRelease")),
        (
            "--digest-algo",
            "SHA256",
            "--local-user",
            signer.key,
            "--armor",
            "--detach-sign",
            "-o",
            str(dist / "Release.gpg"),
        ),
    ):
        r = signer.gpg(*args, str(release))
        if r.returncode != 0:
            raise InstallError(
                f"gpg could not sign {release.name} with {signer.key}.",
                _gpg_said(r) + " A key with a passphrase needs gpg-agent to hold it (gpg-preset-passphrase), "
                "as for any unattended signing.",
            )


def _gpg_said(r: subprocess.CompletedProcess[bytes]) -> str:
    return f"gpg said: {r.stderr.decode(errors='replace').strip()[-300:]}."
