"""The compatibility matrix, the manifest checks, and what plan/collect do with them.

The classic mismatches (docs/compatibility.md) are planted one at a time into the reference manifest; each
must be caught with the minimum or the fix in its text, before anything is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airgap import manifest as manifest_mod
from airgap.artifact_meta import ModelFileMeta, ModelInfo
from airgap.compat import tables
from airgap.compat.rules import ERROR, OK, WARNING, Finding, check_lock, check_manifest, enforce, resolved_versions
from airgap.errors import BadInputError, ManifestError
from airgap.layers import plan_artifacts
from airgap.lock import Lock
from airgap.units import FAT32_MAX_FILE, parse_size
from tests.conftest import SCRIPT, Upstream, run_airgap, sha

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "manifests" / "llm-ubuntu2204-cuda124.yaml"
REFERENCE_TEXT = REFERENCE.read_text()


def planted(old: str, new: str) -> str:
    assert old in REFERENCE_TEXT, old
    return REFERENCE_TEXT.replace(old, new)


def findings_of(text: str, artifacts: list[Any] | None = None) -> list[Finding]:
    return check_manifest(manifest_mod.loads(text, source="manifest.yaml"), artifacts)


def only(findings: list[Finding], code: str, level: str | None = None) -> Finding:
    hits = [f for f in findings if f.code == code and (level is None or f.level == level)]
    assert len(hits) == 1, [f.text() for f in findings]
    return hits[0]


def levels(findings: list[Finding], level: str) -> list[Finding]:
    return [f for f in findings if f.level == level]


# --- the tables ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cuda", "driver"),
    [
        ("11.8.0", "520.61.05"),
        ("12.0.0", "525.60.13"),
        ("12.1.1", "530.30.02"),
        ("12.2.0", "535.54.03"),
        ("12.2.1", "535.86.09"),
        ("12.3.0", "545.23.06"),
        ("12.4.0", "550.54.14"),
        ("12.4.1", "550.54.15"),
        ("12.5.0", "555.42.02"),
        ("12.6.0", "560.28.03"),
        ("12.6.3", "560.35.05"),
        ("12.8.0", "570.26"),
        ("12.8.1", "570.124.06"),
        ("12.9.0", "575.51.03"),
        ("13.0.0", "580.65.06"),
        ("13.0.2", "580.95.05"),
    ],
)
def test_cuda_minimum_driver_table(cuda: str, driver: str) -> None:
    found = tables.cuda_min_driver(cuda)
    assert found is not None and found.driver == driver and found.exact


def test_cuda_minimum_for_an_unlisted_patch_takes_the_release_below() -> None:
    found = tables.cuda_min_driver("12.4.7")
    assert found is not None and (found.cuda, found.driver, found.exact) == ("12.4.1", "550.54.15", False)
    assert tables.cuda_min_driver("12.7.0") is None  # there is no CUDA 12.7


def test_driver_max_cuda_is_what_nvidia_smi_reports() -> None:
    assert tables.driver_max_cuda("535.104.05") == "12.2.2"
    assert tables.driver_max_cuda("550.90.07") == "12.4.1"
    assert tables.driver_max_cuda("570.26") == "12.8.0"
    assert tables.driver_max_cuda("400.1") is None


def test_runfile_driver_table_is_unchanged() -> None:
    assert tables.cuda_runfile_driver("12.4.0") == "550.54.14"
    assert tables.cuda_runfile_driver("12.2.1") == "535.86.10"
    assert tables.cuda_runfile_driver("11.7.1") is None


@pytest.mark.parametrize(
    ("torch", "builds", "pypi"),
    [
        ("2.1.2", ("cu118", "cu121"), "cu121"),
        ("2.3.1", ("cu118", "cu121"), "cu121"),
        ("2.4.0", ("cu118", "cu121", "cu124"), "cu121"),
        ("2.5.1", ("cu118", "cu121", "cu124"), "cu124"),
        ("2.6.0", ("cu118", "cu124", "cu126"), "cu124"),
        ("2.7.1", ("cu118", "cu126", "cu128"), "cu126"),
        ("2.8.0", ("cu126", "cu128", "cu129"), "cu128"),
        ("2.9.0", ("cu126", "cu128", "cu130"), "cu128"),
    ],
)
def test_torch_builds(torch: str, builds: tuple[str, ...], pypi: str) -> None:
    release = tables.torch_release(torch)
    assert release is not None and release.builds == builds and release.pypi == pypi


def test_torch_arches_and_binary_compatibility() -> None:
    arches = tables.torch_arches("2.5.1", "cu124")
    assert arches is not None
    assert tables.arches_cover(arches, "8.9")  # sm_86 kernels run on an RTX 4090
    assert not tables.arches_cover(arches, "12.0")  # but nothing runs on Blackwell
    assert not tables.arches_cover(tables.torch_arches("2.7.1", "cu128") or (), "7.0")  # V100 left out
    assert tables.arches_cover(tables.torch_arches("2.8.0", "cu128") or (), "7.0")  # and brought back
    assert tables.torch_versions_with_build("cu124") == ["2.4", "2.5", "2.6"]


@pytest.mark.parametrize(
    ("vllm", "torch"),
    [
        ("0.5.4", "2.4.0"),
        ("0.6.3", "2.4.0"),
        ("0.6.3.post1", "2.4.0"),
        ("0.6.4.post1", "2.5.1"),
        ("0.7.3", "2.5.1"),
        ("0.8.5.post1", "2.6.0"),
        ("0.9.1", "2.7.0"),
        ("0.10.0", "2.7.1"),
        ("0.10.1.1", "2.7.1"),
        ("0.11.0", "2.8.0"),
        ("0.11.1", "2.9.0"),
        ("0.12.0", None),
        ("0.4.0", None),
    ],
)
def test_vllm_torch_pins(vllm: str, torch: str | None) -> None:
    assert tables.vllm_torch_pin(vllm) == torch


@pytest.mark.parametrize(
    ("written", "name", "cc", "vram"),
    [
        ("RTX 4090", "RTX 4090", "8.9", 24),
        ("rtx4090", "RTX 4090", "8.9", 24),
        ("GeForce RTX 4090", "RTX 4090", "8.9", 24),
        ("H100", "H100 SXM", "9.0", 80),
        ("H100 SXM", "H100 SXM", "9.0", 80),
        ("A100 80GB", "A100 80GB", "8.0", 80),
        ("a100-80g", "A100 80GB", "8.0", 80),
        ("L40S", "L40S", "8.9", 48),
        ("RTX 6000 Ada", "RTX 6000 Ada", "8.9", 48),
        ("A6000 Ada", "RTX 6000 Ada", "8.9", 48),
        ("RTX 4080 SUPER", "RTX 4080 SUPER", "8.9", 16),
        ("RTX 3090", "RTX 3090", "8.6", 24),
        ("A5000", "RTX A5000", "8.6", 24),
        ("H200", "H200", "9.0", 141),
        ("L4", "L4", "8.9", 24),
        ("NVIDIA T4", "T4", "7.5", 16),
        ("Tesla V100", "V100", "7.0", 16),
    ],
)
def test_gpu_names_as_people_write_them(written: str, name: str, cc: str, vram: int) -> None:
    gpu = tables.find_gpu(written)
    assert gpu is not None and (gpu.name, gpu.cc, gpu.vram_gib) == (name, cc, vram)


def test_gpu_counts_and_unknown_models() -> None:
    assert tables.parse_gpu_entry("2x RTX 4090") == (2, "RTX 4090")
    assert tables.parse_gpu_entry("H100 x8") == (8, "H100")
    assert tables.parse_gpu_entry("RTX 4090") == (1, "RTX 4090")  # the X in RTX is not a count
    assert tables.find_gpu("RTX 4070") is None
    assert "RTX 4090" in tables.gpu_suggestions("RTX 4070")
    assert tables.find_gpu("RTX 4090").nvlink == "no"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("cuda", "cc", "ok"),
    [
        ("11.7.1", "8.9", False),
        ("11.8.0", "8.9", True),
        ("11.8.0", "9.0", True),
        ("12.0.0", "3.7", False),
        ("11.8.0", "3.7", True),
        ("13.0.0", "7.0", False),
        ("13.0.0", "7.5", True),
        ("12.4.0", "12.0", False),
        ("12.8.0", "12.0", True),
    ],
)
def test_cuda_compute_capability_support(cuda: str, cc: str, ok: bool) -> None:
    assert tables.cuda_supports_cc(cuda, cc) is ok


def test_model_size_from_name_and_memory_rule() -> None:
    assert tables.params_from_name("meta-llama/Llama-3.1-8B-Instruct") == 8
    assert tables.params_from_name("meta-llama/Llama-3.1-405B") == 405
    assert tables.params_from_name("Qwen/Qwen2.5-7b-instruct") == 7
    assert tables.params_from_name("facebook/opt-350m") == pytest.approx(0.35)
    assert tables.params_from_name("deepseek-ai/DeepSeek-V3") is None
    assert tables.dtype_from_name("Qwen/Qwen2.5-72B-Instruct-AWQ") == "int4"
    lo, hi = tables.model_memory_gib(70, "fp16")  # 70B FP16 ~140 GB of weights, +20-30%
    assert 150 < lo < hi < 175


# --- check_manifest -----------------------------------------------------------------------------------------


def test_reference_manifest_passes_every_check() -> None:
    findings = check_manifest(manifest_mod.load(REFERENCE))
    assert not levels(findings, ERROR) and not levels(findings, WARNING), [f.text() for f in findings]
    codes = {f.code for f in findings}
    assert {"driver-cuda", "torch-cuda", "vllm-torch", "gpu", "model-vram", "image-cuda"} <= codes
    assert all(f.where.startswith("llm-ubuntu2204-cuda124.yaml:") for f in findings)
    resolved = resolved_versions(manifest_mod.load(REFERENCE))
    assert resolved["torch"].startswith("2.5.1+cu124")
    assert resolved["cuda"].startswith("12.4.0 (runfile bundles driver 550.54.14")


@pytest.mark.parametrize("path", sorted((ROOT / "manifests").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_manifests_have_no_errors(path: Path) -> None:
    assert not levels(check_manifest(manifest_mod.load(path)), ERROR)


def test_field_cuda_124_with_driver_535() -> None:
    f = only(findings_of(planted("driver: {version: 550.90.07}", "driver: {version: 535.104.05}")), "driver-cuda")
    assert f.level == ERROR and f.field_path == "driver.version"
    assert "550.54.14, the minimum for CUDA 12.4.0" in f.message
    assert "runfile bundles driver 550.54.14" in f.message
    assert "set driver.version to 550.54.14 or newer" in f.fix and "CUDA 12.2.2" in f.fix
    assert f.where == "manifest.yaml:11"


def test_field_torch_cu121_on_cuda_124() -> None:
    f = only(findings_of(planted("whl/cu124", "whl/cu121")), "torch-cuda")
    assert f.level == ERROR and f.field_path == "python.index_urls[0]"
    assert "built for CUDA 12.1" in f.message and "CUDA 12.4.0" in f.message
    assert "https://download.pytorch.org/whl/cu124" in f.fix


def test_field_torch_cu121_written_in_the_pin() -> None:
    text = planted("torch==2.5.1", "torch==2.5.1+cu121").replace(
        "      index_urls: [https://download.pytorch.org/whl/cu124, https://pypi.org/simple]\n", ""
    )
    f = only(findings_of(text), "torch-cuda")
    assert f.level == ERROR and "+cu121" in f.message


def test_field_rtx_4090_with_cuda_117_pinned_by_url() -> None:
    text = planted(
        "cuda: {version: 12.4.0}", "cuda: {version: 11.7.1, url: 'https://example.com/cuda_11.7.1_515.65.01_linux.run'}"
    )
    m = manifest_mod.loads(text, source="manifest.yaml")
    assert plan_artifacts(m, {"images", "python", "models", "cudnn", "container_toolkit"})  # the url is enough
    findings = check_manifest(m)
    f = only(findings, "gpu-cuda")
    assert f.level == ERROR and f.field_path == "target.gpus[0]"
    assert "sm_89" in f.message and "CUDA 11.8 or newer" in f.message
    assert "set cuda.version to 11.8.0 or newer" in f.fix
    assert only(findings, "vllm-cuda").level == ERROR  # vLLM's wheels are CUDA 12 builds


def test_field_70b_fp16_on_one_24gb_card() -> None:
    f = only(findings_of(planted("Llama-3.1-8B-Instruct", "Llama-3.1-70B-Instruct")), "model-vram")
    assert f.level == WARNING and "more than the 24 GiB of 1× RTX 4090" in f.message
    assert "estimated from the name" in f.message
    assert "INT8 ~78-85 GiB (does not fit)" in f.fix and "INT4 (AWQ/GPTQ) ~39-51 GiB (does not fit)" in f.fix


def test_70b_on_two_80gb_cards_fits_and_int4_is_offered_when_it_fits() -> None:
    text = planted("Llama-3.1-8B-Instruct", "Llama-3.1-70B-Instruct").replace("[RTX 4090]", "[2x H200]")
    assert only(findings_of(text), "model-vram").level == OK
    # The often-quoted "two H100 -> 70B FP16" is within the +20-30% rule only at the low end: tight.
    text = planted("Llama-3.1-8B-Instruct", "Llama-3.1-70B-Instruct").replace("[RTX 4090]", "[2x H100]")
    f = only(findings_of(text), "model-vram")
    assert f.level == WARNING and "tight for the 160 GiB of 2× H100 SXM" in f.message
    text = planted("Llama-3.1-8B-Instruct", "Llama-3.1-70B-Instruct").replace("[RTX 4090]", "[A100 80GB]")
    f = only(findings_of(text), "model-vram")
    assert f.level == WARNING and "INT4 (AWQ/GPTQ) ~39-51 GiB (fits)" in f.fix


def test_several_cards_without_nvlink_are_flagged_when_the_model_spans_them() -> None:
    text = planted("Llama-3.1-8B-Instruct", "Qwen2.5-14B-Instruct").replace("[RTX 4090]", "[2x RTX 4090]")
    findings = findings_of(text)
    assert only(findings, "model-vram").level == OK
    assert "no NVLink" in only(findings, "gpu-nvlink").message


def test_model_metadata_from_the_models_layer_wins_over_the_name() -> None:
    @dataclass
    class Art:
        layer: str
        meta: dict[str, Any] = field(default_factory=dict)
        path: str = "layers/09-models/acme--house-model/config.json"

    text = planted("meta-llama/Llama-3.1-8B-Instruct", "acme/house-model")
    assert only(findings_of(text), "model-size").level == WARNING  # nothing in the name to go by
    # What the models layer records on a model's first file (airgap/artifact_meta.py).
    info = ModelInfo(
        repo="acme/house-model",
        revision="main",
        commit="a" * 40,
        params=70_553_706_496,
        dtype="bfloat16",
        files=3,
        size=1,
    )
    meta = ModelFileMeta(repo=info.repo, revision="main", commit=info.commit, path_in_repo="config.json", model=info)
    arts = [Art("models", meta.to_meta())]
    f = only(findings_of(text, arts), "model-vram")
    assert f.level == WARNING and "~71B params at BF16" in f.message and "estimated" not in f.message
    # With the exact weight size read from the safetensors headers, that is what counts (AWQ/GPTQ pack int4
    # into I32 tensors, so a parameter count from tensor shapes would mislead).
    arts[0].meta["model"].update(params=8_030_261_248, dtype="BF16", weight_bytes=16_060_522_496)
    f = only(findings_of(text, arts), "model-vram")
    assert f.level == OK and "~8B params, 15.0 GiB of weights (hub metadata) needs about 18-19 GiB" in f.message


def test_vllm_pin_conflicting_with_the_requested_torch() -> None:
    f = only(findings_of(planted("vllm==0.6.4.post1", "vllm==0.6.3")), "vllm-torch")
    assert f.level == ERROR and "pins torch==2.4.0" in f.message and "'torch==2.5.1'" in f.message
    assert "torch==2.4.0" in f.fix and "vllm>=0.6.4,<0.8.0" in f.fix


def test_torch_without_a_build_for_the_cuda() -> None:
    f = only(
        findings_of(planted("torch==2.5.1", "torch==2.7.0").replace("vllm==0.6.4.post1", "vllm==0.9.0")), "torch-build"
    )
    assert f.level == ERROR and "torch 2.7.0 has no cu124 build" in f.message
    assert "torch 2.4, 2.5, 2.6 ship cu124" in f.fix


def test_cpu_index_is_an_error() -> None:
    f = only(findings_of(planted("whl/cu124", "whl/cpu")), "torch-build")
    assert "torch.cuda.is_available() would be False" in f.message and "whl/cu124" in f.fix


def test_torch_from_pypi_is_its_default_build() -> None:
    text = planted("https://download.pytorch.org/whl/cu124, ", "").replace("torch==2.5.1", "torch==2.4.1")
    text = text.replace("vllm==0.6.4.post1", "vllm==0.6.3")
    f = only(findings_of(text), "torch-cuda")
    assert f.level == ERROR and "PyPI's torch 2.4 is the cu121 build" in f.message


def test_gpu_architecture_the_torch_build_lacks() -> None:
    text = (
        planted("[RTX 4090]", "[V100 32GB]")
        .replace("torch==2.5.1", "torch==2.7.1")
        .replace("whl/cu124", "whl/cu128")
        .replace("cuda: {version: 12.4.0}", "cuda: {version: 12.8.0}")
        .replace("550.90.07", "570.124.06")
        .replace("vllm==0.6.4.post1", "vllm==0.10.0")
        .replace("nvidia/cuda:12.4.0", "nvidia/cuda:12.8.0")
    )
    f = only(findings_of(text), "gpu-torch")
    assert f.level == ERROR and "no kernels for the V100 32GB (sm_70)" in f.message
    assert "no kernel image is available" in f.message and "+cu126" in f.fix


def test_blackwell_needs_cuda_128() -> None:
    f = only(findings_of(planted("[RTX 4090]", "[RTX 5090]")), "gpu-cuda")
    assert "sm_120" in f.message and "set cuda.version to 12.8.0 or newer (with driver >= 570.26)" in f.fix


def test_cuda_13_dropped_volta() -> None:
    text = planted("[RTX 4090]", "[V100]").replace("cuda: {version: 12.4.0}", "cuda: {version: 13.0.0}")
    f = only(findings_of(text), "gpu-cuda")
    assert "no longer supports" in f.message and "12.9" in f.fix


def test_unknown_gpu_names_the_known_ones() -> None:
    f = only(findings_of(planted("[RTX 4090]", "[RTX 4070]")), "gpu-unknown")
    assert f.level == ERROR and "did you mean 'RTX 4090'" in f.fix
    for name in ("H100 SXM", "A100 80GB", "L40S", "RTX 6000 Ada", "RTX 4080 SUPER", "H200", "L4", "T4", "V100"):
        assert name in f.fix


def test_cuda_image_newer_than_the_driver() -> None:
    f = only(findings_of(planted("nvidia/cuda:12.4.0-base", "nvidia/cuda:12.6.2-base")), "image-cuda")
    assert f.level == ERROR and "unsatisfied condition: cuda>=12.6" in f.message


def test_python_version_without_torch_wheels() -> None:
    f = only(findings_of(planted('python: "3.10"', 'python: "3.8"')), "torch-python")
    assert "CPython 3.9 to 3.13" in f.message and f.field_path == "python.requirements[0]"


def test_enforce_raises_one_line_per_mismatch_with_file_and_line() -> None:
    text = planted("550.90.07", "535.104.05").replace("whl/cu124", "whl/cu121")
    m = manifest_mod.loads(text, source="manifest.yaml")
    with pytest.raises(ManifestError) as exc:
        enforce(m, check_manifest(m))
    problems = exc.value.problems
    assert exc.value.exit_code == 2
    # The lines where the reference manifest has them (comments above may move them).
    lines = text.splitlines()
    driver = 1 + next(i for i, line in enumerate(lines) if line.startswith("driver:"))
    index = 1 + next(i for i, line in enumerate(lines) if "index_urls:" in line)
    assert any(p.startswith(f"manifest.yaml:{driver}: driver.version: driver 535.104.05 is older") for p in problems)
    assert any(p.startswith(f"manifest.yaml:{index}: python.index_urls[0]: torch 2.5.1+cu121") for p in problems)
    assert all("--allow-mismatch" in p for p in problems)


def test_allow_mismatch_turns_errors_into_recorded_warnings() -> None:
    m = manifest_mod.loads(planted("550.90.07", "535.104.05"), source="manifest.yaml")
    findings = enforce(m, check_manifest(m), allow_mismatch=True)
    accepted = [f for f in findings if f.allowed]
    assert accepted and all(f.level == WARNING for f in accepted)
    assert not levels(findings, ERROR)


# --- plan ----------------------------------------------------------------------------------------------------


def write(tmp: Path, text: str, name: str = "manifest.yaml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def test_plan_prints_versions_and_verdict_without_network() -> None:
    r = run_airgap("plan", str(REFERENCE), "--no-head")
    assert r.returncode == 0, r.stderr
    assert "Resolved versions" in r.stdout and "2.5.1+cu124" in r.stdout
    assert "ok     driver.version: driver 550.90.07 >= 550.54.14, the minimum for CUDA 12.4.0" in r.stdout
    assert "cuda_12.4.0_550.54.14_linux.run" in r.stdout


def test_plan_json_carries_findings_and_resolved_versions() -> None:
    r = run_airgap("plan", str(REFERENCE), "--no-head", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is True
    assert data["resolved"]["vllm"] == "0.6.4.post1 (pins torch 2.5.1)"
    assert {f["code"] for f in data["findings"]} >= {"driver-cuda", "torch-cuda"}
    # --no-head resolves no wheels: their CUDA builds are said to be unchecked, not passed
    assert all(f["level"] == "ok" for f in data["findings"] if f["code"] != "wheels")
    (wheels,) = [f for f in data["findings"] if f["code"] == "wheels"]
    assert wheels["level"] == "skipped" and "--no-head" in wheels["message"]
    assert data["findings"][0]["where"].startswith("llm-ubuntu2204-cuda124.yaml:")


def test_plan_with_a_mismatch_shows_the_verdict_then_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, planted("550.90.07", "535.104.05"))
    r = run_airgap("plan", str(path), "--no-head")
    assert r.returncode == 2
    assert "ERROR  driver.version: driver 535.104.05 is older than 550.54.14" in r.stdout
    assert "fix: set driver.version to 550.54.14 or newer" in r.stdout
    assert "manifest.yaml:11: driver.version: driver 535.104.05 is older" in r.stderr
    assert "nothing was downloaded" in r.stderr and "Traceback" not in r.stderr
    r = run_airgap("plan", str(path), "--no-head", "--allow-mismatch", "--json")
    assert r.returncode == 0, r.stderr
    accepted = [f for f in json.loads(r.stdout)["findings"] if f["allowed"]]
    assert {f["code"] for f in accepted} == {"driver-cuda", "image-cuda"}


def test_plan_cuda_117_without_a_runfile_still_reports_the_mismatch(tmp_path: Path) -> None:
    path = write(tmp_path, planted("cuda: {version: 12.4.0}", "cuda: {version: 11.7.1}"))
    r = run_airgap("plan", str(path), "--no-head")
    assert r.returncode == 2
    assert "target.gpus[0]: the RTX 4090 is sm_89, which CUDA 11.7.1 does not know" in r.stderr
    assert "cuda.version: CUDA 11.7.1 is not in airgap's table" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("128G", 128 * 10**9),
        ("4.7G", 4_700_000_000),
        ("64GB", 64 * 10**9),
        ("500GiB", 500 * 2**30),
        ("2T", 2 * 10**12),
        ("700 MB", 700 * 10**6),
    ],
)
def test_parse_media_size(text: str, size: int) -> None:
    assert parse_size(text, "--media", "128G") == size


@pytest.mark.parametrize("text", ["128", "12.5", "lots", "5 parsecs", ""])
def test_parse_media_size_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(BadInputError):
        parse_size(text, "--media", "128G")


def test_plan_media_option_is_checked_before_anything(tmp_path: Path) -> None:
    r = run_airgap("plan", str(REFERENCE), "--no-head", "--media", "128")
    assert r.returncode == 2 and "needs a unit" in r.stderr and "--media 128G" in r.stderr
    r = run_airgap("plan", str(REFERENCE), "--no-head", "--fat32")
    assert r.returncode == 2 and "need --media" in r.stderr


BIG = "example/tools/model.safetensors"


@pytest.fixture
def big_file_manifest(upstream: Upstream, tmp_path: Path) -> Path:
    # A sparse file: HEAD reports 5 GiB, the disk holds nothing. plan never reads it.
    big = upstream.root / BIG
    big.parent.mkdir(parents=True, exist_ok=True)
    with open(big, "wb") as f:
        f.truncate(5 * 2**30)
    files = (
        f"\n  - url: https://example.com/tools/check.sh\n    sha256: {sha(upstream.files[SCRIPT])}"
        f'\n  - url: https://example.com/tools/model.safetensors\n    sha256: "{"ab" * 32}"'
    )
    return upstream.manifest(tmp_path, files=files)


def plan_json(manifest: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    r = run_airgap("plan", str(manifest), "--json", *args)
    return r.returncode, json.loads(r.stdout), r.stderr


def test_plan_media_fits_and_does_not_fit(big_file_manifest: Path) -> None:
    rc, data, _ = plan_json(big_file_manifest, "--media", "1T")
    assert rc == 0 and data["media"]["fits"] is True and data["media"]["fat32"] is False
    total = data["total_bytes"]
    assert total > 5 * 2**30
    rc, data, err = plan_json(big_file_manifest, "--media", "5G")
    assert rc == 1 and data["media"]["fits"] is False and data["ok"] is False
    assert "does NOT fit" in err
    r = run_airgap("plan", str(big_file_manifest), "--media", "5G")
    assert r.returncode == 1 and "does NOT fit" in r.stdout


def test_plan_fat32_sized_media_warns_and_fat32_flag_fails(big_file_manifest: Path) -> None:
    rc, data, _ = plan_json(big_file_manifest, "--media", "32G")
    assert rc == 0 and data["media"]["fat32"] is True and not data["media"]["fat32_strict"]
    assert data["media"]["too_big"] == ["layers/10-files/model.safetensors"]
    assert [r["too_big_for_fat32"] for r in data["rows"] if r["path"].endswith("model.safetensors")] == [True]
    r = run_airgap("plan", str(big_file_manifest), "--media", "32G")
    assert r.returncode == 0
    assert "model.safetensors (>4 GiB)" in r.stdout and "cannot be stored if the drive is FAT32" in r.stdout
    rc, data, err = plan_json(big_file_manifest, "--media", "256G", "--fat32")
    assert rc == 1 and data["media"]["fat32_strict"] and "over 4 GiB cannot be stored" in err
    rc, data, _ = plan_json(big_file_manifest, "--media", "32G", "--no-fat32")
    assert rc == 0 and data["media"]["fat32"] is False and data["media"]["too_big"] == []


def test_fat32_limit_is_one_byte_under_4_gib() -> None:
    assert FAT32_MAX_FILE == 4 * 2**30 - 1


# --- collect ---------------------------------------------------------------------------------------------------


def blackwell_manifest(up: Upstream, tmp: Path) -> Path:
    path = up.manifest(tmp)
    text = path.read_text().replace('python: "3.10"}', 'python: "3.10", gpus: [RTX 5090]}')
    assert "RTX 5090" in text
    path.write_text(text)
    return path


def test_collect_refuses_a_mismatch_before_downloading(upstream: Upstream, tmp_path: Path) -> None:
    m = blackwell_manifest(upstream, tmp_path)
    r = run_airgap("collect", str(m), "-o", str(tmp_path / "bundle"))
    assert r.returncode == 2
    assert "manifest.yaml:2: target.gpus[0]: the RTX 5090 is sm_120, which CUDA 12.4.0 does not know" in r.stderr
    assert "--allow-mismatch" in r.stderr and "Traceback" not in r.stderr
    assert not upstream.server.requests  # not even a HEAD
    assert not (tmp_path / "bundle").exists()


def test_collect_allow_mismatch_records_it_in_the_lock(upstream: Upstream, tmp_path: Path) -> None:
    m = blackwell_manifest(upstream, tmp_path)
    r = run_airgap("collect", str(m), "-o", str(tmp_path / "bundle"), "--allow-mismatch")
    assert r.returncode == 0, r.stderr
    assert "accepted with --allow-mismatch: manifest.yaml:2: target.gpus[0]" in r.stderr
    lock = Lock.read(tmp_path / "bundle")
    (accepted,) = lock.allowed_mismatches
    assert accepted["code"] == "gpu-cuda" and accepted["field"] == "target.gpus[0]" and accepted["allowed"]
    assert "sm_120" in accepted["message"]
    raw = json.loads((tmp_path / "bundle" / "airgap.lock.json").read_text())
    assert raw["allowed_mismatches"] == lock.allowed_mismatches
    # install's preflight runs the same checks on the lock: what was accepted stays a warning
    (again,) = [f for f in check_lock(lock) if f.code == "gpu-cuda"]
    assert again.level == WARNING and again.allowed
    assert run_airgap("verify", str(tmp_path / "bundle")).returncode == 0


def test_collect_of_a_right_manifest_records_no_mismatch(upstream: Upstream, tmp_path: Path) -> None:
    r = run_airgap("collect", str(upstream.manifest(tmp_path)), "-o", str(tmp_path / "bundle"))
    assert r.returncode == 0, r.stderr
    assert Lock.read(tmp_path / "bundle").allowed_mismatches == []


def test_a_manifest_with_nothing_to_check_has_no_findings() -> None:
    assert check_manifest(manifest_mod.loads("name: t\ntarget: {os: ubuntu-22.04}\n")) == []
