"""`airgap upload`: the bundle's wheels into an index the site already runs, judged with a real one
(pypiserver on 127.0.0.1, which takes twine's uploads): every wheel arrives byte-identical and pip installs
from it; a second run sends nothing; a wheel changed since verification is never stored; a refused login
is exit 3 without the password in the output."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from airgap.custody import Snapshot
from airgap.depot.content import verified_bundle
from airgap.depot.upload import upload_wheels
from airgap.errors import ChangedSinceVerify
from tests.conftest import run_airgap
from tests.registry_fixtures import free_port
from tests.test_depot import Collected, client_env, collected  # noqa: F401  (a fixture)

pytestmark = pytest.mark.skipif(
    shutil.which("pypi-server", path=str(Path(sys.executable).parent)) is None,
    reason="pypiserver is not installed (pip install -e '.[test]')",
)


ARGS = [sys.executable, "-m", "airgap"]


class Index:
    """pypiserver serving `root`, uploads allowed (with a password file when `users` is given)."""

    def __init__(self, root: Path, htpasswd: Path | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        auth = ["-P", str(htpasswd), "-a", "update"] if htpasswd else ["-P", ".", "-a", "."]
        exe = str(Path(sys.executable).parent / "pypi-server")
        self.proc = subprocess.Popen(
            [exe, "run", "-i", "127.0.0.1", "-p", str(self.port), *auth, str(root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.root = root
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.url}simple/", timeout=5).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(self.proc.stderr.read().decode() if self.proc.stderr else "") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    i = Index(tmp_path / "packages")
    try:
        yield i
    finally:
        i.stop()


def test_every_wheel_arrives_and_pip_installs_from_the_index(
    index: Index,
    collected: Collected,  # noqa: F811
    tmp_path: Path,
) -> None:
    args = ("upload", str(collected.bundle), "--index", index.url, "--trusted-keys", str(tmp_path / "none"))
    r = run_airgap(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = sorted(p for p in collected.bundle.glob("layers/*/*.whl"))
    assert wheels and sorted(p.name for p in index.root.iterdir()) == sorted(p.name for p in wheels)
    for w in wheels:
        assert (index.root / w.name).read_bytes() == w.read_bytes()
    assert f"uploaded {len(wheels)} wheels" in r.stdout
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir", "--isolated"]
    dl = subprocess.run(
        [*pip, "download", "--no-deps", "--index-url", f"{index.url}simple/", "-d", str(tmp_path / "dl"), "agdemo"],
        capture_output=True,
        text=True,
        env=client_env(tmp_path),
        timeout=300,
    )
    assert dl.returncode == 0, dl.stdout + dl.stderr
    assert (tmp_path / "dl" / collected.wheel.name).read_bytes() == collected.wheel.read_bytes()

    again = run_airgap(*args, "--json")
    assert again.returncode == 0, again.stderr
    assert '"sent": []' in again.stdout and collected.wheel.name in again.stdout


def test_a_wheel_changed_since_verification_is_never_stored(
    index: Index,
    collected: Collected,  # noqa: F811
    tmp_path: Path,
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(collected.bundle, copy)
    reader = verified_bundle(copy, [], keys_dir=str(tmp_path / "none"), say=lambda _s: None, warn=lambda _s: None)
    target = copy / next(a.path for a in Snapshot.read(copy, []).require_lock().artifacts if a.name.endswith(".whl"))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 1
    target.write_bytes(bytes(data))  # after verification, before the upload reads it
    with pytest.raises(ChangedSinceVerify):
        upload_wheels(reader, index.url)
    assert target.name not in {p.name for p in index.root.iterdir()}


def test_a_refused_login_is_an_upstream_error_without_the_password(
    collected: Collected,  # noqa: F811
    tmp_path: Path,
) -> None:
    htpasswd = tmp_path / "htpasswd"
    from passlib.apache import HtpasswdFile

    ht = HtpasswdFile(str(htpasswd), new=True)
    ht.set_password("uploader", "right-secret")
    ht.save()
    i = Index(tmp_path / "packages", htpasswd)
    try:
        r = subprocess.run(
            [*ARGS, "upload", str(collected.bundle), "--index", i.url, "--trusted-keys", str(tmp_path / "none")],
            capture_output=True,
            text=True,
            env={**client_env(tmp_path), "TWINE_USERNAME": "uploader", "TWINE_PASSWORD": "wrong-secret"},
            timeout=300,
        )
    finally:
        i.stop()
    assert r.returncode == 3, r.stdout + r.stderr
    assert "TWINE_USERNAME" in r.stderr and "Traceback" not in r.stderr
    assert "wrong-secret" not in r.stdout + r.stderr
    assert not list((tmp_path / "packages").iterdir())
