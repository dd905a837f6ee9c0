"""The directory fds verify keeps (digests.BeneathOpener) must give the guarantees of a fresh no-follow walk:
a directory swapped for a link after it was opened is never followed, and a link, FIFO or device in a
kept directory is refused as before."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airgap.digests import BeneathOpener, NotRegularFile, open_beneath


def read_all(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


def test_a_directory_swapped_for_a_link_after_it_was_kept_is_not_followed(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "layers" / "f").mkdir(parents=True)
    (bundle / "layers" / "f" / "a.bin").write_bytes(b"real a")
    (bundle / "layers" / "f" / "b.bin").write_bytes(b"real b")
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "b.bin").write_bytes(b"attacker's bytes")
    with BeneathOpener(bundle) as opener:
        assert read_all(opener.open("layers/f/a.bin")) == b"real a"  # keeps layers/f
        os.rename(bundle / "layers" / "f", bundle / "layers" / "moved")
        os.symlink(decoy, bundle / "layers" / "f")
        # The kept fd is the directory that was checked: the link put in its place is not followed.
        assert read_all(opener.open("layers/f/b.bin")) == b"real b"
    # A fresh walk meets the link and refuses it.
    with pytest.raises(NotRegularFile) as err:
        open_beneath(bundle, "layers/f/b.bin")
    assert err.value.within and err.value.what == "a symbolic link"


def test_links_and_fifos_in_a_kept_directory_are_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "d").mkdir(parents=True)
    (bundle / "d" / "ok.bin").write_bytes(b"ok")
    os.symlink("/etc/passwd", bundle / "d" / "link.bin")
    os.mkfifo(bundle / "d" / "fifo.bin")
    with BeneathOpener(bundle) as opener:
        assert read_all(opener.open("d/ok.bin")) == b"ok"
        with pytest.raises(NotRegularFile) as link:
            opener.open("d/link.bin")
        assert link.value.what == "a symbolic link" and not link.value.within
        with pytest.raises(NotRegularFile) as fifo:
            opener.open("d/fifo.bin")  # would block forever if it were opened for reading
        assert "FIFO" in fifo.value.what
        with pytest.raises(FileNotFoundError):
            opener.open("d/gone.bin")
        with pytest.raises(ValueError):
            opener.open("d/../ok.bin")


def test_the_opener_releases_every_fd_it_kept(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    for i in range(20):
        (bundle / f"d{i}").mkdir(parents=True)
        (bundle / f"d{i}" / "f").write_bytes(b"x")
    before = len(os.listdir("/proc/self/fd"))
    with BeneathOpener(bundle, cache=8) as opener:  # more directories than it keeps: the rest are not kept
        for i in range(20):
            assert read_all(opener.open(f"d{i}/f")) == b"x"
    assert len(os.listdir("/proc/self/fd")) == before
