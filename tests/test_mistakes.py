"""Ordinary mistakes, made for real through the CLI, get one paragraph naming the path and the fix and the
right exit code: never "internal error", never a traceback.

Tests run as root, and root ignores file modes: the mistakes of a user without root run as uid 1000 (setpriv),
on directories under a scratch directory that user can reach (pytest's tmp_path is root's alone).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import airgap.verify
from airgap.cli import main
from airgap.errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_INTERNAL, EXIT_OK, EXIT_UPSTREAM
from tests.conftest import Upstream, make_bundle, run_airgap
from tests.hub_server import HubServer
from tests.test_models import FOLDER, repo_files
from tests.test_models import hub as hub  # the fixture, for the --move test
from tests.test_models import make_bundle as make_model_bundle

USER = ("setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups")
as_root_only = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to act as another user"
)


def clean(r: subprocess.CompletedProcess[str]) -> str:
    """The run's stderr, after checking that nothing in it or on stdout reads as a crash."""
    for text in (r.stdout, r.stderr):
        assert "internal error" not in text and "Traceback" not in text, text
    assert r.returncode != EXIT_INTERNAL
    return r.stderr


def as_user(scratch: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m airgap ARGS` as uid 1000, in `scratch`, with a HOME of its own (root's is not its)."""
    if args and args[0] == "collect":
        args = (*args, "--no-tool")
    env = dict(os.environ, HOME=str(scratch), PYTHONUNBUFFERED="1")
    return subprocess.run(
        [*USER, sys.executable, "-m", "airgap", *args],
        capture_output=True,
        text=True,
        cwd=scratch,
        timeout=120,
        env=env,
    )


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory uid 1000 can enter and read (and not write: it is root's)."""
    d = Path(tempfile.mkdtemp(prefix="airgap-mistakes-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for p in [d, *d.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(d)


def read_only_dir(parent: Path) -> Path:
    d = parent / "read-only"
    d.mkdir()
    d.chmod(0o555)
    return d


def small_bundle(parent: Path) -> Path:
    bundle = make_bundle(parent / "bundle", {"layers/10-files/check.sh": b"#!/bin/sh\nnvidia-smi\n"})
    for p in [bundle, *bundle.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return bundle


# --- outputs that cannot be written, and a user without root -------------------------------------------


@as_root_only
def test_install_without_root_says_sudo(scratch: Path) -> None:
    bundle = small_bundle(scratch)
    r = as_user(scratch, "install", str(bundle), "--only", "files")
    assert r.returncode == EXIT_BAD_INPUT
    err = clean(r)
    assert "error: install needs root" in err and "/var/log/airgap" in err
    assert "fix: Run it with sudo (or --dry-run / --root DIR you can write)." in err


@as_root_only
def test_install_into_a_root_it_cannot_write_names_it(scratch: Path) -> None:
    bundle = small_bundle(scratch)
    ro = read_only_dir(scratch)
    r = as_user(scratch, "install", str(bundle), "--only", "files", "--root", str(ro))
    assert r.returncode == EXIT_BAD_INPUT
    err = clean(r)
    assert f"{ro}: cannot write there" in err and "fix: " in err
    assert not list(ro.iterdir())


@as_root_only
def test_collect_onto_an_unwritable_directory_is_refused_before_any_download(scratch: Path, upstream: Upstream) -> None:
    manifest = upstream.manifest(scratch)
    manifest.chmod(0o644)
    ro = read_only_dir(scratch)
    r = as_user(scratch, "collect", str(manifest), "-o", str(ro / "bundle"))
    assert r.returncode == EXIT_BAD_INPUT
    err = clean(r)
    assert f"-o {ro / 'bundle'}: cannot write there: {ro} is not writable" in err and "fix: Give -o" in err
    assert not upstream.server.requests  # nothing was fetched
    assert not list(ro.iterdir())


@as_root_only
def test_verify_report_onto_an_unwritable_place_is_refused_before_hashing(scratch: Path) -> None:
    bundle = small_bundle(scratch)
    ro = read_only_dir(scratch)
    r = as_user(scratch, "verify", str(bundle), "--report", str(ro / "report.json"))
    assert r.returncode == EXIT_BAD_INPUT
    err = clean(r)
    assert f"--report {ro / 'report.json'}: cannot write there" in err and "fix: " in err
    assert "OK:" not in r.stdout and "FAILED" not in err  # refused before the bundle was hashed


@as_root_only
def test_a_bundle_file_the_user_cannot_read_is_reported_unreadable(scratch: Path) -> None:
    bundle = small_bundle(scratch)
    (bundle / "layers/10-files/check.sh").chmod(0o600)
    r = as_user(scratch, "verify", str(bundle))
    assert r.returncode == EXIT_CHECK_FAILED
    clean(r)
    assert "UNREADABLE" in r.stdout and "layers/10-files/check.sh" in r.stdout


# --- a manifest where a bundle belongs, a mistyped layer ------------------------------------------------


@pytest.mark.parametrize("command", ["verify", "install"])
def test_a_manifest_given_for_a_bundle_says_what_to_do(command: str, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("name: x\n")
    r = run_airgap(command, str(manifest), cwd=tmp_path)
    assert r.returncode == EXIT_BAD_INPUT
    err = clean(r)
    assert f"{manifest}: that is a manifest, not a bundle: {command} takes the bundle directory collect made" in err
    assert f"fix: airgap collect {manifest} -o DIR, then airgap {command} DIR." in err


def test_a_mistyped_layer_gets_a_did_you_mean(tmp_path: Path) -> None:
    bundle = small_bundle(tmp_path)
    r = run_airgap("install", str(bundle), "--only", "drivr", "--dry-run")
    assert r.returncode == EXIT_BAD_INPUT
    assert "--only: unknown layer 'drivr'" in clean(r) and "Did you mean 'driver'?" in r.stderr
    r = run_airgap("install", str(bundle), "--from", "cdua", "--dry-run")
    assert r.returncode == EXIT_BAD_INPUT
    assert "--from: unknown layer 'cdua'. Did you mean 'cuda'?" in clean(r)


# --- --json on failure, -q/-v after the command name -----------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("verify", "{tmp}/nowhere"),
        ("verify", "{tmp}/manifest.yaml"),
        ("install", "{tmp}/nowhere", "--dry-run"),
        ("install", "{tmp}/bundle", "--only", "drivr", "--dry-run"),
        ("collect", "{tmp}/manifest.yaml"),
        ("plan", "{tmp}/nowhere.yaml"),
        ("verify", "{tmp}/bundle", "--no-such-option"),
    ],
)
def test_json_failure_is_one_object_on_stdout(args: tuple[str, ...], tmp_path: Path) -> None:
    (tmp_path / "manifest.yaml").write_text("name: [not a name\n")
    small_bundle(tmp_path)
    r = run_airgap(*(a.format(tmp=tmp_path) for a in args), "--json", cwd=tmp_path)
    assert r.returncode == EXIT_BAD_INPUT
    clean(r)
    data = json.loads(r.stdout)
    assert data["ok"] is False and data["exit_code"] == EXIT_BAD_INPUT
    assert isinstance(data["error"], str) and data["error"]
    assert isinstance(data["fix"], str) and data["fix"]


def test_quiet_and_verbose_after_the_command_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = small_bundle(tmp_path)
    loud = run_airgap("verify", str(bundle))
    assert loud.returncode == EXIT_OK and "OK:" in loud.stdout
    for args in (("verify", str(bundle), "-q"), ("-q", "verify", str(bundle)), ("verify", "--quiet", str(bundle))):
        r = run_airgap(*args)
        assert r.returncode == EXIT_OK and r.stdout == "", args

    def boom(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(airgap.verify, "verify_bundle", boom)
    for args in (["verify", str(bundle), "-v"], ["-v", "verify", str(bundle)]):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == EXIT_INTERNAL
        assert "Traceback" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["verify", str(bundle)])
    assert "Traceback" not in capsys.readouterr().err


# --- upstreams that redirect where they must not ---------------------------------------------------------


class _Redirector(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(302)
        to_file = self.path.startswith("/file/")
        self.send_header("Location", "file:///etc/passwd" if to_file else self.path + "x")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *_args: object) -> None:
        pass


@contextlib.contextmanager
def redirector() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(("kind", "said"), [("loop", "redirects in a loop"), ("file", "not http(s)")])
def test_a_redirect_loop_or_to_a_file_url_is_an_upstream_failure(kind: str, said: str, tmp_path: Path) -> None:
    with redirector() as url:
        netloc = url.removeprefix("http://")
        manifest = tmp_path / "manifest.yaml"
        manifest.write_text(
            'name: t\ntarget: {os: ubuntu-22.04, arch: amd64, python: "3.10"}\nfiles:\n'
            f"  - url: http://user:secretpw@{netloc}/{kind}/check.sh?sig=SECRETSIG\n"
            f'    sha256: "{"a" * 64}"\n'
        )
        r = run_airgap("collect", str(manifest), "-o", str(tmp_path / "b"), "--retries", "0")
    assert r.returncode == EXIT_UPSTREAM
    err = clean(r)
    assert said in err and f"{netloc}/{kind}/check.sh" in err
    assert "secretpw" not in err + r.stdout and "SECRETSIG" not in err + r.stdout


# --- install --move from read-only media -----------------------------------------------------------------


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """A read-only bind mount (a DVD, a write-protected drive): read-only even for root."""
    where = tmp_path / "media"
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)]).returncode:
        pytest.skip("cannot mount here")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_install_move_from_read_only_media_copies_instead(
    hub: HubServer,
    tmp_path: Path,
    read_only_mount: Path,
) -> None:
    built = make_model_bundle(hub, tmp_path)
    media = read_only_mount / "bundle"
    shutil.copytree(built, media)
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_mount)], check=True)
    root = tmp_path / "root"
    root.mkdir()
    r = run_airgap("install", str(media), "--root", str(root), "--only", "models", "--move")
    clean(r)
    assert r.returncode == EXIT_OK, r.stdout + r.stderr
    for path, data in repo_files().items():
        assert (root / "data/models/tiny-llm" / path).read_bytes() == data
        assert (media / FOLDER / path).is_file()  # the bundle keeps its files: the medium is read-only
