"""`depot:` in the manifest: a host's install points its clients at the depot, and the real clients then
use it. The depot is `airgap serve` of another bundle (tests/test_depot.py's); the host is a scratch
`--root`. pip, reading only the pip.conf the install wrote, downloads a byte-identical wheel from the
depot; huggingface_hub, given only the env file the install wrote, downloads the model; Docker's
daemon.json keeps what it had and gains the mirror; a site's own pip.conf is left alone; the apt source
names the carried key with Signed-By."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from airgap.collect import collect
from tests.conftest import run_airgap
from tests.test_apt import dpkg_status, repos, scratch_root, source  # noqa: F401  (repos is a fixture)
from tests.test_depot import (  # noqa: F401  (collected and served are fixtures)
    DOWNLOAD,
    Collected,
    Served,
    client_env,
    collected,
    served,
)
from tests.test_models import REPO


def host_bundle(tmp: Path, depot_url: str) -> Path:
    """A bundle whose manifest asks for the depot (with its apt key and site CA), collected offline."""
    (tmp / "keys").mkdir()
    (tmp / "keys" / "airgap-depot.gpg").write_bytes(b"\x99\x00\x0dnot a real key, carried as bytes")
    (tmp / "keys" / "site-ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    manifest = tmp / "manifest.yaml"
    manifest.write_text(
        "name: host-stack\n"
        'target: {os: ubuntu-22.04, arch: amd64, python: "3.10"}\n'
        "depot:\n"
        f"  url: {depot_url}\n"
        "  registry: 127.0.0.1:5000\n"
        "  apt_key: keys/airgap-depot.gpg\n"
        "  ca_file: keys/site-ca.crt\n"
        "  server_packages: []\n"  # nginx for the depot host is tested with an apt repository below
    )
    bundle = tmp / "bundle"
    r = run_airgap("collect", str(manifest), "-o", str(bundle))
    assert r.returncode == 0, r.stdout + r.stderr
    return bundle


def scratch_host(tmp: Path) -> Path:
    root = tmp / "root"
    (root / "etc/docker").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=ubuntu\nVERSION_ID="22.04"\n')
    # What the container toolkit layer left there: it must survive.
    (root / "etc/docker/daemon.json").write_text('{"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}\n')
    return root


def test_the_clients_of_a_host_use_the_depot_after_install(
    served: Served,  # noqa: F811
    collected: Collected,  # noqa: F811
    tmp_path: Path,
) -> None:
    bundle = host_bundle(tmp_path, served.url)
    assert (bundle / "layers/11-depot/airgap-depot.gpg").is_file()
    root = scratch_host(tmp_path)
    r = run_airgap("install", str(bundle), "--root", str(root), "--only", "depot", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    step = {s["step"]: s for s in json.loads(r.stdout)["steps"]}["depot"]
    assert step["status"] == "installed" and served.url in step["detail"], step

    # apt: the carried key, named by Signed-By, never trusted=yes.
    assert (root / "etc/apt/keyrings/airgap-depot.gpg").read_bytes() == (
        tmp_path / "keys/airgap-depot.gpg"
    ).read_bytes()
    sources = (root / "etc/apt/sources.list.d/airgap-depot.sources").read_text()
    assert f"URIs: {served.url}/apt\n" in sources and "Signed-By: /etc/apt/keyrings/airgap-depot.gpg\n" in sources
    assert "trusted" not in sources
    # Docker: the mirror merged in, the nvidia runtime kept, the site CA for the registry.
    daemon = json.loads((root / "etc/docker/daemon.json").read_text())
    assert daemon["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert daemon["registry-mirrors"] == ["https://127.0.0.1:5000"]
    assert (root / "etc/docker/certs.d/127.0.0.1:5000/ca.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")

    # pip, configured by nothing but the pip.conf the install wrote (minus the CA: the test depot is plain
    # HTTP), downloads from the depot.
    conf = (root / "etc/pip.conf").read_text()
    assert f"index-url = {served.url}/simple/" in conf
    (tmp_path / "pip.conf").write_text(conf.replace("cert = /usr/local/share/ca-certificates/airgap-depot.crt\n", ""))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir"]
    env = client_env(tmp_path, PIP_CONFIG_FILE=str(tmp_path / "pip.conf"))
    dl = subprocess.run(
        [*pip, "download", "--no-deps", "-d", str(tmp_path / "dl"), "agdemo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert dl.returncode == 0, dl.stdout + dl.stderr
    assert (tmp_path / "dl" / collected.wheel.name).read_bytes() == collected.wheel.read_bytes()

    # huggingface_hub, given the env file the install wrote, downloads the model from the depot.
    written = dict(
        line.split("=", 1) for line in (root / "etc/airgap/depot.env").read_text().splitlines() if "=" in line
    )
    assert written["HF_ENDPOINT"] == served.url
    assert "export HF_ENDPOINT=" in (root / "etc/profile.d/airgap-depot.sh").read_text()
    hf_env = client_env(tmp_path, HF_ENDPOINT=written["HF_ENDPOINT"], HF_HUB_DISABLE_TELEMETRY="1")
    hf = subprocess.run(
        [sys.executable, "-c", DOWNLOAD, REPO, "main", str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        env=hf_env,
        timeout=300,
    )
    assert hf.returncode == 0, hf.stdout + hf.stderr
    assert set(json.loads(hf.stdout.splitlines()[-1])["files"]) == set(collected.files)

    # Again: nothing to do.
    again = run_airgap("install", str(bundle), "--root", str(root), "--only", "depot", "--json")
    assert again.returncode == 0, again.stderr
    assert {s["step"]: s for s in json.loads(again.stdout)["steps"]}["depot"]["status"] == "skipped"


def test_a_sites_own_pip_conf_is_left_alone_and_said(served: Served, tmp_path: Path) -> None:  # noqa: F811
    bundle = host_bundle(tmp_path, served.url)
    root = scratch_host(tmp_path)
    (root / "etc/pip.conf").write_text("[global]\nindex-url = https://nexus.site/simple/\n")
    r = run_airgap("install", str(bundle), "--root", str(root), "--only", "depot", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    detail = {s["step"]: s for s in json.loads(r.stdout)["steps"]}["depot"]["detail"]
    assert "left the site's own /etc/pip.conf" in detail
    assert (root / "etc/pip.conf").read_text() == "[global]\nindex-url = https://nexus.site/simple/\n"


def test_a_depot_url_with_credentials_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        'name: x\ntarget: {os: ubuntu-22.04, arch: amd64, python: "3.10"}\n'
        "depot: {url: 'http://admin:hunter2@depot:8080'}\n"
    )
    r = run_airgap("plan", str(manifest))
    assert r.returncode == 2 and "must not carry credentials" in r.stderr, r.stderr
    assert "hunter2" not in r.stdout + r.stderr


def test_the_depot_host_packages_are_carried_but_not_installed_on_every_server(repos, tmp_path: Path) -> None:  # noqa: F811
    """nginx (and what it depends on that the server lacks) is collected into the depot layer's directory
    from the signed repositories, README.txt says to install it on the depot host only, and a server's
    install writes its client settings without installing nginx."""
    m = repos.manifest(tmp_path, "depot: {url: 'http://depot.example.internal:8080'}\napt:\n  packages: []")
    bundle = tmp_path / "bundle"
    collect(m, bundle, source(repos), progress_mode="off")
    debs = sorted(p.name for p in (bundle / "layers/11-depot").glob("*.deb"))
    assert debs == ["ag-data_1.0-1_all.deb", "nginx_1.18.0-6ubuntu14_amd64.deb"], debs  # ag-libc: the server has it
    readme = (bundle / "README.txt").read_text()
    assert "the depot host only: apt-get install ./layers/11-depot/*.deb" in readme
    root = scratch_root(tmp_path / "root", repos)
    r = run_airgap("install", str(bundle), "--root", str(root), "--only", "depot", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nginx" not in dpkg_status(root)
    assert "index-url = http://depot.example.internal:8080/simple/" in (root / "etc/pip.conf").read_text()
