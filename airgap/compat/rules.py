"""Compatibility rules on a manifest: the "version hell" caught before a single byte is downloaded.

`check_manifest` combines the tables of `airgap/compat/tables.py` with what a manifest asks for (driver, CUDA,
torch, vLLM, target GPUs, models, CUDA images) and, once resolved, with the wheels pip chose
(`airgap/compat/closure.py`: a torch pulled in by a dependency is checked like one asked for). It returns
one Finding per check: `ok` lines make the verdict `airgap plan` prints, `warning`s never stop anything,
`skipped` says what could not be checked yet, `error`s stop `plan`, `collect` and `install` (exit 2)
unless `--allow-mismatch` turns them into warnings, which the lock then records.

The checks need no network and do not depend on artifact planning, so a manifest whose CUDA release
airgap cannot even name a runfile for (CUDA 11.7 with a pinned `cuda.url`) still gets its verdict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from airgap.artifact_meta import ModelFileMeta, ModelInfo, read_meta
from airgap.compat import tables
from airgap.compat.closure import Closure, CudaGroup, owner_fix, read_closure, requirement_fields, torch_for_gpu
from airgap.errors import ManifestError
from airgap.manifest import Manifest
from airgap.verdict import Check, Status

# A Finding's level: its status in the words the lock's allowed_mismatches and `plan --json` have always
# carried (and plan/collect compare with).
OK, WARNING, ERROR, SKIPPED = "ok", "warning", "error", "skipped"
_LEVEL_OF = {Status.PASS: OK, Status.WARN: WARNING, Status.FAIL: ERROR, Status.SKIP: SKIPPED}
_STATUS_OF = {level: status for status, level in _LEVEL_OF.items()}
PYTORCH_INDEX = "https://download.pytorch.org/whl"
_INDEX_BUILD_RE = re.compile(r"/whl/(cu\d{3}|cpu|rocm[\d.]+)/?$")
_CUDA_IMAGE_RE = re.compile(r"^(?:docker\.io/|registry-1\.docker\.io/)?nvidia/cuda:(\d+\.\d+(?:\.\d+)?)-")

FieldPath = tuple[str | int, ...]


@dataclass
class Finding(Check):
    """A Check about one manifest field. `name` is the rule's stable code ("driver-cuda"), also `code`;
    the status is PASS, WARN, FAIL, or SKIP (only for what cannot be known yet: the wheels under
    `plan --no-head`), also `level` in the lock's words."""

    field: FieldPath = ()  # the manifest field it is about, e.g. ("cuda", "version")
    where: str = ""  # manifest.yaml:LINE, filled in by check_manifest
    allowed: bool = False  # an error that --allow-mismatch turned into a warning

    @property
    def code(self) -> str:
        return self.name

    @property
    def level(self) -> str:
        return _LEVEL_OF[self.status]

    @level.setter
    def level(self, level: str) -> None:
        self.status = _STATUS_OF[level]

    def accept(self) -> None:
        """--allow-mismatch: an error becomes a warning that says it was accepted."""
        self.status, self.allowed = Status.WARN, True

    @property
    def field_path(self) -> str:
        out = ""
        for p in self.field:
            out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
        return out or "(top level)"

    def to_dict(self) -> dict[str, Any]:  # the lock's record of a finding, with its level and field
        return {
            "level": self.level,
            "code": self.code,
            "field": self.field_path,
            "message": self.message,
            "fix": self.fix,
            "where": self.where,
            "allowed": self.allowed,
        }

    def text(self) -> str:
        """One line: where, field, what, and the fix."""
        fix = f"; {self.fix}" if self.fix else ""
        return f"{self.where}: {self.field_path}: {self.message}{fix}"


class ArtifactLike(Protocol):
    """An Artifact at collect time or a LockedArtifact at install time: both carry layer and meta."""

    layer: str
    meta: dict[str, Any]

    @property
    def path(self) -> str: ...


# --- what the manifest asks for, parsed once ---------------------------------------------------------------


@dataclass
class Pin:
    """A requirement from python.requirements."""

    name: str
    raw: str
    field: FieldPath
    version: str | None  # the exact version when pinned with ==, else None
    local: str | None  # "cu124" from "==2.5.1+cu124"
    spec: SpecifierSet


@dataclass
class TorchChoice:
    version: str | None  # public version, e.g. "2.5.1"; None when not pinned
    build: str | None  # "cu124", "cpu", ...; None when it cannot be known
    source: str  # how the build was decided, for messages
    field: FieldPath  # where to point at when the build is wrong
    pin: Pin | None  # the torch requirement itself (None when torch comes only from vLLM's pin)
    from_vllm: bool = False

    @property
    def label(self) -> str:
        v = self.version or "(unpinned)"
        return f"{v}+{self.build}" if self.build else v


@dataclass
class GpuEntry:
    raw: str
    count: int
    gpu: tables.Gpu | None
    field: FieldPath


@dataclass
class ModelFacts:
    repo: str
    field: FieldPath
    params: float | None  # billions
    params_source: str  # "hub metadata", "estimated from the name", ""
    dtype: str  # key of tables.BYTES_PER_PARAM
    dtype_source: str
    commit: str | None = None
    weight_bytes: int | None = None  # exact, from the safetensors headers the models layer read

    def need_gib(self) -> tuple[float, float]:
        """(low, high) GiB to serve it: the weights plus 20-30% for KV cache and activations."""
        if self.weight_bytes:
            gib = self.weight_bytes / 2**30
            return gib * tables.RUNTIME_OVERHEAD[0], gib * tables.RUNTIME_OVERHEAD[1]
        return tables.model_memory_gib(self.params or 0, self.dtype)


@dataclass
class Stack:
    manifest: Manifest
    pins: dict[str, Pin] = field(default_factory=dict)
    indexes: list[tuple[int, str]] = field(default_factory=list)  # (position in index_urls, build)
    torch: TorchChoice | None = None
    gpus: list[GpuEntry] = field(default_factory=list)
    models: list[ModelFacts] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def add(self, status: Status, code: str, path: FieldPath, message: str, fix: str = "") -> None:
        self.findings.append(Finding(code, status, message, fix, field=path))

    @property
    def total_vram(self) -> int:
        return sum(g.count * g.gpu.vram_gib for g in self.gpus if g.gpu)

    @property
    def gpu_summary(self) -> str:
        parts = [f"{g.count}× {g.gpu.name}" for g in self.gpus if g.gpu]
        return " + ".join(parts)


def _parse_pin(raw: str, path: FieldPath) -> Pin | None:
    try:
        req = Requirement(raw)
    except InvalidRequirement:
        return None
    exact = [s for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version]
    version = local = None
    if exact:
        try:
            v = Version(exact[0].version)
        except InvalidVersion:
            v = None
        if v is not None:
            version, local = v.public, v.local
    return Pin(req.name.lower().replace("_", "-"), raw, path, version, local, req.specifier)


def _stack(manifest: Manifest, artifacts: Sequence[ArtifactLike] | None) -> Stack:
    st = Stack(manifest)
    if manifest.python is not None:
        for i, raw in enumerate(manifest.python.requirements):
            pin = _parse_pin(raw, ("python", "requirements", i))
            if pin is None:
                st.add(
                    Status.WARN,
                    "requirement-syntax",
                    ("python", "requirements", i),
                    f"{raw!r} is not a requirement pip understands, so it was not checked",
                    "write it like torch==2.5.1 or vllm==0.6.4.post1",
                )
            elif pin.name not in st.pins:
                st.pins[pin.name] = pin
        for i, url in enumerate(manifest.python.index_urls):
            m = _INDEX_BUILD_RE.search(url.rstrip("/") + "/")
            if m:
                st.indexes.append((i, m.group(1)))
    st.torch = _choose_torch(st)
    for i, raw in enumerate(manifest.target.gpus):
        count, name = tables.parse_gpu_entry(raw)
        st.gpus.append(GpuEntry(raw, count, tables.find_gpu(name), ("target", "gpus", i)))
    st.models = _model_facts(manifest, artifacts)
    return st


def _choose_torch(st: Stack) -> TorchChoice | None:
    pin = st.pins.get("torch")
    vllm = st.pins.get("vllm")
    from_vllm = False
    version = pin.version if pin else None
    if pin is None:
        if vllm is None or vllm.version is None:
            return None
        version = tables.vllm_torch_pin(vllm.version)
        if version is None:
            return None
        from_vllm = True
    path: FieldPath = pin.field if pin else vllm.field  # type: ignore[union-attr]
    if pin is not None and pin.local:
        return TorchChoice(version, pin.local, f"the +{pin.local} in {pin.raw!r}", path, pin, from_vllm)
    if st.indexes:
        # pip takes the highest version over every index, and a local label sorts after none:
        # 2.5.1+cu124 from the PyTorch index beats PyPI's plain 2.5.1.
        i, build = max(st.indexes, key=lambda ib: ib[1])
        return TorchChoice(
            version,
            build,
            f"index {st.manifest.python.index_urls[i]}",  # type: ignore[union-attr]
            ("python", "index_urls", i),
            pin,
            from_vllm,
        )
    release = tables.torch_release(version) if version else None
    if release is not None:
        return TorchChoice(
            version,
            release.pypi,
            f"PyPI's torch {tables.torch_minor(version)} is the "  # type: ignore[arg-type]
            f"{release.pypi} build",
            path,
            pin,
            from_vllm,
        )
    return TorchChoice(version, None, "", path, pin, from_vllm)


def _model_facts(manifest: Manifest, artifacts: Sequence[ArtifactLike] | None) -> list[ModelFacts]:
    by_repo: dict[str, ModelInfo] = {}
    for art in artifacts or ():
        if art.layer == "models" and "model" in art.meta:
            model = read_meta(ModelFileMeta, art.meta, art.path).model
            if model is not None:
                by_repo.setdefault(model.repo, model)
    out = []
    for i, spec in enumerate(manifest.models):
        info = by_repo.get(spec.repo)
        params: float | None = None
        params_source = ""
        raw_params = info.params if info else None
        if raw_params is not None and raw_params > 0:
            # The hub reports a parameter count; a small number can only be billions already.
            params = raw_params / 1e9  # the models layer records the exact element count
            params_source = "hub metadata"
        else:
            params = tables.params_from_name(spec.repo)
            params_source = "estimated from the name" if params is not None else ""
        dtype = tables.normalize_dtype(info.dtype if info else None)
        dtype_source = "hub metadata" if dtype else ""
        if dtype is None:
            dtype = tables.dtype_from_name(spec.repo)
            dtype_source = "from the name" if dtype else "assumed"
        weight_bytes = info.weight_bytes if info else None
        if params is None and weight_bytes:
            params_source = "hub metadata"
        out.append(
            ModelFacts(
                spec.repo,
                ("models", i),
                params,
                params_source,
                dtype or "bf16",
                dtype_source,
                info.commit if info else None,
                weight_bytes,
            )
        )
    return out


# --- the checks ---------------------------------------------------------------------------------------------


def _check_driver_cuda(st: Stack) -> None:
    m = st.manifest
    if m.cuda is None:
        return
    cuda = m.cuda.version
    minimum = tables.cuda_min_driver(cuda)
    runfile = tables.cuda_runfile_driver(cuda)
    if minimum is None:
        st.add(
            Status.WARN,
            "cuda-unknown",
            ("cuda", "version"),
            f"CUDA {cuda} is not in airgap's table of minimum drivers (11.0 to 13.0), so the driver was not "
            "checked against it",
            "check table 3 of NVIDIA's CUDA release notes by hand",
        )
        return
    if m.driver is None:
        st.add(
            Status.PASS,
            "driver-cuda",
            ("cuda", "version"),
            f"CUDA {cuda} needs driver >= {minimum.driver} on the server (no driver: section, so the server's "
            "own driver must be at least that)",
        )
        return
    driver = m.driver.version
    note = "" if minimum.exact else f" (as for {minimum.cuda}, the nearest release in the table)"
    if tables.version_tuple(driver) < tables.version_tuple(minimum.driver):
        bundled = f"; CUDA {cuda}'s runfile bundles driver {runfile}" if runfile else ""
        older = tables.driver_max_cuda(driver)
        keep = f", or keep driver {driver} and choose CUDA {older} or older (the newest it supports)" if older else ""
        st.add(
            Status.FAIL,
            "driver-cuda",
            ("driver", "version"),
            f"driver {driver} is older than {minimum.driver}, the minimum for CUDA {cuda}{note} "
            f'(NVIDIA CUDA release notes, table 3){bundled}; CUDA programs would stop with "CUDA driver '
            'version is insufficient for CUDA runtime version"',
            f"set driver.version to {minimum.driver} or newer{keep}",
        )
        return
    st.add(
        Status.PASS,
        "driver-cuda",
        ("driver", "version"),
        f"driver {driver} >= {minimum.driver}, the minimum for CUDA {cuda}{note}",
    )


def _check_torch(st: Stack) -> None:
    t = st.torch
    m = st.manifest
    if t is None:
        if "torch" in st.pins and st.pins["torch"].version is None:
            st.add(
                Status.WARN,
                "torch-unpinned",
                st.pins["torch"].field,
                f"{st.pins['torch'].raw!r} is not pinned with ==, so its CUDA build is decided at collect time",
                "pin it, e.g. torch==2.5.1 with the index https://download.pytorch.org/whl/cu124",
            )
        return
    if t.version is None:
        st.add(
            Status.WARN,
            "torch-unpinned",
            t.field,
            "torch is not pinned with ==, so which release (and which CUDA builds exist for it) is decided "
            "at collect time",
            "pin it, e.g. torch==2.5.1",
        )
    release = tables.torch_release(t.version) if t.version else None
    if t.version and release is None:
        st.add(
            Status.WARN,
            "torch-unknown",
            t.field,
            f"torch {t.version} is not in airgap's table (2.1 to 2.9), so its CUDA builds were not checked",
            "check pytorch's RELEASE.md compatibility matrix by hand",
        )
    if release is not None:
        py = m.target.python
        lo, hi = release.python
        if not (tables.version_tuple(lo) <= tables.version_tuple(py) <= tables.version_tuple(hi)):
            st.add(
                Status.FAIL,
                "torch-python",
                t.pin.field if t.pin else t.field,
                f"torch {t.version} has wheels for CPython {lo} to {hi}, and target.python is {py}: pip would "
                "find no torch wheel to download",
                f"set target.python to a version from {lo} to {hi}, or choose another torch",
            )
    if t.build is None:
        return
    if not t.build.startswith("cu"):
        st.add(
            Status.FAIL,
            "torch-build",
            t.field,
            f"torch comes from a {t.build} build ({t.source}): no CUDA at all, torch.cuda.is_available() "
            "would be False on the GPU server",
            f"use a CUDA index, e.g. {PYTORCH_INDEX}/{_suggest_build(m, t)}",
        )
        return
    if t.pin is not None and t.pin.local and t.pin.local.startswith("cu") and st.indexes:
        index_builds = {b for _, b in st.indexes}
        if t.pin.local not in index_builds:
            i, b = st.indexes[0]
            st.add(
                Status.FAIL,
                "torch-index",
                ("python", "index_urls", i),
                f"{t.pin.raw!r} asks for a {t.pin.local} build, but the PyTorch index given serves {b} builds",
                f"make them agree: the index {PYTORCH_INDEX}/{t.pin.local}, or {t.pin.name}=={t.version}+{b}",
            )
    if release is not None and t.build not in release.builds:
        with_build = tables.torch_versions_with_build(t.build)
        alt = (
            f"torch {', '.join(with_build)} ship {t.build}" if with_build else f"no torch in the table ships {t.build}"
        )
        st.add(
            Status.FAIL,
            "torch-build",
            t.field,
            f"torch {t.version} has no {t.build} build ({t.source}); its CUDA builds are {', '.join(release.builds)}",
            f"{alt}; or use one of torch {t.version}'s builds with the matching cuda.version",
        )
        return
    if m.cuda is not None:
        want = tables.cuda_minor(m.cuda.version)
        have = tables.build_cuda(t.build)
        if want != have:
            wanted = tables.cuda_build(m.cuda.version)
            if release is not None and wanted in release.builds:
                fix = f"use the {wanted} build: index {PYTORCH_INDEX}/{wanted}" + (
                    f" and torch=={t.version}" if t.pin and t.pin.local else ""
                )
            else:
                others = tables.torch_versions_with_build(wanted)
                fix = (
                    f"torch {', '.join(others)} ship {wanted} builds (index {PYTORCH_INDEX}/{wanted})"
                    if others
                    else f"no torch in the table ships {wanted}"
                )
            fix += f"; or set cuda.version to a CUDA {have} release"
            st.add(
                Status.FAIL,
                "torch-cuda",
                t.field,
                f"torch {t.label} is built for CUDA {have} ({t.source}), but the manifest installs CUDA "
                f"{m.cuda.version}: PyTorch must be built for the same CUDA as the toolkit",
                fix,
            )
        else:
            st.add(
                Status.PASS,
                "torch-cuda",
                t.field,
                f"torch {t.label} is built for CUDA {have}, as cuda.version ({t.source})",
            )
    if m.driver is not None:
        major = int(tables.build_cuda(t.build).split(".")[0])
        floor = tables.CUDA_MINOR_COMPAT_DRIVER.get(major)
        if floor and tables.version_tuple(m.driver.version) < tables.version_tuple(floor):
            st.add(
                Status.FAIL,
                "torch-driver",
                ("driver", "version"),
                f"torch {t.label} needs driver >= {floor} (CUDA {major}.x minor-version compatibility), and the "
                f"manifest installs driver {m.driver.version}: torch.cuda.is_available() would be False",
                f"set driver.version to {floor} or newer (better: the minimum for the CUDA you install)",
            )


def _suggest_build(m: Manifest, t: TorchChoice) -> str:
    if m.cuda is not None:
        return tables.cuda_build(m.cuda.version)
    release = tables.torch_release(t.version) if t.version else None
    return release.pypi if release else "cu124"


def _check_vllm(st: Stack) -> None:
    vllm = st.pins.get("vllm")
    if vllm is None:
        return
    m = st.manifest
    if m.cuda is not None and m.cuda.version.startswith("11."):
        st.add(
            Status.FAIL,
            "vllm-cuda",
            vllm.field,
            f"vLLM's wheels on PyPI are CUDA 12 builds and the manifest installs CUDA {m.cuda.version} "
            "(vLLM 0.6.x needs CUDA 12.1 or 12.4, no 11.x)",
            "set cuda.version to a 12.x release (e.g. 12.4.0, with driver >= 550.54.14)",
        )
    if vllm.version is None:
        st.add(
            Status.WARN,
            "vllm-unpinned",
            vllm.field,
            f"{vllm.raw!r} is not pinned with ==: which torch it pins is only known at collect time",
            "pin it, e.g. vllm==0.6.4.post1 (which pins torch 2.5.1)",
        )
        return
    pin = tables.vllm_torch_pin(vllm.version)
    if pin is None:
        st.add(
            Status.WARN,
            "vllm-unknown",
            vllm.field,
            f"vLLM {vllm.version} is not in airgap's table (0.5.4 to 0.11.x), so its torch pin was not checked",
            "check the torch== line of that release's requirements/cuda.txt by hand",
        )
        return
    torch = st.pins.get("torch")
    if torch is None:
        st.add(Status.PASS, "vllm-torch", vllm.field, f"vLLM {vllm.version} pins torch {pin}, which pip will bring")
        return
    agrees = torch.version == pin if torch.version is not None else torch.spec.contains(pin, prereleases=True)
    if agrees:
        st.add(Status.PASS, "vllm-torch", vllm.field, f"vLLM {vllm.version} pins torch {pin}, as requested")
        return
    asked = torch.raw
    other_vllm = tables.vllm_versions_for_torch(torch.version) if torch.version else None
    fix = f"torch=={pin} (what vLLM {vllm.version} needs)"
    if other_vllm:
        fix += f", or keep {asked!r} with vllm{other_vllm}"
    st.add(
        Status.FAIL,
        "vllm-torch",
        vllm.field,
        f"vLLM {vllm.version} pins torch=={pin}, and the manifest asks for {asked!r}: pip cannot install both",
        fix,
    )


def _check_gpus(st: Stack) -> None:
    m = st.manifest
    t = st.torch
    known = ", ".join(tables.known_gpu_names())
    for entry in st.gpus:
        if entry.gpu is None:
            close = tables.gpu_suggestions(tables.parse_gpu_entry(entry.raw)[1])
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            st.add(
                Status.FAIL,
                "gpu-unknown",
                entry.field,
                f"{entry.raw!r} is not a GPU model airgap knows, so its architecture and memory cannot be checked",
                f"{hint}known models (case and spaces do not matter, '2x' prefix for several): {known}",
            )
            continue
        gpu = entry.gpu
        ok_parts = [f"{gpu.name} ({gpu.sm}, {gpu.vram_gib} GiB)"]
        if m.cuda is not None:
            supported = tables.cuda_supports_cc(m.cuda.version, gpu.cc)
            first, last = tables.CC_CUDA_RANGE.get(gpu.cc, ("?", None))
            if supported is False:
                if tables.version_tuple(tables.cuda_minor(m.cuda.version)) < tables.version_tuple(first):
                    minimum = tables.cuda_min_driver(f"{first}.0")
                    drv = f" (with driver >= {minimum.driver})" if minimum else ""
                    st.add(
                        Status.FAIL,
                        "gpu-cuda",
                        entry.field,
                        f"the {gpu.name} is {gpu.sm}, which CUDA {m.cuda.version} does not know: {gpu.sm} needs "
                        f'CUDA {first} or newer; kernels would fail with "no kernel image is available for '
                        'execution on the device"',
                        f"set cuda.version to {first}.0 or newer{drv}",
                    )
                else:
                    st.add(
                        Status.FAIL,
                        "gpu-cuda",
                        entry.field,
                        f"the {gpu.name} is {gpu.sm}, which CUDA {m.cuda.version} no longer supports (the last "
                        f"CUDA for it is {last})",
                        f"set cuda.version to a {last} release or older",
                    )
                continue
            if supported:
                ok_parts.append(f"supported by CUDA {m.cuda.version}")
        if t is not None and t.version and t.build and t.build.startswith("cu"):
            arches = tables.torch_arches(t.version, t.build)
            if arches is not None and not tables.arches_cover(arches, gpu.cc):
                st.add(
                    Status.FAIL,
                    "gpu-torch",
                    entry.field,
                    f"torch {t.label} has no kernels for the {gpu.name} ({gpu.sm}); it is built for "
                    f'{", ".join("sm_" + a.replace(".", "") for a in arches)}: "no kernel image is available '
                    'for execution on the device"',
                    _torch_arch_fix(t, gpu),
                )
                continue
            if arches is not None:
                ok_parts.append(f"torch {t.label} has kernels for it")
        st.add(Status.PASS, "gpu", entry.field, ", ".join(ok_parts))


def _torch_arch_fix(t: TorchChoice, gpu: tables.Gpu) -> str:
    release = tables.torch_release(t.version or "")
    if release is not None:
        minor = tables.torch_minor(t.version or "")
        builds = [b for b in release.builds if tables.arches_cover(tables.TORCH_ARCHES.get((minor, b), ()), gpu.cc)]
        if builds:
            b = builds[-1]
            return f"use torch {t.version}+{b} (index {PYTORCH_INDEX}/{b}) with a CUDA {tables.build_cuda(b)} toolkit"
    for minor, rel in reversed(tables.TORCH_RELEASES.items()):
        for b in reversed(rel.builds):
            if tables.arches_cover(tables.TORCH_ARCHES.get((minor, b), ()), gpu.cc):
                return f"use torch {minor}.x+{b} (index {PYTORCH_INDEX}/{b})"
    return "no torch build in airgap's table supports this GPU"


def _check_models(st: Stack) -> None:
    gpus = [g for g in st.gpus if g.gpu]
    total = st.total_vram
    for model in st.models:
        if model.params is None and not model.weight_bytes:
            st.add(
                Status.WARN,
                "model-size",
                model.field,
                f"{model.repo}: the parameter count cannot be read from the name, so whether it fits the GPUs "
                "was not checked",
                "plan without --no-head lets the models layer read it from the hub; or compare by hand: "
                "FP16 needs about params (billions) x 2 GB, +20-30%",
            )
            continue
        est = " (estimated from the name)" if model.params_source == "estimated from the name" else ""
        dtype_note = " (assumed)" if model.dtype_source == "assumed" else ""
        lo, hi = model.need_gib()
        if model.weight_bytes:
            count = f"~{_fmt_params(model.params)} params, " if model.params else ""
            what = f"{count}{model.weight_bytes / 2**30:.1f} GiB of weights ({model.params_source})"
        else:
            what = f"~{_fmt_params(model.params or 0)} params{est} at {model.dtype.upper()}{dtype_note}"
        size = f"{model.repo}: {what} needs about {lo:.0f}-{hi:.0f} GiB (weights, +20-30% for KV cache and activations)"
        if not gpus:
            st.add(
                Status.PASS, "model-vram", model.field, f"{size}; target.gpus is not set, so the fit was not checked"
            )
            continue
        where = f"the {total} GiB of {st.gpu_summary}"
        if lo > total:
            st.add(
                Status.WARN,
                "model-vram",
                model.field,
                f"{size}: more than {where}; it will not load",
                _quantised_fix(model, total, gpus),
            )
            continue
        if hi > total:
            st.add(
                Status.WARN,
                "model-vram",
                model.field,
                f"{size}: tight for {where} (short context, little KV cache)",
                _quantised_fix(model, total, gpus),
            )
        else:
            st.add(Status.PASS, "model-vram", model.field, f"{size}; fits {where}")
        biggest = max(g.gpu.vram_gib for g in gpus)  # type: ignore[union-attr]
        cards = sum(g.count for g in gpus)
        no_link = [g.gpu.name for g in gpus if g.gpu and g.gpu.nvlink == "no"]
        if hi > biggest and cards > 1 and no_link:
            st.add(
                Status.WARN,
                "gpu-nvlink",
                model.field,
                f"{model.repo} needs more than one card, and the {no_link[0]} has no NVLink: tensor parallelism "
                "runs over PCIe, far slower (and no NVLink bridge fits it)",
                "expect lower throughput, or use cards with NVLink (H100/A100 SXM) or one card with enough memory",
            )


def _fmt_params(b: float) -> str:
    return f"{b:.0f}B" if b >= 10 else f"{b:.2g}B"


def _quantised_fix(model: ModelFacts, total: int, gpus: list[GpuEntry]) -> str:
    current = tables.BYTES_PER_PARAM[model.dtype][0]
    options = []
    for q, label in (("int8", "INT8"), ("int4", "INT4 (AWQ/GPTQ)")):
        if tables.BYTES_PER_PARAM[q][0] >= current or not model.params:
            continue
        lo, hi = tables.model_memory_gib(model.params or 0, q)
        verdict = "fits" if hi <= total else ("tight" if lo <= total else "does not fit")
        options.append(f"{label} ~{lo:.0f}-{hi:.0f} GiB ({verdict})")
    _, hi_now = model.need_gib()
    card = max((g.gpu for g in gpus if g.gpu), key=lambda g: g.vram_gib)
    need_cards = math.ceil(hi_now / card.vram_gib)
    parts = [f"quantised sizes: {', '.join(options)}"] if options else []
    parts.append(f"or about {need_cards}x {card.name} for {model.dtype.upper()}")
    if not model.weight_bytes:
        biggest = total * 2**30 / (tables.BYTES_PER_PARAM[model.dtype][1] * tables.RUNTIME_OVERHEAD[1] * 1e9)
        parts.append(
            f"or a model of at most ~{_fmt_params(math.floor(biggest * 10) / 10)} at "
            f"{model.dtype.upper()} for {total} GiB"
        )
    return "; ".join(parts)


def _check_images(st: Stack) -> None:
    m = st.manifest
    if m.driver is None:
        return
    top = tables.driver_max_cuda(m.driver.version)
    for i, image in enumerate(m.images):
        match = _CUDA_IMAGE_RE.match(image.ref)
        if not match or top is None:
            continue
        want = match.group(1)
        if tables.version_tuple(tables.cuda_minor(want)) > tables.version_tuple(tables.cuda_minor(top)):
            minimum = tables.cuda_min_driver(want if want.count(".") == 2 else f"{want}.0")
            need = f" (driver >= {minimum.driver})" if minimum else ""
            st.add(
                Status.FAIL,
                "image-cuda",
                ("images", i),
                f"{image.ref} needs CUDA {tables.cuda_minor(want)}{need}, and driver {m.driver.version} supports "
                f"CUDA up to {tables.cuda_minor(top)}: the container toolkit refuses to start it "
                f'("unsatisfied condition: cuda>={tables.cuda_minor(want)}")',
                f"use an nvidia/cuda:{tables.cuda_minor(top)}.x image, or a newer driver.version",
            )
        else:
            st.add(
                Status.PASS,
                "image-cuda",
                ("images", i),
                f"{image.ref}: CUDA {tables.cuda_minor(want)} runs on driver {m.driver.version}",
            )


# --- the resolved wheels ------------------------------------------------------------------------------------

_WHEELS_FIELD: FieldPath = ("python", "requirements")


def _closure(manifest: Manifest, artifacts: Sequence[ArtifactLike] | None) -> Closure | None:
    if artifacts is None or manifest.python is None:
        return None
    return read_closure(manifest, artifacts)


def _check_wheels(st: Stack, artifacts: Sequence[ArtifactLike] | None) -> None:
    """Every torch-like and nvidia-* CUDA wheel pip resolved, against the driver, cuda.version and the GPUs."""
    m = st.manifest
    if artifacts is None or m.python is None:
        return  # before resolution: the rules above judged what the manifest asks for
    closure = read_closure(m, artifacts)
    if closure is None:
        st.add(
            Status.SKIP,
            "wheels",
            _WHEELS_FIELD,
            "the python layer was left out (--skip python), so the CUDA builds of its wheels were not checked",
        )
        return
    if closure.unresolved:
        st.add(
            Status.SKIP,
            "wheels",
            _WHEELS_FIELD,
            "pip resolves the wheels at collect time and plan --no-head resolved nothing, so the torch, vLLM "
            "and nvidia-* CUDA builds the requirements bring were not checked",
            "run plan without --no-head (or collect): every wheel of the closure is checked then",
        )
        return
    if not closure.groups:
        st.add(
            Status.PASS,
            "wheels",
            _WHEELS_FIELD,
            f"none of the {len(closure.wheels)} resolved wheels needs CUDA (no torch, vLLM, xformers, "
            "flash-attn or nvidia-* CUDA wheel)",
        )
        return
    for group in closure.groups:
        _check_group(st, closure, group)


def _group_field(st: Stack, closure: Closure, group: CudaGroup) -> FieldPath:
    """The requirement that brought the group in: its owner's, or the first of its chain."""
    chain = group.owner.chain or [group.owner.name]
    for name in (group.owner.name, chain[0]):
        hits = requirement_fields(st.manifest, name)
        if hits:
            return ("python", "requirements", hits[0][0])
    return _WHEELS_FIELD


def _server_cuda(m: Manifest) -> str | None:
    """The CUDA a wheel should be built for: cuda.version, else the newest the driver runs."""
    if m.cuda is not None:
        return m.cuda.version
    if m.driver is not None:
        return tables.driver_max_cuda(m.driver.version)
    return None


def _check_group(st: Stack, closure: Closure, group: CudaGroup) -> None:
    m = st.manifest
    owner, need, evidence = group.owner, group.need, group.evidence
    where = _group_field(st, closure, group)
    subject = f"{owner.label} ({closure.pulled_in(owner)})"
    gpu_stack = m.driver is not None or m.cuda is not None or bool(st.gpus)
    target_cuda = _server_cuda(m)
    if need is None or evidence is None:
        if owner.name != "torch" or not gpu_stack:
            return  # torchvision & co. take torch's CUDA; vLLM's kernels follow its torch
        local = owner.version.partition("+")[2]
        if local and not local.lower().startswith("cu"):
            st.add(
                Status.FAIL,
                "wheel-build",
                where,
                f"{subject} is a {local} build: no CUDA at all, torch.cuda.is_available() would be False on the "
                "GPU server",
                owner_fix(group, target_cuda),
            )
        else:
            st.add(
                Status.WARN,
                "wheel-build",
                where,
                f"{subject} brings no CUDA libraries (no +cuXYZ build, no nvidia-* CUDA wheel in the closure): "
                "it looks like a CPU build",
                owner_fix(group, target_cuda),
            )
        return
    family = owner.name in tables.CUDA_BUILD_FAMILY
    built = f"is a CUDA {need.label} build" if family or evidence is owner else f"brings CUDA {need.label} libraries"
    if evidence is owner:
        proof = f" ({need.how})"
    else:
        others = [w.label for w in group.members if w is not evidence and w is not owner]
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        proof = f" ({', '.join([evidence.label, *others[:3]])}{more})"
    what = f"{subject} {built}{proof}"
    public = owner.version.partition("+")[0]
    st_torch = st.torch
    if (
        owner.name == "torch"
        and st_torch is not None
        and st_torch.version == public
        and need.minor is not None
        and st_torch.build == f"cu{need.major}{need.minor}"
    ):
        st.add(Status.PASS, "wheels", where, f"the resolved torch is the build judged above: {what}")
        return
    ok: list[str] = []
    failed = False
    if m.driver is not None:
        failed |= _wheel_driver(st, group, what, where, target_cuda, ok)
    else:
        floor = tables.CUDA_MINOR_COMPAT_DRIVER.get(need.major)
        if floor:
            ok.append(f"needs driver >= {floor} on the server (no driver: section)")
    if m.cuda is not None:
        have = tables.cuda_minor(m.cuda.version)
        h_major, h_minor = (int(x) for x in have.split("."))
        if need.major != h_major or (family and need.minor is not None and need.minor != h_minor):
            why = (
                f"{owner.project} must be built for the same CUDA as the toolkit"
                if family
                else f"its libraries are CUDA {need.major} ones"
            )
            st.add(
                Status.FAIL,
                "wheel-cuda",
                where,
                f"{what}, and the manifest installs CUDA {m.cuda.version}: {why}",
                f"{owner_fix(group, m.cuda.version)}; or set cuda.version to a CUDA {need.label} release",
            )
            failed = True
        else:
            ok.append(f"fits cuda.version {m.cuda.version}")
    for entry in st.gpus:
        if entry.gpu is not None:
            failed |= _wheel_gpu(st, group, what, where, entry.gpu, ok)
    if not failed:
        against = "; ".join(ok) if ok else "the manifest names no driver, CUDA or GPU to check it against"
        st.add(Status.PASS, "wheels", where, f"{what}: {against}")


def _wheel_driver(
    st: Stack, group: CudaGroup, what: str, where: FieldPath, target_cuda: str | None, ok: list[str]
) -> bool:
    m = st.manifest
    need = group.need
    assert m.driver is not None and need is not None
    driver = m.driver.version
    floor = tables.CUDA_MINOR_COMPAT_DRIVER.get(need.major)
    top = tables.driver_max_cuda(driver)
    top_text = f" (CUDA up to {tables.cuda_minor(top)})" if top else ""
    if floor is None:
        st.add(
            Status.WARN,
            "wheel-driver",
            where,
            f"{what}: CUDA {need.major} is not in airgap's table of drivers, so driver {driver} was not checked "
            "against it",
            "check NVIDIA's CUDA release notes (table 3) by hand",
        )
        return False
    exact = tables.cuda_min_driver(f"{need.major}.{need.minor}.0") if need.minor is not None else None
    minimum = exact.driver if exact is not None else floor
    if tables.version_tuple(driver) < tables.version_tuple(floor):
        torch_note = " (torch.cuda.is_available() would be False)" if group.owner.name.startswith("torch") else ""
        st.add(
            Status.FAIL,
            "wheel-driver",
            where,
            f"{what}: CUDA {need.major}.x needs driver >= {floor}, and driver.version is {driver}{top_text}: CUDA "
            f'calls would fail with "CUDA driver version is insufficient for CUDA runtime version"{torch_note}',
            f"{owner_fix(group, target_cuda)}; or set driver.version to {minimum} or newer",
        )
        return True
    if need.minor is not None and top is not None:
        top_major, top_minor = tables.version_tuple(top)[:2]
        if (need.major, need.minor) > (top_major, top_minor):
            st.add(
                Status.WARN,
                "wheel-driver",
                where,
                f"{what}, newer than driver {driver}{top_text}: it runs through CUDA's minor-version "
                'compatibility, but code it must JIT-compile from PTX fails ("the provided PTX was compiled '
                'with an unsupported toolchain")',
                f"set driver.version to {minimum} or newer, or {owner_fix(group, target_cuda)}",
            )
            return False
    ok.append(f"driver {driver} runs CUDA {need.label}")
    return False


def _wheel_gpu(st: Stack, group: CudaGroup, what: str, where: FieldPath, gpu: tables.Gpu, ok: list[str]) -> bool:
    need = group.need
    owner = group.owner
    assert need is not None
    first, last = tables.CC_CUDA_RANGE.get(gpu.cc, (None, None))
    arches = None
    if owner.name == "torch" and need.minor is not None:
        arches = tables.torch_arches(owner.version, f"cu{need.major}{need.minor}")
    if arches is not None:
        if tables.arches_cover(arches, gpu.cc):
            ok.append(f"has kernels for the {gpu.name}")
            return False
        fix = torch_for_gpu(gpu.cc, None)
        st.add(
            Status.FAIL,
            "wheel-gpu",
            where,
            f"{what}: no kernels for the {gpu.name} ({gpu.sm}); it is built for "
            f'{", ".join("sm_" + a.replace(".", "") for a in arches)}: "no kernel image is available for '
            'execution on the device"',
            f"pin {fix}" if fix else "no torch build in airgap's table supports this GPU",
        )
        return True
    if need.minor is not None:
        supported = tables.cuda_supports_cc(f"{need.major}.{need.minor}", gpu.cc)
    else:  # only the major is known: only a GPU every release of that major dropped is certain
        supported = None if last is None or int(last.split(".")[0]) >= need.major else False
    if supported is False:
        span = f"CUDA {first} to {last}" if last else f"CUDA {first} and newer"
        fix = torch_for_gpu(gpu.cc, last) if owner.name == "torch" else ""
        st.add(
            Status.FAIL,
            "wheel-gpu",
            where,
            f"{what}, and CUDA {need.label} does not support the {gpu.name} ({gpu.sm}; {span} do): "
            '"no kernel image is available for execution on the device"',
            f"pin {fix}" if fix else f"use a {owner.project} build for a CUDA release that supports {gpu.sm}",
        )
        return True
    if supported:
        ok.append(f"CUDA {need.label} supports the {gpu.name}")
    return False


def summary(findings: Sequence[Finding]) -> str:
    """What the checks looked at, in words, from the codes of those that ran: for a one-line verdict that
    names only what was checked."""
    parts = {
        "driver-cuda": "driver and CUDA",
        "torch": "torch",
        "vllm": "vLLM",
        "wheel": "the Python wheels' CUDA builds",
        "gpu": "GPUs",
        "model": "models' memory",
        "image": "CUDA images",
    }
    seen: list[str] = []
    for f in findings:
        if f.status is Status.SKIP:
            continue
        word = parts.get(f.code) or parts.get(f.code.split("-")[0].removesuffix("s"))
        if f.code == "cuda-unknown":
            word = None  # a CUDA release the table lacks: no driver was checked against it
        elif f.code == "driver-cuda" and f.field[:1] == ("cuda",):
            # No driver: section: CUDA's minimum driver was looked up, but no driver was checked against it
            # (the server's own must do, and the bundle cannot vouch for it).
            word = "CUDA (no driver in the bundle to check it against)"
        if word and word not in seen:
            seen.append(word)
    return ", ".join(seen)


def check_manifest(manifest: Manifest, artifacts: Sequence[ArtifactLike] | None = None) -> list[Finding]:
    """Every compatibility check on the manifest, in the order a person reads a stack: driver and CUDA,
    torch, vLLM, the resolved wheels, GPUs, models, images. `artifacts` (when resolved) give models' hub
    metadata and the python closure; without them the wheels are not checked (the early check)."""
    st = _stack(manifest, artifacts)
    _check_driver_cuda(st)
    _check_torch(st)
    _check_vllm(st)
    _check_wheels(st, artifacts)
    _check_gpus(st)
    _check_models(st)
    _check_images(st)
    for f in st.findings:
        f.where = manifest.location(f.field)
    return st.findings


def resolved_versions(manifest: Manifest, artifacts: Sequence[ArtifactLike] | None = None) -> dict[str, str]:
    """What the stack will be, one readable line per part, for `plan`."""
    st = _stack(manifest, artifacts)
    m = manifest
    out: dict[str, str] = {"target": f"{m.target.os} {m.target.arch}, python {m.target.python}"}
    if m.target.kernel:
        out["target"] += f", kernel {m.target.kernel}"
    if m.driver:
        out["driver"] = m.driver.version
    if m.cuda:
        bits = []
        runfile = tables.cuda_runfile_driver(m.cuda.version)
        if runfile:
            bits.append(f"runfile bundles driver {runfile}")
        minimum = tables.cuda_min_driver(m.cuda.version)
        if minimum:
            bits.append(f"needs driver >= {minimum.driver}")
        out["cuda"] = m.cuda.version + (f" ({'; '.join(bits)})" if bits else "")
    if m.cudnn:
        out["cudnn"] = m.cudnn.version
    if m.docker:
        out["docker"] = m.docker.version
    if m.container_toolkit:
        out["container_toolkit"] = m.container_toolkit.version
    if st.torch is not None:
        how = "vLLM's pin" if st.torch.from_vllm else ""
        src = "; ".join(x for x in (how, st.torch.source) if x)
        out["torch"] = st.torch.label + (f" ({src})" if src else "")
    closure = _closure(manifest, artifacts)
    resolved_torch = closure.wheels.get("torch") if closure is not None else None
    if closure is not None and resolved_torch is not None:
        group = next(g for g in closure.groups if g.owner is resolved_torch)
        cuda = f"a CUDA {group.need.label} build" if group.need else "no CUDA wheels"
        what = f"{resolved_torch.version}: {cuda}, {closure.pulled_in(resolved_torch)}"
        out["torch"] = f"{out['torch']}; resolved {what}" if "torch" in out else what
    vllm = st.pins.get("vllm")
    if vllm is not None:
        pin = tables.vllm_torch_pin(vllm.version) if vllm.version else None
        out["vllm"] = (vllm.version or vllm.raw) + (f" (pins torch {pin})" if pin else "")
    if st.gpus:
        out["gpus"] = ", ".join(
            f"{g.count}× {g.gpu.name} ({g.gpu.sm}, {g.gpu.vram_gib} GiB, NVLink: {g.gpu.nvlink})"
            if g.gpu
            else f"{g.raw} (unknown)"
            for g in st.gpus
        )
    if st.models:
        lines = []
        for mf in st.models:
            size = f"~{_fmt_params(mf.params)} params ({mf.params_source})" if mf.params else "size unknown"
            commit = f" @ {mf.commit[:12]}" if mf.commit else ""
            lines.append(f"{mf.repo}{commit}: {size}, {mf.dtype.upper()}")
        out["models"] = "; ".join(lines)
    for img in m.images:
        out.setdefault("images", "")
        out["images"] = ", ".join(x for x in (out["images"], img.ref) if x)
    return out


def enforce(manifest: Manifest, findings: list[Finding], allow_mismatch: bool = False) -> list[Finding]:
    """Stop on errors (a ManifestError, exit 2, one line per mismatch with its fix), or with
    `allow_mismatch` turn them into warnings marked `allowed` for the lock to record."""
    errors = [f for f in findings if f.status is Status.FAIL]
    if not errors:
        return findings
    if not allow_mismatch:
        problems = []
        for f in errors:
            fix = f"; {f.fix}" if f.fix else ""
            problems.extend(manifest.error(f.field, f"{f.message}{fix} (or accept it with --allow-mismatch)").problems)
        raise ManifestError(problems)
    for f in errors:
        f.accept()
    return findings


def allowed(findings: Iterable[Finding]) -> list[dict[str, Any]]:
    """What the lock records about mismatches accepted with --allow-mismatch."""
    return [f.to_dict() for f in findings if f.allowed]


def check_lock(lock: Any) -> list[Finding]:
    """The same checks on a bundle's lock (install's preflight): the manifest recorded at collect time,
    its artifacts' meta, and the mismatches accepted then, which stay warnings."""
    data = getattr(lock, "manifest", None)
    if not data:
        return []
    manifest = Manifest.model_validate(data)
    findings = check_manifest(manifest, getattr(lock, "artifacts", None))
    accepted = {(a.get("code"), a.get("field")) for a in getattr(lock, "allowed_mismatches", []) or []}
    for f in findings:
        if f.status is Status.FAIL and (f.code, f.field_path) in accepted:
            f.accept()
    return findings
