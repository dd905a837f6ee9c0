"""install.sh checks the signature and tool/ before any code from the bundle runs as root.

Each test runs the real install.sh with dash against a real signed bundle (SHA256SUMS and SHA256SUMS.sig
written by airgap's own signing code), with a PATH that holds exactly the server's tools. tool/ holds a pip
wheel that install.sh runs (`python tool/pip-*.whl/pip install ...`): it leaves a mark, and puts an `airgap`
into the venv that leaves another when install.sh execs it. So "nothing from the bundle ran" is a fact on disk,
not a message.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import airgap
from airgap.selfinstall.install_sh import COMMANDS, TRUSTED_KEYS_DIR, write_install_sh
from airgap.signing import SecretKey, generate, sign, sign_bundle, write_keypair
from airgap.sums import format_sums

HERE_PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
SH = shutil.which("dash") or "/bin/sh"  # what `sudo sh install.sh` gets on Debian and Ubuntu
PIP = "pip-99.0-py3-none-any.whl"
OTHER_TOOL = "click-8.1.7-py3-none-any.whl"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pip_wheel(marks: Path, evil: bool = False) -> bytes:
    """A zip with pip/__main__.py, as install.sh runs pip's wheel: it marks that it ran, and leaves in the venv
    an `airgap` that marks its own run (install.sh's last step execs it)."""
    main = (
        "import pathlib, sys\n"
        f"marks = pathlib.Path({str(marks)!r})\n"
        f"(marks / {'evil' if evil else 'pip'!r}).write_text(' '.join(sys.argv[1:]))\n"
        "script = pathlib.Path(sys.prefix) / 'bin' / 'airgap'\n"
        f"script.write_text('#!/bin/sh\\necho \"$@\" > {marks}/airgap\\n')\n"
        "script.chmod(0o755)\n"
    )
    path = marks.parent / ("evil.whl" if evil else "pip.whl")
    with zipfile.ZipFile(path, "w") as zf:
        # A fixed timestamp: the same wheel built twice is the same bytes, whatever second it is.
        zf.writestr(zipfile.ZipInfo("pip/__init__.py", (2020, 1, 1, 0, 0, 0)), "")
        zf.writestr(zipfile.ZipInfo("pip/__main__.py", (2020, 1, 1, 0, 0, 0)), main)
    return path.read_bytes()


@dataclass
class Site:
    """A signed bundle, its signer's key files, and a scratch server: the marks dir and the venv."""

    bundle: Path
    secret: SecretKey
    pub: Path
    key: Path
    marks: Path
    venv: Path
    tmp: Path

    def ran(self) -> list[str]:
        return sorted(p.name for p in self.marks.iterdir())

    def reseal(self) -> None:
        """SHA256SUMS again from the files now in tool/ (what an attacker without the key can do)."""
        files = {"install.sh": sha((self.bundle / "install.sh").read_bytes())}
        files.update({f"tool/{p.name}": sha(p.read_bytes()) for p in (self.bundle / "tool").iterdir()})
        (self.bundle / "SHA256SUMS").write_bytes(format_sums(files))


@pytest.fixture
def site(tmp_path: Path) -> Site:
    bundle = tmp_path / "bundle"
    tool = bundle / "tool"
    tool.mkdir(parents=True)
    marks = tmp_path / "marks"
    marks.mkdir()
    (tool / PIP).write_bytes(pip_wheel(marks))
    (tool / f"airgap-{airgap.__version__}-py3-none-any.whl").write_bytes(b"airgap stand-in")
    (tool / OTHER_TOOL).write_bytes(b"click stand-in")
    write_install_sh(bundle, airgap.__version__, HERE_PY)
    sk = generate()
    write_keypair(sk, tmp_path / "site")
    s = Site(bundle, sk, tmp_path / "site.pub", tmp_path / "site.key", marks, tmp_path / "venv", tmp_path)
    s.reseal()
    sign_bundle(bundle, sk, "trip")
    return s


def server_path(tmp: Path, verifiers: tuple[str, ...], name: str = "bin") -> Path:
    """A PATH directory with the server's tools: coreutils & co, python3, and these signature verifiers."""
    links = {n: shutil.which(n) for n in COMMANDS}
    for v in verifiers:
        if not shutil.which(v):
            pytest.skip(f"{v} is not installed here")
        links[v] = shutil.which(v)
    d = tmp / name
    d.mkdir()
    for n, target in links.items():
        assert target, f"{n} is not installed here"
        (d / n).symlink_to(target)
    (d / "python3").symlink_to(sys.executable)
    (d / f"python{HERE_PY}").symlink_to(sys.executable)
    return d


def run_sh(s: Site, args: list[str], path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(path), "HOME": "/nonexistent", "LANG": "C.UTF-8", "AIRGAP_VENV": str(s.venv)}
    return subprocess.run(
        [SH, str(s.bundle / "install.sh"), *args],
        env=env,
        cwd=s.tmp,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def assert_refused(s: Site, r: subprocess.CompletedProcess[str], *said: str, code: int = 1) -> None:
    assert r.returncode == code, r.stderr
    for text in said:
        assert text in r.stderr, r.stderr
    assert s.ran() == [], "code from the bundle ran"
    assert not s.venv.exists()


def key_id(sk: SecretKey) -> str:
    return sk.public().key_id_hex


VERIFIERS = [pytest.param(("openssl",), id="openssl"), pytest.param(("minisign",), id="minisign")]


@pytest.mark.skipif(not shutil.which("openssl"), reason="no openssl here")
def test_this_openssl_verifies_ed25519() -> None:
    # The gate's main path needs OpenSSL 3 (pkeyutl -rawin); 1.1.1 has no -rawin (see the probe tests below).
    out = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout
    assert out.startswith("OpenSSL 3."), out


# --- (c) a valid signature by a trusted key: airgap is installed from the checked tool/ and run -------------


@pytest.mark.parametrize("verifiers", VERIFIERS)
def test_valid_signature_proceeds(site: Site, verifiers: tuple[str, ...]) -> None:
    r = run_sh(site, ["--dry-run", "--key", "site.pub"], server_path(site.tmp, verifiers))
    assert r.returncode == 0, r.stderr
    assert f"signature: valid, key ID {key_id(site.secret)} (site.pub), checked with {verifiers[0]}" in r.stderr
    assert "trusted comment: timestamp:" in r.stderr and " file:SHA256SUMS bundle:trip" in r.stderr  # tabs shown
    assert site.ran() == ["airgap", "pip"]
    assert (site.marks / "airgap").read_text().split() == [
        "install",
        str(site.bundle),
        "--dry-run",
        "--key",
        "site.pub",
    ]
    # pip read the private, checked copies of tool/, not the drive
    find_links = (site.marks / "pip").read_text().split("--find-links ")[1].split()[0]
    assert not find_links.startswith(str(site.bundle)) and "airgap-install." in find_links
    assert not Path(find_links).exists()  # removed before airgap install runs


def test_both_verifiers_present_openssl_is_used(site: Site) -> None:
    r = run_sh(site, ["--key=site.pub"], server_path(site.tmp, ("openssl", "minisign")))
    assert r.returncode == 0 and "checked with openssl" in r.stderr, r.stderr


# --- (a) SHA256SUMS rewritten to cover a planted tool/ file: the signature refuses it -------------------------


@pytest.mark.parametrize("verifiers", VERIFIERS)
def test_rewritten_sums_are_refused_before_anything_runs(site: Site, verifiers: tuple[str, ...]) -> None:
    # The attacker holds the drive: an evil pip wheel in tool/, SHA256SUMS made to match it.
    (site.bundle / "tool" / PIP).write_bytes(pip_wheel(site.marks, evil=True))
    site.reseal()
    r = run_sh(site, ["--key", str(site.pub)], server_path(site.tmp, verifiers))
    assert_refused(site, r, "refused, nothing from the bundle was run")
    if verifiers == ("openssl",):
        assert "does not match SHA256SUMS" in r.stderr
    else:
        assert "is not a valid signature of SHA256SUMS by" in r.stderr
        assert "Signature verification failed" in r.stderr  # minisign's own words, shown


@pytest.mark.parametrize("verifiers", VERIFIERS)
def test_altered_trusted_comment_is_refused(site: Site, verifiers: tuple[str, ...]) -> None:
    sig = site.bundle / "SHA256SUMS.sig"
    lines = sig.read_text().splitlines()
    lines[2] = lines[2].replace("bundle:trip", "bundle:prod")
    sig.write_text("\n".join(lines) + "\n")
    r = run_sh(site, ["--key", "site.pub"], server_path(site.tmp, verifiers))
    assert_refused(site, r, "refused, nothing from the bundle was run")
    if verifiers == ("openssl",):
        assert "the trusted comment was altered" in r.stderr


def test_signature_by_another_key_is_refused(site: Site) -> None:
    other = generate()
    sign_bundle(site.bundle, other, "trip")  # a valid signature, by a key this server does not trust
    r = run_sh(site, ["--key", "site.pub"], server_path(site.tmp, ("openssl",)))
    assert_refused(
        site,
        r,
        f"signed by key ID {key_id(other)}, which is not a trusted key (site.pub (key ID {key_id(site.secret)}))",
    )


def test_unsigned_bundle_is_refused_when_a_key_is_given(site: Site) -> None:
    (site.bundle / "SHA256SUMS.sig").unlink()
    r = run_sh(site, ["--key", "site.pub"], server_path(site.tmp, ("openssl",)))
    assert_refused(site, r, "the bundle is not signed (no SHA256SUMS.sig)")


def test_damaged_signature_file_is_refused(site: Site) -> None:
    sig = site.bundle / "SHA256SUMS.sig"
    lines = sig.read_text().splitlines()
    lines[1] = lines[1][:-8]
    sig.write_text("\n".join(lines) + "\n")
    r = run_sh(site, ["--key", "site.pub"], server_path(site.tmp, ("openssl",)))
    assert_refused(site, r, "SHA256SUMS.sig is damaged: line 2 is not a base64 minisign signature")


def test_legacy_signature_of_the_whole_file_is_checked(site: Site) -> None:
    # minisign's older "Ed" format signs SHA256SUMS itself, not its BLAKE2b-512.
    sums = (site.bundle / "SHA256SUMS").read_bytes()
    sk = site.secret
    sig = sk.key.sign(sums)
    comment = "timestamp:0\tfile:SHA256SUMS"
    text = (
        "untrusted comment: legacy\n"
        f"{base64.b64encode(b'Ed' + sk.key_id + sig).decode()}\n"
        f"trusted comment: {comment}\n"
        f"{base64.b64encode(sk.key.sign(sig + comment.encode())).decode()}\n"
    )
    (site.bundle / "SHA256SUMS.sig").write_text(text)
    path = server_path(site.tmp, ("openssl",))
    r = run_sh(site, ["--key", "site.pub"], path)
    assert r.returncode == 0 and "signature: valid" in r.stderr, r.stderr
    shutil.rmtree(site.venv)
    for p in site.marks.iterdir():
        p.unlink()
    (site.bundle / "SHA256SUMS").write_bytes(sums + b"0" * 64 + b"  tool/x\n")
    r = run_sh(site, ["--key", "site.pub"], path)
    assert_refused(site, r, "does not match SHA256SUMS")


# --- (b) a tool/ file altered, SHA256SUMS and signature intact: refused before it runs -----------------------


def test_altered_tool_file_is_refused_before_it_runs(site: Site) -> None:
    (site.bundle / "tool" / PIP).write_bytes(pip_wheel(site.marks, evil=True))
    r = run_sh(site, ["--key", "site.pub"], server_path(site.tmp, ("openssl",)))
    assert_refused(site, r, f"tool/{PIP} is damaged or missing", "nothing from the bundle was run or installed")
    assert "signature: valid" in r.stderr  # the sums were genuine; the file was not


def test_tool_file_replaced_by_a_link_is_refused(site: Site) -> None:
    # The genuine bytes, through a link: install.sh reads only regular files of the bundle.
    real = site.tmp / "elsewhere.whl"
    shutil.copy(site.bundle / "tool" / OTHER_TOOL, real)
    (site.bundle / "tool" / OTHER_TOOL).unlink()
    (site.bundle / "tool" / OTHER_TOOL).symlink_to(real)
    r = run_sh(site, ["--key", "site.pub"], server_path(site.tmp, ("openssl",)))
    assert_refused(site, r, f"tool/{OTHER_TOOL} is not a regular file")


def test_sums_replaced_by_a_link_is_refused(site: Site) -> None:
    real = site.tmp / "SHA256SUMS.elsewhere"
    (site.bundle / "SHA256SUMS").rename(real)
    (site.bundle / "SHA256SUMS").symlink_to(real)
    r = run_sh(site, ["--key", "site.pub"], server_path(site.tmp, ("openssl",)))
    assert_refused(site, r, "SHA256SUMS is not a regular file")


def test_planted_tool_file_is_refused_even_when_signed(site: Site) -> None:
    (site.bundle / "tool/click-99.0-py3-none-any.whl").write_bytes(b"planted")
    r = run_sh(site, ["--key", "site.pub"], server_path(site.tmp, ("openssl",)))
    assert_refused(site, r, "tool/click-99.0-py3-none-any.whl is not listed in SHA256SUMS")


# --- trusted keys installed on the server make the signature mandatory ------------------------------------------


def installed_key(s: Site, source: Path, name: str = "site.pub") -> Path:
    """A scratch root whose etc/airgap/keys holds SOURCE (airgap install reads ROOT's keys, and so does
    install.sh)."""
    root = s.tmp / "root"
    keys = root / TRUSTED_KEYS_DIR.lstrip("/")
    keys.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, keys / name)
    return root


def test_installed_key_makes_a_signature_mandatory(site: Site) -> None:
    root = installed_key(site, site.pub)
    path = server_path(site.tmp, ("openssl",))
    (site.bundle / "SHA256SUMS.sig").rename(site.tmp / "sig")
    r = run_sh(site, ["--root", str(root)], path)  # no --key: the installed key alone decides
    assert_refused(site, r, "the bundle is not signed", f"{root}{TRUSTED_KEYS_DIR}/site.pub")
    (site.tmp / "sig").rename(site.bundle / "SHA256SUMS.sig")
    r = run_sh(site, ["--root", str(root)], path)
    assert r.returncode == 0 and "signature: valid" in r.stderr, r.stderr


def test_one_of_several_trusted_keys_is_enough(site: Site) -> None:
    other = generate()
    write_keypair(other, site.tmp / "other")
    root = installed_key(site, site.tmp / "other.pub", "a-other.pub")
    installed_key(site, site.pub, "b-site.pub")
    r = run_sh(site, ["--root=" + str(root)], server_path(site.tmp, ("openssl",)))
    assert r.returncode == 0 and f"key ID {key_id(site.secret)}" in r.stderr, r.stderr


def test_secret_key_among_trusted_keys_is_refused(site: Site) -> None:
    root = installed_key(site, site.key, "site.pub")
    r = run_sh(site, ["--root", str(root)], server_path(site.tmp, ("openssl",)))
    assert_refused(site, r, "this is a secret key, not an Ed25519 minisign public key", code=2)


def test_missing_key_file_is_bad_input(site: Site) -> None:
    r = run_sh(site, ["--key", "nope.pub"], server_path(site.tmp, ("openssl",)))
    assert_refused(site, r, "--key nope.pub: no such file", code=2)


@pytest.mark.skipif(any(Path(TRUSTED_KEYS_DIR).glob("*.pub")), reason="this machine trusts keys of its own")
def test_no_trusted_key_warns_loudly_and_still_checks_tool(site: Site) -> None:
    path = server_path(site.tmp, ())  # nothing to verify with, and nothing asked to
    original = (site.bundle / "tool" / PIP).read_bytes()  # a wheel built again differs (zip timestamps)
    (site.bundle / "tool" / PIP).write_bytes(pip_wheel(site.marks, evil=True))
    r = run_sh(site, [], path)
    assert_refused(site, r, f"tool/{PIP} is damaged or missing")
    assert "the bundle's signature was NOT checked" in r.stderr
    assert f"SHA256SUMS.sig names key ID {key_id(site.secret)}" in r.stderr
    (site.bundle / "tool" / PIP).write_bytes(original)
    r = run_sh(site, [], path)
    assert r.returncode == 0, r.stderr
    assert "signature was NOT checked" in r.stderr and site.ran() == ["airgap", "pip"]


# --- (d) no tool that can check Ed25519: refused, whatever else is there --------------------------------------


def test_no_openssl_and_no_minisign_is_refused_when_a_key_is_given(site: Site) -> None:
    r = run_sh(site, ["--key", "site.pub"], server_path(site.tmp, ()))
    assert_refused(
        site,
        r,
        "neither openssl nor minisign is installed",
        "Install openssl (3.0 or later) or minisign",
        "verify the bundle on another machine",
    )


def fake_openssl(path: Path, body: str) -> None:
    script = path / "openssl"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)


def test_openssl_without_rawin_is_not_used(site: Site) -> None:
    # OpenSSL 1.1.1 (Ubuntu 20.04, RHEL 8) has no `pkeyutl -rawin`, so cannot verify Ed25519 at all.
    path = server_path(site.tmp, ())
    fake_openssl(
        path,
        'case $1 in version) echo "OpenSSL 1.1.1f  31 Mar 2020" ;; '
        'pkeyutl) echo "pkeyutl: Unrecognized flag rawin" >&2; exit 1 ;; *) exec '
        f'{shutil.which("openssl") or "false"} "$@" ;; esac\n',
    )
    r = run_sh(site, ["--key", "site.pub"], path)
    assert_refused(site, r, "this openssl (OpenSSL 1.1.1f", "cannot verify Ed25519 signatures")


def test_openssl_that_says_yes_to_everything_is_not_trusted(site: Site) -> None:
    # The probe's second half: a valid signature over another message must fail.
    path = server_path(site.tmp, ())
    fake_openssl(path, 'case $1 in version) echo "OpenSSL 9" ;; *) echo "Signature Verified Successfully" ;; esac\n')
    (site.bundle / "tool" / PIP).write_bytes(pip_wheel(site.marks, evil=True))
    site.reseal()
    r = run_sh(site, ["--key", "site.pub"], path)
    assert_refused(site, r, "cannot verify Ed25519 signatures")


def test_minisign_alone_is_enough(site: Site) -> None:
    path = server_path(site.tmp, ("minisign",))
    assert not (path / "openssl").exists()
    r = run_sh(site, ["--key", "site.pub"], path)
    assert r.returncode == 0 and "checked with minisign" in r.stderr, r.stderr


def test_signature_text_from_airgap_is_what_minisign_format_says() -> None:
    # The layout install.sh parses: line 2 = "ED" + key id + 64-byte signature, line 4 = 64 bytes.
    sk = generate()
    lines = sign(sk, b"x", "c").splitlines()
    blob = base64.b64decode(lines[1])
    assert blob[:2] == b"ED" and blob[2:10] == sk.key_id and len(blob) == 74
    assert lines[2] == "trusted comment: c" and len(base64.b64decode(lines[3])) == 64
