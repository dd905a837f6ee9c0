"""Docker engine from Docker's static binaries tgz: no distribution packages needed on the server."""

from __future__ import annotations

import json
import re
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from airgap.artifacts import Artifact, Digest, PublishedDigest
from airgap.errors import InstallError
from airgap.host import Host
from airgap.install_context import InstallContext
from airgap.layers.base import Layer
from airgap.lock import LockedArtifact
from airgap.manifest import Manifest
from airgap.sources.http import file_name_from_url
from airgap.target import arch_of

BASE = "https://download.docker.com/linux/static/stable"
COMPOSE_BASE = "https://github.com/docker/compose/releases/download"
# One of the directories the docker CLI searches for plugins (docs.docker.com: cli-plugins).
PLUGIN_DIR = "/usr/libexec/docker/cli-plugins"
BIN_DIR = "/usr/bin"
DAEMON_JSON = "/etc/docker/daemon.json"
DOCKERD_LOG = "/var/log/airgap/dockerd.log"
# What Docker's static tgz holds in docker/ (19.03 to 28.x; containerd-shim only up to 20.10): the only
# names the layer puts in /usr/bin. Anything else in a tampered tgz (`docker/ld.so.preload`, a second
# `sudo`) is left out, named in the log.
STATIC_BINARIES = frozenset(
    {
        "docker",
        "dockerd",
        "containerd",
        "containerd-shim",
        "containerd-shim-runc-v2",
        "ctr",
        "runc",
        "docker-init",
        "docker-proxy",
    }
)

# Units as Docker's own packages ship them, adapted to binaries in /usr/bin (the static tgz has none).
CONTAINERD_SERVICE = """[Unit]
Description=containerd container runtime
After=network.target local-fs.target

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
"""
DOCKER_SOCKET = """[Unit]
Description=Docker Socket for the API

[Socket]
ListenStream=/run/docker.sock
SocketMode=0660
SocketUser=root
SocketGroup=docker

[Install]
WantedBy=sockets.target
"""
DOCKER_SERVICE = """[Unit]
Description=Docker Application Container Engine
After=network-online.target docker.socket firewalld.service containerd.service time-set.target
Wants=network-online.target containerd.service
Requires=docker.socket

[Service]
Type=notify
ExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock
ExecReload=/bin/kill -s HUP $MAINPID
TimeoutStartSec=0
RestartSec=2
Restart=always
LimitNOFILE=infinity
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
Delegate=yes
KillMode=process
OOMScoreAdjust=-500

[Install]
WantedBy=multi-user.target
"""


class DockerLayer(Layer):
    name = "docker"
    section = "docker"
    by_hand_file = (
        "tar -xzf {path} && for b in " + " ".join(sorted(STATIC_BINARIES)) + "; do "
        '[ -f "docker/$b" ] && install -m 755 "docker/$b" /usr/bin/; done; dockerd &'
    )

    def by_hand(self, artifacts: list[LockedArtifact]) -> list[str]:
        return [
            f"install -D -m 755 {a.path} /usr/libexec/docker/cli-plugins/docker-compose"
            if a.name.startswith("docker-compose-")
            else self.by_hand_file.format(path=a.path)
            for a in artifacts
        ]

    installable = True
    preflight = frozenset({"disk"})

    def plan(self, manifest: Manifest) -> list[Artifact]:
        spec = manifest.docker
        assert spec is not None
        pinned = Digest("sha256", spec.sha256, "manifest") if spec.sha256 else None
        reason = "Docker publishes no checksum for its static tgz; pin `docker.sha256` to check one"
        url = spec.url or f"{BASE}/{arch_of(manifest.target.arch).machine}/docker-{spec.version}.tgz"
        field = ("docker", "url") if spec.url else ("docker", "version")
        arts = [Artifact(self.name, file_name_from_url(url), [url], field, pinned=pinned, no_digest_reason=reason)]
        if spec.compose:
            name = f"docker-compose-linux-{arch_of(manifest.target.arch).machine}"
            base = f"{COMPOSE_BASE}/v{spec.compose}"
            arts.append(
                Artifact(
                    self.name,
                    name,
                    [f"{base}/{name}"],
                    ("docker", "compose"),
                    published=PublishedDigest("sha256", f"{base}/checksums.txt", name),
                )
            )
        return arts

    def installed(self, ctx: InstallContext) -> str | None:
        want = _docker_version(ctx)
        if _compose_artifacts(ctx) and not ctx.host.exists(f"{PLUGIN_DIR}/docker-compose"):
            return None  # the daemon may run, but the bundle's Compose plugin is not in place yet
        running = server_version(ctx.host)
        if running and _vtuple(running) >= _vtuple(want):
            return f"Docker {running} is already running (bundle has {want})"
        return None

    def install(self, ctx: InstallContext) -> str:
        host = ctx.host
        want = _docker_version(ctx)
        running = server_version(host)
        if running and _vtuple(running) >= _vtuple(want):
            # Only the Compose plugin is missing: never restart a daemon that runs containers.
            _install_compose(ctx)
            done = "would be installed" if host.dry_run else "installed"
            return f"Docker {running} already running; Compose plugin {done} to {PLUGIN_DIR}"
        (art,) = [a for a in ctx.lock.artifacts if a.layer == self.name and a.name.endswith(".tgz")]
        with ctx.open_artifact(art) as stream:  # streamed: a split tgz needs no joined copy
            binaries = _read_safe_tgz(stream, art.name, host.note)
        for name, data in binaries.items():
            host.write_file(f"{BIN_DIR}/{name}", data, mode=0o755)
        _install_compose(ctx)
        _ensure_docker_group(host)
        host.write_file("/etc/systemd/system/containerd.service", CONTAINERD_SERVICE)
        host.write_file("/etc/systemd/system/docker.socket", DOCKER_SOCKET)
        host.write_file("/etc/systemd/system/docker.service", DOCKER_SERVICE)
        start_docker(host)
        if host.dry_run:
            return f"Docker {want} would be installed and started"
        running = wait_for_daemon(host)
        if running is None:
            log = host.read_text(DOCKERD_LOG, "") or ""
            raise InstallError(
                "dockerd was installed but does not answer.",
                f"See {DOCKERD_LOG} or `journalctl -u docker`. Common causes: another dockerd or containerd "
                "still running, or a kernel without overlayfs (set storage-driver in /etc/docker/daemon.json).\n"
                + "\n".join(log.splitlines()[-10:]),
            )
        return f"Docker {running} installed to {BIN_DIR} ({len(binaries)} binaries) and running"


def _install_compose(ctx: InstallContext) -> None:
    for plugin in _compose_artifacts(ctx):
        with ctx.open_artifact(plugin) as stream:
            ctx.host.write_file(f"{PLUGIN_DIR}/docker-compose", stream.read(), mode=0o755)


def _compose_artifacts(ctx: InstallContext) -> list[LockedArtifact]:
    return [a for a in ctx.lock.artifacts if a.layer == "docker" and a.name.startswith("docker-compose-")]


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def _read_safe_tgz(stream: BinaryIO, name: str, note: Callable[[str], None]) -> dict[str, bytes]:
    """The binaries of a docker-VERSION.tgz, refusing anything that is not a plain file in docker/ (a path
    that escapes with '..' or '/', a link, a device): a tampered tgz must not write outside /usr/bin. Of the
    plain files, only STATIC_BINARIES are kept; others are named to `note` and never installed."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if member.isdir() and member.name.rstrip("/") == "docker":
                    continue
                if (
                    not member.isreg()
                    or len(parts) != 2
                    or parts[0] != "docker"
                    or parts[1] in ("", "..", ".")
                    or parts[1] in out
                ):
                    raise InstallError(
                        f"{name}: unexpected entry {member.name!r}; a Docker static tgz holds only files in docker/.",
                        "Do not use this tgz: get a new bundle collected on the connected PC, from "
                        "download.docker.com or a mirror you trust.",
                    )
                if parts[1] not in STATIC_BINARIES:
                    note(f"{name}: {member.name!r} is not one of Docker's binaries; left out, not installed")
                    continue
                f = tar.extractfile(member)
                assert f is not None
                out[parts[1]] = f.read()
    except (tarfile.TarError, OSError) as exc:
        raise InstallError(f"{name}: not a readable tgz ({exc}).", "Run `airgap verify` on the bundle.") from None
    if "dockerd" not in out or "docker" not in out:
        raise InstallError(f"{name}: no docker/dockerd inside.", "Check the manifest's docker.url.")
    return out


def _ensure_docker_group(host: Host) -> None:
    """docker.socket gives the socket to group docker: it must exist before the socket unit starts."""
    group = host.read_text("/etc/group", "") or ""
    if any(line.split(":", 1)[0] == "docker" for line in group.splitlines()):
        return
    if str(host.root) == "/":
        host.run(["groupadd", "--system", "docker"])
        return
    # A staging root is plain files: add the line ourselves (groupadd --prefix needs root and shadow files).
    used = {int(p[2]) for p in (line.split(":") for line in group.splitlines()) if len(p) > 2 and p[2].isdigit()}
    gid = next(g for g in range(999, 100, -1) if g not in used)
    host.write_file("/etc/group", group + ("" if group.endswith("\n") or not group else "\n") + f"docker:x:{gid}:\n")


def _systemd_running(host: Host) -> bool:
    return str(host.root) == "/" and Path("/run/systemd/system").is_dir()


def docker_host(host: Host) -> str:
    """Where the daemon listens: DOCKER_HOST, else daemon.json's first unix socket, else the default."""
    if host.base_env.get("DOCKER_HOST"):
        return host.base_env["DOCKER_HOST"]
    try:
        hosts = json.loads(host.read_text(DAEMON_JSON, "{}") or "{}").get("hosts", [])
    except ValueError:
        hosts = []
    for h in hosts:
        if h.startswith("unix://"):
            return h
    return f"unix://{host.path('/var/run/docker.sock')}"


def server_version(host: Host) -> str | None:
    docker = host.which("docker")
    if docker is None:
        return None
    res = host.run(
        [docker, "version", "--format", "{{.Server.Version}}"],
        check=False,
        changes=False,
        timeout=30,
        env={"DOCKER_HOST": docker_host(host)},
    )
    out = res.output.strip().splitlines()
    return out[-1].strip() if res.returncode == 0 and out else None


def wait_for_daemon(host: Host, timeout: float = 60.0) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version = server_version(host)
        if version:
            return version
        time.sleep(0.5)
    return None


def start_docker(host: Host) -> None:
    if _systemd_running(host):
        host.run(["systemctl", "daemon-reload"])
        host.run(["systemctl", "enable", "--now", "containerd.service", "docker.socket", "docker.service"])
        return
    # No systemd (a container, a minimal install, the tests): run dockerd ourselves, configured by daemon.json.
    if host.dry_run:
        # The dockerd it would start is the one just written to /usr/bin, which a dry run does not write:
        # looking it up would name whatever dockerd the machine running airgap has.
        config = f" --config-file={DAEMON_JSON}" if host.exists(DAEMON_JSON) else ""
        host.announce(f"start dockerd: {BIN_DIR}/dockerd{config}")
        return
    argv = [host.which("dockerd") or str(host.path(f"{BIN_DIR}/dockerd"))]
    if host.exists(DAEMON_JSON):
        argv.append(f"--config-file={host.path(DAEMON_JSON)}")
    host.spawn(argv, DOCKERD_LOG)


def restart_docker(host: Host) -> None:
    """After the container toolkit writes the nvidia runtime into daemon.json, dockerd must restart: the
    most common reason containers see no GPU."""
    if _systemd_running(host):
        host.run(["systemctl", "restart", "docker.service"])
        return
    pid_text = host.read_text(_pidfile(host)) or ""
    if pid_text.strip().isdigit():
        host.run(["kill", pid_text.strip()])
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid_text.strip()}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    start_docker(host)


def _pidfile(host: Host) -> str:
    try:
        pidfile = json.loads(host.read_text(DAEMON_JSON, "{}") or "{}").get("pidfile")
    except ValueError:
        pidfile = None
    if pidfile:
        # daemon.json names a real path; express it as a server path under the root.
        p = Path(pidfile)
        try:
            return "/" + str(p.relative_to(host.root))
        except ValueError:
            return str(p)
    return "/var/run/docker.pid"


def _docker_version(ctx: InstallContext) -> str:
    if ctx.manifest.docker is None:
        raise InstallError(
            "the bundle's lock records no docker section, but holds Docker.",
            "Get a new bundle collected on the connected PC.",
        )
    return ctx.manifest.docker.version
