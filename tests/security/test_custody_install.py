"""Install runs only bytes it hashed, and a signature is policy on the server, not a flag.

Each test performs the attack against a real bundle (real collect, real makeself installers) and a real
install into a scratch root, and asserts the refusal and that the attacker's code never ran.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from airgap.bundle import finalize
from airgap.lock import Lock
from tests.conftest import run_airgap
from tests.test_install import build_bundle, prepare_root, state

# What the attacker puts in place of the CUDA runfile: run as root, it would leave this mark.
EVIL_RUNFILE = b'#!/bin/sh\necho pwned > "$AIRGAP_ROOT/PWNED"\n'


def reseal(bundle: Path, path: str, data: bytes) -> None:
    """Replace one artifact and rewrite the lock and SHA256SUMS to match: a bundle as its collector would
    have made it with these bytes (the test's own setup, not an attack)."""
    (bundle / path).write_bytes(data)
    lock = Lock.read(bundle)
    for art in lock.artifacts:
        if art.path == path:
            art.sha256 = hashlib.sha256(data).hexdigest()
            art.size = len(data)
    finalize(bundle, lock)


def runfile_path(bundle: Path, layer: str) -> str:
    lock = Lock.read(bundle)
    (art,) = [a for a in lock.artifacts if a.layer == layer]
    return art.path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("custody"))


@pytest.fixture
def bundle(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(pristine, copy)
    return copy


@pytest.mark.parametrize("swap", ["cp", "ln -sf"])
def test_a_runfile_swapped_during_the_install_is_not_executed(bundle: Path, tmp_path: Path, swap: str) -> None:
    """A local user who can write to the bundle swaps the CUDA runfile after verification, while the driver
    installs (here the driver stand-in does the swap itself, so the moment is exact): other bytes in place,
    or a symbolic link to them."""
    cuda = runfile_path(bundle, "cuda")
    evil = tmp_path / "evil.run"
    evil.write_bytes(EVIL_RUNFILE)
    driver_version = Lock.read(bundle).recorded_manifest().driver.version  # type: ignore[union-attr]
    swapping_driver = (
        "#!/bin/sh\n"
        f'{swap} "{evil}" "{bundle / cuda}"\n'
        'mkdir -p "$AIRGAP_ROOT/usr/bin"\n'
        f"printf '#!/bin/sh\\necho {driver_version}\\n' > \"$AIRGAP_ROOT/usr/bin/nvidia-smi\"\n"
        'chmod 755 "$AIRGAP_ROOT/usr/bin/nvidia-smi"\n'
    ).encode()
    reseal(bundle, runfile_path(bundle, "driver"), swapping_driver)
    root = prepare_root(tmp_path / "root")

    r = run_airgap("install", str(bundle), "--root", str(root), "--skip", "smoke", "--json")

    assert (bundle / cuda).read_bytes() == EVIL_RUNFILE  # the swap happened, after verification
    assert (bundle / cuda).is_symlink() == (swap == "ln -sf")
    assert not (root / "PWNED").exists()
    assert r.returncode == 1, r.stdout + r.stderr
    steps = {s["step"]: s for s in json.loads(r.stdout)["steps"]}
    assert steps["driver"]["status"] == "installed"
    assert steps["cuda"]["status"] == "failed"
    assert "changed since the bundle was verified" in steps["cuda"]["detail"]
    assert cuda in steps["cuda"]["detail"]
    assert state(root)["layers"]["cuda"]["status"] == "failed"
    # No private copy is left behind in the staging area.
    assert not list((root / "var/tmp").glob("airgap-staging-*/*"))


def test_no_verify_still_hashes_what_it_runs(bundle: Path, tmp_path: Path) -> None:
    (bundle / runfile_path(bundle, "cuda")).write_bytes(EVIL_RUNFILE)
    root = prepare_root(tmp_path / "root")
    r = run_airgap("install", str(bundle), "--root", str(root), "--only", "cuda", "--no-verify", "--json")
    assert not (root / "PWNED").exists()
    assert r.returncode == 1, r.stdout + r.stderr
    (step,) = json.loads(r.stdout)["steps"]
    assert step["status"] == "failed" and "changed since the bundle was verified" in step["detail"]


def test_a_lock_pointing_at_other_bytes_is_refused_before_anything(bundle: Path, tmp_path: Path) -> None:
    """The lock is checked against SHA256SUMS before it is believed: edited alone, it is refused."""
    lock_path = bundle / "airgap.lock.json"
    data = json.loads(lock_path.read_text())
    for art in data["artifacts"]:
        if art["layer"] == "cuda":
            art["sha256"] = hashlib.sha256(EVIL_RUNFILE).hexdigest()
            art["size"] = len(EVIL_RUNFILE)
    lock_path.write_text(json.dumps(data))
    (bundle / runfile_path(bundle, "cuda")).write_bytes(EVIL_RUNFILE)
    root = prepare_root(tmp_path / "root")
    r = run_airgap("install", str(bundle), "--root", str(root), "--only", "cuda", "--no-verify")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "airgap.lock.json" in r.stderr
    assert not (root / "PWNED").exists()
    assert not (root / "var/lib/airgap/state.json").exists()


def keypair(tmp_path: Path, name: str) -> tuple[Path, Path]:
    stem = tmp_path / name
    r = run_airgap("keygen", "-o", str(stem))
    assert r.returncode == 0, r.stderr
    return stem.with_suffix(".key"), stem.with_suffix(".pub")


def trust(root: Path, public: Path) -> None:
    keys = root / "etc/airgap/keys"
    keys.mkdir(parents=True, exist_ok=True)
    shutil.copy(public, keys / public.name)


def test_a_server_with_a_trusted_key_refuses_an_unsigned_bundle(bundle: Path, tmp_path: Path) -> None:
    _secret, public = keypair(tmp_path, "site")
    root = prepare_root(tmp_path / "root")
    trust(root, public)
    r = run_airgap("install", str(bundle), "--root", str(root), "--skip", "smoke")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "signature" in r.stderr
    assert not (root / "var/lib/airgap/state.json").exists()
    assert not (root / "usr/bin/nvidia-smi").exists()


def test_a_tampered_signed_bundle_is_refused_without_key_or_verify(bundle: Path, tmp_path: Path) -> None:
    """Whoever holds the drive edits a file and rewrites SHA256SUMS to match: only the signature can tell,
    and with a trusted key on the server it is checked without anyone asking (no --key, even --no-verify)."""
    secret, public = keypair(tmp_path, "site")
    assert run_airgap("sign", str(bundle), "--key", str(secret)).returncode == 0
    root = prepare_root(tmp_path / "root")
    trust(root, public)
    cuda = runfile_path(bundle, "cuda")
    sig = (bundle / "SHA256SUMS.sig").read_bytes()
    reseal(bundle, cuda, EVIL_RUNFILE)
    (bundle / "SHA256SUMS.sig").write_bytes(sig)  # the old signature, now over other sums

    r = run_airgap("install", str(bundle), "--root", str(root), "--only", "cuda", "--no-verify")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "signature" in r.stderr
    assert not (root / "PWNED").exists()


def test_a_bundle_signed_by_another_key_is_refused(bundle: Path, tmp_path: Path) -> None:
    other, _ = keypair(tmp_path, "stranger")
    _, public = keypair(tmp_path, "site")
    assert run_airgap("sign", str(bundle), "--key", str(other)).returncode == 0
    root = prepare_root(tmp_path / "root")
    trust(root, public)
    r = run_airgap("install", str(bundle), "--root", str(root), "--only", "cuda")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "signature" in r.stderr
    assert not (root / "usr/local/cuda-12.4").exists()


def test_a_signed_bundle_installs_with_the_trusted_key(bundle: Path, tmp_path: Path) -> None:
    secret, public = keypair(tmp_path, "site")
    assert run_airgap("sign", str(bundle), "--key", str(secret)).returncode == 0
    root = prepare_root(tmp_path / "root")
    trust(root, public)
    r = run_airgap("install", str(bundle), "--root", str(root), "--only", "cuda")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / "usr/local/cuda-12.4/bin/nvcc").exists()


def test_without_a_trusted_key_a_signed_bundle_is_said_to_be_unchecked(bundle: Path, tmp_path: Path) -> None:
    secret, _ = keypair(tmp_path, "site")
    assert run_airgap("sign", str(bundle), "--key", str(secret)).returncode == 0
    root = prepare_root(tmp_path / "root")
    r = run_airgap("install", str(bundle), "--root", str(root), "--only", "cuda")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "signature NOT checked" in r.stderr
    assert "valid" not in r.stderr.lower().replace("invalid", "")
