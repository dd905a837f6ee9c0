"""The doctor's CUDA software checks: the toolkit on PATH against the driver, cuDNN, and PyTorch a CUDA
build for the right CUDA, each also against what the bundle brings."""

from __future__ import annotations

from collections.abc import Iterator

from airgap.compat import tables
from airgap.doctor.facts import ServerFacts
from airgap.verdict import Check, Status


def driver_toolkit(f: ServerFacts) -> Iterator[Check]:
    cuda, expect = f.cuda, f.expect
    nvcc = cuda.nvcc
    if nvcc is None:
        if cuda.toolkits:
            where = cuda.toolkits[-1]
            sudo = " (sudo resets PATH: run `sudo env PATH=$PATH airgap doctor`)" if f.sudo_user else ""
            yield Check(
                "driver-toolkit",
                Status.FAIL,
                f"a CUDA toolkit is installed in {where} but nvcc is not on PATH{sudo}",
                f"export PATH={where}:$PATH and LD_LIBRARY_PATH={where.removesuffix('/bin')}/lib64 "
                "(put both in /etc/profile.d/cuda.sh)",
            )
            return
        yield Check(
            "driver-toolkit",
            Status.FAIL if expect.cuda else Status.WARN,
            "no CUDA toolkit (nvcc) found: nvidia-smi's CUDA Version is the driver's maximum, not an "
            "installed toolkit"
            + (
                ""
                if expect.cuda
                else "; containers and pip wheels bring their own CUDA, but building CUDA code needs the toolkit"
            ),
            "install the CUDA layer (airgap install BUNDLE --only cuda) and put its bin/ on PATH",
        )
        return
    toolkit = cuda.toolkit
    if toolkit is None:
        yield Check(
            "driver-toolkit",
            Status.FAIL,
            f"{nvcc.path} --version failed (exit {nvcc.returncode}): {nvcc.output.strip()[-200:]}",
            "reinstall the CUDA toolkit (airgap install BUNDLE --only cuda)",
        )
        return
    full = f" (V{nvcc.build})" if nvcc.build else ""
    if expect.cuda and tables.cuda_minor(expect.cuda) != toolkit:
        yield Check(
            "driver-toolkit",
            Status.FAIL,
            f"nvcc on PATH is CUDA {toolkit}{full}; the bundle installs CUDA {expect.cuda}",
            f"put /usr/local/cuda-{tables.cuda_minor(expect.cuda)}/bin first "
            "on PATH, or install the bundle's CUDA layer",
        )
        return
    driver, driver_cuda = f.gpu.driver, f.gpu.driver_cuda
    if driver is None:
        yield Check(
            "driver-toolkit",
            Status.WARN,
            f"nvcc {toolkit}{full} at {nvcc.path}; no running driver to compare it with",
            "install the driver and reboot; then run doctor again",
        )
        return
    minimum = tables.cuda_min_driver(f"{toolkit}.0")
    if minimum and tables.version_tuple(driver) < tables.version_tuple(minimum.driver):
        yield Check(
            "driver-toolkit",
            Status.FAIL,
            f"CUDA toolkit {toolkit}{full} needs driver >= {minimum.driver}; the driver is {driver} "
            f"(nvidia-smi's \"CUDA Version: {driver_cuda}\" is the driver's maximum, not the toolkit)",
            f"install driver {minimum.driver} or newer, or a CUDA toolkit the driver supports",
        )
        return
    yield Check(
        "driver-toolkit",
        Status.PASS,
        f"nvcc {toolkit}{full} on PATH; driver {driver} runs it (it supports CUDA up to {driver_cuda or '?'})",
    )


def cudnn(f: ServerFacts) -> Iterator[Check]:
    found, want = f.cuda.cudnn, f.expect.cudnn
    if found is not None:
        header, version = found
        if want and version.split(".")[0] != want.split(".")[0]:
            yield Check(
                "cudnn",
                Status.FAIL,
                f"cuDNN {version} ({header}); the bundle brings cuDNN {want}",
                "install the bundle's cudnn layer (airgap install BUNDLE --only cudnn)",
            )
        else:
            yield Check("cudnn", Status.PASS, f"cuDNN {version} ({header})")
        return
    yield Check(
        "cudnn",
        Status.FAIL if want else Status.WARN,
        "no cuDNN version header (/usr/include/cudnn_version.h or "
        "/usr/include/x86_64-linux-gnu/cudnn_version_v9.h)"
        + ("" if want else "; PyTorch wheels bring their own, code built on the host needs it"),
        "install libcudnn9-cuda-12 and libcudnn9-dev-cuda-12 (airgap install BUNDLE --only cudnn)",
    )


def pytorch(f: ServerFacts) -> Iterator[Check]:
    venv, probe, expect = f.torch.venv, f.torch.probe, f.expect
    if probe is None:
        if expect.python_layer:
            yield Check(
                "pytorch",
                Status.FAIL,
                f"no Python environment at {venv}, where the bundle's wheels go",
                "airgap install BUNDLE --only python",
            )
        else:
            yield Check("pytorch", Status.SKIP, f"no Python environment at {venv} (--bundle points at the bundle's)")
        return
    if not probe.answered:
        yield Check(
            "pytorch",
            Status.FAIL,
            f"{venv}/bin/python could not run a one-line probe (exit {probe.returncode}): "
            f"{probe.output.strip()[-200:]}",
            "recreate the environment: airgap install BUNDLE --only python",
        )
        return
    if probe.import_error is not None:
        yield Check(
            "pytorch",
            Status.FAIL if expect.torch else Status.WARN,
            f"torch is not importable in {venv}: {probe.import_error}",
            "install the bundle's wheels: airgap install BUNDLE --only python",
        )
        return
    version = probe.version
    toolkit = f.cuda.toolkit
    if "+cu" not in version and not probe.cuda:
        build = expect.torch_build or (f"cu{toolkit.replace('.', '')}" if toolkit else "cu124")
        yield Check(
            "pytorch",
            Status.FAIL,
            f"torch {version} in {venv} is a CPU-only build (no +cu in its version, torch.version.cuda is "
            "None): torch.cuda.is_available() is False",
            f"install the CUDA build: collect torch with the index https://download.pytorch.org/whl/{build} "
            f"(torch=={version.split('+')[0]}+{build}), then airgap install BUNDLE --only python",
        )
        return
    cuda = probe.cuda or tables.build_cuda(version.split("+cu", 1)[1][:3])
    driver = f.gpu.driver
    problems: list[tuple[Status, str, str]] = []
    major = int(cuda.split(".")[0])
    floor = tables.CUDA_MINOR_COMPAT_DRIVER.get(major)
    if driver and floor and tables.version_tuple(driver) < tables.version_tuple(floor):
        problems.append(
            (
                Status.FAIL,
                f"needs driver >= {floor} for CUDA {major}.x, the driver is {driver}",
                f"install a driver >= {floor}",
            )
        )
    if expect.torch_build and tables.build_cuda(expect.torch_build) != cuda:
        problems.append(
            (
                Status.FAIL,
                f"the bundle's torch is the {expect.torch_build} build",
                "install the bundle's wheels: airgap install BUNDLE --only python",
            )
        )
    if toolkit and toolkit != cuda:
        problems.append(
            (
                Status.WARN,
                f"the CUDA toolkit on PATH is {toolkit} (extensions built with nvcc will not match torch)",
                f"use torch for CUDA {toolkit}, or the CUDA {cuda} toolkit",
            )
        )
    if probe.available is False and f.gpu.pci:
        problems.append(
            (
                Status.FAIL,
                "torch.cuda.is_available() is False although a GPU is on the PCI bus",
                "check nvidia-smi works and that the driver supports CUDA " + cuda,
            )
        )
    what = f"torch {version}, built for CUDA {cuda}"
    if not problems:
        yield Check("pytorch", Status.PASS, f"{what} ({venv})")
        return
    status = Status.FAIL if any(p[0] is Status.FAIL for p in problems) else Status.WARN
    yield Check("pytorch", status, f"{what}: " + "; ".join(p[1] for p in problems), "; ".join(p[2] for p in problems))
