"""The command line's contract: its commands, its exit codes, and that a failure is a message, not a traceback."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import airgap.manifest
from airgap.cli import cli, main
from airgap.cli.application import Application
from airgap.errors import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_MEANINGS,
    EXIT_REBOOT,
    EXIT_UPSTREAM,
    AirgapError,
    CombinedError,
    Interrupted,
    ManifestError,
    RebootPending,
    RebootRequired,
    UpstreamError,
)
from tests.conftest import run_airgap

COMMANDS = {
    "plan",
    "collect",
    "verify",
    "demo",
    "doctor",
    "install",
    "smoke",
    "keygen",
    "sign",
    "split",
    "dossier",
    "push",
    "serve",
    "export",
    "fleet",
    "upload",
}


def test_help_lists_every_command_and_every_exit_code() -> None:
    r = run_airgap("--help")
    assert r.returncode == 0, r.stderr
    assert set(cli.commands) == COMMANDS
    listed = r.stdout.split("Commands:", 1)[1]
    for name in COMMANDS:
        assert f"\n  {name} " in listed
    codes = r.stdout.split("Exit codes:", 1)[1]
    for code, meaning in EXIT_MEANINGS.items():
        assert f"{code:<3} {meaning}" in codes
    assert "  4   a reboot is due" in codes and "  70  an internal error" in codes


def test_install_help_has_the_reboot_code_and_others_do_not() -> None:
    assert "a reboot is due" in run_airgap("install", "--help").stdout
    verify_help = run_airgap("verify", "--help").stdout
    assert "a reboot is due" not in verify_help and "70  an internal error" in verify_help


def test_unknown_command_is_bad_input() -> None:
    r = run_airgap("frobnicate")
    assert r.returncode == EXIT_BAD_INPUT
    assert "No such command" in r.stderr


def test_missing_manifest_is_bad_input_without_a_traceback(tmp_path: Path) -> None:
    r = run_airgap("plan", str(tmp_path / "nowhere.yaml"))
    assert r.returncode == EXIT_BAD_INPUT
    assert r.stderr.startswith("error: ") and "  fix: " in r.stderr
    assert "Traceback" not in r.stderr


def _boom(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("boom")


def test_a_bug_exits_70_and_shows_the_traceback_only_with_v(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(airgap.manifest, "load", _boom)
    with pytest.raises(SystemExit) as exc:
        main(["plan", str(tmp_path / "m.yaml")])
    assert exc.value.code == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in err and "This is a bug in airgap" in err
    assert "Traceback" not in err

    # -v after the command name too: click reads it, not a scan of sys.argv.
    with pytest.raises(SystemExit) as exc:
        main(["-v", "plan", str(tmp_path / "m.yaml")])
    assert exc.value.code == EXIT_INTERNAL
    assert "Traceback" in capsys.readouterr().err


def test_a_v_that_is_an_argument_is_not_verbosity(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(airgap.manifest, "load", _boom)
    with pytest.raises(SystemExit) as exc:
        main(["plan", "--", "-v"])
    assert exc.value.code == EXIT_INTERNAL
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "code", "lines"),
    [
        (AirgapError("it broke", "do this"), EXIT_CHECK_FAILED, ["error: it broke", "  fix: do this"]),
        (UpstreamError("mirror down"), EXIT_UPSTREAM, ["error: mirror down"]),
        (Interrupted("stopped", "run it again"), EXIT_INTERRUPTED, ["error: stopped"]),
        (RebootRequired("nouveau"), EXIT_REBOOT, ["error: nouveau"]),
        (RebootPending("still due"), EXIT_REBOOT, ["error: still due"]),
        (KeyboardInterrupt(), EXIT_INTERRUPTED, ["interrupted; run the same command again to resume."]),
        (
            ManifestError(["m.yaml:3: driver: bad", "m.yaml:5: cuda: bad"]),
            EXIT_BAD_INPUT,
            ["m.yaml:3: driver: bad", "m.yaml:5: cuda: bad", "2 problem(s) in the manifest; nothing was downloaded."],
        ),
        (ValueError("oops"), EXIT_INTERNAL, ["internal error: ValueError: oops"]),
    ],
)
def test_one_handler_maps_each_error_to_its_message_and_code(
    error: BaseException, code: int, lines: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert Application().fail(error) == code
    err = capsys.readouterr().err.splitlines()
    assert err[: len(lines)] == lines


def test_combined_error_exits_with_the_gravest_code() -> None:
    combined = CombinedError("two failed", [AirgapError("a"), UpstreamError("b")])
    assert combined.exit_code == EXIT_UPSTREAM
    assert CombinedError("none", []).exit_code == EXIT_CHECK_FAILED


def test_the_console_script_is_the_main_python_dash_m_runs() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    module, _, name = pyproject["project"]["scripts"]["airgap"].partition(":")
    assert getattr(importlib.import_module(module), name) is main
    r = subprocess.run([sys.executable, "-m", "airgap", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "airgap, version" in r.stdout


def test_every_command_takes_quiet_and_verbose_after_its_name() -> None:
    for name, command in cli.commands.items():
        opts = {opt for p in command.params for opt in getattr(p, "opts", [])}
        assert {"-q", "--quiet", "-v", "--verbose"} <= opts, name


def test_a_failure_with_json_also_prints_one_object_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert Application(json_mode=True).fail(AirgapError("it broke", "do this")) == EXIT_CHECK_FAILED
    out = capsys.readouterr()
    assert json.loads(out.out) == {"ok": False, "error": "it broke", "fix": "do this", "exit_code": EXIT_CHECK_FAILED}
    assert out.err.splitlines() == ["error: it broke", "  fix: do this"]
    assert Application().fail(AirgapError("quiet stdout")) == EXIT_CHECK_FAILED
    assert capsys.readouterr().out == ""
