"""Version facts about NVIDIA's stack, kept as readable tables in one place with their sources.

Everything here is data plus small lookups; the rules that combine them (and the messages) live in
`airgap/compat/rules.py`. Each table names where it comes from; docs/compatibility.md repeats the sources and
says what was checked. Where a figure often quoted in practice disagrees, the table follows the primary
source and the doc says so.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

# CUDA toolkit release -> the driver bundled in its runfile, which is part of the runfile's name
# (cuda_<ver>_<driver>_linux.run). Source: the download links NVIDIA publishes per release, as collected
# in Jimver/cuda-toolkit src/links/linux-links.ts.
CUDA_RUNFILE_DRIVER: dict[str, str] = {
    "11.8.0": "520.61.05",
    "12.0.0": "525.60.13",
    "12.0.1": "525.85.12",
    "12.1.0": "530.30.02",
    "12.1.1": "530.30.02",
    "12.2.0": "535.54.03",
    "12.2.1": "535.86.10",
    "12.2.2": "535.104.05",
    "12.3.0": "545.23.06",
    "12.3.1": "545.23.08",
    "12.3.2": "545.23.08",
    "12.4.0": "550.54.14",
    "12.4.1": "550.54.15",
    "12.5.0": "555.42.02",
    "12.5.1": "555.42.06",
    "12.6.0": "560.28.03",
    "12.6.1": "560.35.03",
    "12.6.2": "560.35.03",
    "12.6.3": "560.35.05",
    "12.8.0": "570.86.10",
}


def cuda_runfile_driver(cuda_version: str) -> str | None:
    """The driver version inside CUDA's runfile name, or None for a release not in the table."""
    return CUDA_RUNFILE_DRIVER.get(cuda_version)


# Runfile name (driver NVIDIA-Linux-x86_64-<ver>.run, CUDA cuda_<ver>_<driver>_linux.run) -> its size in
# bytes, for `plan` to estimate what it could not HEAD (--no-head, an unreachable host). Only sizes read
# from a source go here, each with that source on its line: an invented number would make `--media` say
# "fits" on a guess. None is sourced yet (NVIDIA's download pages round to 0.1 GB, its md5sum.txt lists no
# sizes), so every runfile stays "size unknown" without a HEAD.
RUNFILE_SIZES: Mapping[str, int] = MappingProxyType({})  # read-only: filled by editing, never at run time


def runfile_size(file_name: str) -> int | None:
    """A runfile's size from RUNFILE_SIZES (an estimate for `plan`), or None when no source gives it."""
    return RUNFILE_SIZES.get(file_name)


# --- CUDA toolkit -> minimum Linux x86_64 driver --------------------------------------------------------
# Source: NVIDIA CUDA Toolkit release notes, table 3 "CUDA Toolkit and Corresponding Driver Versions"
# (docs.nvidia.com/cuda/cuda-toolkit-release-notes, 13.1 edition), "Toolkit Driver Version" column.
# X.Y.0 is the GA release, X.Y.N its Update N. 12.3.2 has no row of its own in table 3; its runfile bundles
# 545.23.08, the same as 12.3 Update 1. The often-quoted "12.2 >= 535.86" is 12.2 Update 1's minimum;
# 12.2 GA needs only 535.54.03.
CUDA_MIN_DRIVER: dict[str, str] = {
    "11.0.2": "450.51.05",
    "11.0.3": "450.51.06",
    "11.1.0": "455.23",
    "11.1.1": "455.32",
    "11.2.0": "460.27.03",
    "11.2.1": "460.32.03",
    "11.2.2": "460.32.03",
    "11.3.0": "465.19.01",
    "11.3.1": "465.19.01",
    "11.4.0": "470.42.01",
    "11.4.1": "470.57.02",
    "11.4.2": "470.57.02",
    "11.4.3": "470.82.01",
    "11.4.4": "470.82.01",
    "11.5.0": "495.29.05",
    "11.5.1": "495.29.05",
    "11.5.2": "495.29.05",
    "11.6.0": "510.39.01",
    "11.6.1": "510.47.03",
    "11.6.2": "510.47.03",
    "11.7.0": "515.43.04",
    "11.7.1": "515.48.07",
    "11.8.0": "520.61.05",
    "12.0.0": "525.60.13",
    "12.0.1": "525.85.12",
    "12.1.0": "530.30.02",
    "12.1.1": "530.30.02",
    "12.2.0": "535.54.03",
    "12.2.1": "535.86.09",
    "12.2.2": "535.104.05",
    "12.3.0": "545.23.06",
    "12.3.1": "545.23.08",
    "12.3.2": "545.23.08",
    "12.4.0": "550.54.14",
    "12.4.1": "550.54.15",
    "12.5.0": "555.42.02",
    "12.5.1": "555.42.06",
    "12.6.0": "560.28.03",
    "12.6.1": "560.35.03",
    "12.6.2": "560.35.03",
    "12.6.3": "560.35.05",
    "12.8.0": "570.26",
    "12.8.1": "570.124.06",
    "12.9.0": "575.51.03",
    "12.9.1": "575.57.08",
    "13.0.0": "580.65.06",
    "13.0.1": "580.82.07",
    "13.0.2": "580.95.05",
}

# Minor-version compatibility: software built with any CUDA X.y runs (without PTX JIT of newer code) on a
# driver at least this new. Source: the same release notes, "CUDA minor version compatibility" (table 2),
# and NVIDIA's data-center driver support matrix (R580 supports CUDA 13.x through minor compatibility).
CUDA_MINOR_COMPAT_DRIVER: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}


def version_tuple(version: str) -> tuple[int, ...]:
    """'550.54.14' -> (550, 54, 14); '570.26' -> (570, 26, 0). Non-numeric parts end the tuple."""
    parts: list[int] = []
    for piece in version.split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)


def cuda_minor(version: str) -> str:
    """'12.4.1' -> '12.4'."""
    return ".".join(version.split(".")[:2])


@dataclass(frozen=True)
class DriverMinimum:
    cuda: str  # the release the minimum belongs to (X.Y.Z, from the table)
    driver: str  # the minimum driver
    exact: bool  # False when the asked-for release is not in the table and a neighbour's row was used


def cuda_min_driver(cuda_version: str) -> DriverMinimum | None:
    """The minimum Linux driver for a CUDA release; a patch release not in the table takes the newest row
    of the same X.Y below it (an update never needs an older driver than the release before it)."""
    if cuda_version in CUDA_MIN_DRIVER:
        return DriverMinimum(cuda_version, CUDA_MIN_DRIVER[cuda_version], True)
    want = version_tuple(cuda_version)
    same_minor = [v for v in CUDA_MIN_DRIVER if cuda_minor(v) == cuda_minor(cuda_version)]
    below = [v for v in same_minor if version_tuple(v) <= want]
    if not below:
        return None
    best = max(below, key=version_tuple)
    return DriverMinimum(best, CUDA_MIN_DRIVER[best], False)


def driver_max_cuda(driver: str) -> str | None:
    """The newest CUDA release (X.Y.Z) whose minimum this driver meets: what `nvidia-smi` reports as
    "CUDA Version" (the driver's maximum, not the installed toolkit)."""
    have = version_tuple(driver)
    ok = [c for c, d in CUDA_MIN_DRIVER.items() if version_tuple(d) <= have]
    return max(ok, key=version_tuple) if ok else None


# --- compute capability <-> CUDA toolkit -----------------------------------------------------------------
# Which CUDA releases can build for (and ship libraries for) a compute capability: (first, last) CUDA X.Y,
# last None = still supported. Sources: NVIDIA forum answer by R. Crovella ("earliest CUDA that supported
# cc8.0 is 11.0, cc8.6 11.1, cc8.9 or cc9.0 11.8"); CUDA 12.0 release notes (sm_35/sm_37 dropped); CUDA 12.8
# release notes (Blackwell sm_100/sm_120 added); CUDA 13.0 release notes, "Deprecated Architectures"
# (Maxwell, Pascal, Volta: offline compilation and library support removed).
CC_CUDA_RANGE: dict[str, tuple[str, str | None]] = {
    "3.5": ("6.0", "11.8"),
    "3.7": ("6.5", "11.8"),
    "5.0": ("6.0", "12.9"),
    "5.2": ("6.5", "12.9"),
    "6.0": ("8.0", "12.9"),
    "6.1": ("8.0", "12.9"),
    "7.0": ("9.0", "12.9"),
    "7.5": ("10.0", None),
    "8.0": ("11.0", None),
    "8.6": ("11.1", None),
    "8.9": ("11.8", None),
    "9.0": ("11.8", None),
    "10.0": ("12.8", None),
    "12.0": ("12.8", None),
}


def cuda_supports_cc(cuda_version: str, cc: str) -> bool | None:
    """Whether a CUDA release supports a compute capability; None for a capability not in the table."""
    span = CC_CUDA_RANGE.get(cc)
    if span is None:
        return None
    have = version_tuple(cuda_minor(cuda_version))
    first, last = span
    return version_tuple(first) <= have and (last is None or have <= version_tuple(last))


# --- PyTorch ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchRelease:
    builds: tuple[str, ...]  # CUDA wheels on download.pytorch.org/whl/cuXYZ
    pypi: str  # the CUDA build of the plain `torch` wheel on PyPI (Linux x86_64)
    python: tuple[str, str]  # oldest and newest CPython with wheels


# Builds and Python: pytorch/pytorch RELEASE.md "Release Compatibility Matrix" (stable and experimental CUDA
# both ship as wheels). PyPI's default build: the nvidia-*-cu12 pins in each release's wheel metadata
# (2.5.1 pulls CUDA 12.4 runtime, hence "torch==2.5.1 matches 2.5.1+cu124"; 2.7 defaults to 12.6
# (uv docs, apache/tvm#17905); 2.8 and 2.9 to 12.8 (pytorch.org "get started")).
TORCH_RELEASES: dict[str, TorchRelease] = {
    "2.1": TorchRelease(("cu118", "cu121"), "cu121", ("3.8", "3.11")),
    "2.2": TorchRelease(("cu118", "cu121"), "cu121", ("3.8", "3.12")),
    "2.3": TorchRelease(("cu118", "cu121"), "cu121", ("3.8", "3.12")),
    "2.4": TorchRelease(("cu118", "cu121", "cu124"), "cu121", ("3.8", "3.12")),
    "2.5": TorchRelease(("cu118", "cu121", "cu124"), "cu124", ("3.9", "3.13")),
    "2.6": TorchRelease(("cu118", "cu124", "cu126"), "cu124", ("3.9", "3.13")),
    "2.7": TorchRelease(("cu118", "cu126", "cu128"), "cu126", ("3.9", "3.13")),
    "2.8": TorchRelease(("cu126", "cu128", "cu129"), "cu128", ("3.9", "3.13")),
    "2.9": TorchRelease(("cu126", "cu128", "cu130"), "cu128", ("3.10", "3.14")),
}

# GPU architectures compiled into each wheel (TORCH_CUDA_ARCH_LIST in pytorch .ci/manywheel/build_cuda.sh,
# as measured by moi90/pytorch_compute_capabilities). A cubin for X.y also runs on X.z with z > y (sm_86
# kernels run on an sm_89 RTX 4090); nothing runs across major versions without PTX. Release notes of 2.8:
# "Removed support for Maxwell, Pascal, and Volta architectures with CUDA 12.8 and 12.9 builds" (Volta came
# back in 2.8's cu128, per the PyTorch dev-discuss post and pytorch#172352). 2.7's cu128 wheel starts at sm_75.
_ARCH_CU118 = ("3.7", "5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0")
_ARCH_CU12 = ("5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0")
_ARCH_BLACKWELL_NO_VOLTA = ("7.5", "8.0", "8.6", "9.0", "10.0", "12.0")
_ARCH_BLACKWELL = ("7.0", "7.5", "8.0", "8.6", "9.0", "10.0", "12.0")
TORCH_ARCHES: dict[tuple[str, str], tuple[str, ...]] = {
    **{(t, "cu118"): _ARCH_CU118 for t in ("2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7")},
    **{(t, b): _ARCH_CU12 for t, r in TORCH_RELEASES.items() for b in r.builds if b in ("cu121", "cu124", "cu126")},
    ("2.7", "cu128"): _ARCH_BLACKWELL_NO_VOLTA,
    ("2.8", "cu128"): _ARCH_BLACKWELL,
    ("2.8", "cu129"): _ARCH_BLACKWELL,
    ("2.9", "cu128"): _ARCH_BLACKWELL,
    ("2.9", "cu130"): _ARCH_BLACKWELL_NO_VOLTA,
}


def torch_minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def build_cuda(build: str) -> str:
    """'cu124' -> '12.4'; 'cu118' -> '11.8'; 'cu130' -> '13.0'."""
    digits = build.removeprefix("cu")
    return f"{digits[:-1]}.{digits[-1]}"


def cuda_build(cuda_version: str) -> str:
    """'12.4.1' -> 'cu124'."""
    major, minor = cuda_minor(cuda_version).split(".")
    return f"cu{major}{minor}"


def torch_release(version: str) -> TorchRelease | None:
    return TORCH_RELEASES.get(torch_minor(version))


def torch_arches(version: str, build: str) -> tuple[str, ...] | None:
    return TORCH_ARCHES.get((torch_minor(version), build))


def torch_versions_with_build(build: str) -> list[str]:
    return [t for t, r in TORCH_RELEASES.items() if build in r.builds]


def arches_cover(arches: tuple[str, ...], cc: str) -> bool:
    """A compute capability runs code built for the same major and an equal or lower minor."""
    major, minor = (int(x) for x in cc.split("."))
    for arch in arches:
        a_major, a_minor = (int(x) for x in arch.split("."))
        if a_major == major and a_minor <= minor:
            return True
    return False


# --- CUDA wheels in a Python closure --------------------------------------------------------------------
# NVIDIA ships the CUDA libraries as wheels that torch & co. depend on. Up to CUDA 12 every name ends in the
# CUDA major (nvidia-cuda-runtime-cu12 12.4.127, nvidia-cudnn-cu12 9.1.0.70). From CUDA 13 the toolkit's own
# libraries drop the suffix (nvidia-cuda-runtime 13.0.96, nvidia-cublas 13.1.0.3, nvidia-cufft 12.0.0.61)
# while the ones released apart keep it (nvidia-cudnn-cu13, nvidia-nccl-cu13, nvidia-cusparselt-cu13,
# nvidia-nvshmem-cu13); torch from PyPI reaches them through NVIDIA's meta-package cuda-toolkit (13.0.2, its
# version is the CUDA release). Sources: pypi.org/project/nvidia-cuda-runtime (13.x files), the cu130 index
# of download.pytorch.org, and pip's "Collecting nvidia-cuda-runtime==13.0.96.* (from cuda-toolkit[...]==13.0.2
# ... ->torch)" for torch 2.11/2.12 from PyPI. Only some versions follow the CUDA release X.Y: the runtime,
# NVRTC, CUPTI, nvJitLink, NVTX, nvcc, CCCL, NVVM and CRT (12.4.127 for CUDA 12.4; 13.0.96, 13.0.88, 13.0.85
# for 13.0). The math libraries number themselves (cuFFT 12.0 and cuSPARSE 12.6 belong to CUDA 13.0, cuBLAS
# 13.1.0.3 to 13.0 Update 2), so only a -cuNN suffix says anything about them.
CUDA_VERSIONED_WHEELS = frozenset(
    {
        "nvidia-cuda-runtime",
        "nvidia-cuda-nvrtc",
        "nvidia-cuda-cupti",
        "nvidia-nvjitlink",
        "nvidia-nvtx",
        "nvidia-cuda-nvcc",
        "nvidia-cuda-cccl",
        "nvidia-nvvm",
        "nvidia-cuda-crt",
        "cuda-toolkit",
    }
)
# Distributions whose own build decides the CUDA they need; a CUDA wheel pulled in below one of them is
# reported as that package's (torch -> cuda-toolkit -> nvidia-cuda-runtime is torch's CUDA). Their CUDA
# builds carry it in the local version: 2.5.1+cu124, 0.20.1+cu124, flash-attn's 2.7.4+cu12torch2.5...
CUDA_BUILD_FAMILY = ("torch", "torchvision", "torchaudio", "vllm", "xformers", "flash-attn")
_CU_SUFFIX_RE = re.compile(r"^(?P<base>.+)-cu(?P<major>\d{2})$")
_LOCAL_CU_RE = re.compile(r"^cu(\d{2,3})(?!\d)")


@dataclass(frozen=True)
class CudaNeed:
    """The CUDA a wheel was built for: `minor` None when only the major is known (nvidia-cudnn-cu12)."""

    major: int
    minor: int | None
    how: str  # what says so, for messages: "+cu124", "-cu12 in its name", "its version 13.0.96"

    @property
    def label(self) -> str:
        return f"{self.major}.{self.minor}" if self.minor is not None else f"{self.major}.x"

    @property
    def key(self) -> tuple[int, int]:
        return self.major, -1 if self.minor is None else self.minor


def wheel_cuda(name: str, version: str) -> CudaNeed | None:
    """The CUDA a resolved wheel needs, from its name and version; None when they say nothing about it.

    `name` is canonical (nvidia-cuda-runtime-cu12), `version` as resolved, local label included."""
    public, _, local = version.partition("+")
    if name in CUDA_BUILD_FAMILY:
        m = _LOCAL_CU_RE.match(local.lower())
        if m is None:
            return None
        digits = m.group(1)
        if len(digits) == 2:
            return CudaNeed(int(digits), None, f"+{local}")
        return CudaNeed(int(digits[:-1]), int(digits[-1]), f"+{local}")
    if not (name.startswith("nvidia-") or name == "cuda-toolkit"):
        return None
    suffix = _CU_SUFFIX_RE.match(name)
    base = suffix.group("base") if suffix else name
    parts = [int(p) for p in re.findall(r"\d+", public)[:2]]
    tracked = base in CUDA_VERSIONED_WHEELS and len(parts) == 2 and parts[0] >= 11
    if suffix is not None:
        major = int(suffix.group("major"))
        if tracked and parts[0] == major:
            return CudaNeed(major, parts[1], f"its version {public}")
        return CudaNeed(major, None, f"-cu{major} in its name")
    if tracked:
        return CudaNeed(parts[0], parts[1], f"its version {public}")
    return None


# --- vLLM -------------------------------------------------------------------------------------------------
# vLLM pins torch exactly (requirements/cuda.txt, formerly requirements-cuda.txt); versions in
# [first, next_first) share a pin. Sources: pip resolver errors quoted in public issues
# ("vllm 0.5.4 depends on torch==2.4.0", "vllm 0.6.3 requires torch==2.4.0", "vllm 0.7.3 requires
# torch==2.5.1", LMCache#583 "v0.8.5.post1 requires torch v2.6.0", vllm-ascend#3349 "vllm 0.9.1 requires
# torch==2.7.0", cosmos-rl#183 "vllm 0.10.0 uses torch 2.7.1", kaito#1494 "vllm 0.10.1.1 depends on
# torch==2.7.1", vllm-ascend#4917 "vllm 0.11.0 depends on torch 2.8.0", vllm#27228 "torch 2.9 ... will be in
# the 0.11.1 release"). Versions past the table are reported as unknown, not guessed.
VLLM_TORCH_PINS: tuple[tuple[str, str, str], ...] = (
    ("0.5.4", "0.6.4", "2.4.0"),
    ("0.6.4", "0.8.0", "2.5.1"),
    ("0.8.0", "0.9.0", "2.6.0"),
    ("0.9.0", "0.10.0", "2.7.0"),
    ("0.10.0", "0.10.2", "2.7.1"),
    ("0.10.2", "0.11.1", "2.8.0"),
    ("0.11.1", "0.12.0", "2.9.0"),
)


def vllm_torch_pin(vllm_version: str) -> str | None:
    from packaging.version import InvalidVersion, Version

    try:
        v = Version(vllm_version)
    except InvalidVersion:
        return None
    for first, below, torch in VLLM_TORCH_PINS:
        if Version(first) <= v < Version(below):
            return torch
    return None


def vllm_versions_for_torch(torch_version: str) -> str | None:
    """'2.5.1' -> '0.6.4 to below 0.8.0' (for a fix that suggests another vLLM)."""
    for first, below, torch in VLLM_TORCH_PINS:
        if torch == torch_version:
            return f">={first},<{below}"
    return None


# --- GPUs -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    name: str
    cc: str  # compute capability, e.g. "8.9" (sm_89)
    vram_gib: int
    nvlink: str  # "yes", "no", or "bridge" (two cards, with an NVLink bridge)
    bandwidth: str
    aliases: tuple[str, ...] = ()

    @property
    def sm(self) -> str:
        return "sm_" + self.cc.replace(".", "")


# Compute capability: developer.nvidia.com/cuda-gpus (and cuda-legacy-gpus for V100). VRAM, bandwidth and
# NVLink: NVIDIA datasheets. Two corrections to often-quoted tables from NVIDIA's
# datasheets: the RTX 6000 Ada has no NVLink (Ada dropped it), the H100 PCIe takes an
# NVLink bridge. "H100" alone is taken as the SXM card and "A100" alone as the 80 GB one (the common configurations);
# write "A100 40GB" or "V100 32GB" for the others. VRAM is in GiB, as the cards are built.
GPUS: tuple[Gpu, ...] = (
    Gpu("H200", "9.0", 141, "yes", "4.8 TB/s", ("H200 SXM", "H200 NVL", "GH200")),
    Gpu("H100 SXM", "9.0", 80, "yes", "3.35 TB/s", ("H100", "H100 SXM5", "H100 80GB", "H100 SXM 80GB")),
    Gpu("H100 PCIe", "9.0", 80, "bridge", "2.0 TB/s", ("H100 PCIe 80GB",)),
    Gpu("H100 NVL", "9.0", 94, "bridge", "3.9 TB/s"),
    Gpu(
        "A100 80GB",
        "8.0",
        80,
        "yes",
        "2.0 TB/s",
        ("A100", "A100 SXM", "A100 PCIe", "A100 SXM4 80GB", "A100 PCIe 80GB", "A100 SXM 80GB"),
    ),
    Gpu("A100 40GB", "8.0", 40, "yes", "1.6 TB/s", ("A100 SXM4 40GB", "A100 PCIe 40GB")),
    Gpu("L40S", "8.9", 48, "no", "864 GB/s"),
    Gpu("L40", "8.9", 48, "no", "864 GB/s"),
    Gpu("L4", "8.9", 24, "no", "300 GB/s"),
    Gpu("RTX 6000 Ada", "8.9", 48, "no", "960 GB/s", ("A6000 Ada", "RTX A6000 Ada", "6000 Ada")),
    Gpu("RTX A6000", "8.6", 48, "bridge", "768 GB/s", ("A6000",)),
    Gpu("RTX A5000", "8.6", 24, "bridge", "768 GB/s", ("A5000",)),
    Gpu("A40", "8.6", 48, "bridge", "696 GB/s"),
    Gpu("A10", "8.6", 24, "no", "600 GB/s", ("A10G",)),
    Gpu("RTX 5090", "12.0", 32, "no", "1,792 GB/s"),
    Gpu("RTX 4090", "8.9", 24, "no", "1,008 GB/s"),
    Gpu("RTX 4080 SUPER", "8.9", 16, "no", "736 GB/s"),
    Gpu("RTX 4080", "8.9", 16, "no", "717 GB/s"),
    Gpu("RTX 3090", "8.6", 24, "bridge", "936 GB/s", ("RTX 3090 Ti",)),
    Gpu("B200", "10.0", 180, "yes", "8 TB/s"),
    Gpu("T4", "7.5", 16, "no", "320 GB/s"),
    Gpu("V100", "7.0", 16, "yes", "900 GB/s", ("V100 16GB", "V100 SXM2", "V100 PCIe")),
    Gpu("V100 32GB", "7.0", 32, "yes", "900 GB/s", ("V100 SXM2 32GB", "V100S")),
)

_VENDOR_WORDS = ("nvidia", "geforce", "tesla", "quadro")


def _gpu_key(name: str) -> str:
    s = name.lower()
    for word in _VENDOR_WORDS:
        s = s.replace(word, " ")
    s = re.sub(r"[^a-z0-9]", "", s)
    s = re.sub(r"(\d)gb$", r"\1g", s).replace("gb", "g")
    return s.removeprefix("rtx") if s.startswith("rtx") and not s.startswith("rtxa") else s


def _gpu_index() -> dict[str, Gpu]:
    index: dict[str, Gpu] = {}
    for gpu in GPUS:
        for alias in (gpu.name, *gpu.aliases):
            index.setdefault(_gpu_key(alias), gpu)
    return index


_GPU_INDEX = _gpu_index()
# "2x RTX 4090", "2 x L4", "H100 x8": the separator needs a space before a trailing count, or "RTX 4090"
# would read as 4090 cards of model "RT".
_COUNT_RE = re.compile(r"^\s*(\d+)\s*[x×*]\s*(.+)$|^(.+?)\s+[x×*]\s*(\d+)\s*$", re.IGNORECASE)


def parse_gpu_entry(text: str) -> tuple[int, str]:
    """'2x RTX 4090' -> (2, 'RTX 4090'); 'RTX 4090 x2' -> (2, 'RTX 4090'); 'L4' -> (1, 'L4')."""
    m = _COUNT_RE.match(text)
    if m:
        if m.group(1):
            return int(m.group(1)), m.group(2).strip()
        return int(m.group(4)), m.group(3).strip()
    return 1, text.strip()


def find_gpu(name: str) -> Gpu | None:
    """A GPU model as people write it: case, spaces, dashes, 'NVIDIA'/'GeForce' and a leading 'RTX' on
    GeForce cards do not matter ("rtx4090", "GeForce RTX 4090", "4090" are one card)."""
    return _GPU_INDEX.get(_gpu_key(name))


def gpu_suggestions(name: str) -> list[str]:
    names = [g.name for g in GPUS]
    by_key = {_gpu_key(n): n for n in names}
    close = difflib.get_close_matches(_gpu_key(name), list(by_key), n=3, cutoff=0.5)
    return [by_key[c] for c in close]


def known_gpu_names() -> list[str]:
    return [g.name for g in GPUS]


# --- model memory -----------------------------------------------------------------------------------------
# The usual sizing rule of thumb: FP16 ~ params x 2 bytes, INT8 x 1, INT4 (GPTQ/AWQ) x 0.5-0.6,
# then +20-30% for the KV cache and activations.
BYTES_PER_PARAM: dict[str, tuple[float, float]] = {
    "fp32": (4.0, 4.0),
    "bf16": (2.0, 2.0),
    "fp16": (2.0, 2.0),
    "fp8": (1.0, 1.0),
    "int8": (1.0, 1.0),
    "int4": (0.5, 0.6),
}
RUNTIME_OVERHEAD = (1.2, 1.3)


def model_memory_gib(params_billion: float, dtype: str) -> tuple[float, float]:
    """(low, high) GiB to serve a model: weights at `dtype` plus the KV-cache/activation overhead."""
    lo_b, hi_b = BYTES_PER_PARAM[dtype]
    gib = params_billion * 1e9 / 2**30
    return gib * lo_b * RUNTIME_OVERHEAD[0], gib * hi_b * RUNTIME_OVERHEAD[1]


_DTYPE_NAMES = {
    "float32": "fp32",
    "f32": "fp32",
    "fp32": "fp32",
    "bfloat16": "bf16",
    "bf16": "bf16",
    "float16": "fp16",
    "f16": "fp16",
    "fp16": "fp16",
    "half": "fp16",
    "float8": "fp8",
    "fp8": "fp8",
    "f8": "fp8",
    "f8_e4m3": "fp8",
    "float8_e4m3fn": "fp8",
    "int8": "int8",
    "i8": "int8",
    "8bit": "int8",
    "int4": "int4",
    "i4": "int4",
    "4bit": "int4",
    "awq": "int4",
    "gptq": "int4",
}


def normalize_dtype(dtype: str | None) -> str | None:
    if not dtype:
        return None
    return _DTYPE_NAMES.get(dtype.strip().lower())


_PARAMS_RE = re.compile(r"(?<![a-z0-9.])(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?![a-z0-9])", re.IGNORECASE)


def params_from_name(repo: str) -> float | None:
    """Billions of parameters read from a repo id: 'Llama-3.1-8B-Instruct' -> 8, 'Qwen2.5-0.5B' -> 0.5,
    'opt-350m' -> 0.35, 'Mixtral-8x7B' -> 56 (an over-estimate: experts share attention weights)."""
    name = repo.rsplit("/", 1)[-1]
    found = None
    for m in _PARAMS_RE.finditer(name):
        experts = int(m.group(1)) if m.group(1) else 1
        value = float(m.group(2)) * experts
        found = value / 1000 if m.group(3).lower() == "m" else value
    return found


def dtype_from_name(repo: str) -> str | None:
    """Quantisation spelled in a repo id (AWQ/GPTQ/INT4/4bit, INT8/8bit/W8A8, FP8); None = not said."""
    name = repo.rsplit("/", 1)[-1].lower()
    if re.search(r"awq|gptq|int4|4bit|w4a16|(?<![a-z])q4", name):
        return "int4"
    if re.search(r"fp8|w8a8-fp8", name):
        return "fp8"
    if re.search(r"int8|8bit|w8a8|(?<![a-z])q8", name):
        return "int8"
    return None
