"""Start-up stays light: the command line and `airgap verify` import only what they use.

`airgap verify` on a few thousand small files is done in about the time the interpreter takes to import
collect's HTTP, YAML and model code, so those imports are kept out of its path (and out of `--help`,
`--version`). Checked in a fresh interpreter, by what lands in sys.modules: no timing involved.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from airgap.cli import COMMANDS, cli
from tests.conftest import make_bundle

HEAVY = ("rich", "requests", "urllib3", "pydantic", "cryptography", "yaml")


def _imported_after(code: str) -> set[str]:
    """The top-level packages among HEAVY that a fresh interpreter has imported after running `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout.splitlines()[-1])) & set(HEAVY)


def test_importing_the_command_line_imports_no_command() -> None:
    assert _imported_after("import airgap.cli") == set()


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["verify", "--help"]])
def test_help_and_version_import_nothing_heavy(args: list[str]) -> None:
    code = f"import sys\nfrom airgap.cli import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass"
    assert _imported_after(code) == set()


def test_verify_imports_only_the_lock_models(tmp_path: Path) -> None:
    """verify reads the lock, the typed contract, so pydantic is imported; nothing else heavy is: no
    HTTP, no YAML, no progress bars when not on a terminal, and no cryptography without a trusted key."""
    bundle = make_bundle(tmp_path / "b", {"layers/10-files/a.bin": b"a" * 4096})
    code = (
        "from airgap.cli import main\n"
        f"try:\n    main(['-q', 'verify', {str(bundle)!r}, '--trusted-keys', {str(tmp_path / 'none')!r}])\n"
        "except SystemExit as exc:\n    assert exc.code == 0, exc.code"
    )
    assert _imported_after(code) == {"pydantic"}


def test_the_lazy_help_table_matches_each_command() -> None:
    """`airgap --help` lists COMMANDS' short help without importing a module: it must be the command's own."""
    assert set(COMMANDS) == set(cli.commands)
    for name, (module, short) in COMMANDS.items():
        command = cli.commands[name]
        assert command.callback is not None and command.callback.__module__ == f"airgap.cli.{module}"
        assert short == command.get_short_help_str(limit=1000), name


def test_help_lists_the_same_lines_as_the_commands_would() -> None:
    r = subprocess.run([sys.executable, "-m", "airgap", "--help"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    listed = r.stdout.split("Commands:", 1)[1]
    for name in COMMANDS:
        assert f"\n  {name} " in listed
