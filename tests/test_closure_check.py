"""The CUDA of the wheels pip resolved, not only of the requirements: a torch that `accelerate` pulls in is
checked like one asked for, at plan, collect and install's preflight.

The unit tests feed the rules the python layer's artifacts as it records them (WheelMeta with each wheel's
Requires-Dist, modelled on the real metadata of torch, cuda-toolkit and the nvidia-* wheels). The acceptance
tests run `airgap plan` against a local package index of real (tiny) wheels: accelerate pulling a CUDA 13
torch against driver 550 fails, naming the wheel and who pulled it in; a cu124 torch passes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airgap import manifest as manifest_mod
from airgap.artifact_meta import WheelMeta
from airgap.compat import tables
from airgap.compat.rules import ERROR, OK, SKIPPED, WARNING, Finding, check_lock, check_manifest, resolved_versions
from airgap.host import Host
from airgap.install_context import InstallContext
from airgap.lock import Lock, LockedArtifact
from airgap.preflight import check_compat
from airgap.verdict import Status
from tests.conftest import Upstream, run_airgap
from tests.test_pypi import IndexServer, bundled_pip_wheel, make_wheel, write_index

LINUX = 'platform_system == "Linux"'
LINUX_X86 = 'platform_system == "Linux" and platform_machine == "x86_64"'


@dataclass
class Art:
    """What the rules read of an Artifact (collect) or a LockedArtifact (install)."""

    layer: str
    meta: dict[str, Any] = field(default_factory=dict)
    path: str = "layers/08-python/wheel.whl"


def wheel(project: str, version: str, requires: tuple[str, ...] = (), requested: bool = False) -> Art:
    meta = WheelMeta(project=project, version=version, requested=requested, requires=list(requires))
    return Art("python", meta.to_meta())


ACCELERATE = wheel(
    "accelerate",
    "1.10.1",
    (
        "numpy<3.0.0,>=1.17",
        "packaging>=20.0",
        "psutil",
        "pyyaml",
        "torch>=2.0.0",
        "huggingface_hub>=0.21.0",
        "safetensors>=0.4.3",
        'deepspeed; extra == "deepspeed"',
    ),
    requested=True,
)
# torch from PyPI in the CUDA 13 era: the toolkit's libraries through NVIDIA's cuda-toolkit meta-package
# (its extras pull them in), cuDNN and NCCL still with a -cu13 suffix.
CUDA13_CLOSURE = [
    ACCELERATE,
    wheel(
        "torch",
        "2.14.1",
        (
            "filelock",
            "typing-extensions>=4.10.0",
            "sympy>=1.13.3",
            f"cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,nvjitlink,nvrtc,nvtx]==13.0.2; "
            f"{LINUX}",
            f"nvidia-cudnn-cu13==9.20.0.48; {LINUX}",
            f"nvidia-nccl-cu13==2.29.7; {LINUX}",
            f"triton==3.7.0; {LINUX}",
        ),
    ),
    wheel(
        "cuda-toolkit",
        "13.0.2",
        (
            'nvidia-cuda-runtime==13.0.96.*; extra == "cudart"',
            'nvidia-cublas==13.1.0.3.*; extra == "cublas"',
            'nvidia-cufft==12.0.0.61.*; extra == "cufft"',
            'nvidia-nvjitlink==13.0.88.*; extra == "nvjitlink"',
        ),
    ),
    wheel("nvidia-cuda-runtime", "13.0.96"),
    wheel("nvidia-cublas", "13.1.0.3"),
    wheel("nvidia-cufft", "12.0.0.61"),
    wheel("nvidia-nvjitlink", "13.0.88"),
    wheel("nvidia-cudnn-cu13", "9.20.0.48", ("nvidia-cublas",)),
    wheel("nvidia-nccl-cu13", "2.29.7"),
    wheel("triton", "3.7.0"),
    wheel("filelock", "3.20.0"),
    wheel("typing-extensions", "4.15.0"),
    wheel("sympy", "1.14.0"),
    wheel("pip", "25.2"),
]


def cu124_closure(torch_version: str = "2.5.1+cu124", requested_torch: bool = False) -> list[Art]:
    """torch 2.5.1's CUDA 12.4 wheels, as its metadata pins them."""
    return [
        ACCELERATE,
        wheel(
            "torch",
            torch_version,
            (
                "filelock",
                f"nvidia-cuda-runtime-cu12==12.4.127; {LINUX_X86}",
                f"nvidia-cudnn-cu12==9.1.0.70; {LINUX_X86}",
                f"nvidia-cublas-cu12==12.4.5.8; {LINUX_X86}",
                f"nvidia-nvjitlink-cu12==12.4.127; {LINUX_X86}",
                f"triton==3.1.0; {LINUX_X86} and python_version < '3.13'",
            ),
            requested=requested_torch,
        ),
        wheel("nvidia-cuda-runtime-cu12", "12.4.127"),
        wheel("nvidia-cudnn-cu12", "9.1.0.70", ("nvidia-cublas-cu12",)),
        wheel("nvidia-cublas-cu12", "12.4.5.8"),
        wheel("nvidia-nvjitlink-cu12", "12.4.127"),
        wheel("triton", "3.1.0", ("filelock",)),
        wheel("filelock", "3.20.0"),
        wheel("pip", "25.2"),
    ]


def manifest_text(
    requirements: str = "[accelerate]",
    driver: str | None = "550.90.07",
    cuda: str | None = "12.4.0",
    gpus: str = "[RTX 4090]",
    extra: str = "",
) -> str:
    lines = ["name: t", f'target: {{os: ubuntu-22.04, python: "3.10", gpus: {gpus}}}']
    if driver:
        lines.append(f"driver: {{version: {driver}}}")
    if cuda:
        lines.append(f"cuda: {{version: {cuda}}}")
    lines.append(f"python: {{requirements: {requirements}{extra}}}")
    return "\n".join(lines) + "\n"


def findings_of(text: str, artifacts: list[Art] | None) -> list[Finding]:
    return check_manifest(manifest_mod.loads(text, source="manifest.yaml"), artifacts)


def coded(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


def only(findings: list[Finding], code: str) -> Finding:
    hits = coded(findings, code)
    assert len(hits) == 1, [f.text() for f in findings]
    return hits[0]


# --- what a wheel's name and version say ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "version", "cuda"),
    [
        ("nvidia-cuda-runtime-cu12", "12.4.127", "12.4"),
        ("nvidia-cuda-runtime-cu11", "11.7.99", "11.7"),
        ("nvidia-nvjitlink-cu12", "12.6.85", "12.6"),
        ("nvidia-cuda-runtime", "13.0.96", "13.0"),  # CUDA 13 dropped the suffix of the toolkit's libraries
        ("nvidia-cuda-nvrtc", "13.0.88", "13.0"),
        ("cuda-toolkit", "13.0.2", "13.0"),
        ("nvidia-cudnn-cu12", "9.1.0.70", "12.x"),  # cuDNN numbers itself: only the suffix says the CUDA
        ("nvidia-cudnn-cu13", "9.20.0.48", "13.x"),
        ("nvidia-nccl-cu12", "2.21.5", "12.x"),
        ("nvidia-cublas-cu12", "12.4.5.8", "12.x"),
        ("torch", "2.5.1+cu124", "12.4"),
        ("torch", "2.9.1+cu130", "13.0"),
        ("torchvision", "0.20.1+cu118", "11.8"),
        ("flash-attn", "2.7.4.post1+cu12torch2.5cxx11abifalse", "12.x"),
        ("torch", "2.5.1", None),  # PyPI's torch: its nvidia-* wheels say it
        ("torch", "2.5.1+cpu", None),
        ("nvidia-cufft", "12.0.0.61", None),  # CUDA 13's cuFFT is 12.0: its version says nothing
        ("nvidia-cublas", "13.1.0.3", None),
        ("nvidia-ml-py", "12.560.30", None),  # NVML bindings, not a CUDA library
        ("numpy", "2.2.6", None),
    ],
)
def test_cuda_from_wheel_names_and_versions(name: str, version: str, cuda: str | None) -> None:
    need = tables.wheel_cuda(name, version)
    assert (need.label if need else None) == cuda


# --- the rules on a resolved closure --------------------------------------------------------------------


def test_a_torch_pulled_in_by_accelerate_is_checked_against_the_driver_and_cuda() -> None:
    """The issue: driver 550, CUDA 12.4, RTX 4090, requirements [accelerate]; pip brings torch 2.14.1 with
    CUDA 13 wheels, which need driver >= 580."""
    findings = findings_of(manifest_text(), CUDA13_CLOSURE)
    drv = only(findings, "wheel-driver")
    assert drv.level == ERROR and drv.field_path == "python.requirements[0]" and drv.where == "manifest.yaml:5"
    assert drv.message.startswith("torch 2.14.1 (pulled in by accelerate -> torch) is a CUDA 13.0 build")
    assert "nvidia-cuda-runtime 13.0.96" in drv.message
    assert "needs driver >= 580.65.06, and driver.version is 550.90.07 (CUDA up to 12.4)" in drv.message
    assert "torch==2.6.* to python.requirements" in drv.fix
    assert "https://download.pytorch.org/whl/cu124 to python.index_urls" in drv.fix
    assert "driver.version to 580.65.06 or newer" in drv.fix
    toolkit = only(findings, "wheel-cuda")
    assert toolkit.level == ERROR and "the manifest installs CUDA 12.4.0" in toolkit.message
    assert "whl/cu124" in toolkit.fix
    assert not coded(findings, "wheels")  # no "ok" for this torch
    resolved = resolved_versions(manifest_mod.loads(manifest_text()), CUDA13_CLOSURE)
    assert resolved["torch"] == "2.14.1: a CUDA 13.0 build, pulled in by accelerate -> torch"


def test_the_same_closure_on_a_driver_for_cuda_13_passes() -> None:
    findings = findings_of(manifest_text(driver="580.95.05", cuda="13.0.2"), CUDA13_CLOSURE)
    assert not [f for f in findings if f.level != OK], [f.text() for f in findings]
    ok = only(findings, "wheels")
    assert "driver 580.95.05 runs CUDA 13.0" in ok.message and "fits cuda.version 13.0.2" in ok.message
    assert "CUDA 13.0 supports the RTX 4090" in ok.message


def test_a_cu124_torch_pulled_in_passes_on_driver_550_and_cuda_124() -> None:
    findings = findings_of(manifest_text(), cu124_closure())
    assert not [f for f in findings if f.level != OK], [f.text() for f in findings]
    ok = only(findings, "wheels")
    assert ok.message.startswith("torch 2.5.1+cu124 (pulled in by accelerate -> torch) is a CUDA 12.4 build (+cu124)")
    assert "driver 550.90.07 runs CUDA 12.4" in ok.message and "has kernels for the RTX 4090" in ok.message


def test_pypi_torch_without_a_local_label_gets_its_cuda_from_its_nvidia_wheels() -> None:
    findings = findings_of(manifest_text(cuda="12.6.3", driver="560.35.05"), cu124_closure("2.5.1"))
    f = only(findings, "wheel-cuda")
    assert "torch 2.5.1 (pulled in by accelerate -> torch) is a CUDA 12.4 build (nvidia-cuda-runtime-cu12 12.4.127" in (
        f.message
    )
    assert "torch must be built for the same CUDA as the toolkit" in f.message
    assert "whl/cu126" in f.fix


def test_a_newer_cuda_minor_than_the_driver_runs_but_is_warned_about() -> None:
    closure = cu124_closure("2.7.1")
    closure[2] = wheel("nvidia-cuda-runtime-cu12", "12.6.77")
    f = only(findings_of(manifest_text(cuda=None), closure), "wheel-driver")
    assert f.level == WARNING and "minor-version compatibility" in f.message and "PTX" in f.message
    assert "set driver.version to 560.28.03 or newer" in f.fix


def test_a_requested_torch_that_resolves_as_predicted_is_not_judged_twice() -> None:
    text = manifest_text(
        requirements="[torch==2.5.1, accelerate]", extra=", index_urls: [https://download.pytorch.org/whl/cu124]"
    )
    findings = findings_of(text, cu124_closure(requested_torch=True))
    assert only(findings, "torch-cuda").level == OK
    ok = only(findings, "wheels")
    assert ok.message.startswith("the resolved torch is the build judged above: torch 2.5.1+cu124 (requested")
    assert ok.field_path == "python.requirements[0]"


def test_cuda_13_wheels_on_a_volta_card() -> None:
    findings = findings_of(manifest_text(driver="580.65.06", cuda=None, gpus="[V100]"), CUDA13_CLOSURE)
    f = only(findings, "wheel-gpu")
    assert f.level == ERROR and "CUDA 13.0 does not support the V100 (sm_70; CUDA 9.0 to 12.9 do)" in f.message
    assert f.fix == "pin torch==2.9.* from https://download.pytorch.org/whl/cu128"


def test_a_torch_build_without_kernels_for_the_gpu() -> None:
    findings = findings_of(manifest_text(driver="570.124.06", cuda=None, gpus="[RTX 5090]"), cu124_closure())
    f = only(findings, "wheel-gpu")
    assert "no kernels for the RTX 5090 (sm_120)" in f.message and "no kernel image is available" in f.message
    assert "whl/cu130" in f.fix


def test_a_cpu_torch_in_a_gpu_stack() -> None:
    closure = [ACCELERATE, wheel("torch", "2.5.1+cpu", ("filelock",)), wheel("filelock", "3.20.0")]
    f = only(findings_of(manifest_text(), closure), "wheel-build")
    assert f.level == ERROR and "is a cpu build" in f.message and "whl/cu124" in f.fix


def test_a_closure_without_cuda_wheels_says_so() -> None:
    closure = [wheel("requests", "2.32.3", ("idna<4,>=2.5",), requested=True), wheel("idna", "3.10")]
    f = only(findings_of(manifest_text(requirements="[requests]"), closure), "wheels")
    assert f.level == OK and f.message.startswith("none of the 2 resolved wheels needs CUDA")


def test_a_lock_that_predates_requires_still_names_the_requirements() -> None:
    closure = [Art(a.layer, {k: v for k, v in a.meta.items() if k != "requires"}) for a in CUDA13_CLOSURE]
    f = only(findings_of(manifest_text(), closure), "wheel-driver")
    assert "torch 2.14.1 (a dependency of accelerate (this lock does not record which one pulled it in))" in f.message


def test_no_head_and_skipped_python_are_said_not_passed() -> None:
    unresolved = [Art("python", {"unresolved": "pip resolves the wheels for the target at collect time"})]
    f = only(findings_of(manifest_text(), unresolved), "wheels")
    assert f.level == SKIPPED and "--no-head" in f.message and f.fix
    f = only(findings_of(manifest_text(), [Art("files", {})]), "wheels")
    assert f.level == SKIPPED and "--skip python" in f.message
    assert not coded(findings_of(manifest_text(), None), "wheels")  # the early check, before resolution


# --- install's preflight, on the lock -------------------------------------------------------------------


def lock_of(text: str, arts: list[Art]) -> Lock:
    m = manifest_mod.loads(text)
    locked = [
        LockedArtifact(
            layer=a.layer,
            name=f"w{i}.whl",
            path=f"layers/08-python/w{i}.whl",
            size=1,
            sha256="0" * 64,
            url="https://pypi.example/w.whl",
            meta=a.meta,
        )
        for i, a in enumerate(arts)
    ]
    return Lock(name="t", target={"os": "ubuntu-22.04"}, manifest=m.model_dump(mode="json"), artifacts=locked)


def test_preflight_checks_the_wheels_in_the_lock(tmp_path: Path) -> None:
    lock = lock_of(manifest_text(), CUDA13_CLOSURE)
    checks = check_compat(InstallContext(Host(root=tmp_path), tmp_path, lock), [])
    fail = next(c for c in checks if c.name == "compat:wheel-driver")
    assert fail.status is Status.FAIL and "torch 2.14.1 (pulled in by accelerate -> torch)" in fail.message
    (again,) = [f for f in check_lock(lock) if f.code == "wheel-driver"]
    assert again.level == ERROR


def test_preflight_names_only_what_it_checked(tmp_path: Path) -> None:
    lock = lock_of(manifest_text(), cu124_closure())
    (ok,) = check_compat(InstallContext(Host(root=tmp_path), tmp_path, lock), [])
    assert ok.status is Status.PASS
    assert ok.message == "these versions fit together: driver and CUDA, the Python wheels' CUDA builds, GPUs"
    lock = lock_of("name: t\ntarget: {os: ubuntu-22.04}\ndriver: {version: 550.90.07}\ncuda: {version: 12.4.0}\n", [])
    (ok,) = check_compat(InstallContext(Host(root=tmp_path), tmp_path, lock), [])
    assert ok.message == "these versions fit together: driver and CUDA"
    lock = lock_of("name: t\ntarget: {os: ubuntu-22.04}\n", [])  # a bundle of plain files
    (skip,) = check_compat(InstallContext(Host(root=tmp_path), tmp_path, lock), [])
    assert skip.status is Status.SKIP and skip.message.startswith("nothing to check") and "torch" not in skip.message


# --- `airgap plan` against a local index of real wheels -------------------------------------------------


@pytest.fixture(scope="module")
def indexes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexServer]:
    """Two package indexes: /cu13 where accelerate pulls a CUDA 13 torch (as PyPI does today), /cu124 where
    it pulls a torch 2.5.1+cu124 with its CUDA 12.4 wheels."""
    pip_whl = bundled_pip_wheel()
    if pip_whl is None:
        pytest.skip("this Python has no ensurepip wheel of pip to put in the local index")
    base = tmp_path_factory.mktemp("cudaindex")
    build = base / "build"
    build.mkdir()
    accelerate = make_wheel(build, "accelerate", "1.10.1", requires=("torch>=2.0.0", "filelock"))
    filelock = make_wheel(build, "filelock", "3.20.0")
    cu13 = build / "cu13"
    cu13.mkdir()
    write_index(
        base / "www" / "cu13",
        [
            accelerate,
            filelock,
            pip_whl,
            make_wheel(
                cu13,
                "torch",
                "2.14.1",
                requires=(f"nvidia-cuda-runtime==13.0.96; {LINUX}", f"nvidia-cudnn-cu13==9.20.0.48; {LINUX}"),
            ),
            make_wheel(cu13, "nvidia-cuda-runtime", "13.0.96", module="nvidia_cuda_runtime_13"),
            make_wheel(cu13, "nvidia-cudnn-cu13", "9.20.0.48"),
        ],
    )
    cu124 = build / "cu124"
    cu124.mkdir()
    write_index(
        base / "www" / "cu124",
        [
            accelerate,
            filelock,
            pip_whl,
            make_wheel(
                cu124,
                "torch",
                "2.5.1+cu124",
                requires=(f"nvidia-cuda-runtime-cu12==12.4.127; {LINUX}", f"nvidia-cudnn-cu12==9.1.0.70; {LINUX}"),
            ),
            make_wheel(cu124, "nvidia-cuda-runtime-cu12", "12.4.127"),
            make_wheel(cu124, "nvidia-cudnn-cu12", "9.1.0.70"),
        ],
    )
    with IndexServer(base / "www") as server:
        yield server


def stack_manifest(up: Upstream, tmp: Path, index: IndexServer, which: str) -> Path:
    """The issue's stack: driver 550.90.07, CUDA 12.4.0, an RTX 4090, `python: {requirements: [accelerate]}`."""
    path = up.manifest(
        tmp,
        extra=f"  https://pypi.example: {index.url}/{which}\n",
        docker="",
        files="",
        python="{requirements: [accelerate], index_urls: [https://pypi.example/simple]}",
    )
    text = path.read_text().replace('python: "3.10"}', 'python: "3.10", gpus: [RTX 4090]}')
    assert "RTX 4090" in text
    path.write_text(text)
    return path


def test_plan_fails_when_a_dependency_pulls_a_cuda_13_torch(
    upstream: Upstream, indexes: IndexServer, tmp_path: Path
) -> None:
    path = stack_manifest(upstream, tmp_path, indexes, "cu13")
    r = run_airgap("plan", str(path), timeout=300)
    # Like every compatibility error: the verdict on stdout, one line per mismatch on stderr, exit 2.
    assert r.returncode == 2, r.stdout + r.stderr
    assert "ERROR  python.requirements[0]: torch 2.14.1 (pulled in by accelerate -> torch) is a CUDA 13.0 build" in (
        r.stdout
    )
    assert "nvidia-cuda-runtime 13.0.96" in r.stdout and "needs driver >= 580.65.06" in r.stdout
    assert "fix: pin torch to a build for CUDA 12.4" in r.stdout
    assert "manifest.yaml:5: python.requirements[0]: torch 2.14.1 (pulled in by accelerate -> torch)" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_airgap("plan", str(path), "--json", "--allow-mismatch", timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert {f["code"] for f in data["findings"] if f["allowed"]} == {"wheel-driver", "wheel-cuda"}
    assert data["resolved"]["torch"] == "2.14.1: a CUDA 13.0 build, pulled in by accelerate -> torch"


def test_plan_passes_a_cu124_torch_on_driver_550(upstream: Upstream, indexes: IndexServer, tmp_path: Path) -> None:
    path = stack_manifest(upstream, tmp_path, indexes, "cu124")
    r = run_airgap("plan", str(path), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok     python.requirements[0]: torch 2.5.1+cu124 (pulled in by accelerate -> torch) is a CUDA 12.4" in (
        r.stdout
    )
    assert "nothing to check" not in r.stdout
    # The index links `torch-2.5.1%2Bcu124-...whl`: stored under its real name, which pip finds offline.
    assert "python  torch-2.5.1+cu124-py3-none-any.whl" in r.stdout


def test_collect_records_who_pulled_what_and_install_rechecks_it(
    upstream: Upstream, indexes: IndexServer, tmp_path: Path
) -> None:
    path = stack_manifest(upstream, tmp_path, indexes, "cu13")
    bundle = tmp_path / "bundle"
    r = run_airgap("collect", str(path), "-o", str(bundle), timeout=300)
    assert r.returncode == 2 and "torch 2.14.1 (pulled in by accelerate -> torch)" in r.stderr
    assert not bundle.exists()
    r = run_airgap("collect", str(path), "-o", str(bundle), "--allow-mismatch", timeout=300)
    assert r.returncode == 0, r.stderr
    lock = Lock.read(bundle)
    torch = next(a for a in lock.artifacts if a.meta.get("project") == "torch")
    assert torch.meta["requires"] == [
        f"nvidia-cuda-runtime==13.0.96; {LINUX}",
        f"nvidia-cudnn-cu13==9.20.0.48; {LINUX}",
    ]
    assert {a["code"] for a in lock.allowed_mismatches} == {"wheel-driver", "wheel-cuda"}
    again = [f for f in check_lock(lock) if f.code.startswith("wheel-")]
    assert again and all(f.level == WARNING and f.allowed for f in again)


def test_plan_of_a_python_only_manifest_has_something_to_check(tmp_path: Path) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text('name: t\ntarget: {os: ubuntu-22.04, python: "3.10"}\npython: {requirements: [accelerate]}\n')
    r = run_airgap("plan", str(path), "--no-head")
    assert r.returncode == 0, r.stderr
    assert "nothing to check" not in r.stdout
    assert "skip   python.requirements: pip resolves the wheels at collect time" in r.stdout
    assert "fix: run plan without --no-head" in r.stdout
