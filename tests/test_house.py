"""The ground floor: no process-wide state, one unit system, one log per install run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from airgap.errors import BadInputError
from airgap.host import Host
from airgap.installer import open_log
from airgap.layers import ResolveContext
from airgap.units import FAT32_MAX_FILE, human_size, parse_part_size, parse_size

PACKAGE = Path(__file__).resolve().parent.parent / "airgap"


def test_a_resolve_context_shares_facts_within_one_run_and_cleans_up_at_its_end() -> None:
    made: list[str] = []
    closed: list[str] = []
    with ResolveContext(None) as ctx:
        first = ctx.memo("index", lambda: made.append("x") or ["parsed"])
        assert ctx.memo("index", lambda: made.append("y") or ["other"]) is first
        ctx.on_close(lambda: closed.append("server"))
        ctx.on_close(lambda: closed.append("tempdir"))
    assert made == ["x"] and closed == ["tempdir", "server"]  # last registered, first closed
    with ResolveContext(None) as again:
        assert again.memo("index", lambda: ["fresh"]) == ["fresh"]  # a new run sees nothing of the last


def test_no_module_keeps_mutable_state_at_module_level() -> None:
    """Module-level assignments of a mutable container (a cache, a registry), a `global` statement or an
    atexit hook would be state shared by every run in a process: tests, the demo, a long-lived caller."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                offenders.append(f"{path.name}:{node.lineno}: global {', '.join(node.names)}")
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "register"
                and getattr(node.value, "id", "") == "atexit"
            ):
                offenders.append(f"{path.name}:{node.lineno}: atexit.register")
        for node in tree.body:
            if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
                continue
            value = node.value
            # Tables written out in full are constants; an empty container or a constructed object is
            # there to be filled or to hold state.
            empty = (isinstance(value, ast.Dict) and not value.keys) or (
                isinstance(value, ast.List | ast.Set) and not value.elts
            )
            constructed = isinstance(value, ast.Call) and getattr(value.func, "id", "") in (
                "dict",
                "list",
                "set",
                "defaultdict",
                "OrderedDict",
                "DaemonExport",
            )
            if empty or constructed:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: mutable state at module level")
    assert offenders == []


def test_two_installs_in_the_same_second_get_two_logs(tmp_path: Path) -> None:
    host = Host(root=tmp_path)
    first, first_path = open_log(host)
    second, second_path = open_log(host)
    assert first is not None and second is not None
    first.close()
    second.close()
    assert first_path != second_path
    assert sorted([first_path, second_path]) == [first_path, second_path]  # names sort in run order


@pytest.mark.parametrize(
    ("text", "size"),
    [("4G", FAT32_MAX_FILE), ("4GB", 4 * 10**9), ("4GiB", 4 * 2**30), ("4.7G", 4_700_000_000), ("700MiB", 700 << 20)],
)
def test_one_unit_system_for_every_size_option(text: str, size: int) -> None:
    assert parse_part_size(text) == size
    if text != "4G":  # the FAT32 spelling means something only for a part size
        assert parse_size(text, "--media", "128G") == size


def test_a_size_without_a_unit_is_refused_with_the_option_named() -> None:
    with pytest.raises(BadInputError) as exc:
        parse_size("128", "--media", "128G")
    assert "--media" in exc.value.message and "--media 128G" in (exc.value.hint or "")


def test_human_sizes_say_their_binary_unit() -> None:
    assert human_size(512) == "512 B"
    assert human_size(3 << 30) == "3.0 GiB"
