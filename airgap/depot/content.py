"""What the depot's services send: documents made in memory, and the bundle's own files read through the lock.

The bundle is verified once, before anything is served or exported (`verified_bundle`): the signature policy
and every file's sha256, as `airgap verify` and `airgap install` judge them. Each file's identity (device,
inode, size, modification and change times) is recorded around that verification, so a file replaced or
rewritten afterwards is noticed when it is opened again (`BundleReader`). A whole file sent or copied is
hashed on the way as well; a byte range cannot be, and relies on that identity check. Files are opened
without following links (`parts.open_regular`), and only files the lock names are ever opened: a request
path is looked up in a table, never joined to the bundle's directory.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from airgap.errors import ChangedSinceVerify, IntegrityError, VerifyFailed
from airgap.lock import Lock, LockedArtifact
from airgap.parts import open_regular

if TYPE_CHECKING:
    from airgap.signing import PublicKey

BUF = 1 << 20
Identity = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class Doc:
    """A response made in memory (an index page, an API answer, a checksum list)."""

    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Blob:
    """One of the bundle's files, sent as it is: its lock entry (a split file: its parts, read as one)."""

    art: LockedArtifact
    content_type: str = "application/octet-stream"
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def size(self) -> int:
        return self.art.size


def tool_artifacts(lock: Lock) -> list[LockedArtifact]:
    """airgap's own wheels (tool/) as lock entries, so they are read and checked like any artifact."""
    return [
        LockedArtifact.model_construct(
            layer="tool",
            name=f.path.rsplit("/", 1)[-1],
            path=f.path,
            size=f.size,
            sha256=f.sha256,
            url="",
            upstream_digest=None,
            upstream_digest_note="",
            meta={},
            parts=[],
            in_base=False,
        )
        for f in lock.tool_files()
    ]


def _identity(path: Path) -> Identity | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _fd_identity(fd: int) -> Identity:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class BundleReader:
    """Reads the verified bundle's files for the depot; refuses one that is not the file verified."""

    bundle: Path
    lock: Lock
    identities: dict[str, Identity] = field(default_factory=dict)  # stored path -> identity at verification

    def chunks(self, art: LockedArtifact, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes start..end (inclusive; default: the whole file) of an artifact, across its parts. A
        whole file is hashed as it goes and the last chunk is followed by ChangedSinceVerify if it is not
        the lock's; any file whose identity changed since verification raises before a byte of it is read."""
        last = art.size - 1 if end is None else end
        whole = start == 0 and last == art.size - 1
        digest = hashlib.sha256() if whole else None
        offset = 0
        for part in art.stored_files():
            first_byte, last_byte = offset, offset + part.size - 1
            offset += part.size
            if last_byte < start or first_byte > last:
                continue
            with self._open(art, part.path) as f:
                f.seek(max(start - first_byte, 0))
                left = min(last, last_byte) - max(start, first_byte) + 1
                while left > 0:
                    chunk = f.read(min(BUF, left))
                    if not chunk:
                        raise _changed(art, f"{part.path} is shorter than verified")
                    left -= len(chunk)
                    if digest is not None:
                        digest.update(chunk)
                    yield chunk
        if digest is not None and digest.hexdigest() != art.sha256:
            raise _changed(art, f"sha256 {digest.hexdigest()}, the lock says {art.sha256}")

    def _open(self, art: LockedArtifact, rel: str) -> io.BufferedReader:
        try:
            f = open_regular(self.bundle / rel)
        except IntegrityError as exc:
            raise _changed(art, exc.message) from None
        except OSError as exc:
            raise _changed(art, f"{rel}: {exc.strerror}") from None
        if self.identities.get(rel) != _fd_identity(f.fileno()):
            f.close()
            raise _changed(art, f"{rel} is another file, or was written to, since it was verified")
        return f


def _changed(art: LockedArtifact, why: str) -> ChangedSinceVerify:
    return ChangedSinceVerify(
        f"{art.path} changed since the bundle was verified ({why}); it is not served.",
        "Something wrote to the bundle while the depot serves it: keep the bundle on a disk only the depot's "
        "administrator can write, run `airgap verify` on it, and start the depot again.",
    )


def stored_paths(lock: Lock) -> list[str]:
    """Every file of the bundle the depot may open: each artifact's file or parts, and tool/."""
    paths = [p.path for a in lock.artifacts if not a.in_base for p in a.stored_files()]
    return paths + [f.path for f in lock.tool_files()]


def verified_bundle(
    bundle: Path,
    keys: Sequence[PublicKey],
    *,
    keys_dir: str = "/etc/airgap/keys",
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
) -> BundleReader:
    """Verify `bundle` as `airgap verify` does (signature policy, every file's sha256) and return a reader of
    it. Raises VerifyFailed (exit 1) naming each problem: a depot never serves a bundle that does not hold."""
    from airgap.custody import Snapshot
    from airgap.verify import verify_bundle

    snapshot = Snapshot.read(bundle, keys, keys_dir=keys_dir)
    sig = snapshot.signature
    if not sig.acceptable:
        raise VerifyFailed(
            f"signature: {sig.detail}; the bundle is not served.",
            "Get an intact bundle signed by a key this host trusts (--trusted-keys, --key).",
        )
    if sig.status == "unchecked":
        warn(f"signature NOT checked: {sig.detail}")
    lock = snapshot.require_lock()
    paths = stored_paths(lock)
    before = {p: _identity(bundle / p) for p in paths}
    say(f"verifying {bundle} ...")
    report = verify_bundle(snapshot)
    if not report.ok:
        lines = [f"  {p.kind.upper():<10} {p.path}: {p.detail}" for p in report.problems]
        raise VerifyFailed(
            "The bundle failed verification; nothing is served:\n" + "\n".join(lines),
            "Copy the named files again from the original bundle (airgap verify BUNDLE lists them).",
        )
    identities: dict[str, Identity] = {}
    for p in paths:
        now = _identity(bundle / p)
        if now is None or now != before[p]:
            raise VerifyFailed(
                f"{p} changed while the bundle was being verified; nothing is served.",
                "Something writes to the bundle: stop it, run `airgap verify`, then start again.",
            )
        identities[p] = now
    say(f"verified {report.files} files in {report.seconds:.1f}s")
    return BundleReader(bundle, lock, identities)
