"""Run one of the fleet playbooks through ansible-core, and gather what each host wrote back.

ansible-core is an optional dependency (`pip install 'airgap[fleet]'`): only the control node needs it,
never the hosts. It runs as `python -m ansible.cli.playbook` with the python running airgap, so the
ansible-core installed next to airgap is the one used, whatever `ansible-playbook` is on PATH.

What airgap sets, and what it leaves to Ansible:
- The playbook, its variables (one JSON file passed with `-e @FILE`, so lists and numbers keep their type),
  the forks, and a short ControlPath directory of its own (a long home directory path overflows the
  108-byte limit of a Unix socket name); pipelining on, unless ANSIBLE_PIPELINING says otherwise.
- Host key checking stays on: airgap never answers an SSH host key prompt for the user. Hosts must be in
  known_hosts, or the inventory (ansible_ssh_common_args) or `--ssh-common-args` names the file to use.
- Everything else (users, become, ssh keys, ansible.cfg) is the user's Ansible configuration, as it is for
  any playbook they run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from airgap.errors import BadInputError

Say = Callable[[str], None]

INSTALL = "install.yml"
STATUS = "status.yml"
PEER = "bundle_peer.py"  # runs on the hosts: fetches the bundle from a depot or a peer, or serves it


@dataclass
class Rollout:
    """How hosts are taken in batches. `canary` hosts go first, alone; then batches of `batch` (a count
    or a percentage) or all the rest at once. A batch with more than `max_fail_percent` of its hosts failed
    stops the rollout; with a canary and no explicit percentage, one failure stops it."""

    canary: int = 0
    batch: str = ""
    max_fail_percent: int | None = None

    def serial(self) -> list[int | str]:
        rest: int | str = "100%"
        if self.batch:
            rest = int(self.batch) if self.batch.isdigit() else self.batch
        return [self.canary, rest] if self.canary else [rest]

    def max_fail(self) -> int:
        if self.max_fail_percent is not None:
            return self.max_fail_percent
        return 0 if self.canary else 100  # 100: ansible stops only when more than all failed, i.e. never


def check_batch(value: str) -> str:
    text = value.strip()
    number = text[:-1] if text.endswith("%") else text
    if not number.isdigit() or int(number) < 1 or (text.endswith("%") and int(number) > 100):
        raise BadInputError(
            f"--batch {value!r}: not a number of hosts or a percentage.",
            "Give a count of hosts per batch (--batch 10) or a share of the hosts (--batch 25%).",
        )
    return text


def require_ansible() -> None:
    try:
        import ansible  # noqa: F401
    except ImportError:
        raise BadInputError(
            "airgap fleet runs Ansible, and ansible-core is not installed next to airgap; nothing was done.",
            "On the control node: pip install 'airgap[fleet]' (offline: a bundle collected with `fleet: true` "
            "carries it in tool/, and its install.sh sets it up), then run the same command again.",
        ) from None


def playbook_path(name: str) -> Path:
    return Path(str(resources.files("airgap.fleet") / "playbook" / name))


def _ansible_env(control_dir: Path, forks: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(control_dir),
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_FORKS=str(forks),
        PYTHONUNBUFFERED="1",
    )
    # One SSH round trip per module instead of three (no temp file for the module): the bundle is copied
    # file by file, and a copy's per-file cost is mostly these round trips. The user's setting wins (sudo
    # with `requiretty` needs it off).
    env.setdefault("ANSIBLE_PIPELINING", "True")
    if not sys.stderr.isatty():
        env.setdefault("ANSIBLE_NOCOLOR", "1")
    return env


def inventory_hosts(inventory: Path, limit: str | None = None) -> list[str]:
    """The hosts of INVENTORY (after --limit), in inventory order, as Ansible reads them."""
    require_ansible()
    if not inventory.exists():
        raise BadInputError(
            f"{inventory}: no such inventory.", "Name an Ansible inventory file (INI or YAML) or directory."
        )
    argv = [sys.executable, "-m", "ansible.cli.inventory", "-i", str(inventory), "--list"]
    if limit:
        argv += ["--limit", limit]
    env = dict(os.environ, ANSIBLE_INVENTORY_UNPARSED_FAILED="True", ANSIBLE_NOCOLOR="1")
    res = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        said = " ".join(res.stderr.split())[-600:]
        raise BadInputError(
            f"{inventory}: Ansible cannot read this inventory: {said}",
            "Fix the inventory (Ansible's INI or YAML format); `ansible-inventory -i FILE --list` shows what it reads.",
        )
    data = json.loads(res.stdout)
    hosts: list[str] = []

    def walk(group: str) -> None:
        node = data.get(group, {})
        for h in node.get("hosts", []):
            if h not in hosts:
                hosts.append(h)
        for child in node.get("children", []):
            walk(child)

    walk("all")
    if not hosts:
        raise BadInputError(
            f"{inventory}: the inventory names no hosts{' matching --limit ' + limit if limit else ''}.",
            "List the servers under a group, e.g. '[gpu]' then one host per line.",
        )
    return hosts


# Files up to this size travel to the hosts in one tar per run, the rest one by one: Ansible's copy costs a
# few SSH round trips and two module runs per file (a third of a second and more), so a bundle's hundreds of
# wheels and debs would cost minutes per host, while a tar costs one transfer. The tar is written on the
# control node's scratch space, hence the cap on its size.
SMALL_FILE = 8 << 20
SMALL_TOTAL = 512 << 20


@dataclass
class Packed:
    """The bundle, cut for the trip to the hosts.

    `meta`: a tar of what is neither an artifact nor a tool/ wheel (SHA256SUMS, the lock, install.sh,
    README.txt, the dossier) with every directory: always sent by the control node, so SHA256SUMS, the list
    every other file is checked against, only ever comes over SSH; a few kilobytes. `small`: a tar of the
    small artifacts and wheels; `large`: the other ones' paths. A host fetching from a depot or a peer takes
    `meta` only and fetches the rest (a depot's /bundle/ and a seed serve tool/ too)."""

    meta: Path | None
    small: Path | None
    large: list[str]


def pack_bundle(bundle: Path, scratch: Path) -> Packed:
    """Both tars are deterministic (sorted, owner root, the files' modes and mtimes), so the same bundle gives
    the same bytes; their members are the bundle's regular files only (a bundle holds no links: verify
    refuses them)."""
    from airgap.bundle_layout import TOOL_DIR
    from airgap.lock import Lock

    lock = Lock.read(bundle)
    wheels = {f.path for f in lock.tool_files() if f.path.startswith(f"{TOOL_DIR}/")}  # not install.sh
    fetchable = {a.path for a in lock.artifacts if not a.in_base} | wheels
    files: list[tuple[str, os.stat_result]] = []
    dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(bundle):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, bundle)
        if rel_dir != ".":
            dirs.add(rel_dir)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            files.append((rel, st))
    meta: list[tuple[str, os.stat_result]] = []
    small: list[tuple[str, os.stat_result]] = []
    large: list[str] = []
    total = 0
    for rel, st in files:
        if not _is_regular(st):
            continue  # the copy on the host is checked against SHA256SUMS: anything else is named there
        if rel not in fetchable:
            meta.append((rel, st))
        elif st.st_size <= SMALL_FILE and total + st.st_size <= SMALL_TOTAL:
            small.append((rel, st))
            total += st.st_size
        else:
            large.append(rel)
    meta_tar = _write_tar(bundle, scratch / "bundle-meta.tar", sorted(dirs), meta) if meta or dirs else None
    small_tar = _write_tar(bundle, scratch / "bundle-small.tar", [], small) if small else None
    return Packed(meta_tar, small_tar, large)


def _write_tar(bundle: Path, tar_path: Path, dirs: list[str], files: list[tuple[str, os.stat_result]]) -> Path:
    import tarfile

    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for rel, st in files:
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = st.st_size, st.st_mode & 0o755, int(st.st_mtime)
            with open(bundle / rel, "rb") as f:
                tar.addfile(info, f)
    return tar_path


def _is_regular(st: os.stat_result) -> bool:
    import stat

    return stat.S_ISREG(st.st_mode)


@dataclass
class PlaybookRun:
    returncode: int
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> what it wrote back
    log: str = ""  # ansible-playbook's output


@contextmanager
def _scratch() -> Iterator[Path]:
    # Short, private: it holds SSH control sockets (a 108-byte path limit) and the hosts' results.
    path = Path(tempfile.mkdtemp(prefix="agf-", dir="/tmp" if Path("/tmp").is_dir() else None))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_playbook(
    name: str,
    inventory: Path,
    extra_vars: dict[str, Any],
    *,
    check: bool = False,
    forks: int = 50,
    limit: str | None = None,
    ssh_common_args: str | None = None,
    echo: Say | None = None,
) -> PlaybookRun:
    """Run playbook NAME against INVENTORY; each output line of Ansible goes to `echo` as it comes."""
    require_ansible()
    with _scratch() as scratch:
        results = scratch / "results"
        results.mkdir()
        control = scratch / "cp"
        control.mkdir()
        varsfile = scratch / "vars.json"
        extra_vars = {**extra_vars, "airgap_results": str(results)}
        if "airgap_bundle" in extra_vars and name == INSTALL:
            packed = pack_bundle(Path(extra_vars["airgap_bundle"]), scratch)
            extra_vars.update(
                airgap_meta_tar=str(packed.meta or ""),
                airgap_small_tar=str(packed.small or ""),
                airgap_large_files=packed.large,
                airgap_peer_source=str(playbook_path(PEER)),
            )
        varsfile.write_text(json.dumps(extra_vars))
        argv = [
            sys.executable,
            "-m",
            "ansible.cli.playbook",
            "-i",
            str(inventory),
            "-e",
            f"@{varsfile}",
            str(playbook_path(name)),
        ]
        if check:
            argv.append("--check")
        if limit:
            argv += ["--limit", limit]
        if ssh_common_args:
            argv.append(f"--ssh-common-args={ssh_common_args}")
        lines: list[str] = []
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=_ansible_env(control, forks),
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if echo is not None:
                echo(line.rstrip("\n"))
        rc = proc.wait()
        run = PlaybookRun(rc, log="".join(lines))
        for f in sorted(results.glob("*.json")):
            try:
                run.results[f.stem] = json.loads(f.read_text())
            except ValueError:
                continue  # a host cut off while writing: reported as having no result
        return run


def parse_json_output(text: str) -> dict[str, Any] | None:
    """The one JSON object an `airgap ... --json` printed on stdout, or None."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        start = text.find("{")
        if start < 0:
            return None
        try:
            data = json.loads(text[start:])
        except ValueError:
            return None
    return data if isinstance(data, dict) else None
