"""Self-install: airgap's own wheel, tool/ for the target, and install.sh on a server with no airgap and no network.

The end-to-end tests run the real install.sh with dash inside `unshare -n`, with a PATH that holds no airgap,
and check what it did (the venv, the airgap in it, the dry-run output of `airgap install`). The shell logic
(sums, planted files, missing or wrong python) is tested offline against a bundle with stand-in tool files.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename
from packaging.version import Version

import airgap
from airgap.bundle import finalize, read_sums
from airgap.errors import UpstreamError
from airgap.fsutil import write_atomic
from airgap.lock import Lock, LockedArtifact, ToolFile
from airgap.selfinstall.imports import imported_distributions
from airgap.selfinstall.install_sh import COMMANDS, STAMP, render_install_sh, write_install_sh
from airgap.selfinstall.own_wheel import build_wheel, project_metadata
from airgap.selfinstall.tool import build_tool_dir, tool_target
from airgap.sums import format_sums
from airgap.target import Target
from airgap.units import now_utc
from airgap.wheels import WheelInfo, resolve_closure
from tests.test_install import prepare_root

HERE_PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
IS_ROOT = os.geteuid() == 0
SH = "/bin/sh"  # dash on Debian and Ubuntu, the shell `sudo sh install.sh` gets there


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def can_unshare(*flags: str) -> bool:
    if not IS_ROOT or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", *flags, "true"], capture_output=True).returncode == 0


def finish_bundle(bundle: Path, extra: list[ToolFile], python: str = HERE_PY) -> Path:
    """A finished bundle: one small artifact through bundle.finalize, then SHA256SUMS rewritten to cover
    tool/ and install.sh too (what finalize must learn to do itself)."""
    data = b"#!/bin/sh\necho check\n"
    p = bundle / "layers/10-files/check.sh"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    art = LockedArtifact(
        layer="files",
        name=p.name,
        path="layers/10-files/check.sh",
        size=len(data),
        sha256=sha(data),
        url="https://example.com/check.sh",
    )
    lock = Lock(
        name="selfinstall",
        target={"os": "ubuntu-22.04", "arch": "amd64", "python": python},
        created=now_utc(),
        artifacts=[art],
    )
    finalize(bundle, lock)
    sums = read_sums(bundle)
    sums.update({f.path: f.sha256 for f in extra})
    write_atomic(bundle / "SHA256SUMS", format_sums(sums))
    return bundle


def bin_dir(path: Path, links: dict[str, str]) -> Path:
    """A PATH directory holding exactly these programs (name -> target), so nothing else is found."""
    path.mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        (path / name).symlink_to(target)
    return path


def run_sh(
    bundle: Path, args: list[str], env: dict[str, str], cwd: Path, unshare: tuple[str, ...] = (), timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    cmd = [*(["unshare", *unshare] if unshare else []), SH, str(bundle / "install.sh"), *args]
    return subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def clean_env(path: str, **extra: str) -> dict[str, str]:
    # As after `sudo`: a fresh environment; HOME so pip and python find nothing of the user's.
    return {"PATH": path, "HOME": "/nonexistent", "LANG": "C.UTF-8", **extra}


# --- the wheel builder (offline) ---------------------------------------------------------------------------


def test_own_wheel_has_right_record_is_deterministic_and_installs(tmp_path: Path) -> None:
    whl = build_wheel(tmp_path / "a")
    assert whl.name == f"airgap-{airgap.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
        dist = f"airgap-{airgap.__version__}.dist-info"
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        assert "airgap/cli/__init__.py" in names and f"{dist}/entry_points.txt" in names
        wheel_txt = zf.read(f"{dist}/WHEEL").decode()
        assert "Root-Is-Purelib: true" in wheel_txt and "Tag: py3-none-any" in wheel_txt
        meta = zf.read(f"{dist}/METADATA").decode()
        assert f"Version: {airgap.__version__}" in meta and "Requires-Python: >=3.10" in meta
        assert "Requires-Dist: click" in meta
        rows = list(csv.reader(io.StringIO(zf.read(f"{dist}/RECORD").decode())))
        # Every file but RECORD is listed with its urlsafe-b64 sha256 and size; RECORD with neither.
        assert sorted(r[0] for r in rows) == sorted(names)
        for path, digest, size in rows:
            if path == f"{dist}/RECORD":
                assert (digest, size) == ("", "")
                continue
            data = zf.read(path)
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (digest, int(size)) == (f"sha256={want}", len(data)), path
    # Same code, same bytes: re-collecting does not change tool/'s digests.
    assert sha(build_wheel(tmp_path / "b").read_bytes()) == sha(whl.read_bytes())

    # pip installs it (dependencies come from this python's site-packages, hence --system-site-packages);
    # the venv's own copy must be the one imported, and the console script must work.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin/python"),
            "install",
            "--isolated",
            "--no-index",
            "--no-deps",
            "--quiet",
            str(whl),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(
        [str(venv / "bin/python"), "-I", "-m", "airgap", "--version"], capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode == 0 and airgap.__version__ in r.stdout, r.stdout + r.stderr
    where = subprocess.run(
        [str(venv / "bin/python"), "-I", "-c", "import airgap; print(airgap.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(str(venv)), where
    r = subprocess.run([str(venv / "bin/airgap"), "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and airgap.__version__ in r.stdout


def test_metadata_follows_pyproject_when_the_installed_one_is_stale(tmp_path: Path) -> None:
    # An editable install's metadata is frozen at `pip install -e` time; the checkout's pyproject.toml wins.
    pkg = tmp_path / "airgap"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "airgap"\nrequires-python = ">=3.10"\ndependencies = ["click>=8.1", "brand-new-dep>=1"]\n'
    )
    if sys.version_info < (3, 11):
        pytest.skip("reading pyproject.toml needs tomllib (python 3.11+)")
    meta = project_metadata(pkg)
    assert "brand-new-dep>=1" in meta.requires_dist and meta.notes
    assert meta.version == airgap.__version__


# --- markers, closure, imports (offline) ----------------------------------------------------------------------


def _wheel(name: str, version: str, *requires: str) -> WheelInfo:
    return WheelInfo(
        Path(f"{name}-{version}-py3-none-any.whl"),
        name,
        Version(version),
        frozenset(),
        [Requirement(r) for r in requires],
        "",
    )


def test_closure_uses_the_targets_markers_not_this_pythons() -> None:
    # anyio's real metadata: pip running on 3.11 drops exceptiongroup even for a 3.10 target.
    wheels = [
        _wheel("anyio", "4.16.0", 'exceptiongroup>=1.0.2; python_version < "3.11"', "idna>=2.8"),
        _wheel("idna", "3.20"),
        _wheel("idna", "2.0"),
        _wheel("hf", "1.0", 'xet>=1; platform_machine == "aarch64"'),
    ]
    roots = [Requirement("anyio>=4"), Requirement("hf"), Requirement('pytest; extra == "test"')]
    sel, missing = resolve_closure(wheels, roots, Target("3.10", "amd64"))
    assert [str(r) for r in missing] == ['exceptiongroup>=1.0.2; python_version < "3.11"']
    assert sel["idna"].version == Version("3.20") and "pytest" not in sel
    sel, missing = resolve_closure(wheels, roots, Target("3.11", "amd64"))
    assert missing == [] and set(sel) == {"anyio", "idna", "hf"}
    _sel, missing = resolve_closure(wheels, roots, Target("3.12", "arm64"))
    assert [r.name for r in missing] == ["xet"]


def test_tool_takes_every_manylinux_the_glibc_runs_and_no_linux_tag() -> None:
    # tool/ comes from whatever index pip.conf names: a linux_x86_64 wheel there was built for one machine.
    tags = tool_target(Target("3.10", "amd64", "2.35")).platform_tags()
    assert tags[0] == "manylinux_2_35_x86_64" and tags[-1] == "manylinux1_x86_64"
    assert {"manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"} <= set(tags)
    assert "linux_x86_64" not in tags
    arm = tool_target(Target("3.10", "arm64", "2.31", platforms=("linux_aarch64",))).platform_tags()
    assert arm[0] == "manylinux_2_31_aarch64" and arm[-1] == "manylinux2014_aarch64"
    # A release whose glibc airgap does not know: Ubuntu 22.04's, as before.
    assert tool_target(Target("3.10", "amd64", os="rhel-7")).glibc == "2.35"


def test_imports_the_metadata_forgot_are_found(tmp_path: Path) -> None:
    pkg = tmp_path / "airgap"
    pkg.mkdir()
    (pkg / "a.py").write_text("import os\nimport click\nfrom yaml import safe_load\nfrom airgap import b\n")
    (pkg / "b.py").write_text(
        "try:\n    import not_installed_thing\nexcept ImportError:\n    pass\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import rich\n"
    )
    found = imported_distributions(pkg)
    assert set(found) == {"click", "pyyaml"}  # yaml maps to PyYAML; guarded imports are optional
    assert found["click"] == ["airgap/a.py"]


def test_no_wheel_for_the_target_is_an_upstream_error_and_tool_is_untouched(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "tool").mkdir(parents=True)
    (bundle / "tool/old.whl").write_bytes(b"from the previous run")

    def pip(args: list[str]) -> subprocess.CompletedProcess[str]:
        assert "--only-binary=:all:" in args and "manylinux_2_17_x86_64" in args
        return subprocess.CompletedProcess(
            args,
            1,
            "",
            "ERROR: Could not find a version that satisfies the "
            "requirement pydantic-core==2.50.5 (from versions: none)\nERROR: No "
            "matching distribution found for pydantic-core==2.50.5\n",
        )

    with pytest.raises(UpstreamError) as exc:
        build_tool_dir(bundle, Target("3.10", "amd64"), run_pip=pip)
    assert "pydantic-core" in str(exc.value) and "manylinux" in str(exc.value) and exc.value.exit_code == 3
    assert "target.python" in (exc.value.hint or "")
    assert [p.name for p in bundle.iterdir()] == ["tool"]  # no temp dir left behind
    assert (bundle / "tool/old.whl").read_bytes() == b"from the previous run"


# --- install.sh, offline, against stand-in tool files -----------------------------------------------------------


@pytest.fixture
def fake_bundle(tmp_path: Path) -> Path:
    """Enough of a bundle for install.sh's own checks: tool/ files, install.sh, SHA256SUMS."""
    bundle = tmp_path / "bundle"
    tool = bundle / "tool"
    tool.mkdir(parents=True)
    files = [write_install_sh(bundle, airgap.__version__, HERE_PY)]
    for name in (
        "pip-99.0-py3-none-any.whl",
        f"airgap-{airgap.__version__}-py3-none-any.whl",
        "click-8.1.7-py3-none-any.whl",
    ):
        data = name.encode() * 100
        (tool / name).write_bytes(data)
        files.append(ToolFile(path=f"tool/{name}", size=len(data), sha256=sha(data)))
    (bundle / "SHA256SUMS").write_bytes(format_sums({f.path: f.sha256 for f in files}))
    return bundle


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    """What install.sh needs besides python, and nothing else."""
    return bin_dir(tmp_path / "tools", {n: shutil.which(n) or f"/bin/{n}" for n in COMMANDS})


def test_tampered_tool_file_is_named_and_nothing_is_installed(fake_bundle: Path, tmp_path: Path) -> None:
    victim = fake_bundle / "tool/click-8.1.7-py3-none-any.whl"
    data = bytearray(victim.read_bytes())
    data[10] ^= 1
    victim.write_bytes(bytes(data))
    (fake_bundle / "tool/pip-99.0-py3-none-any.whl").unlink()
    venv = tmp_path / "venv"
    r = run_sh(fake_bundle, ["--dry-run"], clean_env("/usr/bin:/bin", AIRGAP_VENV=str(venv)), tmp_path)
    assert r.returncode == 1, r.stderr
    assert "tool/click-8.1.7-py3-none-any.whl is damaged or missing" in r.stderr
    assert "tool/pip-99.0-py3-none-any.whl is damaged or missing" in r.stderr
    assert "Copy the bundle again" in r.stderr
    assert not venv.exists()


def test_file_planted_in_tool_is_refused(fake_bundle: Path, tmp_path: Path) -> None:
    # pip would take a planted click-99 over the listed one: install.sh must not let it near pip.
    (fake_bundle / "tool/click-99.0-py3-none-any.whl").write_bytes(b"evil")
    venv = tmp_path / "venv"
    r = run_sh(fake_bundle, [], clean_env("/usr/bin:/bin", AIRGAP_VENV=str(venv)), tmp_path)
    assert r.returncode == 1
    assert "tool/click-99.0-py3-none-any.whl is not listed in SHA256SUMS" in r.stderr
    assert not venv.exists()


def test_bundle_without_tool_says_so(fake_bundle: Path, tmp_path: Path) -> None:
    shutil.rmtree(fake_bundle / "tool")
    (fake_bundle / "SHA256SUMS").write_text("")
    r = run_sh(fake_bundle, [], clean_env("/usr/bin:/bin", AIRGAP_VENV=str(tmp_path / "v")), tmp_path)
    assert r.returncode == 1 and "--no-tool" in r.stderr


def test_missing_python3_names_the_target_and_the_fix_from_the_bundle(
    fake_bundle: Path, tools: Path, tmp_path: Path
) -> None:
    deb = fake_bundle / "layers/01-prereqs/python3.11_3.11.2-6_amd64.deb"
    deb.parent.mkdir(parents=True)
    deb.write_bytes(b"")
    r = run_sh(fake_bundle, [], clean_env(str(tools), AIRGAP_VENV=str(tmp_path / "v")), tmp_path)
    assert r.returncode == 1
    assert "no python3 on this server" in r.stderr and f"needs python {HERE_PY}" in r.stderr
    assert "dpkg -i layers/01-prereqs/" in r.stderr


def test_python_of_another_version_is_warned_about(fake_bundle: Path, tools: Path, tmp_path: Path) -> None:
    fake = tmp_path / "python3.99"
    fake.write_text("#!/bin/sh\necho 3.99\n")  # answers the version question; 'makes' a venv that is not there
    fake.chmod(0o755)
    r = run_sh(
        fake_bundle, [], clean_env(str(tools), AIRGAP_VENV=str(tmp_path / "v"), AIRGAP_PYTHON=str(fake)), tmp_path
    )
    assert r.returncode == 1
    assert f"is python 3.99, but tool/ was collected for python {HERE_PY}" in r.stderr
    assert f"Most likely cause: python 3.99 here, tool/ is for python {HERE_PY}" in r.stderr


def test_a_directory_that_is_not_a_venv_is_never_replaced(fake_bundle: Path, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("keep me")
    r = run_sh(fake_bundle, [], clean_env("/usr/bin:/bin", AIRGAP_VENV=str(precious)), tmp_path)
    assert r.returncode == 1 and "is not a virtual environment" in r.stderr
    assert (precious / "data").read_text() == "keep me"


def test_signature_by_another_key_is_refused_before_anything_runs(fake_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from airgap.signing import generate, sign_bundle, write_keypair

    signer, other = generate(), generate()
    write_keypair(signer, tmp_path / "site")
    write_keypair(other, tmp_path / "other")
    sign_bundle(fake_bundle, signer, "selfinstall")
    precious = tmp_path / "precious"  # reached only once the signature passed: refused there, cheaply
    precious.mkdir()
    (precious / "data").write_text("keep me")
    env = clean_env("/usr/bin:/bin", AIRGAP_VENV=str(precious))
    r = run_sh(fake_bundle, ["--dry-run", "--key", "other.pub"], env, tmp_path)  # relative to the caller's cwd
    assert r.returncode == 1 and "which is not a trusted key (other.pub (key ID" in r.stderr, r.stderr
    assert "not a virtual environment" not in r.stderr
    r = run_sh(fake_bundle, ["--dry-run", "--key=site.pub"], env, tmp_path)
    assert "signature: valid" in r.stderr and "is not a virtual environment" in r.stderr, r.stderr
    (fake_bundle / "SHA256SUMS.sig").unlink()
    r = run_sh(fake_bundle, ["--key", "site.pub"], env, tmp_path)
    assert r.returncode == 1 and "the bundle is not signed (no SHA256SUMS.sig)" in r.stderr


def test_install_sh_is_posix_sh() -> None:
    text = render_install_sh(airgap.__version__, "3.10")
    for shell in ("dash", "sh"):
        if shutil.which(shell):
            r = subprocess.run([shell, "-n"], input=text, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-s", "sh", "-"], input=text, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


# --- the real thing: tool/ from PyPI, install.sh in a namespace with no network ---------------------------------


@pytest.fixture(scope="module")
def tool_bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    bundle = tmp_path_factory.mktemp("selfinstall") / "bundle"
    files = build_tool_dir(bundle, Target(HERE_PY, "amd64"))
    files.append(write_install_sh(bundle, airgap.__version__, HERE_PY))
    yield finish_bundle(bundle, files)


def _here_python_bin(tmp_path: Path) -> Path:
    # This machine's python3 alone, under both names install.sh looks for: its own bin/ holds an airgap.
    return bin_dir(tmp_path / "pybin", {"python3": sys.executable, f"python{HERE_PY}": sys.executable})


@pytest.mark.network
@pytest.mark.root
@pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64", reason="tool/ is built for x86_64")
def test_install_sh_installs_airgap_offline_and_runs_install(tool_bundle: Path, tmp_path: Path) -> None:
    if not can_unshare("-n"):
        pytest.skip("needs root and `unshare -n` (a namespace with no network)")
    pybin = _here_python_bin(tmp_path)
    path = f"{pybin}:/usr/bin:/bin"
    assert not any(Path(d, "airgap").exists() for d in path.split(":")), "an airgap on PATH would prove nothing"
    venv = tmp_path / "venv"
    root = prepare_root(tmp_path / "root")
    env = clean_env(path, AIRGAP_VENV=str(venv))
    args = ["--dry-run", "--root", str(root), "--skip", "smoke"]
    r = run_sh(tool_bundle, args, env, tmp_path, unshare=("-n",))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"installing airgap {airgap.__version__} into {venv}" in r.stderr
    assert "Dry run: nothing will be changed" in r.stdout and "verified" in r.stdout
    assert "Preflight" in r.stdout and "files" in r.stdout
    # airgap came from tool/ into the venv; pip ran from its wheel and was not installed.
    where = subprocess.run(
        [str(venv / "bin/python"), "-I", "-c", "import airgap; print(airgap.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(str(venv))
    assert not (venv / "bin/pip").exists()
    assert (venv / STAMP).is_file()
    assert not (root / "var/lib/airgap").exists()  # a dry run

    # Run again: the venv made from the same tool/ is reused; exit codes pass through (bad --only: 2).
    r = run_sh(tool_bundle, [*args, "--only", "nonsense"], env, tmp_path, unshare=("-n",))
    assert "already installed" in r.stderr
    assert r.returncode == 2, r.stdout + r.stderr


@pytest.mark.network
@pytest.mark.root
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="tool/ is built for x86_64")
def test_debian_python3_without_python3_venv_is_enough(tool_bundle: Path, tmp_path: Path) -> None:
    """Debian and Ubuntu put ensurepip in python3-venv; hide it (as on a server without that package) and
    install.sh must still work, where a plain `python3 -m venv` fails."""
    system = Path("/usr/bin/python3")
    if not system.exists():
        pytest.skip("no Debian/Ubuntu /usr/bin/python3 here")
    xy = subprocess.run(
        [str(system), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
    ).stdout.strip()
    ensurepip = Path(f"/usr/lib/python{xy}/ensurepip")
    if xy != HERE_PY or not ensurepip.is_dir():
        pytest.skip(f"/usr/bin/python3 is {xy} with no ensurepip to hide; tool/ is for {HERE_PY}")
    if not can_unshare("-n", "-m"):
        pytest.skip("needs root and `unshare -n -m`")
    empty = tmp_path / "empty"
    empty.mkdir()
    venv = tmp_path / "venv"
    root = prepare_root(tmp_path / "root")
    script = (
        f'mount --bind "{empty}" "{ensurepip}" && '
        f'if [ -e "{ensurepip}/__main__.py" ]; then echo "ensurepip still there"; exit 9; fi && '
        f'/usr/bin/python3 -m venv "{tmp_path}/plain" >"{tmp_path}/plain.out" 2>&1; echo "plain venv: $?" && '
        f'exec {SH} "{tool_bundle}/install.sh" --dry-run --root "{root}" --skip smoke'
    )
    env = clean_env("/usr/bin:/bin", AIRGAP_VENV=str(venv), AIRGAP_PYTHON="/usr/bin/python3")
    r = subprocess.run(
        ["unshare", "-n", "-m", SH, "-c", script], env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert "plain venv: 1" in r.stdout, r.stdout + r.stderr
    assert "ensurepip is not" in (tmp_path / "plain.out").read_text()  # Debian's "install python3-venv"
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Dry run: nothing will be changed" in r.stdout
    assert (venv / "bin/airgap").exists()


@pytest.mark.network
def test_tool_for_python_310_holds_only_wheels_it_can_install(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    target = Target("3.10", "amd64", "2.35")
    files = build_tool_dir(bundle, target)
    accepted = set(tool_target(target).wheel_tags())
    names = {}
    for f in files:
        name, version, _build, tags = parse_wheel_filename(f.path.removeprefix("tool/"))
        assert tags & accepted, f"{f.path} does not install on cp310 manylinux x86_64"
        names[name] = version
        assert f.sha256 == sha((bundle / f.path).read_bytes()) and f.size == (bundle / f.path).stat().st_size
    # The closure is the TARGET's: 3.10 needs these backports even when this python does not.
    assert {"airgap", "pip", "pydantic-core", "exceptiongroup", "tomli"} <= set(names)
    assert sorted(p.name for p in bundle.iterdir()) == ["tool"]  # nothing half-written, no temp dirs


@pytest.mark.network
@pytest.mark.root
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="tool/ is built for x86_64")
def test_split_signed_bundle_installs_through_install_sh_with_no_network(tmp_path: Path) -> None:
    """Issue 8's 'done when': collected with --max-file-size and --sign, installed by install.sh in a
    namespace with no network, on a machine with no airgap."""
    if not can_unshare("-n"):
        pytest.skip("needs root and `unshare -n` (a namespace with no network)")
    from airgap.localserver import LocalHTTPServer
    from tests.conftest import payload, run_airgap
    from tests.installers import nvidia_mirrors, publish_nvidia

    up = tmp_path / "up"
    publish_nvidia(up)
    (up / "example").mkdir()
    (up / "example/weights.bin").write_bytes(payload(3 << 20, 9))  # big enough to be split at 1M
    assert run_airgap("keygen", "-o", str(tmp_path / "site")).returncode == 0
    bundle = tmp_path / "bundle"
    with LocalHTTPServer(up) as server:
        m = tmp_path / "m.yaml"
        m.write_text(
            f'name: trip\ntarget: {{os: ubuntu-22.04, arch: amd64, python: "{HERE_PY}"}}\n'
            "driver: {version: 550.90.07}\ncuda: {version: 12.4.0}\n"
            f"files: [{{url: https://example.com/weights.bin}}]\nmirrors:\n{nvidia_mirrors(server.url)}"
            f"  https://example.com: {server.url}/example\n"
        )
        r = run_airgap(
            "collect",
            str(m),
            "-o",
            str(bundle),
            "--tool",
            "--max-file-size",
            "1MiB",
            "--sign",
            str(tmp_path / "site.key"),
            timeout=600,
        )
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in (bundle / "layers/10-files").iterdir()) == [
        "weights.bin.001",
        "weights.bin.002",
        "weights.bin.003",
    ]
    assert (bundle / "install.sh").is_file() and any((bundle / "tool").glob("airgap-*.whl"))
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle).returncode == 0

    pybin = _here_python_bin(tmp_path)
    root = prepare_root(tmp_path / "root")
    env = clean_env(f"{pybin}:/usr/bin:/bin", AIRGAP_VENV=str(tmp_path / "venv"))
    r = run_sh(
        bundle,
        ["--key", str(tmp_path / "site.pub"), "--root", str(root), "--skip", "smoke"],
        env,
        tmp_path,
        unshare=("-n",),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / "usr/bin/nvidia-smi").exists()
    assert (root / "usr/local/cuda-12.4/bin/nvcc").exists()
