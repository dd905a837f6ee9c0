"""Secrets are never recorded: no credential written into a URL reaches the bundle, the output or the server.

The attacker here is the gate reviewer who reads the bundle (and whoever reads the collecting PC's terminal
log): a real collect from a real local upstream, with credentials planted in every URL-bearing field of the
manifest (`user:password@` and the query parameters of signed URLs), then the whole bundle (every file,
byte for byte), stdout, stderr, `--json`, `plan` and an install into a scratch root (its log and state)
are searched for every planted value. A collect that fails (404, a refused connection) is searched too: an
error is where an HTTP library repeats the URL it failed on.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from airgap.redact import REDACTED, redact, scrub, scrub_data
from airgap.sources.request import first_line
from tests.apt_repo import GpgKey, Pkg, dists_repo
from tests.conftest import CUDA, CUDA_MD5, DOCKER, DRIVER, SCRIPT, Upstream, sha
from tests.test_pypi import HERE_PY, IndexServer, bundled_pip_wheel, make_wheel, write_index

# The query parameters signed URLs carry their credentials in (AWS SigV4, GCS, Azure SAS, CloudFront, OAuth
# and JWT/HMAC download links), each planted with a value of its own.
SIGNED_PARAMS = ("X-Amz-Credential", "X-Amz-Signature", "X-Amz-Security-Token", "token", "jwt", "hmac", "code", "sig")


@dataclass
class Planted:
    """Every secret value planted in one run, and where; `found_in` says which ones a blob holds."""

    values: dict[str, str] = field(default_factory=dict)  # value -> where it was planted

    def new(self, where: str) -> str:
        value = f"s3cret{secrets.token_hex(12)}"
        self.values[value] = where
        return value

    def userinfo(self, where: str) -> str:
        user, password = self.new(f"{where} (user)"), self.new(f"{where} (password)")
        # requests turns `user:password@` into a Basic header: its base64 must not show up either.
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.values[basic] = f"{where} (as a Basic header)"
        return f"{user}:{password}@"

    def query(self, where: str) -> str:
        return "&".join(f"{p}={self.new(f'{where} {p}')}" for p in SIGNED_PARAMS)

    def found_in(self, data: bytes) -> list[str]:
        return [f"{where}: {value}" for value, where in self.values.items() if value.encode() in data]


def grep_tree(planted: Planted, root: Path) -> list[str]:
    """Every planted value in any file under `root`, read as bytes (binary files, archives, the lock)."""
    hits = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            hits += [f"{path.relative_to(root)}: {hit}" for hit in planted.found_in(path.read_bytes())]
    return hits


def airgap(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airgap", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def run_env(tmp: Path, planted: Planted) -> dict[str, str]:
    """The collecting PC's environment, with tokens where airgap may read them (HF_TOKEN, registry auth,
    a netrc it uses for the one URL without userinfo): none of them may be written anywhere either."""
    netrc = tmp / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {planted.new('netrc login')} password {planted.new('netrc password')}\n")
    netrc.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE", "PIP_"))}
    return {
        **env,
        "PYTHONUNBUFFERED": "1",
        "NETRC": str(netrc),
        "AIRGAP_CACHE": str(tmp / "cache"),
        "HF_HOME": str(tmp / "hf-home"),
        "HF_TOKEN": planted.new("HF_TOKEN"),
        "AIRGAP_REGISTRY_AUTH": f"registry.example={planted.new('registry user')}:{planted.new('registry pass')}",
    }


# --- the upstream: NVIDIA's, Docker's and a file host's trees, a signed apt repository, a Python index -----


@dataclass
class Site:
    upstream: Upstream
    key: GpgKey
    index: IndexServer | None

    @property
    def local(self) -> str:
        """host:port of the file server (URLs that reach it without a mirror)."""
        return urlsplit(self.upstream.url).netloc


@pytest.fixture
def site(upstream: Upstream, tmp_path: Path) -> Iterator[Site]:
    key = GpgKey(tmp_path / "gnupg")
    try:
        dists_repo(upstream.root / "apt/ubuntu", "jammy", {"main": [Pkg("ag-hello", "1.0-1")]}, key)
        dists_repo(upstream.root / "apt/ubuntu", "jammy-security", {"main": [Pkg("ag-fix", "1.0-1")]}, key)
        pip_whl = bundled_pip_wheel()
        if pip_whl is None:  # no pip wheel to serve: the python layer is left out, everything else stays
            yield Site(upstream, key, None)
            return
        (tmp_path / "whl").mkdir()
        app = make_wheel(tmp_path / "whl", "agapp", "1.0")
        write_index(tmp_path / "pyindex", [app, pip_whl])
        with IndexServer(tmp_path / "pyindex") as index:
            yield Site(upstream, key, index)
    finally:
        key.close()


def manifest_with_secrets(site: Site, tmp: Path, planted: Planted) -> Path:
    """Credentials in every URL-bearing field of the manifest that the local upstream can serve."""
    local, files = site.local, site.upstream.files
    driver = f"http://{planted.userinfo('driver.url')}{local}/{DRIVER}?{planted.query('driver.url')}"
    # A login written into both the URL and the mirror key that rewrites it.
    cuda_login = planted.userinfo("cuda.url and its mirror key")
    cuda = (
        f"https://{cuda_login}developer.download.nvidia.com/compute/cuda/12.4.0/local_installers/"
        f"cuda_12.4.0_550.54.14_linux.run?{planted.query('cuda.url')}"
    )
    # No userinfo here: the netrc answers for this host.
    docker = f"http://{local}/{DOCKER}?{planted.query('docker.url')}"
    file_login = planted.userinfo("files[0].url and its mirror key")
    lines = [
        "name: secrets-test",
        f'target: {{os: ubuntu-22.04, arch: amd64, python: "{HERE_PY}"}}',
        f"driver: {{version: 550.90.07, url: '{driver}'}}",
        f"cuda: {{version: 12.4.0, url: '{cuda}'}}",
        f"docker: {{version: 25.0.3, url: '{docker}'}}",
        "files:",
        f"  - url: 'https://{file_login}example.com/tools/check.sh?{planted.query('files[0].url')}'",
        f"    sha256: {sha(files[SCRIPT])}",
        f"  - url: 'http://{planted.userinfo('files[1].url')}{local}/{SCRIPT}#{planted.query('files[1] fragment')}'",
        "    name: check-again.sh",
        "apt:",
        "  packages: [ag-hello]",
        f"  keyrings: {{ubuntu: {site.key.keyring}}}",
        "  repos:",
        f"    - {{name: ubuntu, url: 'http://{planted.userinfo('apt.repos[0].url')}{local}/apt/ubuntu',"
        " suites: [jammy]}",
        f"    - {{name: ubuntu-security, url: 'http://{planted.userinfo('apt.repos[1].url')}{local}/apt/ubuntu',"
        " suites: [jammy-security]}",
    ]
    if site.index is not None:
        idx = urlsplit(site.index.url).netloc
        wheel = f"http://{planted.userinfo('a direct reference')}{idx}/files/agapp-1.0-py3-none-any.whl"
        lines += [
            "python:",
            f"  requirements: ['agapp @ {wheel}?{planted.query('a direct reference')}']",
            f"  index_urls: ['http://{planted.userinfo('python.index_urls[0]')}{idx}/simple']",
        ]
    lines += [
        "mirrors:",
        f"  'https://developer.download.nvidia.com': 'http://{planted.userinfo('mirror value')}{local}/nvidia-dev'",
        f"  'https://{cuda_login}developer.download.nvidia.com':"
        f" 'http://{planted.userinfo('mirror value 2')}{local}/nvidia-dev'",
        f"  'https://{file_login}example.com': 'http://{planted.userinfo('mirror value 3')}{local}/example'",
        # A mirror no URL goes through: its key and value are recorded all the same.
        f"  'https://unused.example/x?{planted.query('mirror key query')}':"
        f" 'https://{planted.userinfo('unused mirror value')}mirror.example/y?{planted.query('mirror value query')}'",
    ]
    path = tmp / "manifest.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- the attack --------------------------------------------------------------------------------------------


def test_no_credential_from_any_url_field_reaches_bundle_output_or_server(site: Site, tmp_path: Path) -> None:
    planted = Planted()
    manifest = manifest_with_secrets(site, tmp_path, planted)
    env = run_env(tmp_path, planted)
    bundle = tmp_path / "bundle"

    collected = airgap("collect", str(manifest), "-o", str(bundle), "--no-tool", "--json", "--retries", "1", env=env)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    report = json.loads(collected.stdout)
    paths = {f["path"] for f in report["files"]}
    assert {"layers/02-driver/NVIDIA-Linux-x86_64-550.90.07.run", "layers/10-files/check-again.sh"} <= paths
    assert any(p.endswith("ag-hello_1.0-1_amd64.deb") for p in paths)
    assert site.index is None or any("agapp-1.0" in p for p in paths)
    # The credentials were really sent: each request of the collect carried them (or the netrc's).
    assert any(q.path.endswith("check.sh") for q in site.upstream.server.requests)

    plan_json = airgap("plan", str(manifest), "--json", env=env)
    plan_text = airgap("plan", str(manifest), env=env)
    assert plan_json.returncode == 0, plan_json.stdout + plan_json.stderr
    verified = airgap("verify", str(bundle), env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=ubuntu\nVERSION_ID="22.04"\n')
    installed = airgap("install", str(bundle), "--root", str(root), "--only", "files", "--json", env=env)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    hits = grep_tree(planted, bundle) + grep_tree(planted, root) + grep_tree(planted, tmp_path / "cache")
    for name, run in (("collect", collected), ("plan", plan_text), ("plan --json", plan_json)):
        hits += [f"{name} stdout: {h}" for h in planted.found_in(run.stdout.encode())]
        hits += [f"{name} stderr: {h}" for h in planted.found_in(run.stderr.encode())]
    for name, run in (("verify", verified), ("install", installed)):
        hits += [f"{name}: {h}" for h in planted.found_in((run.stdout + run.stderr).encode())]
    assert not hits, "\n".join(hits)

    # What is recorded instead: each URL with its host and path, its query values REDACTED, and the lock's
    # copy of the manifest still a manifest the server validates (the install above read it).
    lock = json.loads((bundle / "airgap.lock.json").read_text())
    recorded = lock["manifest"]
    redacted_query = "&".join(f"{p}={REDACTED}" for p in SIGNED_PARAMS)
    assert recorded["driver"]["url"] == f"http://{site.local}/{DRIVER}?{redacted_query}"
    assert recorded["cuda"]["url"].startswith("https://developer.download.nvidia.com/compute/cuda/12.4.0/")
    assert recorded["mirrors"][f"https://unused.example/x?{redacted_query}"] == (
        f"https://mirror.example/y?{redacted_query}"
    )
    assert all("@" not in url for url in [*recorded["mirrors"], *recorded["mirrors"].values()])
    assert all("@" not in r["url"] for r in recorded["apt"]["repos"])
    if site.index is not None:
        assert "@" not in recorded["python"]["index_urls"][0]
    driver = next(a for a in lock["artifacts"] if a["layer"] == "driver")
    assert driver["url"] == recorded["driver"]["url"]
    cuda = next(a for a in lock["artifacts"] if a["layer"] == "cuda")
    assert (
        cuda["upstream_digest"]["source"] == f"https://developer.download.nvidia.com/{CUDA_MD5[len('nvidia-dev/') :]}"
    )
    assert CUDA.endswith(cuda["name"])


def test_a_failing_collect_names_the_url_without_its_credentials(upstream: Upstream, tmp_path: Path) -> None:
    """404s and a refused connection, each URL carrying credentials: the errors name host and path only."""
    planted = Planted()
    env = run_env(tmp_path, planted)
    with socket.socket() as s:  # a port nothing listens on: requests' ConnectionError quotes the URL
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    local = urlsplit(upstream.url).netloc
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        "name: secrets-fail\n"
        'target: {os: ubuntu-22.04, arch: amd64, python: "3.10"}\n'
        "files:\n"
        f"  - url: 'http://{planted.userinfo('404 url')}{local}/gone/tool.sh?{planted.query('404 url')}'\n"
        f"  - url: 'http://{planted.userinfo('refused url')}127.0.0.1:{closed}/x/y.sh?{planted.query('refused url')}'\n"
        f"  - url: 'https://example.com/tools/check.sh?{planted.query('mirrored 404')}'\n"
        "mirrors:\n"
        f"  'https://example.com': 'http://{planted.userinfo('mirror of a 404')}{local}/nowhere'\n"
    )
    bundle = tmp_path / "bundle"
    for before, after in (((), ()), ((), ("--json",)), (("-v",), ())):
        r = airgap(*before, "collect", str(manifest), "-o", str(bundle), "--no-tool", "--retries", "0", *after, env=env)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "3 artifact(s) could not be collected" in r.stderr
        # The refused one: the cause in airgap's words, and the URL, its query redacted.
        assert f"cannot reach 127.0.0.1:{closed}: connection refused" in r.stderr
        assert f"http://127.0.0.1:{closed}/x/y.sh?X-Amz-Credential={REDACTED}" in r.stderr
        assert f"http://{local}/gone/tool.sh?X-Amz-Credential=REDACTED" in r.stderr
        hits = planted.found_in((r.stdout + r.stderr).encode()) + grep_tree(planted, bundle)
        assert not hits, "\n".join(hits)
    plan = airgap("plan", str(manifest), env=env)
    assert plan.returncode == 3, plan.stdout + plan.stderr
    assert not planted.found_in((plan.stdout + plan.stderr).encode())


# --- the redaction itself ------------------------------------------------------------------------------------


@pytest.mark.parametrize("param", [*SIGNED_PARAMS, "X-Goog-Signature", "se", "sv", "Policy", "Key-Pair-Id", "auth"])
def test_every_query_value_is_redacted_but_the_allowed_names(param: str) -> None:
    value = secrets.token_hex(8)
    url = f"https://h.example/a/f.run?version=1.2&{param}={value}&arch=x86_64"
    assert redact(url) == f"https://h.example/a/f.run?version=1.2&{param}={REDACTED}&arch=x86_64"
    # In a fragment too, and under any spelling of the name.
    assert value not in redact(f"https://h.example/f#{param.upper()}={value}")


def test_userinfo_is_dropped_and_odd_queries_leave_nothing() -> None:
    assert redact("https://user:pa55@h.example:8443/p/f.whl") == "https://h.example:8443/p/f.whl"
    assert redact("https://only-a-token@h.example/p") == "https://h.example/p"
    assert redact("https://h.example/f?AbCsecretWithNoName") == f"https://h.example/f?{REDACTED}"
    # An allowed name cannot carry a second parameter past the list.
    assert redact("https://h.example/f?v=1;token=abc") == f"https://h.example/f?v={REDACTED}"
    assert redact("https://h.example/f?%76=1") == "https://h.example/f?%76=1"  # %76 is "v"
    assert redact("https://h.example/plain/file.run") == "https://h.example/plain/file.run"
    assert redact("manifest") == "manifest"
    assert "abc" not in redact("https://u:abc@[::1/f?token=abc")  # a host urllib cannot parse
    assert redact("one of https://u:p@a.example/simple, https://b.example/simple?token=zz") == (
        f"one of https://a.example/simple, https://b.example/simple?token={REDACTED}"
    )


def test_free_text_is_scrubbed_of_every_url_in_it() -> None:
    text = (
        "tried http://u:pw1@h.example/x.sh?sig=abc1 (404); https://h.example/y?token=abc2. Then "
        "'git+https://bob:abc3@git.example/r.git#egg=r' and url: /z.run?X-Amz-Signature=abc4&v=2)"
    )
    out = scrub(text)
    for gone in ("pw1", "abc1", "abc2", "abc3", "abc4", "u:", "bob"):
        assert gone not in out, out
    assert out.startswith("tried http://h.example/x.sh?sig=REDACTED (404); https://h.example/y?token=REDACTED. ")
    assert out.endswith(f"url: /z.run?X-Amz-Signature={REDACTED}&v=2)")
    # Paths and globs that only look like queries are left alone.
    assert scrub("allow: */model?.onnx in /etc/x#y") == "allow: */model?.onnx in /etc/x#y"
    assert scrub_data({"https://u:p@m.example": ["https://h.example/f?jwt=x", 3]}) == {
        "https://m.example": [f"https://h.example/f?jwt={REDACTED}", 3]
    }


def test_a_real_requests_connection_error_is_scrubbed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://alice:pw-{secrets.token_hex(6)}@127.0.0.1:{port}/f.run?X-Amz-Signature=sig{secrets.token_hex(6)}"
    with pytest.raises(requests.ConnectionError) as caught:
        requests.get(url, timeout=5)
    raw = str(caught.value)
    secret_sig = url.rsplit("=", 1)[1]
    assert secret_sig in raw  # what requests itself says: the query string, verbatim
    for text in (scrub(raw), first_line(caught.value)):
        assert secret_sig not in text and "alice" not in text, text
        assert f"/f.run?X-Amz-Signature={REDACTED}" in text
