"""The depot's apt repository, judged by apt itself: a bundle's `.deb`s exported as a repository signed
with a site key are accepted by `apt-get update` with `signed-by=` (over HTTP and from a directory),
installed from it into a scratch root with dpkg, and refused when unsigned, signed by another key, or
altered after signing."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from airgap.collect import collect
from airgap.custody import Snapshot
from airgap.depot.apt_repo import KEY_FILE, AptSigner, write_apt_repo
from airgap.errors import BadInputError, ChangedSinceVerify
from airgap.localserver import LocalHTTPServer
from tests.apt_repo import GpgKey, private_apt_root
from tests.conftest import make_bundle, run_airgap
from tests.test_apt import dpkg_status, repos, scratch_root, source  # noqa: F401  (repos is a fixture)

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("apt-get", "dpkg-deb", "gpg")), reason="needs apt-get, dpkg-deb and gpg"
)


@pytest.fixture(scope="module")
def site_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgKey]:
    key = GpgKey(tmp_path_factory.mktemp("site") / "gnupg", uid="Depot <depot@site.invalid>")
    try:
        yield key
    finally:
        key.close()


@pytest.fixture(scope="module")
def bundle(repos, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    work = tmp_path_factory.mktemp("bundle")
    m = repos.manifest(work, "container_toolkit: {version: 1.16.2}\napt:\n  packages: [ag-tool]")
    out = work / "bundle"
    collect(m, out, source(repos), progress_mode="off")
    return out


def apt_root(work: Path, source_line: str, key: Path, status: Path | None = None) -> tuple[Path, list[str]]:
    """A private apt under `work` whose only source is `source_line`, trusting only `key` (put where KEY
    stands in the line), for a machine whose dpkg status is `status` (default: nothing installed)."""
    root = work / "aptroot"
    kept = root / "etc/apt/keyrings" / KEY_FILE
    opts = private_apt_root(root, source_line.replace("KEY", str(kept)) + "\n", status.read_text() if status else "")
    shutil.copy(key, kept)
    return root, opts


def apt_get(opts: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["apt-get", *opts, *args], capture_output=True, text=True, timeout=300)


def export(bundle: Path, dest: Path, key: GpgKey) -> Path:
    snap = Snapshot.read(bundle, [])
    write_apt_repo(bundle, snap.require_lock(), dest, AptSigner("depot@site.invalid", key.home))
    return dest


def test_apt_installs_from_the_signed_repository_over_http(
    bundle: Path,
    site_key: GpgKey,
    repos,  # noqa: F811
    tmp_path: Path,
) -> None:
    repo = export(bundle, tmp_path / "depot" / "apt", site_key)
    assert (repo / "dists/airgap/InRelease").read_bytes().startswith(b"-----BEGIN PGP SIGNED MESSAGE-----")
    packages = (repo / "dists/airgap/main/binary-amd64/Packages").read_text()
    assert "Package: ag-tool\n" in packages and "Package: nvidia-container-toolkit\n" in packages
    # The server: ag-libc (its Priority: required base) installed, as the bundle's closure assumed.
    root = scratch_root(tmp_path / "server", repos)
    with LocalHTTPServer(tmp_path / "depot") as server:
        line = f"deb [signed-by=KEY] {server.url}/apt airgap main"
        _, opts = apt_root(tmp_path, line, repo / KEY_FILE, root / "var/lib/dpkg/status")
        r = apt_get(opts, "update")
        assert r.returncode == 0 and "W:" not in r.stdout + r.stderr, r.stdout + r.stderr
        # by-hash: apt fetches an index by its digest when the Release says so; every one must be there.
        release = (repo / "dists/airgap/Release").read_text()
        assert "Acquire-By-Hash: yes" in release
        for entry in release.split("SHA256:\n")[1].splitlines():
            digest, _size, rel = entry.split()
            by_hash = repo / "dists/airgap" / Path(rel).parent / "by-hash/SHA256" / digest
            assert by_hash.read_bytes() == (repo / "dists/airgap" / rel).read_bytes()
        dl = apt_get(opts, "install", "-y", "--download-only", "ag-tool", "nvidia-container-toolkit")
        assert dl.returncode == 0, dl.stdout + dl.stderr
    fetched = sorted((tmp_path / "aptroot/var/cache/apt/archives").glob("*.deb"))
    names = {p.name.split("_")[0] for p in fetched}
    assert {"ag-tool", "nvidia-container-toolkit", "libnvidia-container1"} <= names
    # What apt fetched is byte for byte what the bundle holds.
    for deb in fetched:
        in_bundle = next(bundle.glob(f"layers/*/{deb.name.replace('%3a', ':')}"))
        assert deb.read_bytes() == in_bundle.read_bytes()
    # dpkg installs what apt fetched into the scratch server.
    dpkg = ["dpkg", f"--root={root}", "--force-script-chrootless", "--force-not-root", f"--log={root}/var/log/dpkg.log"]
    deps = [str(p) for p in fetched if p.name.startswith("ag-") and not p.name.startswith("ag-tool_")]
    tool = [str(p) for p in fetched if p.name.startswith("ag-tool_")]
    for batch in (deps, tool):  # ag-tool pre-depends on ag-pre: configured first, as apt would order it
        r2 = subprocess.run([*dpkg, "-i", *batch], capture_output=True, text=True)
        assert r2.returncode == 0, r2.stdout + r2.stderr
    assert dpkg_status(root)["ag-tool"] == "2.0-1"


def test_a_directory_source_works_too(
    bundle: Path,
    site_key: GpgKey,
    repos,  # noqa: F811
    tmp_path: Path,
) -> None:
    repo = export(bundle, tmp_path / "apt", site_key)
    status = scratch_root(tmp_path / "server", repos) / "var/lib/dpkg/status"
    _, opts = apt_root(tmp_path, f"deb [signed-by=KEY] file:{repo} airgap main", repo / KEY_FILE, status)
    r = apt_get(opts, "update")
    assert r.returncode == 0 and "W:" not in r.stdout + r.stderr, r.stdout + r.stderr
    sim = apt_get(opts, "-s", "install", "ag-tool")
    assert sim.returncode == 0 and "Inst ag-tool (2.0-1" in sim.stdout, sim.stdout + sim.stderr


def test_apt_refuses_an_unsigned_a_foreign_or_an_altered_index(
    bundle: Path,
    site_key: GpgKey,
    repos,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Signed by another key than the one the host trusts.
    repo = export(bundle, tmp_path / "a" / "apt", site_key)
    _, opts = apt_root(tmp_path / "a", f"deb [signed-by=KEY] file:{repo} airgap main", repos.other_key.keyring)
    r = apt_get(opts, "update")
    assert "NO_PUBKEY" in r.stdout + r.stderr or "not signed" in r.stdout + r.stderr, r.stdout + r.stderr
    assert apt_get(opts, "-s", "install", "ag-tool").returncode != 0

    # Unsigned: the signatures removed.
    repo = export(bundle, tmp_path / "b" / "apt", site_key)
    (repo / "dists/airgap/InRelease").unlink()
    (repo / "dists/airgap/Release.gpg").unlink()
    _, opts = apt_root(tmp_path / "b", f"deb [signed-by=KEY] file:{repo} airgap main", repo / KEY_FILE)
    r = apt_get(opts, "update")
    assert "is not signed" in r.stdout + r.stderr, r.stdout + r.stderr
    assert apt_get(opts, "-s", "install", "ag-tool").returncode != 0

    # Altered after signing: every copy of the index (by-hash ones included, whose names stay) says another
    # version.
    repo = export(bundle, tmp_path / "c" / "apt", site_key)
    for index in (repo / "dists/airgap/main/binary-amd64").rglob("*"):
        if index.is_file():
            data = index.read_bytes()
            plain = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
            changed = plain.replace(b"Version: 2.0-1", b"Version: 9.9-9")
            index.write_bytes(gzip.compress(changed) if plain is not data else changed)
    _, opts = apt_root(tmp_path / "c", f"deb [signed-by=KEY] file:{repo} airgap main", repo / KEY_FILE)
    r = apt_get(opts, "update")
    assert "Hash Sum mismatch" in r.stdout + r.stderr or "File has unexpected size" in r.stdout + r.stderr, (
        r.stdout + r.stderr
    )
    sim = apt_get(opts, "-s", "install", "ag-tool")
    assert "9.9-9" not in sim.stdout


def test_no_site_key_means_no_repository(bundle: Path, tmp_path: Path) -> None:
    home = tmp_path / "empty-gnupg"
    home.mkdir(mode=0o700)
    with pytest.raises(BadInputError) as err:
        write_apt_repo(bundle, Snapshot.read(bundle, []).require_lock(), tmp_path / "apt", AptSigner("nobody", home))
    assert "no secret key by that name" in err.value.message and "gpg --quick-gen-key" in str(err.value.hint)
    assert not (tmp_path / "apt").exists()


def test_a_deb_changed_since_verification_stops_the_export(bundle: Path, site_key: GpgKey, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    lock = Snapshot.read(copy, []).require_lock()
    deb = next(copy.glob("layers/*/ag-tool_*.deb"))
    data = bytearray(deb.read_bytes())
    data[-1] ^= 1
    deb.write_bytes(bytes(data))
    with pytest.raises(ChangedSinceVerify):
        write_apt_repo(copy, lock, tmp_path / "apt", AptSigner("depot@site.invalid", site_key.home))
    assert not (tmp_path / "apt").exists()
    assert not list(tmp_path.glob(".apt.*"))  # nothing half-written left beside it


def test_a_bundle_without_debs_has_no_repository(tmp_path: Path, site_key: GpgKey) -> None:
    b = make_bundle(tmp_path / "b", {"layers/10-files/a.txt": b"hello"})
    with pytest.raises(BadInputError, match=r"holds no \.deb files"):
        write_apt_repo(b, Snapshot.read(b, []).require_lock(), tmp_path / "apt", AptSigner("x", site_key.home))


def test_export_with_a_site_key_writes_the_signed_repository_beside_the_other_services(
    bundle: Path,
    site_key: GpgKey,
    repos,  # noqa: F811
    tmp_path: Path,
) -> None:
    dest = tmp_path / "depot"
    r = run_airgap(
        "export", str(bundle), "--to", str(dest), "--apt-key", "depot@site.invalid", "--gnupghome", str(site_key.home)
    )
    assert r.returncode == 0, r.stdout + r.stderr
    debs = len(list(bundle.glob("layers/*/*.deb")))
    assert f"apt: {debs} packages in {dest / 'www' / 'apt'}" in r.stdout, r.stdout
    repo = dest / "www" / "apt"
    assert (repo / "dists/airgap/InRelease").is_file() and (repo / KEY_FILE).is_file()
    status = scratch_root(tmp_path / "server", repos) / "var/lib/dpkg/status"
    _, opts = apt_root(tmp_path, f"deb [signed-by=KEY] file:{repo} airgap main", repo / KEY_FILE, status)
    update = apt_get(opts, "update")
    assert update.returncode == 0 and "W:" not in update.stdout + update.stderr, update.stdout + update.stderr
    assert "Inst ag-tool (2.0-1" in apt_get(opts, "-s", "install", "ag-tool").stdout

    # A key gpg does not hold: refused before anything is written.
    again = run_airgap("export", str(bundle), "--to", str(tmp_path / "other"), "--apt-key", "nobody@site.invalid")
    assert again.returncode == 2, again.stdout + again.stderr
    assert "no secret key by that name" in again.stderr and "Traceback" not in again.stderr
    assert not (tmp_path / "other").exists()
