"""Reading inside the bundle's files without unpacking them to disk: a `.deb` (an ar archive holding
data.tar.*), a wheel (a zip), an image layer (a tar, maybe gzip'd). Everything is read from the bundle's
own bytes (parts joined as they are read), never from the network, and never extracted: the dossier
describes what the reviewer is asked to approve, so it must come from exactly those bytes."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO, cast

from airgap.lock import LockedArtifact
from airgap.parts import open_artifact, open_regular

# A copyright file or METADATA larger than this is not read whole: no real one comes close.
MAX_TEXT = 4 << 20


class NotRead(Exception):
    """What could not be read, in words for the reviewer (e.g. a zstd-compressed data.tar)."""


@contextmanager
def seekable(bundle: Path, art: LockedArtifact) -> Iterator[BinaryIO]:
    """The artifact as a seekable file (zipfile needs one): the file itself, or its parts joined into a
    temporary file when it is stored split."""
    if not art.parts:
        with open_regular(bundle / art.path) as direct:  # no link followed, no FIFO opened
            yield direct
        return
    with tempfile.TemporaryFile() as tmp, open_artifact(bundle, art) as src:
        shutil.copyfileobj(src, tmp, 1 << 20)
        tmp.seek(0)
        yield tmp


# --- wheels ---------------------------------------------------------------------------------------------


def wheel_metadata(bundle: Path, art: LockedArtifact) -> str:
    """The text of a wheel's `*.dist-info/METADATA`."""
    try:
        with seekable(bundle, art) as f, zipfile.ZipFile(f) as z:
            names = [n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if not names:
                raise NotRead("no *.dist-info/METADATA in the wheel")
            info = z.getinfo(names[0])
            if info.file_size > MAX_TEXT:
                raise NotRead("its METADATA is implausibly large; not read")
            return z.read(info).decode("utf-8", "replace")
    except (zipfile.BadZipFile, OSError) as exc:
        raise NotRead(f"not a readable zip ({exc})") from None


# --- .deb -----------------------------------------------------------------------------------------------


def _ar_members(f: BinaryIO) -> Iterator[tuple[str, int]]:
    """(name, size) of each member of an ar archive, leaving `f` at the member's data."""
    if f.read(8) != b"!<arch>\n":
        raise NotRead("not an ar archive (a .deb starts with '!<arch>')")
    while True:
        header = f.read(60)
        if len(header) < 60:
            return
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise NotRead("damaged ar member header") from None
        start = f.tell()
        yield name, size
        f.seek(start + size + (size % 2))


def _decompressor(name: str, raw: bytes) -> IO[bytes]:  # gzip/lzma/bz2 files are binary streams
    if name.endswith(".gz"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=io.BytesIO(raw)))
    if name.endswith(".xz"):
        return lzma.LZMAFile(io.BytesIO(raw))
    if name.endswith(".bz2"):
        return bz2.BZ2File(io.BytesIO(raw))
    if name.endswith(".zst"):
        raise NotRead("its data.tar is zstd-compressed, which this Python cannot read; not read")
    if name.endswith(".tar"):
        return io.BytesIO(raw)
    raise NotRead(f"unknown compression of {name}; not read")


def deb_files(bundle: Path, art: LockedArtifact, wanted: set[str]) -> dict[str, bytes]:
    """The contents of the paths `wanted` (without a leading './') inside a .deb's data.tar."""
    found: dict[str, bytes] = {}
    with seekable(bundle, art) as f:
        for name, size in _ar_members(f):
            if not name.startswith("data.tar"):
                continue
            raw = f.read(size)
            try:
                with tarfile.open(fileobj=_decompressor(name, raw), mode="r|") as tar:
                    for m in tar:
                        rel = m.name.removeprefix("./")
                        if rel in wanted and m.isfile() and m.size <= MAX_TEXT:
                            data = tar.extractfile(m)
                            if data is not None:
                                found[rel] = data.read()
            except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as exc:
                raise NotRead(f"its {name} cannot be read ({exc})") from None
            return found
    raise NotRead("no data.tar member in the .deb")


# --- image layers ---------------------------------------------------------------------------------------


def layer_tar(f: BinaryIO) -> tarfile.TarFile:
    """A layer blob as a streaming tar: gzip'd or plain (zstd layers raise NotRead)."""
    head = f.peek(4)[:4] if isinstance(f, io.BufferedReader) else b""
    if head[:4] == b"\x28\xb5\x2f\xfd":
        raise NotRead("zstd-compressed layer, which this Python cannot read; its packages are not listed")
    try:
        return tarfile.open(fileobj=f, mode="r|*")
    except tarfile.TarError as exc:
        raise NotRead(f"not a readable layer tar ({exc})") from None
