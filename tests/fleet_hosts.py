"""Real hosts for the fleet tests: Debian 12 root filesystems, one container each, reached over SSH.

    tar = host_rootfs(cache_dir)                    # mmdebstrap: python3, openssh-server, sudo (about 30 s)
    with start_hosts(dockerd, tar, workdir, ["h1", "h2", "h3"]) as hosts:
        hosts[0].ssh("cat /etc/debian_version")     # real sshd, real key, a known_hosts checked strictly
        write_inventory(hosts, path, ...)           # an Ansible INI inventory naming them

Each host is its own container in the tests' private dockerd, with `--network host` and its own sshd on its
own port of 127.0.0.1: every connection stays on loopback (the dockerd runs without a bridge). Each host has
its own root filesystem (the container's); a per-host directory of this machine is mounted at
/srv/fleet-test, holding the scratch server root that `airgap install --root` installs into (the stand-in
installers refuse /) and the script that stands in for a reboot: it gives that root a new boot id, as a
real reboot gives /proc/sys/kernel/random/boot_id, and unloads nouveau (the blacklist took effect).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.dockerd import Dockerd, dockerd_unavailable

IMAGE = "airgap-fleet-host:bookworm"
MOUNT = "/srv/fleet-test"
PACKAGES = "python3,openssh-server,sudo"

REBOOT_SH = """\
#!/bin/sh
# Stands in for `reboot` in a container: a new boot id for the server root, nouveau no longer loaded.
set -e
root=/srv/fleet-test/root
cat /proc/sys/kernel/random/uuid > "$root/proc/sys/kernel/random/boot_id"
grep -v '^nouveau ' "$root/proc/modules" > "$root/proc/modules.new" || true
mv "$root/proc/modules.new" "$root/proc/modules"
echo rebooted >> /srv/fleet-test/reboots
"""


def fleet_unavailable() -> str | None:
    """Why the fleet's hosts cannot be stood up here, or None when they can."""
    reason = dockerd_unavailable()
    if reason:
        return reason
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("ssh", "openssh-client"), ("ssh-keygen", "openssh-client")):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install {package}; see scripts/test-apt-packages.txt)"
    try:
        import ansible  # noqa: F401
    except ImportError:
        return "ansible-core is not installed (pip install -e '.[test]')"
    return None


def host_rootfs(cache: Path) -> Path:
    """A Debian 12 root filesystem as a tarball, made once per cache directory by mmdebstrap (it needs the
    Debian archive). AIRGAP_TEST_FLEET_ROOTFS names a tarball made earlier, to skip that download."""
    given = os.environ.get("AIRGAP_TEST_FLEET_ROOTFS")
    if given and Path(given).is_file():
        return Path(given)
    tar = cache / "bookworm-rootfs.tar"
    if not tar.exists():
        # mmdebstrap picks its output format from the name's extension: say tar, and keep .tar at the end.
        tmp = cache / "bookworm-rootfs.partial.tar"
        subprocess.run(
            ["mmdebstrap", "--quiet", "--format=tar", "--variant=apt", f"--include={PACKAGES}", "bookworm", str(tmp)],
            check=True,
            capture_output=True,
            timeout=900,
        )
        tmp.rename(tar)
    return tar


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SshHost:
    name: str
    port: int
    container: str
    dir: Path  # this machine's side of /srv/fleet-test
    key: Path
    known_hosts: Path

    @property
    def root(self) -> Path:
        """The server root `airgap install --root` installs into, seen from this machine."""
        return self.dir / "root"

    def ssh(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "ssh",
                *ssh_options(self.key, self.known_hosts),
                "-p",
                str(self.port),
                "root@127.0.0.1",
                command,
            ],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )


def ssh_options(key: Path, known_hosts: Path) -> list[str]:
    return [
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
    ]


def _wait_for_sshd(d: Dockerd, container: str, port: int) -> str:
    """The host's ed25519 public key, once its sshd listens."""
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = d.docker("inspect", "-f", "{{.State.Running}}", container, check=False).stdout.strip()
        if state != "true":
            logs = d.docker("logs", container, check=False)
            raise RuntimeError(f"host container {container} stopped:\n{logs.stdout}{logs.stderr}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            if s.recv(64).startswith(b"SSH-"):
                return d.docker("exec", container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.strip()
        time.sleep(0.2)
    raise RuntimeError(f"sshd in {container} did not answer on 127.0.0.1:{port}")


@contextlib.contextmanager
def start_hosts(
    d: Dockerd, rootfs: Path, workdir: Path, names: list[str], mounts: dict[str, list[tuple[Path, str]]] | None = None
) -> Iterator[list[SshHost]]:
    """One container per name, each with its sshd on its own loopback port; removed on exit. `mounts` gives
    some hosts more bind mounts, (this machine's path, the path in the host), e.g. a Docker socket."""
    workdir.mkdir(parents=True, exist_ok=True)
    if d.docker("image", "inspect", IMAGE, check=False).returncode != 0:
        imported = d.docker("import", str(rootfs), IMAGE, timeout=600, check=False)
        if imported.returncode != 0:
            raise RuntimeError(f"docker import {rootfs}: {imported.stderr}\n{d.log_tail()}")
    key = workdir / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    known_hosts = workdir / "known_hosts"
    hosts: list[SshHost] = []
    try:
        for name in names:
            port = free_port()
            hdir = workdir / name
            (hdir / "root").mkdir(parents=True)
            (hdir / "reboot.sh").write_text(REBOOT_SH)
            (hdir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
            container = f"airgap-fleet-{name}-{port}"
            sshd = (
                f"mkdir -p /run/sshd && ssh-keygen -A >/dev/null && exec /usr/sbin/sshd -D -e -p {port} "
                "-o ListenAddress=127.0.0.1 -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no "
                f"-o AuthorizedKeysFile={MOUNT}/authorized_keys -o StrictModes=no"
            )
            d.docker(
                "run",
                "-d",
                "--name",
                container,
                "--hostname",
                name,
                "--network",
                "host",
                "-v",
                f"{hdir}:{MOUNT}",
                *(arg for src, dst in (mounts or {}).get(name, []) for arg in ("-v", f"{src}:{dst}")),
                IMAGE,
                "/bin/sh",
                "-c",
                sshd,
            )
            hosts.append(SshHost(name, port, container, hdir, key, known_hosts))
        with known_hosts.open("a") as kh:
            for h in hosts:
                kh.write(f"[127.0.0.1]:{h.port} {_wait_for_sshd(d, h.container, h.port)}\n")
        yield hosts
    finally:
        for h in hosts:
            d.docker("rm", "-f", h.container, check=False)


def cpu_seconds(d: Dockerd, host: SshHost) -> float | None:
    """CPU time the host's container has used so far (cgroup v2 cpu.stat), or None where that is not found."""
    import glob

    cid = d.docker("inspect", "-f", "{{.Id}}", host.container, check=False).stdout.strip()
    for path in glob.glob(f"/sys/fs/cgroup/**/*{cid}*/cpu.stat", recursive=True) if cid else []:
        for line in Path(path).read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    return None


def write_inventory(hosts: list[SshHost], path: Path, root_vars: dict[str, str], extra: str = "") -> Path:
    """An Ansible INI inventory: every host in group `gpu`, with what reaches it and the test's variables."""
    lines = ["[gpu]"]
    for h in hosts:
        lines.append(f"{h.name} ansible_host=127.0.0.1 ansible_port={h.port}")
    key, kh = hosts[0].key, hosts[0].known_hosts
    lines += [
        "",
        "[gpu:vars]",
        "ansible_user=root",
        f"ansible_ssh_private_key_file={key}",
        f"ansible_ssh_common_args='-o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes'",
        "ansible_python_interpreter=/usr/bin/python3",
        *(f"{k}={v}" for k, v in root_vars.items()),
    ]
    path.write_text("\n".join(lines) + "\n" + textwrap.dedent(extra))
    return path
