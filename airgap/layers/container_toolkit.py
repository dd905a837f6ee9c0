"""nvidia-container-toolkit from NVIDIA's flat libnvidia-container repository, then Docker's nvidia runtime.

The four packages are pinned to the same version, as NVIDIA's install guide does
(`nvidia-container-toolkit=V nvidia-container-toolkit-base=V libnvidia-container-tools=V
libnvidia-container1=V`): the repository keeps every release, and `libnvidia-container-tools (>= V)` alone
would pull the newest. After dpkg, `nvidia-ctk runtime configure --runtime=docker` writes the nvidia runtime
into /etc/docker/daemon.json and a running dockerd is restarted: without the restart containers see no GPU.
"""

from __future__ import annotations

import json

from airgap.errors import InstallError
from airgap.install_context import InstallContext
from airgap.layers.debs import AptLayer, install_debs
from airgap.layers.docker import DAEMON_JSON, restart_docker, server_version
from airgap.manifest import Manifest
from airgap.sources.apt import Request

PACKAGES = (
    "libnvidia-container1",
    "libnvidia-container-tools",
    "nvidia-container-toolkit-base",
    "nvidia-container-toolkit",
)


class ContainerToolkitLayer(AptLayer):
    name = "container_toolkit"
    section = "container_toolkit"
    by_hand_dir = (
        "apt-get install ./{dir}/*.deb && nvidia-ctk runtime configure --runtime=docker && systemctl restart docker"
    )
    extra_repos = ("nvidia-container",)

    def requests(self, manifest: Manifest) -> list[Request]:
        spec = manifest.container_toolkit
        assert spec is not None
        where = f"{manifest.location(('container_toolkit', 'version'))} container_toolkit.version"
        return [Request(name, version=spec.version, why=where) for name in PACKAGES]

    def installed(self, ctx: InstallContext) -> str | None:
        done = super().installed(ctx)
        if done is None or not ctx.host.which("nvidia-ctk"):
            return done
        return done if _runtime_configured(ctx) else None

    def install(self, ctx: InstallContext) -> str:
        host = ctx.host
        summary = install_debs(ctx, self.name)
        ctk = host.which("nvidia-ctk")
        if ctk is None:
            if host.dry_run:
                return summary + "; nvidia-ctk would configure Docker's nvidia runtime"
            raise InstallError(
                "the toolkit packages are installed, but nvidia-ctk is not on the PATH.",
                "Check `dpkg -L nvidia-container-toolkit-base`; the bundle may hold the wrong packages.",
            )
        argv = [ctk, "runtime", "configure", "--runtime=docker"]
        if str(host.root) != "/":
            argv.append(f"--config={host.path(DAEMON_JSON)}")  # a staging root: its own daemon.json
        res = host.run(argv, check=False, timeout=120)
        if res.returncode != 0:
            raise InstallError(
                "nvidia-ctk could not add the nvidia runtime to Docker's daemon.json.",
                f"Check {DAEMON_JSON} is valid JSON, then run the same command again.",
                res,
            )
        if server_version(host) is not None:
            restart_docker(host)
            return summary + "; nvidia runtime configured, dockerd restarted"
        return summary + "; nvidia runtime configured (start Docker to use it)"


def _runtime_configured(ctx: InstallContext) -> bool:
    try:
        conf = json.loads(ctx.host.read_text(DAEMON_JSON, "{}") or "{}")
    except ValueError:
        return False
    return isinstance(conf, dict) and "nvidia" in (conf.get("runtimes") or {})
