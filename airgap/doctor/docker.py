"""The doctor's Docker checks: the daemon answers, the nvidia runtime is configured and dockerd restarted
since, Compose v2 works, and the user who runs containers is in the docker group."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

from airgap.doctor.facts import DAEMON_JSON, DOCKER_SOCKETS, ServerFacts
from airgap.layers.docker import PLUGIN_DIR
from airgap.verdict import Check, Status

# dockerd's start time comes from /proc in clock ticks after a boot time in whole seconds.
START_SLACK_S = 2.0


def docker_daemon(f: ServerFacts) -> Iterator[Check]:
    d = f.docker
    if d.socket is None:
        if d.dockerd_pids:
            yield Check(
                "docker-daemon",
                Status.WARN,
                f"dockerd runs (pid {d.dockerd_pids[0]}) but not on {DOCKER_SOCKETS[0]}: docker and compose will "
                "not find it",
                "start it with -H unix:///var/run/docker.sock (the docker.socket unit does)",
            )
        else:
            yield Check(
                "docker-daemon",
                Status.FAIL,
                "Docker is not running (no /var/run/docker.sock)",
                "systemctl enable --now docker; if Docker is not installed: airgap install BUNDLE --only docker",
            )
        return
    if not d.socket_is_socket:
        yield Check("docker-daemon", Status.FAIL, f"{d.socket} is not a socket", "remove it and restart Docker")
    elif d.socket_error is None:
        yield Check("docker-daemon", Status.PASS, f"dockerd answers on {d.socket}")
    elif isinstance(d.socket_error, PermissionError):
        yield Check(
            "docker-daemon",
            Status.WARN,
            f"{d.socket} exists, but this user may not use it (permission denied)",
            "see docker-group below, or run with sudo",
        )
    else:
        yield Check(
            "docker-daemon",
            Status.FAIL,
            f"{d.socket} exists but nothing answers ({d.socket_error}): dockerd is not running (a stale socket)",
            "systemctl restart docker (journalctl -u docker says why it "
            "stopped; an invalid daemon.json is a common cause)",
        )


def nvidia_runtime(f: ServerFacts) -> Iterator[Check]:
    d = f.docker
    config = d.config
    fix = (
        "nvidia-ctk runtime configure --runtime=docker && systemctl restart docker "
        "(`airgap install BUNDLE --only container_toolkit` does both)"
    )
    if config.problem == "missing":
        yield Check(
            "nvidia-runtime",
            Status.FAIL,
            f"no {DAEMON_JSON}: the nvidia runtime is not configured, containers see no GPU",
            fix,
        )
    elif config.data is None:
        yield Check(
            "nvidia-runtime",
            Status.FAIL,
            f"{DAEMON_JSON} is {config.problem}; dockerd refuses to start with it",
            f"fix the JSON (python3 -m json.tool {DAEMON_JSON} shows where), then systemctl restart docker",
        )
    elif config.runtime is None:
        cdi = (
            " (a CDI spec exists: `--device nvidia.com/gpu=all` can work, `--gpus all` needs the runtime)"
            if d.cdi_spec
            else ""
        )
        yield Check(
            "nvidia-runtime",
            Status.FAIL,
            f"{DAEMON_JSON} has no nvidia runtime: nvidia-smi works but containers see no GPU{cdi}",
            fix,
        )
    elif not config.runtime_installed:
        yield Check(
            "nvidia-runtime",
            Status.FAIL,
            f"{DAEMON_JSON} names the runtime {config.runtime_binary}, which is not installed",
            "install nvidia-container-toolkit (airgap install BUNDLE --only container_toolkit)",
        )
    else:
        default = config.data.get("default-runtime", "runc")
        yield Check(
            "nvidia-runtime",
            Status.PASS,
            f"runtimes.nvidia -> {config.runtime_binary} in {DAEMON_JSON} (default-runtime: {default})",
        )


def dockerd_restarted(f: ServerFacts) -> Iterator[Check]:
    d = f.docker
    written = d.config.mtime
    if written is None:
        yield Check("dockerd-restarted", Status.SKIP, f"no {DAEMON_JSON} to compare with")
        return
    if not d.dockerd_pids:
        yield Check("dockerd-restarted", Status.SKIP, f"dockerd is not running; it reads {DAEMON_JSON} when it starts")
        return
    pid, started = d.dockerd_pids[0], d.dockerd_started
    if started is None:
        yield Check("dockerd-restarted", Status.SKIP, f"the start time of dockerd (pid {pid}) cannot be read")
        return
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
    wrote = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(written))
    if started + START_SLACK_S < written:
        yield Check(
            "dockerd-restarted",
            Status.FAIL,
            f"dockerd (pid {pid}) started at {when}, before {DAEMON_JSON} "
            f"was last written ({wrote}): it runs without that configuration (the nvidia runtime too)",
            "systemctl restart docker",
        )
    else:
        yield Check(
            "dockerd-restarted",
            Status.PASS,
            f"dockerd (pid {pid}) started at {when}, after {DAEMON_JSON} was written ({wrote})",
        )


def compose(f: ServerFacts) -> Iterator[Check]:
    d = f.docker
    if d.docker is None or d.compose is None:
        yield Check(
            "compose",
            Status.FAIL,
            "the docker command is not installed, so neither is Compose",
            "airgap install BUNDLE --only docker, then the Compose v2 plugin",
        )
        return
    rc, out = d.compose
    m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
    if rc == 0 and m and int(m.group(1)) >= 2:
        yield Check("compose", Status.PASS, f"Compose v2: {out.strip().splitlines()[0][:120]}")
        return
    also = f"; only the legacy {d.legacy_compose} was found" if d.legacy_compose else ""
    got = out.strip().splitlines()[-1][:160] if out.strip() else f"exit {rc}"
    yield Check(
        "compose",
        Status.FAIL,
        f"`docker compose` (v2) does not work ({got}){also}",
        f"add `compose: VERSION` to the manifest's docker section and install the docker layer again (it puts "
        f"the plugin in {PLUGIN_DIR}/), or put the docker-compose v2 binary there yourself (chmod +x); Docker's "
        "static tgz does not include it",
    )


def docker_group(f: ServerFacts) -> Iterator[Check]:
    d = f.docker
    user, group = d.user, d.docker_group
    if group is None or len(group) < 4:
        yield Check(
            "docker-group",
            Status.FAIL,
            "there is no docker group: the Docker socket is root's only",
            f"groupadd docker && usermod -aG docker {user if user != 'root' else 'YOUR_USER'}, then "
            "restart docker.socket and log in again",
        )
        return
    if user == "root":
        yield Check(
            "docker-group",
            Status.WARN,
            "run as root: which non-root user will run containers is not known",
            "run `sudo airgap doctor` from that user's account (it reads SUDO_USER)",
        )
        return
    members = [m.strip() for m in group[3].split(",") if m.strip()]
    if user in members or d.primary_group == group[2]:
        yield Check("docker-group", Status.PASS, f"{user} is in the docker group")
    else:
        yield Check(
            "docker-group",
            Status.FAIL,
            f"{user} is not in the docker group: docker and compose need sudo",
            f"usermod -aG docker {user}, then log out and in again",
        )
