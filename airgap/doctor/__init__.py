"""`airgap doctor`: a readiness checklist for serving models, run on the server, as named checks with the fix.

No bundle is needed; `--bundle` adds what the bundle expects (driver, CUDA, cuDNN, torch build, model
directories and owners, target OS and kernel). The facts are gathered first (`facts.gather`, through a
Host, so `--root DIR` and the tests point them at a prepared tree: sysfs, /proc, /etc, commands under
usr/bin); then small check functions, one module per topic (`gpu`, `cuda`, `docker`, `system`), judge
them, each on its own. NVML reads the running kernel's driver, not a tree, so under `--root` it is not
asked (tests hand in a session over a stand-in library). A machine with no GPU gets clear failures,
never a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from airgap import probes
from airgap.doctor import cuda, docker, gpu, system
from airgap.doctor.facts import ProbeFailed, ServerFacts, gather
from airgap.host import Host
from airgap.lock import Lock
from airgap.probes import NvmlSession
from airgap.verdict import Check, Status, all_passed, counts

DoctorCheck = Callable[[ServerFacts], Iterable[Check]]

# In the order a person works through a server: the GPU and its driver, the CUDA software, Docker, the
# GPUs' health, the machine around them, and what the bundle expected.
CHECKS: tuple[DoctorCheck, ...] = (
    gpu.gpu_pci,
    gpu.nouveau,
    gpu.nvidia_smi,
    gpu.nvml,
    gpu.bundle_driver,
    cuda.driver_toolkit,
    cuda.cudnn,
    cuda.pytorch,
    docker.docker_daemon,
    docker.nvidia_runtime,
    docker.dockerd_restarted,
    docker.compose,
    docker.docker_group,
    gpu.gpu_temperature,
    gpu.gpu_throttle,
    gpu.gpu_ecc,
    gpu.gpu_memory,
    system.disk,
    system.ram_vs_vram,
    system.oom_killer,
    system.models_owner,
    system.os_kernel,
    system.bundle_mismatches,
)


@dataclass
class DoctorReport:
    root: str
    bundle: str | None
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # driver, CUDA, toolkit and GPUs, for --json

    @property
    def ok(self) -> bool:
        return all_passed(self.checks)

    def counts(self) -> dict[str, int]:
        return counts(self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "bundle": self.bundle,
            "checks": [c.to_dict() for c in self.checks],
            "facts": self.facts,
            "ok": self.ok,
            "summary": self.counts(),
        }


def run_checks(facts: ServerFacts) -> list[Check]:
    """Every check over the gathered facts. One that breaks (or reads a topic whose probe broke) is
    reported as such, and the others still stand."""
    out: list[Check] = []
    for check in CHECKS:
        try:
            out.extend(list(check(facts)))
        except ProbeFailed as exc:
            out.append(_could_not_run(check, str(exc)))
        except Exception as exc:  # a bug in one check must not hide the rest of the report
            out.append(_could_not_run(check, f"{type(exc).__name__}: {exc}"))
    return out


def _could_not_run(check: DoctorCheck, why: str) -> Check:
    name = getattr(check, "__name__", "check").replace("_", "-")
    return Check(
        name,
        Status.WARN,
        f"this check could not run: {why}",
        "a bug in airgap's doctor; the other checks still stand",
    )


def run_doctor(host: Host, lock: Lock | None = None, nvml: NvmlSession | None = None) -> DoctorReport:
    """The readiness report for the machine `host` looks at; `lock` adds a bundle's expectations. `nvml`
    is the caller's open session; without one, the running machine's NVML is opened for the gathering
    (not under --root: a tree's driver is not the one NVML would answer for)."""
    with contextlib.ExitStack() as stack:
        if nvml is None and not probes.is_rooted(host):
            nvml = stack.enter_context(NvmlSession(probes.pynvml_library()))
        facts = gather(host, lock, nvml)
    return DoctorReport(str(host.root), None, run_checks(facts), facts.summary())
