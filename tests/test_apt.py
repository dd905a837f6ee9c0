"""The apt source and the apt layers against real signed repositories served on loopback, dpkg into scratch
roots, and (network) the closure of a real package compared with apt's own against Debian's archive."""

from __future__ import annotations

import json
import lzma
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airgap import manifest as manifest_mod
from airgap.collect import collect
from airgap.errors import AirgapError, IntegrityError
from airgap.layers import ResolveContext
from airgap.localserver import LocalHTTPServer
from airgap.sources import apt
from airgap.sources.apt import AptError, AptRepo, Request, Resolver, load_index, read_status_file
from airgap.sources.http import HttpSource
from tests.apt_repo import GpgKey, Pkg, dists_repo, flat_repo, private_apt_root
from tests.conftest import run_airgap

NVIDIA_CTK = """#!/bin/sh
# Stand-in for nvidia-ctk: `runtime configure --runtime=docker [--config=FILE]` adds the nvidia runtime.
config=/etc/docker/daemon.json
for a in "$@"; do case "$a" in --config=*) config="${a#--config=}";; esac; done
mkdir -p "$(dirname "$config")"
python3 - "$config" <<'EOF'
import json, os, sys
path = sys.argv[1]
conf = json.load(open(path)) if os.path.exists(path) else {}
conf.setdefault("runtimes", {})["nvidia"] = {"path": "nvidia-container-runtime", "args": []}
json.dump(conf, open(path, "w"), indent=4)
EOF
echo "INFO Wrote updated config to $config"
"""


def ubuntu_packages() -> dict[str, dict[str, list[Pkg]]]:
    """suite -> component -> packages: versioned deps, alternatives, a virtual package, a Pre-Depends whose
    preinst proves ordering, `:any`, `Architecture: all`, updates/security pockets, a conflict."""
    tool = Pkg(
        "ag-tool",
        "2.0-1",
        depends="ag-liba1 (>= 1.1), ag-libb (>= 2.0) | ag-libg, ag-awk, ag-py:any, ag-data (>= 1.0)",
        pre_depends="ag-pre",
        # dpkg must have *configured* ag-pre before it unpacks ag-tool: its postinst writes `ready`.
        preinst='test -f "$DPKG_ROOT/var/lib/ag-pre/ready" || { echo "ag-pre not configured"; exit 1; }',
        files={
            "usr/bin/ag-tool": "#!/bin/sh\necho ag-tool 2.0\n",
            # A machine-readable copyright file, as Debian policy asks: the dossier reads its licence.
            "usr/share/doc/ag-tool/copyright": (
                "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
                "Upstream-Name: ag-tool\n\nFiles: *\nCopyright: 2026 airgap tests\nLicense: GPL-2+\n"
            ),
        },
    )
    return {
        "jammy": {
            "main": [
                Pkg("ag-libc", "2.35-0ubuntu3", priority="required"),
                Pkg("ag-liba1", "1.0-1", depends="ag-libc (>= 2.30)"),
                Pkg("ag-libb", "1.0-1"),
                Pkg("ag-libg", "3.0-1"),
                Pkg("ag-mawk", "1.3.4-1", provides="ag-awk"),
                Pkg("ag-gawk", "5.1-1", provides="ag-awk", priority="extra"),
                Pkg("ag-py", "3.10.6-1", multi_arch="allowed"),
                Pkg(
                    "ag-pre",
                    "1.0-1",
                    postinst='mkdir -p "$DPKG_ROOT/var/lib/ag-pre" && touch "$DPKG_ROOT/var/lib/ag-pre/ready"',
                ),
                Pkg("ag-data", "1.0-1", arch="all"),
                Pkg("ag-conflicting", "1.0-1", conflicts="ag-mawk"),
                Pkg("ag-needs-missing", "1.0-1", depends="ag-nowhere (>= 1)"),
                tool,
                # What `apt: {prereqs: true}` asks for, in miniature.
                Pkg("build-essential", "12.9ubuntu3", depends="gcc-12 | gcc, ag-libc"),
                Pkg("gcc-12", "12.3.0-1ubuntu1~22.04", provides="c-compiler"),
                Pkg("dkms", "2.8.7-2ubuntu2", depends="gcc | c-compiler, ag-data"),
                Pkg("linux-headers-5.15.0-122", "5.15.0-122.132", arch="all"),
                Pkg(
                    "linux-headers-5.15.0-122-generic",
                    "5.15.0-122.132",
                    depends="linux-headers-5.15.0-122 (= 5.15.0-122.132)",
                ),
                # What `depot:` carries for the depot host, in miniature.
                Pkg("nginx", "1.18.0-6ubuntu14", depends="ag-libc, ag-data"),
            ],
            "universe": [Pkg("ag-extra", "0.9-1", depends="ag-tool")],
        },
        "jammy-updates": {
            "main": [
                Pkg("ag-liba1", "1.2-1", depends="ag-libc (>= 2.30)"),
                Pkg("linux-headers-5.15.0-125-generic", "5.15.0-125.135"),
            ],
            "universe": [],
        },
        "jammy-security": {"main": [Pkg("ag-libg", "3.0-2")], "universe": []},
    }


def nvidia_packages() -> list[Pkg]:
    out = []
    for v in ("1.16.2-1", "1.17.0-1"):
        out += [
            Pkg("libnvidia-container1", v, depends="ag-libc (>= 2.30)"),
            Pkg("libnvidia-container-tools", v, depends=f"libnvidia-container1 (>= {v}), ag-libc"),
            Pkg("nvidia-container-toolkit-base", v, files={"usr/bin/nvidia-ctk": NVIDIA_CTK}),
            Pkg(
                "nvidia-container-toolkit",
                v,
                depends=f"nvidia-container-toolkit-base (= {v}), "
                f"libnvidia-container-tools (>= {v}), libnvidia-container-tools (<< 2.0.0)",
            ),
        ]
    return out


def cuda_packages() -> list[Pkg]:
    out = [Pkg("libcudnn8", "8.9.7.29-1+cuda12.2")]
    for v in ("9.0.0.312-1", "9.1.0.70-1"):
        out += [
            Pkg("libcudnn9-cuda-12", v),
            Pkg("libcudnn9-headers-cuda-12", v),
            Pkg("libcudnn9-dev-cuda-12", v, depends=f"libcudnn9-cuda-12 (= {v}), libcudnn9-headers-cuda-12 (= {v})"),
        ]
    return out


@dataclass
class Repos:
    root: Path
    server: LocalHTTPServer
    key: GpgKey
    other_key: GpgKey

    @property
    def url(self) -> str:
        return self.server.url

    def mirrors(self) -> dict[str, str]:
        return {
            "http://archive.ubuntu.com/ubuntu": f"{self.url}/ubuntu",
            "http://security.ubuntu.com/ubuntu": f"{self.url}/security",
            "https://nvidia.github.io/libnvidia-container/stable/deb/amd64": f"{self.url}/nvidia",
            "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64": f"{self.url}/cuda",
        }

    def manifest(
        self, work: Path, body: str, keyrings: str | None = None, python: str = "3.10"
    ) -> manifest_mod.Manifest:
        keyrings = keyrings or (
            f"{{ubuntu: {self.key.keyring}, nvidia-container: {self.key.armored}, cuda: {self.key.keyring}}}"
        )
        text = (
            "name: apt-test\n"
            f'target: {{os: ubuntu-22.04, arch: amd64, python: "{python}", kernel: 5.15.0-122-generic}}\n'
            + body
            + f"\n  keyrings: {keyrings}\n"
            + "mirrors:\n"
            + "".join(f"  {k}: {v}\n" for k, v in self.mirrors().items())
        )
        path = work / "manifest.yaml"
        path.write_text(text)
        return manifest_mod.load(path)

    def ubuntu(self, keyring: Path | None = None) -> list[AptRepo]:
        ring = keyring or self.key.keyring
        return [
            AptRepo("ubuntu", "http://archive.ubuntu.com/ubuntu", s, ("main", "universe"), ring)
            for s in ("jammy", "jammy-updates")
        ] + [
            AptRepo(
                "ubuntu-security", "http://security.ubuntu.com/ubuntu", "jammy-security", ("main", "universe"), ring
            )
        ]


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repos]:
    base = tmp_path_factory.mktemp("aptrepo")
    key = GpgKey(base / "gnupg")
    other = GpgKey(base / "gnupg-other", uid="someone else <else@airgap.invalid>")
    root = base / "www"
    try:
        for suite, comps in ubuntu_packages().items():
            dists_repo(root / ("security" if suite.endswith("-security") else "ubuntu"), suite, comps, key)
        flat_repo(root / "nvidia", nvidia_packages(), key)
        flat_repo(root / "cuda", cuda_packages(), key, inrelease=False)  # Release + Release.gpg only
        with LocalHTTPServer(root) as server:
            yield Repos(root, server, key, other)
    finally:
        key.close()
        other.close()


def source(repos: Repos) -> HttpSource:
    return HttpSource(repos.mirrors(), retries=1, backoff=0.01)


def resolve(
    repos: Repos, tmp_path: Path, *names: str, status: bytes | None = None, keyring: Path | None = None
) -> apt.Resolution:
    index = load_index(repos.ubuntu(keyring), "amd64", source(repos), cache_dir=tmp_path / "cache")
    if status is None:
        server = apt.default_server(index)
    else:
        (tmp_path / "status").write_bytes(status)
        server = read_status_file(tmp_path / "status")
    return Resolver(index, server).resolve([Request.parse(n) for n in names])


def status_text(*pkgs: tuple[str, str]) -> bytes:
    return "".join(
        f"Package: {n}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {v}\n\n" for n, v in pkgs
    ).encode()


# --- resolution -----------------------------------------------------------------------------------------


def test_closure_follows_versions_alternatives_virtuals_and_leaves_out_required(repos: Repos, tmp_path: Path) -> None:
    res = resolve(repos, tmp_path, "ag-tool")
    got = {c.name: c.version for c in res.packages}
    assert got == {
        "ag-tool": "2.0-1",
        "ag-liba1": "1.2-1",  # jammy-updates beats jammy; (>= 1.1) rules out 1.0-1 anyway
        "ag-libg": "3.0-2",  # ag-libb has no (>= 2.0): the alternative, newest from -security
        "ag-mawk": "1.3.4-1",  # virtual ag-awk: the provider with the better Priority
        "ag-py": "3.10.6-1",  # ag-py:any, Multi-Arch: allowed
        "ag-pre": "1.0-1",
        "ag-data": "1.0-1",  # Architecture: all
    }
    assert "ag-libc" not in got  # Priority: required, assumed on the server by default
    order = [c.name for c in res.packages]
    assert order.index("ag-pre") < order.index("ag-tool") and order.index("ag-liba1") < order.index("ag-tool")
    assert res.needed_by["ag-libg"] == "ag-tool"
    assert "required/important" in res.server
    assert res.packages[0].digest().algorithm == "sha256"


def test_target_status_leaves_out_exactly_what_the_server_has(repos: Repos, tmp_path: Path) -> None:
    res = resolve(repos, tmp_path, "ag-tool", status=status_text(("ag-py", "3.10.6-1"), ("ag-liba1", "1.0-1")))
    got = {c.name: c.version for c in res.packages}
    assert "ag-py" not in got  # installed at a version that satisfies
    assert got["ag-liba1"] == "1.2-1"  # installed, but too old for (>= 1.1): upgraded
    assert got["ag-libc"] == "2.35-0ubuntu3"  # not in this server's status: brought along
    assert "dpkg status" in res.server


def test_pinned_versions_pick_older_releases_of_a_flat_repository(repos: Repos, tmp_path: Path) -> None:
    nvidia = AptRepo(
        "nvidia-container",
        "https://nvidia.github.io/libnvidia-container/stable/deb/amd64",
        "/",
        keyring=repos.key.armored,
    )  # armored key: dearmored for gpgv
    index = load_index([*repos.ubuntu(), nvidia], "amd64", source(repos), cache_dir=tmp_path / "c")
    res = Resolver(index, apt.default_server(index)).resolve([Request.parse("nvidia-container-toolkit=1.16.2")])
    got = {c.name: c.version for c in res.packages}
    # base is pinned (= 1.16.2-1) by the toolkit; tools (>= 1.16.2-1) gets the newest, as apt would do.
    assert got == {
        "nvidia-container-toolkit": "1.16.2-1",
        "nvidia-container-toolkit-base": "1.16.2-1",
        "libnvidia-container-tools": "1.17.0-1",
        "libnvidia-container1": "1.17.0-1",
    }
    cand = next(c for c in res.packages if c.name == "nvidia-container-toolkit")
    assert cand.url == (
        "https://nvidia.github.io/libnvidia-container/stable/deb/amd64/nvidia-container-toolkit_1.16.2-1_amd64.deb"
    )  # Filename: ./x.deb


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("ag-tool", "ag-conflicting"), "ag-conflicting 1.0-1 (amd64) Conflicts ag-mawk, and the closure has ag-mawk"),
        (("ag-toool",), "ag-toool: no such package for amd64 (did you mean ag-tool?)"),
        (("ag-needs-missing",), "Depends ag-nowhere (>= 1): no package ag-nowhere in the repositories"),
        (("ag-awk",), "ag-awk is a virtual package provided by ag-gawk, ag-mawk: name one of them"),
        (("ag-liba1=9.9",), "ag-liba1=9.9: no such version; the repositories have 1.2-1, 1.0-1"),
    ],
)
def test_resolution_problems_are_named(repos: Repos, tmp_path: Path, names: tuple[str, ...], expected: str) -> None:
    with pytest.raises(AptError) as exc:
        resolve(repos, tmp_path, *names)
    assert expected in exc.value.message


def test_a_wrong_key_or_an_altered_index_is_refused(repos: Repos, tmp_path: Path) -> None:
    with pytest.raises(IntegrityError) as exc:
        resolve(repos, tmp_path, "ag-tool", keyring=repos.other_key.keyring)
    assert "signed by a key that is not in the keyring" in exc.value.message

    altered = tmp_path / "www"
    shutil.copytree(repos.root, altered)
    # A Packages file changed after signing: its digest no longer matches the signed Release.
    pk = altered / "ubuntu/dists/jammy/main/binary-amd64/Packages.xz"
    pk.write_bytes(lzma.compress(lzma.decompress(pk.read_bytes()).replace(b"2.0-1", b"2.0-9")))
    # An InRelease whose signed text was edited: the signature itself fails.
    inrel = altered / "security/dists/jammy-security/InRelease"
    inrel.write_bytes(inrel.read_bytes().replace(b"Suite: jammy-security", b"Suite: jammy-securitx"))
    # Parsed indexes are reused by digest within one run only: a fresh run's context fetches this one again.
    with LocalHTTPServer(altered) as srv, ResolveContext(None) as ctx:
        mirrors = {k: v.replace(repos.url, srv.url) for k, v in repos.mirrors().items()}
        src = HttpSource(mirrors, retries=0, backoff=0.01)
        with pytest.raises(IntegrityError) as exc:
            load_index(repos.ubuntu()[:1], "amd64", src, cache_dir=tmp_path / "c2", memo=ctx.memo)
        assert "do not match the expected sha256" in exc.value.message
        with pytest.raises(IntegrityError) as exc:
            load_index(repos.ubuntu()[2:], "amd64", src, cache_dir=tmp_path / "c2", memo=ctx.memo)
        assert "signature does not match the content" in exc.value.message


def test_one_run_parses_each_index_once(repos: Repos, tmp_path: Path) -> None:
    """prereqs, cudnn and container_toolkit read the same distribution indexes: within one run (one
    context) they share the parsed index; the next run has its own."""

    def tool(memo: apt.Memo) -> apt.Candidate:
        cand = load_index(repos.ubuntu()[:1], "amd64", source(repos), cache_dir=tmp_path / "c", memo=memo).newest(
            "ag-tool"
        )
        assert cand is not None
        return cand

    with ResolveContext(None) as ctx:
        first = tool(ctx.memo)
        assert tool(ctx.memo).para is first.para
    with ResolveContext(None) as ctx:
        assert tool(ctx.memo).para is not first.para
        assert tool(ctx.memo).para == first.para


def test_an_expired_release_is_refused(repos: Repos, tmp_path: Path) -> None:
    flat_repo(
        tmp_path / "www", [Pkg("ag-old", "1.0-1")], repos.key, fields={"Valid-Until": "Sat, 01 Jan 2000 00:00:00 UTC"}
    )
    repo = AptRepo("stale", "https://stale.example/repo", "/", keyring=repos.key.keyring)
    with LocalHTTPServer(tmp_path / "www") as srv, pytest.raises(IntegrityError) as exc:
        load_index(
            [repo], "amd64", HttpSource({"https://stale.example/repo": srv.url}, retries=0), cache_dir=tmp_path / "c"
        )
    assert "expired on Sat, 01 Jan 2000" in exc.value.message


def test_missing_keyring_says_how_to_get_one(repos: Repos, tmp_path: Path) -> None:
    # The repository answers (its InRelease arrives); only then is the missing keyring the problem.
    repo = AptRepo(
        "nvidia-container",
        f"{repos.url}/nvidia",
        "/",
        keyring=tmp_path / "nope.gpg",
        keyring_name="nvidia-container",
    )
    with pytest.raises(AirgapError) as exc:
        load_index([repo], "amd64", source(repos), cache_dir=tmp_path / "c")
    assert "nope.gpg does not exist" in exc.value.message
    assert "nvidia.github.io/libnvidia-container/gpgkey" in (exc.value.hint or "")


def test_an_unreachable_repository_is_an_upstream_failure_naming_the_host_and_cause(
    repos: Repos, tmp_path: Path
) -> None:
    """Not "check the repository URL" (exit 2): the URL may be right and the host down or offline (exit 3)."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connections are refused
    repo = AptRepo("cuda", f"http://127.0.0.1:{port}/cuda", "/", keyring=repos.key.keyring)
    with pytest.raises(AirgapError) as exc:
        load_index([repo], "amd64", HttpSource({}, retries=0, backoff=0.01), cache_dir=tmp_path / "c")
    assert exc.value.exit_code == 3, exc.value
    assert f"cannot reach 127.0.0.1:{port}: connection refused" in exc.value.message
    assert "apt repository cuda" in exc.value.message and "Check the repository URL" not in str(exc.value)


# --- the layers' requests ------------------------------------------------------------------------------


def planned(
    m: manifest_mod.Manifest, repos: Repos, skip: set[str] | None = None, target_status: Path | None = None
) -> dict[str, dict[str, str]]:
    from airgap.layers import plan_artifacts

    out: dict[str, dict[str, str]] = {}
    with ResolveContext(source(repos), target_status=target_status) as ctx:
        arts = plan_artifacts(m, skip, ctx)
    for art in arts:
        out.setdefault(art.layer, {})[art.meta["package"]] = art.meta["version"]
    return out


def test_prereqs_bring_the_driver_build_tools_and_the_kernel_headers(repos: Repos, tmp_path: Path) -> None:
    m = repos.manifest(tmp_path, "apt:\n  prereqs: true")
    got = planned(m, repos)["prereqs"]
    assert {
        "build-essential",
        "gcc-12",
        "dkms",
        "linux-headers-5.15.0-122-generic",
        "linux-headers-5.15.0-122",
        "ag-data",
    } == set(got)  # dkms: gcc | c-compiler is met by gcc-12

    old = repos.manifest(tmp_path, "apt:\n  prereqs: true").model_copy(
        update={"target": m.target.model_copy(update={"kernel": "5.15.0-99-generic"})}
    )
    with pytest.raises(AirgapError) as exc:
        planned(old, repos)
    assert (
        "linux-headers-5.15.0-99-generic is not in the repositories' indexes; the newest there is "
        "linux-headers-5.15.0-125-generic" in str(exc.value)
    )


def test_cudnn_version_prefix_picks_the_release(repos: Repos, tmp_path: Path) -> None:
    m = repos.manifest(tmp_path, 'cudnn: {version: "9"}\napt:')
    assert planned(m, repos)["cudnn"] == {
        "libcudnn9-cuda-12": "9.1.0.70-1",
        "libcudnn9-dev-cuda-12": "9.1.0.70-1",
        "libcudnn9-headers-cuda-12": "9.1.0.70-1",
    }
    m = repos.manifest(tmp_path, 'cudnn: {version: "9.0", packages: [libcudnn9-cuda-12]}\napt:')
    assert planned(m, repos)["cudnn"] == {"libcudnn9-cuda-12": "9.0.0.312-1"}


def test_cli_target_status_setting_wins_over_the_manifest(repos: Repos, tmp_path: Path) -> None:
    """`collect --target-status FILE` gives the run's context that file; it wins over the manifest's,
    for that run only (the next run, with none, is back to the manifest's)."""
    (tmp_path / "in-manifest").write_bytes(status_text(("ag-libc", "2.35-0ubuntu3")))
    (tmp_path / "from-cli").write_bytes(status_text(("ag-data", "1.0-1")))
    m = repos.manifest(tmp_path, "apt:\n  packages: [ag-liba1, ag-data]\n  target_status: in-manifest")
    assert set(planned(m, repos)["prereqs"]) == {"ag-liba1", "ag-data"}
    assert set(planned(m, repos, target_status=tmp_path / "from-cli")["prereqs"]) == {"ag-liba1", "ag-libc"}
    assert set(planned(m, repos)["prereqs"]) == {"ag-liba1", "ag-data"}
    (tmp_path / "junk").write_text("this is not a dpkg status file\n")
    with pytest.raises(AirgapError) as exc:
        apt.read_status_file(tmp_path / "junk")
    assert "does not look like a dpkg status file" in exc.value.message


def test_plan_without_network_names_the_requests(repos: Repos, tmp_path: Path) -> None:
    from airgap.layers import plan_artifacts

    m = repos.manifest(tmp_path, "container_toolkit: {version: 1.16.2}\napt:\n  prereqs: true")
    names = [a.name for a in plan_artifacts(m, None, None)]
    assert "nvidia-container-toolkit=1.16.2 (resolved at collect)" in names
    assert "linux-headers-5.15.0-122-generic (resolved at collect)" in names


# --- collect and install -------------------------------------------------------------------------------


def dpkg_status(root: Path) -> dict[str, str]:
    out = subprocess.run(
        ["dpkg-query", f"--root={root}", "-W", "-f=${Package} ${Version} ${db:Status-Abbrev}\n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {n: v for n, v, s in (line.split()[:3] for line in out.splitlines()) if s == "ii"}


def bare_root(root: Path) -> Path:
    """A scratch 'server': what preflight reads (the apt and python layers need no GPU)."""
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=ubuntu\nVERSION_ID="22.04"\n')
    return root


def scratch_root(path: Path, repos: Repos) -> Path:
    """A 'server' with an initialised dpkg database holding ag-libc (its Priority: required base)."""
    root = bare_root(path)
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").write_text("")
    deb = next((repos.root / "ubuntu/pool/main").glob("ag-libc_*.deb"))
    subprocess.run(
        [
            "dpkg",
            f"--root={root}",
            "--force-script-chrootless",
            "--force-not-root",
            f"--log={root}/var/log/dpkg.log",
            "-i",
            str(deb),
        ],
        check=True,
        capture_output=True,
    )
    return root


def in_netns(*args: str) -> list[str]:
    """The install runs with no network at all when we may make a namespace (root), else plainly."""
    if os.geteuid() == 0 and shutil.which("unshare"):
        return ["unshare", "-n", *args]
    return list(args)


def test_collect_then_install_offline_into_a_scratch_root(repos: Repos, tmp_path: Path) -> None:
    """The issue's "done when": both closures collected for Ubuntu 22.04 (not this machine), verified, and
    `install --only prereqs,container_toolkit,python` into a scratch root with no network."""
    from tests.test_pypi import HERE_PY, IndexServer, bundled_pip_wheel, make_wheel, write_index

    pip_whl = bundled_pip_wheel()
    if pip_whl is None:
        pytest.skip("this Python has no ensurepip wheel of pip")
    (tmp_path / "whl").mkdir()
    write_index(tmp_path / "pyindex", [make_wheel(tmp_path / "whl", "agapp", "1.0"), pip_whl])
    root = scratch_root(tmp_path / "root", repos)
    shutil.copy(root / "var/lib/dpkg/status", tmp_path / "server-status")
    with IndexServer(tmp_path / "pyindex") as pyindex:
        m = repos.manifest(
            tmp_path,
            f"python: {{requirements: [agapp], index_urls: [{pyindex.url}/simple]}}\n"
            "container_toolkit: {version: 1.16.2}\napt:\n  packages: [ag-tool]\n"
            "  target_status: server-status",
            python=HERE_PY,
        )
        bundle = tmp_path / "bundle"
        report = collect(m, bundle, source(repos), progress_mode="off")
    paths = {f.path for f in report.files}
    assert "layers/01-prereqs/ag-tool_2.0-1_amd64.deb" in paths
    assert "layers/06-container_toolkit/nvidia-container-toolkit_1.16.2-1_amd64.deb" in paths
    assert not any("ag-libc" in p for p in paths)  # the server's status has it
    lock = json.loads((bundle / "airgap.lock.json").read_text())
    entry = next(a for a in lock["artifacts"] if a["name"] == "ag-tool_2.0-1_amd64.deb")
    assert entry["upstream_digest"]["algorithm"] == "sha256"
    assert entry["upstream_digest"]["source"].endswith("/ubuntu/dists/jammy/main/binary-amd64/Packages.xz")
    assert entry["meta"]["package"] == "ag-tool" and "server-status" in entry["meta"]["server"]
    assert run_airgap("verify", str(bundle)).returncode == 0

    args = ("install", str(bundle), "--root", str(root), "--only", "prereqs,container_toolkit,python", "--json")
    r = subprocess.run(in_netns(*_airgap(*args)), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    steps = {s["step"]: s for s in json.loads(r.stdout)["steps"]}
    assert steps["prereqs"]["status"] == "installed", steps
    assert "7 packages installed" in steps["prereqs"]["detail"]
    assert "nvidia runtime configured" in steps["container_toolkit"]["detail"]
    have = dpkg_status(root)
    assert have["ag-tool"] == "2.0-1" and have["ag-pre"] == "1.0-1" and have["ag-libg"] == "3.0-2"
    # All four toolkit packages pinned to 1.16.2, though 1.17.0 of the libraries would satisfy (>=).
    assert have["nvidia-container-toolkit"] == "1.16.2-1" and have["libnvidia-container1"] == "1.16.2-1"
    assert (root / "usr/bin/ag-tool").exists() and (root / "var/lib/ag-pre/ready").exists()
    daemon = json.loads((root / "etc/docker/daemon.json").read_text())
    assert daemon["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert steps["python"]["status"] == "installed" and "imported agapp" in steps["python"]["detail"]

    again = subprocess.run(in_netns(*_airgap(*args)), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    steps = {s["step"]: s for s in json.loads(again.stdout)["steps"]}
    assert steps["prereqs"]["status"] == "skipped"
    assert "already installed at the bundle's versions" in steps["prereqs"]["detail"]
    assert steps["container_toolkit"]["status"] == "skipped"
    assert steps["python"]["status"] == "skipped"


def test_an_incomplete_closure_is_refused_before_dpkg_runs(repos: Repos, tmp_path: Path) -> None:
    # Resolved with the default assumption (ag-libc, Priority required, is on the server); this root lacks it.
    m = repos.manifest(tmp_path, "apt:\n  packages: [ag-liba1]")
    bundle = tmp_path / "bundle"
    collect(m, bundle, source(repos), progress_mode="off")
    root = bare_root(tmp_path / "root")
    r = run_airgap("install", str(bundle), "--root", str(root), "--only", "prereqs")
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "ag-liba1 1.2-1 needs ag-libc (>= 2.30)" in out
    assert "--target-status" in out
    assert dpkg_status(root) == {}


def test_install_never_downgrades_and_judges_dependencies_by_what_stays() -> None:
    from airgap.layers.debs import Deb, Have, _needed, batches, missing_dependencies

    server = {"ag-liba1": Have("9.0-1"), "ag-libc": Have("2.35-0ubuntu3")}  # updated since the collect
    liba = Deb("ag-liba1", "1.2-1", "amd64", Path("a.deb"), "ag-libc (>= 2.30)", "", "", 0)
    pre = Deb("ag-pre", "1.0-1", "amd64", Path("p.deb"), "", "", "", 1)
    tool = Deb("ag-tool", "2.0-1", "amd64", Path("t.deb"), "ag-liba1 (>= 5), ag-awk", "ag-pre", "", 2)
    mawk = Deb("ag-mawk", "1.3.4-1", "amd64", Path("m.deb"), "", "", "ag-awk", 3)
    assert not _needed(liba, server) and _needed(tool, server)
    assert missing_dependencies([pre, tool, mawk], [liba, pre, tool, mawk], server) == []  # 9.0-1 stays
    assert missing_dependencies([tool], [tool], server) == ["ag-tool 2.0-1 needs ag-pre", "ag-tool 2.0-1 needs ag-awk"]
    # ag-tool pre-depends on ag-pre: dpkg must finish (configure) ag-pre in a call before ag-tool's.
    assert [[d.package for d in b] for b in batches([pre, tool, mawk])] == [["ag-pre"], ["ag-tool", "ag-mawk"]]


def test_a_tampered_deb_is_not_collected(repos: Repos, tmp_path: Path) -> None:
    www = tmp_path / "www"
    shutil.copytree(repos.root, www)
    deb = www / "ubuntu/pool/main/ag-data_1.0-1_all.deb"
    data = bytearray(deb.read_bytes())
    data[-10] ^= 0xFF
    deb.write_bytes(bytes(data))
    m = repos.manifest(tmp_path, "apt:\n  packages: [ag-data]")
    with LocalHTTPServer(www) as srv:
        mirrors = {k: v.replace(repos.url, srv.url) for k, v in repos.mirrors().items()}
        with pytest.raises(AirgapError) as exc:
            collect(m, tmp_path / "bundle", HttpSource(mirrors, retries=0, backoff=0.01), progress_mode="off")
    assert "ag-data_1.0-1_all.deb" in str(exc.value) and "do not match the expected sha256" in str(exc.value)


def _airgap(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "airgap", *args]


# --- Debian's real archive ----------------------------------------------------------------------------


DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


def apt_get_simulation(work: Path, packages: list[str]) -> dict[str, str]:
    """What apt itself installs on a machine with an empty dpkg status, from bookworm's main indexes."""
    opts = private_apt_root(
        work / "aptroot",
        f"deb [signed-by={DEBIAN_KEYRING}] http://deb.debian.org/debian bookworm bookworm-updates main\n"
        f"deb [signed-by={DEBIAN_KEYRING}] http://deb.debian.org/debian-security bookworm-security main\n",
    )
    subprocess.run(["apt-get", *opts, "update"], check=True, capture_output=True, timeout=300)
    sim = subprocess.run(
        ["apt-get", *opts, "-s", "install", *packages], check=True, capture_output=True, text=True, timeout=300
    ).stdout
    out = {}
    for line in sim.splitlines():
        if line.startswith("Inst "):
            bits = line.split()
            out[bits[1]] = bits[2].lstrip("(")
    return out


@pytest.mark.network
@pytest.mark.skipif(
    not DEBIAN_KEYRING.exists() or not shutil.which("apt-get"), reason="needs apt-get and debian-archive-keyring"
)
def test_closure_matches_apt_on_debian_bookworm(tmp_path: Path) -> None:
    packages = ["build-essential", "dkms", "linux-headers-amd64", "python3-venv", "nfs-common"]
    repos = [
        AptRepo("debian", "http://deb.debian.org/debian", s, ("main",), DEBIAN_KEYRING)
        for s in ("bookworm", "bookworm-updates")
    ]
    repos.append(
        AptRepo(
            "debian-security", "http://deb.debian.org/debian-security", "bookworm-security", ("main",), DEBIAN_KEYRING
        )
    )
    index = load_index(repos, "amd64", HttpSource(), cache_dir=None)
    (tmp_path / "empty-status").write_text("")
    res = Resolver(index, read_status_file(tmp_path / "empty-status")).resolve([Request(p) for p in packages])
    ours = {c.name: c.version for c in res.packages}
    theirs = apt_get_simulation(tmp_path, packages)
    assert ours == theirs, (
        sorted(set(ours.items()) - set(theirs.items())),
        sorted(set(theirs.items()) - set(ours.items())),
    )
