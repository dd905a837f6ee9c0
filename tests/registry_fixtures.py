"""Real container registries on 127.0.0.1 for the images layer's tests.

Debian's `docker-registry` (CNCF distribution 2.8) is the upstream, in three variants sharing one storage
directory: anonymous, htpasswd (Basic) and token auth (Bearer, with a small token service here that signs
JWTs with `openssl`, as Docker Hub's auth.docker.io does for registry-1.docker.io). Images are real and
tiny: a busybox-static root filesystem written as an OCI layout by this module (no Docker daemon needed)
and pushed with `skopeo copy`. `FaultProxy` sits in front of a registry to corrupt or cut blob bodies.

Every process a fixture starts is stopped by it; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.client
import io
import json
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

USER, PASSWORD = "airgap-tester", "s3cret-Passw0rd-never-in-bundle"
TOKEN_SERVICE, TOKEN_ISSUER = "airgap-test-registry", "airgap-test-token-issuer"

NEEDS = ("docker-registry", "skopeo", "busybox", "htpasswd", "openssl")


def missing_tools() -> list[str]:
    return [t for t in NEEDS if shutil.which(t) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes] | None, log: Path | None, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}: {log.read_text()[-2000:] if log else ''}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- images written as OCI layouts ---------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_layer(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """An uncompressed layer tar; mtimes are 0 so the same content always has the same digest."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in [*files, *(links or {})]} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 0
            tar.addfile(info, io.BytesIO(data))
        for name, target in sorted((links or {}).items()):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, 0
            tar.addfile(info)
    return buf.getvalue()


def busybox_layer(extra: dict[str, bytes] | None = None) -> bytes:
    """busybox-static and a few applet links: enough of a root filesystem for `docker run ... sh -c`."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    return tar_layer(
        {"bin/busybox": busybox, **(extra or {})}, {f"bin/{a}": "busybox" for a in ("sh", "cat", "echo", "ls")}
    )


@dataclass
class BuiltImage:
    """One image of one platform as the registry holds it: the digests the tests check the bundle and the
    daemon against. skopeo may convert what it pushes (compress a tar layer, rewrite a manifest as Docker
    v2), so `manifest` is read back from the registry after the push."""

    repo: str
    tag: str
    manifest: bytes
    config: bytes
    layer_tars: list[bytes]  # uncompressed layer contents
    platform: str = "linux/amd64"
    pushed_blobs: list[bytes] = field(default_factory=list, repr=False)  # the layers as written to the OCI dir

    @property
    def manifest_digest(self) -> str:
        return "sha256:" + sha256_hex(self.manifest)

    @property
    def config_digest(self) -> str:
        return str(json.loads(self.manifest)["config"]["digest"])

    @property
    def layer_digests(self) -> list[str]:
        return [str(d["digest"]) for d in json.loads(self.manifest)["layers"]]

    @property
    def layer_sizes(self) -> list[int]:
        return [int(d["size"]) for d in json.loads(self.manifest)["layers"]]

    @property
    def size(self) -> int:
        doc = json.loads(self.manifest)
        return len(self.manifest) + int(doc["config"]["size"]) + sum(self.layer_sizes)


def make_image(
    repo: str,
    tag: str,
    layer_tars: list[bytes],
    arch: str = "amd64",
    compress: bool = True,
    cmd: list[str] | None = None,
    compresslevel: int = 6,
) -> BuiltImage:
    blobs = [gzip.compress(t, compresslevel=compresslevel, mtime=0) if compress else t for t in layer_tars]
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": cmd or ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha256_hex(t) for t in layer_tars]},
            "history": [{"created_by": f"airgap test layer {i}"} for i in range(len(layer_tars))],
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + sha256_hex(config), "size": len(config)},
            "layers": [
                {
                    "mediaType": LAYER_GZIP if compress else LAYER_TAR,
                    "digest": "sha256:" + sha256_hex(b),
                    "size": len(b),
                }
                for b in blobs
            ],
        },
        sort_keys=True,
    ).encode()
    return BuiltImage(repo, tag, manifest, config, layer_tars, f"linux/{arch}", blobs)


def write_oci_layout(root: Path, image: BuiltImage) -> None:
    """`root` becomes an OCI layout holding `image` under its tag (what `skopeo copy oci:root:tag` reads)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for data in (image.manifest, image.config, *image.pushed_blobs):
        (blobs / sha256_hex(data)).write_bytes(data)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index_path = root / "index.json"
    index: dict[str, Any] = (
        json.loads(index_path.read_text()) if index_path.exists() else {"schemaVersion": 2, "manifests": []}
    )
    index["manifests"].append(
        {
            "mediaType": OCI_MANIFEST,
            "digest": image.manifest_digest,
            "size": len(image.manifest),
            "annotations": {"org.opencontainers.image.ref.name": image.tag},
        }
    )
    index_path.write_text(json.dumps(index))


def skopeo_push(layout: Path, tag: str, dest: str, fmt: str | None = None, creds: str | None = None) -> None:
    argv = ["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false"]
    if fmt:
        argv += ["--format", fmt]
    if creds:
        argv += ["--dest-creds", creds]
    subprocess.run([*argv, f"oci:{layout}:{tag}", f"docker://{dest}"], check=True, capture_output=True, timeout=120)


# --- the registry process ------------------------------------------------------------------------------


@dataclass
class Registry:
    """A running `docker-registry serve` on 127.0.0.1."""

    host: str  # 127.0.0.1:PORT
    storage: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}"


@contextlib.contextmanager
def run_registry(workdir: Path, storage: Path, auth: dict[str, Any] | None = None) -> Iterator[Registry]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "airgap-test-not-a-secret"},
    }
    if auth:
        config["auth"] = auth
    cfg = workdir / "config.yml"
    cfg.write_text(json.dumps(config))  # JSON is YAML
    log = workdir / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(cfg)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/", proc, log)
        yield Registry(f"127.0.0.1:{port}", storage, proc, log)
    finally:
        stop_process(proc)


def htpasswd_auth(workdir: Path) -> dict[str, Any]:
    path = workdir / "htpasswd"
    workdir.mkdir(parents=True, exist_ok=True)
    # distribution accepts bcrypt entries only.
    out = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True)
    path.write_text(out.stdout)
    return {"htpasswd": {"realm": "airgap-test", "path": str(path)}}


# --- a token service (the Bearer challenge flow) -------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues registry JWTs as Docker Hub's auth service does: anonymous callers get a token with no
    access, the test user a pull token for the scope asked. Signed RS256 by `openssl dgst` with a
    self-signed certificate the registry trusts (`rootcertbundle`), sent in the token's x5c header."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(self.key),
                "-out",
                str(self.cert),
                "-days",
                "2",
                "-subj",
                "/CN=airgap-test-token",
                "-addext",
                "keyUsage=digitalSignature,keyCertSign",
            ],
            check=True,
            capture_output=True,
        )
        pem = self.cert.read_text().strip().splitlines()
        self.x5c = "".join(line for line in pem if not line.startswith("-----"))
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner._answer(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def registry_auth(self) -> dict[str, Any]:
        return {
            "token": {
                "realm": self.realm,
                "service": TOKEN_SERVICE,
                "issuer": TOKEN_ISSUER,
                "rootcertbundle": str(self.cert),
            }
        }

    def __enter__(self) -> TokenServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(sig)}"

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        q = parse_qs(urlsplit(h.path).query)
        auth = h.headers.get("Authorization", "")
        user = None
        if auth.startswith("Basic "):
            name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if (name, password) != (USER, PASSWORD):
                self.requests.append({"scope": q.get("scope"), "user": name, "status": 401})
                h.send_response(401)
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            user = name
        self.requests.append({"scope": q.get("scope"), "user": user, "status": 200})
        access = []
        for scope in q.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and user:
                access.append({"type": "repository", "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": user or "",
            "aud": q.get("service", [""])[0],
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": f"{now}-{len(self.requests)}",
            "access": access,
        }
        body = json.dumps({"token": self.sign(claims), "expires_in": 300}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


# --- a fault-injecting reverse proxy -------------------------------------------------------------------


@dataclass
class ProxyRecord:
    method: str
    path: str
    range: str | None
    status: int
    bytes_sent: int


class FaultProxy:
    """Forwards every request to `upstream` (a registry) and can corrupt or cut the body of blobs whose
    path contains a given digest. Records what it answered."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream  # host:port
        self.records: list[ProxyRecord] = []
        self._lock = threading.Lock()
        self._corrupt: dict[str, int] = {}
        self._cut: dict[str, list[int]] = {}  # hex -> [after_bytes, times]
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner._forward(self)

            def do_HEAD(self) -> None:
                owner._forward(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def corrupt(self, digest: str, offset: int = 100) -> None:
        with self._lock:
            self._corrupt[digest.split(":")[-1]] = offset

    def cut(self, digest: str, after: int, times: int = 1) -> None:
        with self._lock:
            self._cut[digest.split(":")[-1]] = [after, times]

    def blob_requests(self, digest: str) -> list[ProxyRecord]:
        hexd = digest.split(":")[-1]
        return [r for r in self.records if "/blobs/" in r.path and hexd in r.path and r.method == "GET"]

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def _fault(self, path: str) -> tuple[int | None, int | None]:
        with self._lock:
            corrupt = next((off for h, off in self._corrupt.items() if h in path and "/blobs/" in path), None)
            cut = None
            for h, spec in self._cut.items():
                if h in path and "/blobs/" in path and spec[1] > 0:
                    spec[1] -= 1
                    cut = spec[0]
        return corrupt, cut

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(h.command, h.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        corrupt, cut = self._fault(h.path) if h.command == "GET" and resp.status in (200, 206) else (None, None)
        if corrupt is not None and body:
            # Offsets are of the whole blob; a ranged answer starts later.
            start = (
                int(resp.getheader("Content-Range", "bytes 0-").split()[1].split("-")[0]) if resp.status == 206 else 0
            )
            i = corrupt - start
            if 0 <= i < len(body):
                body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1 :]
        h.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "keep-alive", "content-length"):
                h.send_header(k, v)
        length = resp.getheader("Content-Length", "0") if h.command == "HEAD" else str(len(body))
        h.send_header("Content-Length", length)
        h.end_headers()
        sent = len(body) if cut is None else min(cut, len(body))
        if h.command == "GET":
            h.wfile.write(body[:sent])
            h.wfile.flush()
        if cut is not None:
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
        conn.close()
        with self._lock:
            self.records.append(
                ProxyRecord(h.command, h.path, h.headers.get("Range"), resp.status, sent if h.command == "GET" else 0)
            )


# --- the images the tests use --------------------------------------------------------------------------


@dataclass
class TestImages:
    """What the session's registry holds. `a` and `b` share the busybox layer (b is pushed as a Docker v2
    manifest, the others as OCI); `multi` is a two-platform index (linux/amd64, linux/arm64)."""

    __test__ = False  # not a test class, despite the name

    a: BuiltImage
    b: BuiltImage
    multi_amd64: BuiltImage
    multi_arm64: BuiltImage
    multi_index: bytes
    hub: BuiltImage  # `library/abox:latest`, to test Docker Hub's short names through a mirror
    big: BuiltImage  # a single 3 MiB uncompressed layer, long enough to cut mid-body

    @property
    def multi_index_digest(self) -> str:
        return "sha256:" + sha256_hex(self.multi_index)


@dataclass
class RegistrySet:
    """The session's registries over one storage: plain, Basic (htpasswd) and Bearer (token)."""

    plain: Registry
    images: TestImages
    workdir: Path
    _extra: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _basic: Registry | None = None
    _token: tuple[Registry, TokenServer] | None = None

    def basic(self) -> Registry:
        if self._basic is None:
            w = self.workdir / "basic"
            self._basic = self._extra.enter_context(run_registry(w, self.plain.storage, htpasswd_auth(w)))
        return self._basic

    def token(self) -> tuple[Registry, TokenServer]:
        if self._token is None:
            w = self.workdir / "token"
            tokens = self._extra.enter_context(TokenServer(w))
            reg = self._extra.enter_context(run_registry(w, self.plain.storage, tokens.registry_auth()))
            self._token = (reg, tokens)
        return self._token


def build_images(workdir: Path, registry: Registry) -> TestImages:
    base = busybox_layer()
    a = make_image("airgap/base-a", "1", [base, tar_layer({"a.txt": b"image A holds this\n"})])
    b = make_image("airgap/app-b", "2", [base, tar_layer({"b.txt": b"image B holds that\n"})])
    m64 = make_image("airgap/multi", "amd64", [base, tar_layer({"platform.txt": b"amd64\n"})])
    marm = make_image("airgap/multi", "arm64", [tar_layer({"platform.txt": b"arm64\n"})], arch="arm64")
    hub = make_image("library/abox", "latest", [base, tar_layer({"hub.txt": b"from the hub mirror\n"})])
    payload = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(3 * 1024 * 1024 // 32))
    big = make_image("airgap/big", "1", [tar_layer({"big.bin": payload})], compress=False)
    for img, fmt in ((a, None), (b, "v2s2"), (m64, None), (marm, None), (hub, None), (big, None)):
        layout = workdir / "oci" / img.repo.replace("/", "_") / img.tag
        write_oci_layout(layout, img)
        skopeo_push(layout, img.tag, f"{registry.host}/{img.repo}:{img.tag}", fmt)
        r = requests.get(
            f"{registry.url}/v2/{img.repo}/manifests/{img.tag}",
            timeout=10,
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, " + OCI_MANIFEST},
        )
        r.raise_for_status()
        img.manifest = r.content
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": m.manifest_digest,
                    "size": len(m.manifest),
                    "platform": {"os": "linux", "architecture": m.platform.split("/")[1]},
                }
                for m in (m64, marm)
            ]
            + [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": m64.manifest_digest,
                    "size": len(m64.manifest),
                    "platform": {"os": "unknown", "architecture": "unknown"},
                }
            ],  # like a buildx attestation entry
        }
    ).encode()
    r = requests.put(
        f"{registry.url}/v2/airgap/multi/manifests/1", data=index, headers={"Content-Type": OCI_INDEX}, timeout=10
    )
    assert r.status_code == 201, r.text
    return TestImages(a, b, m64, marm, index, hub, big)


@pytest.fixture(scope="session", name="registries")
def registries_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistrySet]:
    missing = missing_tools()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/test-apt-packages.txt; scripts/test.sh installs them)")
    workdir = tmp_path_factory.mktemp("registry")
    with run_registry(workdir / "plain", workdir / "storage") as plain:
        images = build_images(workdir, plain)
        regs = RegistrySet(plain, images, workdir)
        with regs._extra:
            yield regs


@pytest.fixture(name="proxy")
def proxy_fixture(registries: RegistrySet) -> Iterator[FaultProxy]:
    with FaultProxy(registries.plain.host) as proxy:
        yield proxy
