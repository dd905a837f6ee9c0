"""Manifest validation: every mistake named with file, line, field and fix; the examples stay valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from airgap import manifest as manifest_mod
from airgap.errors import ManifestError
from airgap.layers import plan_artifacts

ROOT = Path(__file__).resolve().parent.parent
GOOD = """\
name: t
target: {os: ubuntu-22.04, arch: amd64, python: "3.10"}
driver: {version: 550.90.07}
cuda: {version: 12.4.0}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ManifestError) as exc:
        manifest_mod.loads(text, source="m.yaml")
    return exc.value.problems


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "airgap", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("path", sorted((ROOT / "manifests").glob("*.yaml")), ids=lambda p: p.name)
def test_example_manifests_are_valid(path: Path) -> None:
    m = manifest_mod.load(path)
    assert m.target.os == "ubuntu-22.04"
    assert plan_artifacts(m, {"images", "python", "models", "cudnn", "container_toolkit"})


def test_reference_stack_resolves_to_the_published_urls() -> None:
    m = manifest_mod.load(ROOT / "manifests/llm-ubuntu2204-cuda124.yaml")
    arts = {a.layer: a for a in plan_artifacts(m) if not a.name.startswith("docker-compose")}
    assert arts["driver"].urls == [
        "https://us.download.nvidia.com/XFree86/Linux-x86_64/550.90.07/NVIDIA-Linux-x86_64-550.90.07.run",
        "https://us.download.nvidia.com/tesla/550.90.07/NVIDIA-Linux-x86_64-550.90.07.run",
    ]
    assert arts["cuda"].urls == [
        "https://developer.download.nvidia.com/compute/cuda/12.4.0/local_installers/cuda_12.4.0_550.54.14_linux.run"
    ]
    assert arts["cuda"].published is not None
    assert arts["cuda"].published.list_url.endswith("/12.4.0/docs/sidebar/md5sum.txt")
    assert arts["docker"].urls == ["https://download.docker.com/linux/static/stable/x86_64/docker-25.0.3.tgz"]
    assert arts["docker"].path == "layers/05-docker/docker-25.0.3.tgz"


def test_arm64_target_picks_arm_artifacts() -> None:
    m = manifest_mod.loads(GOOD.replace("amd64", "arm64") + "docker: {version: 25.0.3}\n")
    names = {a.layer: a.name for a in plan_artifacts(m)}
    assert names == {
        "driver": "NVIDIA-Linux-aarch64-550.90.07.run",
        "cuda": "cuda_12.4.0_550.54.14_linux_sbsa.run",
        "docker": "docker-25.0.3.tgz",
    }


def test_malformed_yaml_names_line_and_column() -> None:
    (p,) = problems("name: t\ntarget:\n  os: ubuntu-22.04\n\tarch: amd64\n")
    assert p.startswith("m.yaml:4:1: not valid YAML")
    assert "indentation" in p


def test_unknown_key_gets_did_you_mean_with_its_line() -> None:
    (p,) = problems(GOOD + "mirors: {}\n")
    assert p == "m.yaml:5: mirors: unknown key 'mirors'; did you mean 'mirrors'?"


def test_unknown_nested_key_lists_known_keys_when_nothing_is_close() -> None:
    (p,) = problems(GOOD.replace("driver: {version: 550.90.07}", "driver: {version: 550.90.07, zzz: 1}"))
    assert p.startswith("m.yaml:3: driver.zzz: unknown key 'zzz'; known keys here: url, sha256, version")


def test_wrong_type_names_field_and_value() -> None:
    (p,) = problems(GOOD + "images: {a: b}\n")
    assert p.startswith("m.yaml:5: images: ")
    assert "list" in p


def test_unquoted_python_version_explains_the_yaml_trap() -> None:
    (p,) = problems(GOOD.replace('python: "3.10"', "python: 3.10"))
    assert p == 'm.yaml:2: target.python: YAML read this version as the number 3.1; quote it, e.g. "3.10"'


def test_bad_versions_and_digest_are_each_reported_in_line_order() -> None:
    text = "name: t\ntarget: {os: ubuntu-22.04}\ndriver: {version: '550'}\ncuda:\n  version: '12.4'\n  sha256: abc123\n"
    ps = problems(text)
    assert [p.split(":")[1] for p in ps] == ["3", "5", "6"]
    assert "expected a version like 550.90.07" in ps[0]
    assert "expected a version like 12.4.0" in ps[1]
    assert "exactly 64 hex characters" in ps[2]


def test_missing_required_field() -> None:
    (p,) = problems("name: t\n")
    assert p == "m.yaml:1: target: required field is missing; add `target:` here"


def test_duplicate_key_is_refused() -> None:
    (p,) = problems(GOOD + "name: other\n")
    assert p == "m.yaml:5: name: key given twice (first on line 1); keep one"


def test_file_url_without_a_name_asks_for_one() -> None:
    (p,) = problems(GOOD + "files:\n  - url: https://example.com/dir/\n")
    assert p.startswith("m.yaml:6: files[0].name: not given, and the name the URL ends with, '', cannot be")
    assert "name:" in p


def test_unknown_cuda_version_is_a_manifest_error_with_fix() -> None:
    m = manifest_mod.loads(GOOD.replace("12.4.0", "12.7.0"), source="m.yaml")
    with pytest.raises(ManifestError) as exc:
        plan_artifacts(m)
    (p,) = exc.value.problems
    assert p.startswith("m.yaml:4: cuda.version: CUDA 12.7.0 is not in airgap's table")
    assert "cuda.url" in p


def test_unknown_cuda_version_with_pinned_url_is_fine() -> None:
    m = manifest_mod.loads(GOOD.replace("{version: 12.4.0}", "{version: 12.7.0, url: 'https://h/cuda_12.7.run'}"))
    (cuda,) = [a for a in plan_artifacts(m) if a.layer == "cuda"]
    assert cuda.urls == ["https://h/cuda_12.7.run"]


def test_two_files_with_one_name_clash() -> None:
    m = manifest_mod.loads(GOOD + "files:\n  - url: https://a/x.sh\n  - url: https://b/x.sh\n", source="m.yaml")
    with pytest.raises(ManifestError, match=r"m.yaml:7: files\[1\].url: two entries would both be stored"):
        plan_artifacts(m)


def test_cli_reports_every_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "manifest.yaml"
    bad.write_text("name: t\ntarget: {os: ubuntu-22.04, pyton: '3.10'}\ncuda: {version: '12'}\n")
    r = run_cli("plan", str(bad), "--no-head")
    assert r.returncode == 2
    assert "manifest.yaml:2: target.pyton: unknown key 'pyton'; did you mean 'python'?" in r.stderr
    assert "manifest.yaml:3: cuda.version:" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_missing_manifest_file_exits_2(tmp_path: Path) -> None:
    r = run_cli("plan", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2
    assert "no such manifest file" in r.stderr
    assert "Traceback" not in r.stderr


def test_all_digit_sha256_read_as_a_number_asks_for_quotes() -> None:
    (p,) = problems(GOOD + f"docker: {{version: 25.0.3, sha256: {'1' * 64}}}\n")
    assert p == "m.yaml:5: docker.sha256: YAML read this digest as a number, not text; put it in quotes"


def test_compose_plugin_is_planned_with_its_published_checksums() -> None:
    m = manifest_mod.loads(GOOD + "docker: {version: 25.0.3, compose: v2.29.7}\n")
    (compose,) = [a for a in plan_artifacts(m) if a.name.startswith("docker-compose")]
    assert compose.urls == ["https://github.com/docker/compose/releases/download/v2.29.7/docker-compose-linux-x86_64"]
    assert compose.published is not None and compose.published.list_url.endswith("/v2.29.7/checksums.txt")
    assert compose.path == "layers/05-docker/docker-compose-linux-x86_64"
