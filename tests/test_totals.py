"""One count, one size: collect, verify (text and --json), README.txt and plan give a bundle's files and bytes
from the same function, airgap itself (`tool/` and `install.sh`) counted and sized.

The numbers are also checked against the bundle on disk, counted here independently: every file but the
lock, README.txt and SHA256SUMS, a file stored in numbered parts counted once; and SHA256SUMS holds one line
per counted file (a part each for a split file) plus the lock's and README.txt's. tool/ is built from a
local wheelhouse of stand-ins (tests/test_collect_phases.py), so nothing here needs the network."""

from __future__ import annotations

import json
import re
from pathlib import Path

from airgap.bundle_layout import LOCK_NAME, README_NAME, SUMS_NAME
from airgap.localserver import LocalHTTPServer
from tests.conftest import payload, run_airgap, sha
from tests.test_collect_phases import wheelhouse  # noqa: F401 (a fixture: tool/ built offline)
from tests.test_pypi import HERE_PY

BIG = payload(3 << 20, 5)  # stored as three parts with --max-file-size 1MiB
SMALL = b"#!/bin/sh\necho small\n"
OTHER = b"#!/bin/sh\necho other\n"


def write_manifest(tmp: Path, url: str, other: bytes = OTHER) -> Path:
    path = tmp / "manifest.yaml"
    path.write_text(
        "name: totals\n"
        f'target: {{os: debian-12, arch: amd64, python: "{HERE_PY}"}}\n'
        "files:\n"
        f"  - {{url: https://example.com/big.bin, sha256: {sha(BIG)}}}\n"
        f"  - {{url: https://example.com/small.sh, sha256: {sha(SMALL)}}}\n"
        f"  - {{url: https://example.com/other.sh, sha256: {sha(other)}}}\n"
        f"mirrors:\n  https://example.com: {url}\n"
    )
    return path


def on_disk(bundle: Path) -> tuple[int, int, int]:
    """(files, bytes, tool files) of the bundle as it lies, counted without airgap: a split file's parts
    are one file; the lock, README.txt, SHA256SUMS and its signature are not counted."""
    names: set[str] = set()
    size = 0
    for p in bundle.rglob("*"):
        rel = p.relative_to(bundle).as_posix()
        if not p.is_file() or rel in (LOCK_NAME, README_NAME, SUMS_NAME, SUMS_NAME + ".sig"):
            continue
        names.add(re.sub(r"\.\d{3}$", "", rel))
        size += p.stat().st_size
    tool = sum(1 for n in names if n.startswith("tool/") or n == "install.sh")
    return len(names), size, tool


def sentence(text: str, before: str, after: str) -> str:
    """The totals sentence in an output line that starts with `before` and goes on with `after`."""
    line = next(line for line in text.splitlines() if line.startswith(before))
    return line[len(before) : line.index(after, len(before))]


def test_collect_verify_readme_and_plan_count_the_same_tool_included(wheelhouse: Path, tmp_path: Path) -> None:  # noqa: F811
    www = tmp_path / "www"
    www.mkdir()
    for name, data in (("big.bin", BIG), ("small.sh", SMALL), ("other.sh", OTHER)):
        (www / name).write_bytes(data)
    bundle = tmp_path / "bundle"
    with LocalHTTPServer(www) as server:
        manifest = write_manifest(tmp_path, server.url)
        plan = run_airgap("plan", str(manifest))
        plan_json = run_airgap("plan", str(manifest), "--json")
        r = run_airgap("collect", str(manifest), "-o", str(bundle), "--tool", "--max-file-size", "1MiB", timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        again = run_airgap(
            "collect", str(manifest), "-o", str(bundle), "--tool", "--max-file-size", "1MiB", "--json", timeout=600
        )
        assert again.returncode == 0, again.stdout + again.stderr

    files, size, tool = on_disk(bundle)
    assert tool >= 3  # airgap's wheel, pip's and install.sh at least: tool/ is really there
    totals = json.loads(again.stdout)["totals"]
    assert (totals["all_files"], totals["all_bytes"], totals["tool_files"]) == (files, size, tool)
    assert json.loads(again.stdout)["total_bytes"] == size
    assert (totals["files"], totals["split_files"], totals["parts"]) == (3, 1, 3)
    sums_lines = (bundle / SUMS_NAME).read_text().count("\n")
    assert totals["sums_lines"] == sums_lines == files - 1 + 3 + 2  # big.bin by its 3 parts; the lock, README
    text = totals["text"]
    assert f"in {files} files (of which airgap itself, in tool/ and install.sh: {tool} files," in text
    assert "1 of them stored as 3 numbered parts" in text

    # The same sentence from collect's text summary, README.txt and verify (text and --json).
    assert sentence(r.stdout, f"bundle {bundle}: ", "; transferred ") == text
    assert f"In all: {text}.\n" in (bundle / README_NAME).read_text()
    v = run_airgap("verify", str(bundle))
    assert v.returncode == 0, v.stdout + v.stderr
    assert sentence(v.stdout, "bundle: ", "; SHA256SUMS lists these") == text
    vj = json.loads(run_airgap("verify", str(bundle), "--json").stdout)
    assert vj["ok"] and vj["totals"] == totals
    assert vj["files"] == sums_lines  # what verify hashed: every line of SHA256SUMS

    # plan, before collect: the layers' files and bytes are the same; airgap itself is said to be unknown.
    assert plan.returncode == 0, plan.stdout + plan.stderr
    pj = json.loads(plan_json.stdout)["totals"]
    assert (pj["files"], pj["bytes"], pj["tool_files"], pj["tool_bytes"]) == (3, totals["bytes"], None, None)
    line = next(x for x in plan.stdout.splitlines() if x.startswith("total: "))
    assert line == f"total: {pj['text']}"
    assert "in 3 files, plus airgap itself in tool/ and install.sh, whose files and size are known only" in line


def test_a_delta_counts_what_it_carries_and_names_what_its_base_holds(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    for name, data in (("big.bin", BIG), ("small.sh", SMALL), ("other.sh", OTHER)):
        (www / name).write_bytes(data)
    changed = b"#!/bin/sh\necho changed\n"
    with LocalHTTPServer(www) as server:
        full = tmp_path / "full"
        r = run_airgap("collect", str(write_manifest(tmp_path, server.url)), "-o", str(full))
        assert r.returncode == 0, r.stdout + r.stderr
        (www / "other.sh").write_bytes(changed)
        delta = tmp_path / "delta"
        manifest = write_manifest(tmp_path, server.url, changed)
        r = run_airgap("collect", str(manifest), "-o", str(delta), "--since", str(full), "--json")
        assert r.returncode == 0, r.stdout + r.stderr
    totals = json.loads(r.stdout)["totals"]
    files, size, tool = on_disk(delta)
    assert (totals["all_files"], totals["all_bytes"], tool) == (files, size, 0) == (1, len(changed), 0)
    assert (totals["in_base_files"], totals["in_base_bytes"]) == (2, len(BIG) + len(SMALL))
    assert totals["sums_lines"] == (delta / SUMS_NAME).read_text().count("\n")
    text = totals["text"]
    assert text.startswith(f"{len(changed)} B in 1 file (without airgap itself: collected with --no-tool); ")
    assert "2 more files, 3.0 MiB, not carried: the base bundle 'totals' holds them" in text
    assert f"In all: {text}.\n" in (delta / README_NAME).read_text()
    v = run_airgap("verify", str(delta))
    assert v.returncode == 0 and sentence(v.stdout, "bundle: ", "; SHA256SUMS lists these") == text
