"""Bounded input, and no name airgap cannot read back (invariants 7 and 4).

A manifest or lock author attacks with an alias bomb, a huge or deeply nested file, a file name holding a
line separator, a control character or a bidi override (directly, or percent-encoded at the end of a URL),
or a system directory as a model's `dest`. Each test performs the attack through the CLI and asserts that
airgap refuses it, quickly, with exit 2 and the field named, and that nothing was written.

(Lock.parse's depth limit at 100,000 levels, where the JSON decoder itself gives up, is in tests/test_lock.py.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import quote

import pytest

from airgap.lock import MAX_LOCK_BYTES, MAX_LOCK_DEPTH
from airgap.manifest import MAX_MANIFEST_BYTES, MAX_MANIFEST_DEPTH
from tests.conftest import SCRIPT, Upstream, make_bundle, run_airgap
from tests.test_install import prepare_root

HEAD = "name: t\ntarget: {os: ubuntu-22.04}\n"
# Well past where the bomb used to take minutes and gigabytes; a refusal takes about a second.
QUICK = 60


def plan(tmp_path: Path, text: str) -> tuple[int, str]:
    m = tmp_path / "manifest.yaml"
    m.write_text(text, encoding="utf-8")
    r = run_airgap("plan", "--no-head", str(m), timeout=QUICK)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    return r.returncode, r.stderr


# --- YAML aliases, size, nesting -----------------------------------------------------------------------


def billion_laughs() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    # Nine levels of nine aliases: 9**9 (387 million) strings once expanded.
    rc, err = plan(tmp_path, HEAD + billion_laughs())
    assert rc == 2, err
    assert "manifest.yaml:3: a: a YAML anchor (&a) is not accepted in a manifest" in err
    assert "manifest.yaml:4: b[0]: a YAML alias (*a) is not accepted in a manifest" in err
    assert "write the value out" in err
    assert "more anchors and aliases" in err  # summed up, not 90 lines


def test_an_alias_inside_a_field_is_refused_with_its_path(tmp_path: Path) -> None:
    text = HEAD + "files:\n  - &f {url: 'https://example.com/a.sh'}\n  - *f\n"
    rc, err = plan(tmp_path, text)
    assert rc == 2, err
    assert "manifest.yaml:4: files[0]: a YAML anchor (&f)" in err
    assert "manifest.yaml:5: files[1]: a YAML alias (*f)" in err


def test_a_merge_key_alias_is_refused(tmp_path: Path) -> None:
    text = "base: &base {os: ubuntu-22.04}\nname: t\ntarget:\n  <<: *base\n"
    rc, err = plan(tmp_path, text)
    assert rc == 2, err
    assert "manifest.yaml:4: target.<<: a YAML alias (*base)" in err


def test_an_oversized_manifest_is_refused_unread(tmp_path: Path) -> None:
    filler = "# " + "x" * 78 + "\n"
    text = HEAD + filler * (MAX_MANIFEST_BYTES // len(filler) + 1)
    rc, err = plan(tmp_path, text)
    assert rc == 2, err
    assert f"{tmp_path / 'manifest.yaml'}: larger than 1 MiB, the most a manifest may be" in err


def test_an_endless_manifest_is_refused_after_a_bounded_read(tmp_path: Path) -> None:
    r = run_airgap("plan", "--no-head", "/dev/zero", timeout=QUICK)
    assert r.returncode == 2, r.stderr
    assert "/dev/zero: larger than 1 MiB" in r.stderr


def test_deep_flow_nesting_is_refused_before_the_composer_recurses(tmp_path: Path) -> None:
    # 100,000 levels would overflow PyYAML's recursive composer; the refusal comes at MAX_MANIFEST_DEPTH.
    rc, err = plan(tmp_path, HEAD + "files: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert rc == 2, err
    assert (
        f"manifest.yaml:3: files{'[0]' * (MAX_MANIFEST_DEPTH - 1)}: nested more than {MAX_MANIFEST_DEPTH} levels deep"
        in err
    )


def test_deep_block_nesting_is_refused(tmp_path: Path) -> None:
    text = HEAD + "".join(f"{'  ' * i}k{i}:\n" for i in range(40)) + "  " * 40 + "v\n"
    rc, err = plan(tmp_path, text)
    assert rc == 2, err
    assert f"nested more than {MAX_MANIFEST_DEPTH} levels deep" in err


# --- names that would not read back ---------------------------------------------------------------------

# Each splits a line for Python (\x0c, \x1c, \x85, U+2028), hides the name's real order (U+202E), or
# drives the terminal that shows it (\x1b).
BAD_CHARS = {
    "line-separator": ("\u2028", "U+2028 (LINE SEPARATOR)"),
    "form-feed": ("\x0c", "U+000C"),
    "next-line": ("\x85", "U+0085"),
    "file-separator": ("\x1c", "U+001C"),
    "rtl-override": ("\u202e", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    "escape": ("\x1b", "U+001B"),
}


def yaml_quoted(text: str) -> str:
    """`text` as a YAML double-quoted scalar, every non-ASCII or control character escaped."""
    return '"' + "".join(c if " " <= c < "\x7f" and c not in '"\\' else f"\\u{ord(c):04x}" for c in text) + '"'


def collect(tmp_path: Path, text: str) -> tuple[int, str]:
    m = tmp_path / "manifest.yaml"
    m.write_text(text, encoding="utf-8")
    r = run_airgap("collect", str(m), "-o", str(tmp_path / "bundle"), timeout=QUICK)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    # Refused at the manifest: not one byte downloaded, no bundle begun.
    assert not (tmp_path / "bundle").exists()
    return r.returncode, r.stderr


@pytest.mark.parametrize("char", BAD_CHARS.values(), ids=list(BAD_CHARS))
def test_a_bad_character_in_a_file_name_is_refused(upstream: Upstream, tmp_path: Path, char: tuple[str, str]) -> None:
    bad, described = char
    name = f"check{bad}sh.txt"
    text = HEAD + f"files:\n  - url: {upstream.url}/{SCRIPT}\n    name: {yaml_quoted(name)}\n"
    rc, err = collect(tmp_path, text)
    assert rc == 2, err
    assert "manifest.yaml:5: files[0].name: " in err and described in err
    assert bad not in err  # shown escaped, never raw


@pytest.mark.parametrize("char", BAD_CHARS.values(), ids=list(BAD_CHARS))
def test_a_bad_character_percent_encoded_in_a_url_is_refused(
    upstream: Upstream, tmp_path: Path, char: tuple[str, str]
) -> None:
    bad, described = char
    # The upstream really serves the file under that name: only airgap's refusal stops it.
    served = f"example/tools/check{bad}sh.txt"
    (upstream.root / served).write_bytes(b"#!/bin/sh\n")
    text = HEAD + f"files:\n  - url: {upstream.url}/{quote(served)}\n"
    rc, err = collect(tmp_path, text)
    assert rc == 2, err
    assert "manifest.yaml:4: files[0].name: not given, and the name the URL ends with" in err
    assert described in err and "add `name: some-file.tar.gz`" in err
    assert bad not in err


@pytest.mark.parametrize(
    ("field", "line"),
    [("driver", "driver: {version: 550.90.07, url: URL}"), ("cuda", "cuda: {version: 12.4.0, url: URL}")],
)
def test_a_pinned_download_url_must_end_in_a_readable_name(
    upstream: Upstream, tmp_path: Path, field: str, line: str
) -> None:
    url = f"{upstream.url}/example/tools/{quote('installer' + chr(0x2028) + '.run')}"
    rc, err = collect(tmp_path, HEAD + line.replace("URL", url) + "\n")
    assert rc == 2, err
    assert f"manifest.yaml:3: {field}.url: the file name this URL ends with" in err
    assert "U+2028 (LINE SEPARATOR)" in err


@pytest.mark.parametrize("name", ["../evil.sh", "a/b.sh", "..", ".", "a\\\\b.sh"])
def test_a_file_name_with_a_path_in_it_is_refused(tmp_path: Path, name: str) -> None:
    rc, err = plan(tmp_path, HEAD + f'files:\n  - {{url: "https://example.com/x", name: "{name}"}}\n')
    assert rc == 2, err
    assert "manifest.yaml:4: files[0].name: " in err and "cannot be a file name in the bundle" in err


def test_a_bad_character_anywhere_in_a_manifest_is_refused(tmp_path: Path) -> None:
    text = HEAD + 'images: ["vllm/vllm-openai:v0.6.3\\e[2J"]\nmirrors: {"https://a.example\\u202e": "https://b"}\n'
    rc, err = plan(tmp_path, text)
    assert rc == 2, err
    assert "manifest.yaml:3: images[0]: 'vllm/vllm-openai:v0.6.3\\x1b[2J' holds the character U+001B" in err
    assert "manifest.yaml:4: mirrors.'https://a.example\\u202e': " in err and "U+202E" in err
    assert "\x1b" not in err and "\u202e" not in err


# --- install directories --------------------------------------------------------------------------------

SYSTEM_DESTS = ["/etc", "/usr/bin", "//etc", "/.", "/data/../etc", "/home", "/var", "/", "/boot/models", "data/m"]


@pytest.mark.parametrize("dest", SYSTEM_DESTS)
def test_a_model_dest_in_a_system_location_is_refused(tmp_path: Path, dest: str) -> None:
    text = HEAD + f"models:\n  - {{repo: mistralai/Mistral-7B-v0.3, dest: '{dest}'}}\n"
    rc, err = plan(tmp_path, text)
    assert rc == 2, err
    assert f"manifest.yaml:4: models[0].dest: {dest!r} cannot be the directory for mistralai/Mistral-7B-v0.3" in err
    assert "write it like /data/models/Mistral-7B-v0.3" in err


@pytest.mark.parametrize("field", ["hf_home", "dest"])
def test_a_bad_character_in_an_install_directory_is_refused(tmp_path: Path, field: str) -> None:
    text = HEAD + f'models:\n  - {{repo: a/b, {field}: "/data/m\\u2028x"}}\n'
    rc, err = plan(tmp_path, text)
    assert rc == 2, err
    assert f"models[0].{field}: " in err and "U+2028" in err


@pytest.mark.parametrize("hf_home", ["/usr/share/hf", "/root", "/etc/../var"])
def test_an_hf_home_in_a_system_location_is_refused(tmp_path: Path, hf_home: str) -> None:
    rc, err = plan(tmp_path, HEAD + f"models:\n  - {{repo: a/b, hf_home: '{hf_home}'}}\n")
    assert rc == 2, err
    assert f"manifest.yaml:4: models[0].hf_home: {hf_home!r} cannot be an install directory" in err


@pytest.mark.parametrize("venv", ["/usr", "/usr/local", "/opt", "/etc/venv"])
def test_a_venv_in_a_system_location_is_refused(tmp_path: Path, venv: str) -> None:
    rc, err = plan(tmp_path, HEAD + f"python: {{requirements: [six], venv: '{venv}'}}\n")
    assert rc == 2, err
    assert f"manifest.yaml:3: python.venv: {venv!r} cannot be an install directory" in err


def test_ordinary_install_directories_are_accepted(tmp_path: Path) -> None:
    text = HEAD + (
        "models:\n"
        "  - {repo: a/b, dest: /data/models, hf_home: /data/hf}\n"
        "  - {repo: a/c, dest: /opt/models/c/}\n"
        "  - {repo: a/d, dest: /srv/llm}\n"
    )
    rc, err = plan(tmp_path, text)
    assert rc == 0, err


# --- the lock -------------------------------------------------------------------------------------------


def reseal_lock(bundle: Path) -> None:
    """Rewrite the lock's line in SHA256SUMS, as whoever holds the drive can."""
    lock = bundle / "airgap.lock.json"
    h = hashlib.sha256()
    with open(lock, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    sums = bundle / "SHA256SUMS"
    lines = [
        f"{h.hexdigest()}  airgap.lock.json" if line.endswith("  airgap.lock.json") else line
        for line in sums.read_text().splitlines()
    ]
    sums.write_text("\n".join(lines) + "\n")


def lock_readers(bundle: Path, tmp_path: Path) -> list[tuple[str, ...]]:
    root = prepare_root(tmp_path / "root")
    return [
        ("install", str(bundle), "--root", str(root), "--dry-run"),
        ("smoke", "--bundle", str(bundle)),
    ]


def test_an_oversized_lock_is_refused_unread(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", {"layers/10-files/check.sh": b"#!/bin/sh\n"})
    # Sparse: the attack costs the attacker nothing on disk, and airgap reads only MAX_LOCK_BYTES + 1.
    with open(bundle / "airgap.lock.json", "r+b") as f:
        f.truncate(MAX_LOCK_BYTES + 1)
    reseal_lock(bundle)
    for args in lock_readers(bundle, tmp_path):
        r = run_airgap(*args, timeout=QUICK)
        assert r.returncode == 2, (args, r.stderr)
        assert "bytes is far larger than any lock airgap writes; not reading it" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_a_deeply_nested_lock_is_refused_before_it_is_typed(tmp_path: Path) -> None:
    # Deep enough to pass the JSON decoder and break pydantic's serialiser later; refused at MAX_LOCK_DEPTH.
    bundle = make_bundle(tmp_path / "b", {"layers/10-files/check.sh": b"#!/bin/sh\n"})
    path = bundle / "airgap.lock.json"
    raw = json.loads(path.read_text())
    raw["artifacts"][0]["meta"] = {"x": json.loads("[" * 500 + "]" * 500)}
    path.write_text(json.dumps(raw))
    reseal_lock(bundle)
    for args in lock_readers(bundle, tmp_path):
        r = run_airgap(*args, timeout=QUICK)
        assert r.returncode == 2, (args, r.stderr)
        assert f"damaged lock file: nested more than {MAX_LOCK_DEPTH} levels deep" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
