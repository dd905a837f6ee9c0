"""The depot's Python index, Hugging Face endpoint and file server (`airgap serve`, `airgap export`), judged by
the real clients: pip installs and downloads from the index, huggingface_hub's snapshot_download fetches a
model through HF_ENDPOINT, and plain HTTP fetches files and byte ranges. The bundle is collected from local
upstreams (a PEP 503 index, a stand-in hub, a file server) on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airgap import manifest as manifest_mod
from airgap.bundle import finalize
from airgap.collect import collect
from airgap.localserver import LocalHTTPServer
from airgap.lock import Lock
from airgap.parts import resplit
from airgap.sources.http import HttpSource
from tests.hub_server import HubServer
from tests.test_models import REPO, SHARD1, repo_files
from tests.test_pypi import IndexServer, bundled_pip_wheel, make_wheel, write_index

HERE_PY = f"{sys.version_info.major}.{sys.version_info.minor}"
SCRIPT = b"#!/bin/sh\necho checked\n"
DEADLINE = 300  # seconds a server may take to verify the bundle and start listening; generous for loaded CI


@dataclass
class Collected:
    bundle: Path
    wheel: Path  # agdemo's wheel as the index served it
    commit: str
    files: dict[str, bytes]  # the model's files


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collected]:
    pip_whl = bundled_pip_wheel()
    if pip_whl is None:
        pytest.skip("this Python has no ensurepip wheel of pip to put in the local index")
    base = tmp_path_factory.mktemp("depot")
    build = base / "build"
    build.mkdir()
    wheel = make_wheel(build, "agdemo", "1.0")
    write_index(base / "pyindex", [wheel, make_wheel(build, "Ag_Other", "2.0"), pip_whl])
    (base / "www" / "tools").mkdir(parents=True)
    (base / "www" / "tools" / "check.sh").write_bytes(SCRIPT)
    files = repo_files()
    with HubServer() as hub, IndexServer(base / "pyindex") as index, LocalHTTPServer(base / "www") as www:
        commit = hub.add_commit(REPO, files)
        manifest = base / "manifest.yaml"
        manifest.write_text(
            "name: depot-test\n"
            f'target: {{os: debian-12, arch: amd64, python: "{HERE_PY}"}}\n'
            "python:\n  requirements: [agdemo, ag-other]\n  index_urls: [https://pypi.example/simple]\n"
            f"models: [{REPO}]\n"
            "files:\n  - url: https://example.com/tools/check.sh\n"
            f"    sha256: {hashlib.sha256(SCRIPT).hexdigest()}\n"
            "mirrors:\n"
            f"  https://pypi.example: {index.url}\n"
            f"  https://huggingface.co: {hub.url}\n"
            f"  https://example.com: {www.url}\n"
        )
        m = manifest_mod.load(manifest)
        bundle = base / "bundle"
        collect(m, bundle, HttpSource(m.mirrors, backoff=0.01), progress_mode="off")
    yield Collected(bundle, wheel, commit, files)


def airgap_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "airgap", *args]


def client_env(tmp: Path, **extra: str) -> dict[str, str]:
    """No token, endpoint, offline switch or proxy from the calling shell."""
    drop = ("HF_", "HUGGING_FACE", "PIP_", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "PYTHONUNBUFFERED": "1", "NO_PROXY": "*", "HF_HOME": str(tmp / "hf-home"), **extra}


class Served:
    """`airgap serve` as a subprocess on a free port of 127.0.0.1, stopped (SIGTERM) by the fixture."""

    def __init__(self, bundle: Path, tmp: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            airgap_cmd("serve", str(bundle), "--listen", "127.0.0.1:0", "--trusted-keys", str(tmp / "no-keys"), *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=client_env(tmp),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._collect_log, daemon=True).start()
        self.url = ""
        while True:
            line = self.lines.get(timeout=DEADLINE)
            if line is None:
                self.proc.wait(timeout=DEADLINE)
                return  # exited before serving: the test reads returncode and stderr
            if line.startswith("serving ") and " on " in line:
                self.url = line.split(" on ", 1)[1].split("/ ", 1)[0]
                return

    @staticmethod
    def _pump(stream: object, out: queue.Queue[str | None]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            out.put(line.rstrip("\n"))
        out.put(None)

    def _collect_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=DEADLINE)


@pytest.fixture(scope="module")
def served(collected: Collected, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(collected.bundle, tmp_path_factory.mktemp("serve"))
    try:
        assert s.url, f"serve did not start: {s.proc.returncode} {s.log}"
        yield s
    finally:
        s.stop()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def raw_request(port: int, target: str) -> tuple[int, bytes]:
    """A request line sent as written: urllib and pip would normalise `..` away before it left."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


# --- (a) the Python index -------------------------------------------------------------------------------


def test_pip_installs_and_downloads_from_the_index_byte_identical(
    served: Served, collected: Collected, tmp_path: Path
) -> None:
    index = f"{served.url}/simple/"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir", "--isolated"]
    env = client_env(tmp_path)
    target = tmp_path / "target"
    r = subprocess.run(
        [*pip, "install", "--no-deps", "--index-url", index, "--target", str(target), "agdemo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "agdemo" / "__init__.py").read_text() == "VERSION = '1.0'\n"
    r = subprocess.run(
        [*pip, "download", "--no-deps", "--index-url", index, "-d", str(tmp_path / "dl"), "ag.other==2.0", "agdemo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "dl" / collected.wheel.name).read_bytes() == collected.wheel.read_bytes()
    assert (tmp_path / "dl" / "Ag_Other-2.0-py3-none-any.whl").is_file()


def test_the_index_answers_pep_691_json_and_pep_503_html(served: Served, collected: Collected) -> None:
    digest = hashlib.sha256(collected.wheel.read_bytes()).hexdigest()
    status, headers, body = get(
        f"{served.url}/simple/agdemo/", {"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    )
    assert status == 200 and headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"
    page = json.loads(body)
    assert page["name"] == "agdemo"
    assert page["files"] == [
        {
            "filename": collected.wheel.name,
            "url": collected.wheel.name,
            "hashes": {"sha256": digest},
            "size": len(collected.wheel.read_bytes()),
        }
    ]
    status, headers, body = get(f"{served.url}/simple/agdemo/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert f'href="{collected.wheel.name}#sha256={digest}"'.encode() in body
    status, _, body = get(f"{served.url}/simple/", {"Accept": "application/vnd.pypi.simple.v1+json"})
    assert {p["name"] for p in json.loads(body)["projects"]} >= {"agdemo", "ag-other", "pip"}
    # A name not in its normal form is redirected to it (PEP 503), as pip expects.
    status, _, body = get(f"{served.url}/simple/Ag_Other/")
    assert status == 200 and b"Ag_Other-2.0-py3-none-any.whl" in body


# --- (b) the Hugging Face endpoint ----------------------------------------------------------------------

DOWNLOAD = """
import json, os, sys
from pathlib import Path
from huggingface_hub import snapshot_download
path = Path(snapshot_download(sys.argv[1], revision=sys.argv[2], cache_dir=sys.argv[3], token=False))
files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
print(json.dumps({"path": str(path), "files": files}))
"""


@pytest.mark.parametrize("by", ["main", "commit"])
def test_snapshot_download_through_hf_endpoint_is_byte_identical(
    served: Served, collected: Collected, tmp_path: Path, by: str
) -> None:
    revision = collected.commit if by == "commit" else "main"
    env = client_env(tmp_path, HF_ENDPOINT=served.url, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")
    cache = tmp_path / "cache"
    r = subprocess.run(
        [sys.executable, "-c", DOWNLOAD, REPO, revision, str(cache)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert set(out["files"]) == set(collected.files)
    path = Path(out["path"])
    assert path.name == collected.commit
    for rel, data in collected.files.items():
        assert (path / rel).read_bytes() == data, rel
    # Blobs are named as the hub names them (sha256 for LFS files), so the cache is the one the hub would make.
    blobs = {p.name for p in (cache / f"models--{REPO.replace('/', '--')}" / "blobs").iterdir()}
    assert hashlib.sha256(collected.files[SHARD1]).hexdigest() in blobs


def test_hub_api_answers_and_errors_as_the_hub_does(served: Served, collected: Collected) -> None:
    status, _, body = get(f"{served.url}/api/models/{REPO}/revision/main?blobs=true")
    info = json.loads(body)
    assert status == 200 and info["sha"] == collected.commit
    assert {s["rfilename"] for s in info["siblings"]} == set(collected.files)
    shard = next(s for s in info["siblings"] if s["rfilename"] == SHARD1)
    assert shard["lfs"]["sha256"] == hashlib.sha256(collected.files[SHARD1]).hexdigest()
    status, headers, _ = get(f"{served.url}/api/models/{REPO}/revision/v9")
    assert status == 404 and headers["X-Error-Code"] == "RevisionNotFound"
    status, headers, _ = get(f"{served.url}/api/models/acme/absent/revision/main")
    assert status == 404 and headers["X-Error-Code"] == "RepoNotFound"
    status, headers, _ = get(f"{served.url}/{REPO}/resolve/main/absent.json")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound"
    status, headers, body = get(f"{served.url}/{REPO}/resolve/{collected.commit}/config.json")
    assert status == 200 and body == collected.files["config.json"]
    assert headers["X-Repo-Commit"] == collected.commit and "X-Linked-Etag" not in headers


# --- (c) files and byte ranges --------------------------------------------------------------------------


def test_files_with_their_sha256sums_and_byte_ranges(served: Served, collected: Collected) -> None:
    status, _, body = get(f"{served.url}/files/check.sh")
    assert status == 200 and body == SCRIPT
    status, _, sums = get(f"{served.url}/files/SHA256SUMS")
    assert sums.decode() == f"{hashlib.sha256(SCRIPT).hexdigest()}  check.sh\n"
    status, headers, body = get(f"{served.url}/files/check.sh", {"Range": "bytes=2-8"})
    assert status == 206 and body == SCRIPT[2:9] and headers["Content-Range"] == f"bytes 2-8/{len(SCRIPT)}"
    shard = collected.files[SHARD1]
    url = f"{served.url}/{REPO}/resolve/main/{SHARD1}"
    status, headers, body = get(url, {"Range": "bytes=1000-"})
    assert status == 206 and body == shard[1000:]
    assert headers["ETag"] == f'"{hashlib.sha256(shard).hexdigest()}"' and headers["X-Linked-Size"] == str(len(shard))
    status, _, body = get(url, {"Range": "bytes=-10"})
    assert status == 206 and body == shard[-10:]
    status, headers, _ = get(url, {"Range": f"bytes={len(shard)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(shard)}"
    assert any('"GET /files/check.sh HTTP/1.1" 206 7' in line for line in served.log), served.log


# --- (d) a bundle that does not hold --------------------------------------------------------------------


def flipped_copy(collected: Collected, tmp: Path) -> Path:
    bundle = tmp / "bundle"
    shutil.copytree(collected.bundle, bundle)
    wheel = next((bundle / "layers").glob("*-python/agdemo-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x01
    wheel.write_bytes(bytes(data))
    return bundle


def test_a_bundle_with_one_flipped_byte_is_refused_by_serve_and_export(collected: Collected, tmp_path: Path) -> None:
    bundle = flipped_copy(collected, tmp_path)
    s = Served(bundle, tmp_path)
    assert s.stop() == 1 and not s.url
    log = "\n".join(s.log)
    assert "ALTERED" in log and "agdemo-1.0-py3-none-any.whl" in log and "nothing is served" in log
    out = tmp_path / "export"
    r = subprocess.run(
        airgap_cmd("export", str(bundle), "--to", str(out), "--trusted-keys", str(tmp_path / "no-keys")),
        capture_output=True,
        text=True,
        env=client_env(tmp_path),
        timeout=300,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "agdemo-1.0-py3-none-any.whl" in r.stderr and not out.exists()


def test_a_file_changed_after_verification_is_not_served(collected: Collected, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(collected.bundle, bundle)
    s = Served(bundle, tmp_path)
    try:
        assert s.url, s.log
        (next((bundle / "layers").glob("*-files/check.sh"))).write_bytes(b"#!/bin/sh\necho EVIL!!\n")
        status, _, body = get(f"{s.url}/files/check.sh")
        assert status == 500 and b"changed since the bundle was verified" in body
        status, _, body = get(f"{s.url}/files/check.sh", {"Range": "bytes=0-3"})
        assert status == 500
    finally:
        assert s.stop() == 0


# --- (e) nothing outside the bundle's services ----------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/files/../airgap.lock.json",
        "/files/%2e%2e/airgap.lock.json",
        "/simple/..%2f..%2fairgap.lock.json",
        "/../../../etc/passwd",
        f"/{REPO}/resolve/main/../../../airgap.lock.json",
        f"/{REPO}/resolve/main/..%2f..%2fSHA256SUMS",
        "/layers/10-files/check.sh",
        "/airgap.lock.json",
        "/bundle/airgap.lock.json",
        "/bundle/SHA256SUMS",
        "/bundle/../airgap.lock.json",
        "/bundle/layers/10-files/..%2f..%2fSHA256SUMS",
    ],
)
def test_traversal_and_bundle_paths_are_refused(served: Served, target: str) -> None:
    status, body = raw_request(served.port, target)
    assert status in (400, 404), (target, status)
    assert b"sha256" not in body and b"root:" not in body


def test_a_fleet_host_fetches_the_bundle_from_the_depot(served: Served, collected: Collected, tmp_path: Path) -> None:
    """`fleet install --from DEPOT/bundle/`: with what the control node sends (SHA256SUMS, the lock,
    install.sh; no artifact, no tool/ wheel), the host's fetcher takes every artifact and wheel from /bundle/, and the
    copy passes `sha256sum -c` as the playbook checks it."""
    from airgap.fleet.playbook import PEER, pack_bundle, playbook_path

    (tmp_path / "scratch").mkdir()
    packed = pack_bundle(collected.bundle, tmp_path / "scratch")
    host = tmp_path / "host"
    host.mkdir()
    assert packed.meta is not None
    subprocess.run(["tar", "-x", "-f", str(packed.meta), "-C", str(host)], check=True)
    r = subprocess.run(
        [sys.executable, str(playbook_path(PEER)), "fetch", str(host), f"{served.url}/bundle/"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(r.stdout)
    lock = Lock.read(collected.bundle)
    wheels = [f for f in lock.tool_files() if f.path.startswith("tool/")]
    fetched = len([a for a in lock.artifacts if not a.in_base]) + len(wheels)
    assert summary["files"] == fetched and summary["failed"] == []
    assert subprocess.run(["sha256sum", "--quiet", "--strict", "-c", "SHA256SUMS"], cwd=host).returncode == 0


# --- export ---------------------------------------------------------------------------------------------


def test_export_writes_a_static_tree_pip_installs_from(served: Served, collected: Collected, tmp_path: Path) -> None:
    dest = tmp_path / "depot"
    args = airgap_cmd("export", str(collected.bundle), "--to", str(dest), "--trusted-keys", str(tmp_path / "none"))
    r = subprocess.run(args, capture_output=True, text=True, env=client_env(tmp_path), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    www = dest / "www"
    # pip reads the exported index straight from disk (file://), as any web server would serve it.
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--disable-pip-version-check",
            "--no-cache-dir",
            "--isolated",
            "download",
            "--no-deps",
            "--index-url",
            (www / "simple").as_uri() + "/",
            "-d",
            str(tmp_path / "dl"),
            "agdemo",
        ],
        capture_output=True,
        text=True,
        env=client_env(tmp_path),
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "dl" / collected.wheel.name).read_bytes() == collected.wheel.read_bytes()
    snapshot = www / REPO / "resolve" / collected.commit
    for rel, data in collected.files.items():
        assert (snapshot / rel).read_bytes() == data, rel
    assert (www / REPO / "resolve" / "main" / "config.json").read_bytes() == collected.files["config.json"]
    # The API answers are the server's own, byte for byte.
    for rel in (f"api/models/{REPO}/revision/main", f"api/models/{REPO}/tree/{collected.commit}"):
        query = "?blobs=true" if "/revision/" in rel else "?recursive=true"
        assert get(f"{served.url}/{rel}{query}")[2] == (www / rel).read_bytes(), rel
    assert (www / "files" / "SHA256SUMS").read_bytes() == get(f"{served.url}/files/SHA256SUMS")[2]
    conf = (dest / "nginx" / "airgap-depot.conf").read_text()
    shard_etag = hashlib.sha256(collected.files[SHARD1]).hexdigest()
    assert f'"/{REPO}/resolve/{collected.commit}/{SHARD1}" "\\"{shard_etag}\\"";' in conf
    assert f"root {dest / 'www'};" in conf
    # Again onto the same directory: replaced as a whole; a directory that is not an export is left alone.
    again = subprocess.run(args, capture_output=True, text=True, env=client_env(tmp_path), timeout=300)
    assert again.returncode == 0, again.stderr
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    args[args.index(str(dest))] = str(other)
    refused = subprocess.run(args, capture_output=True, text=True, env=client_env(tmp_path), timeout=300)
    assert refused.returncode == 2 and "not an earlier export" in refused.stderr
    assert sorted(p.name for p in other.iterdir()) == ["keep.txt"]


# --- TLS ------------------------------------------------------------------------------------------------


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made here (no network, no openssl binary needed)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airgap depot test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "depot.crt", tmp / "depot.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def test_tls_serves_the_index_to_pip_trusting_the_site_certificate(collected: Collected, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    s = Served(collected.bundle, tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert s.url.startswith("https://127.0.0.1:"), s.log
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--disable-pip-version-check",
                "--no-cache-dir",
                "--isolated",
                "download",
                "--no-deps",
                "--cert",
                str(cert),
                "--index-url",
                f"{s.url}/simple/",
                "-d",
                str(tmp_path / "dl"),
                "agdemo",
            ],
            capture_output=True,
            text=True,
            # pip checks against the system's trust store (truststore), which reads SSL_CERT_FILE on Linux.
            env=client_env(tmp_path, SSL_CERT_FILE=str(cert)),
            timeout=300,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert (tmp_path / "dl" / collected.wheel.name).read_bytes() == collected.wheel.read_bytes()
    finally:
        assert s.stop() == 0
    bad = subprocess.run(
        airgap_cmd("serve", str(collected.bundle), "--tls-cert", str(cert)),
        capture_output=True,
        text=True,
        env=client_env(tmp_path),
        timeout=300,
    )
    assert bad.returncode == 2 and "--tls-cert and --tls-key go together" in bad.stderr


def test_a_bundle_split_into_parts_is_served_whole_and_by_ranges_across_parts(
    collected: Collected, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(collected.bundle, bundle)
    # Parts of 100 kB (airgap split takes 1M at least; the model's files are smaller), by split's own code.
    lock = Lock.read(bundle)
    for art in lock.artifacts:
        resplit(bundle, art, 100_000)
    finalize(bundle, lock)
    shard = collected.files[SHARD1]
    assert len(shard) > 200000 and list((bundle / "layers").glob(f"*-models/*/{SHARD1}.002"))
    s = Served(bundle, tmp_path)
    try:
        assert s.url, s.log
        url = f"{s.url}/{REPO}/resolve/main/{SHARD1}"
        assert get(url)[2] == shard
        status, _, body = get(url, {"Range": "bytes=99990-200010"})
        assert status == 206 and body == shard[99990:200011]
    finally:
        assert s.stop() == 0


def test_uv_installs_from_the_index_too(served: Served, collected: Collected, tmp_path: Path) -> None:
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        pytest.skip("uv is not installed (pip install -e '.[test]')")
    target = tmp_path / "target"
    r = subprocess.run(
        [
            str(uv),
            "pip",
            "install",
            "--no-deps",
            "--no-cache",
            "--index-url",
            f"{served.url}/simple/",
            "--target",
            str(target),
            "--python",
            sys.executable,
            "agdemo",
        ],
        capture_output=True,
        text=True,
        env=client_env(tmp_path, UV_NO_CONFIG="1"),
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "agdemo" / "__init__.py").read_text() == "VERSION = '1.0'\n"


OFFLINE = """
set -e
ip link set lo up
"$PY" -m airgap serve "$BUNDLE" --listen 127.0.0.1:18080 --trusted-keys "$WORK/no-keys" \
  > "$WORK/serve.out" 2> "$WORK/serve.err" &
SERVE=$!
trap 'kill $SERVE 2>/dev/null; wait $SERVE 2>/dev/null || true' EXIT
i=0
until grep -q "^serving " "$WORK/serve.out"; do
  i=$((i + 1)); [ $i -lt 3000 ] || { cat "$WORK/serve.err"; exit 9; }
  kill -0 $SERVE || { cat "$WORK/serve.err"; exit 8; }
  sleep 0.1
done
"$PY" -m pip --disable-pip-version-check --no-cache-dir --isolated install --index-url http://127.0.0.1:18080/simple/ \
  --target "$WORK/target" agdemo ag-other
"""


def test_pip_installs_the_wheel_set_with_no_network_but_the_depot(collected: Collected, tmp_path: Path) -> None:
    """In a network namespace with nothing but loopback, where the depot runs: pip resolves and installs the
    wheel set from it (no pypi.org to fall back on)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("a private network namespace needs root, unshare and ip (CI runs as root)")
    env = client_env(tmp_path, PY=sys.executable, BUNDLE=str(collected.bundle), WORK=str(tmp_path))
    r = subprocess.run(["unshare", "-n", "sh", "-c", OFFLINE], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "target" / "agdemo" / "__init__.py").read_text() == "VERSION = '1.0'\n"
    assert any(p.name.lower().startswith("ag_other") for p in (tmp_path / "target").iterdir())
