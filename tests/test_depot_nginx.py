"""`airgap export`'s nginx configuration, run by a real nginx on 127.0.0.1: pip installs from the exported
index, huggingface_hub's snapshot_download fetches the model through HF_ENDPOINT pointed at nginx, both
byte-identical, and a byte range is answered as the hub's clients expect. The configuration is used as
generated: only the surrounding nginx.conf (pid, logs, temp paths under the test's directory) is the
test's."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nginx_conf import write_nginx_conf
from tests.registry_fixtures import free_port
from tests.test_depot import DOWNLOAD, Collected, airgap_cmd, client_env, collected  # noqa: F401  (a fixture)
from tests.test_models import REPO, SHARD1

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (scripts/test.sh)")


@pytest.fixture(scope="module")
def nginx(collected: Collected, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # noqa: F811
    work = tmp_path_factory.mktemp("nginx")
    dest = work / "depot"
    port = free_port()
    r = subprocess.run(
        airgap_cmd(
            "export",
            str(collected.bundle),
            "--to",
            str(dest),
            "--nginx-listen",
            f"127.0.0.1:{port}",
            "--trusted-keys",
            str(work / "no-keys"),
        ),
        capture_output=True,
        text=True,
        env=client_env(work),
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    conf = write_nginx_conf(work, f"  include {dest}/nginx/airgap-depot.conf;\n")
    check = subprocess.run(["nginx", "-t", "-c", str(conf), "-p", str(work)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/simple/", timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((work / "logs/error.log").read_text()) from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_pip_installs_from_nginx_serving_the_export(nginx: str, collected: Collected, tmp_path: Path) -> None:  # noqa: F811
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir", "--isolated"]
    r = subprocess.run(
        [*pip, "download", "--no-deps", "--index-url", f"{nginx}/simple/", "-d", str(tmp_path / "dl"), "agdemo"],
        capture_output=True,
        text=True,
        env=client_env(tmp_path),
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "dl" / collected.wheel.name).read_bytes() == collected.wheel.read_bytes()
    # PEP 691 JSON when asked for, as from `airgap serve`.
    req = urllib.request.Request(f"{nginx}/simple/agdemo/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"
        assert json.loads(resp.read())["name"] == "agdemo"


def test_snapshot_download_through_nginx_is_byte_identical(
    nginx: str,
    collected: Collected,  # noqa: F811
    tmp_path: Path,
) -> None:
    env = client_env(tmp_path, HF_ENDPOINT=nginx, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")
    cache = tmp_path / "cache"
    r = subprocess.run(
        [sys.executable, "-c", DOWNLOAD, REPO, "main", str(cache)], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    path = Path(out["path"])
    assert path.name == collected.commit and set(out["files"]) == set(collected.files)
    for rel, data in collected.files.items():
        assert (path / rel).read_bytes() == data, rel
    blobs = {p.name for p in (cache / f"models--{REPO.replace('/', '--')}" / "blobs").iterdir()}
    assert hashlib.sha256(collected.files[SHARD1]).hexdigest() in blobs


def test_a_byte_range_of_a_shard_comes_with_the_hubs_headers(nginx: str, collected: Collected) -> None:  # noqa: F811
    req = urllib.request.Request(f"{nginx}/{REPO}/resolve/main/{SHARD1}", headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 206
        assert resp.read() == collected.files[SHARD1][10:20]
        assert resp.headers["X-Repo-Commit"] == collected.commit
        assert resp.headers["X-Linked-Etag"].strip('"') == hashlib.sha256(collected.files[SHARD1]).hexdigest()
