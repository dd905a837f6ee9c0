"""Nothing half-done looks done: one install at a time, signals passed on and recorded, convergence after kill.

Real processes throughout: `python -m airgap install` into a scratch root, from a real bundle whose CUDA
runfile is a makeself stand-in that the test can hold part-way. The stand-in writes its pid to
`GATE/running` when it reaches the chosen point and waits there until the test creates `GATE/release`; it
notes the signals it gets in `GATE/got-signal` and every run in `GATE/runs`. Waiting loops poll for those
files with generous deadlines, as guards only: no outcome depends on timing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airgap.bundle import finalize
from airgap.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED
from airgap.host import Host
from airgap.lock import Lock
from airgap.signals import run_relayed
from tests.installers import _makeself
from tests.test_install import build_bundle, prepare_root, running_child, state

GUARD = 60.0  # seconds: only ever reached when something is broken

GATED_CUDA = textwrap.dedent("""\
    #!/bin/sh
    # Stand-in for the CUDA 12.4 runfile that a test can hold part-way (AIRGAP_TEST_GATE_AT: before or
    # after nvcc is in place) and that notes the signals it gets.
    silent=0; toolkit=0; path=
    for a in "$@"; do
      case "$a" in
        --silent) silent=1 ;;
        --toolkit) toolkit=1 ;;
        --toolkitpath=*) path="${a#*=}" ;;
        --tmpdir=*) ;;
        *) echo "Unknown option: $a" >&2; exit 2 ;;
      esac
    done
    [ "$silent" = 1 ] && [ "$toolkit" = 1 ] && [ -n "$path" ] || { echo "bad options" >&2; exit 2; }
    root="${AIRGAP_ROOT:-/}"
    [ "$root" != / ] || { echo "refusing to install into /" >&2; exit 3; }
    case "$path" in "$root"/*) ;; *) echo "refusing $path outside $root" >&2; exit 3 ;; esac
    gate="${AIRGAP_TEST_GATE:?}"
    echo "$$" >> "$gate/runs"
    trap 'echo INT > "$gate/got-signal"; exit 130' INT
    trap 'echo TERM > "$gate/got-signal"; exit 143' TERM
    trap 'echo HUP > "$gate/got-signal"; exit 129' HUP
    hold() {
      echo "$$" > "$gate/running.new" && mv "$gate/running.new" "$gate/running"
      while [ ! -e "$gate/release" ]; do sleep 0.05; done
    }
    if [ "${AIRGAP_TEST_GATE_AT:-before}" = before ]; then hold; fi
    mkdir -p "$path/bin" "$path/lib64"
    printf '#!/bin/sh\\necho "Cuda compilation tools, release 12.4, V12.4.131"\\n' > "$path/bin/nvcc"
    chmod 755 "$path/bin/nvcc"
    if [ "${AIRGAP_TEST_GATE_AT:-before}" = after ]; then hold; fi
    echo "Toolkit: Installed in $path"
    """)

PROFILE = "etc/profile.d/cuda.sh"
LD_CONF = "etc/ld.so.conf.d/cuda-12-4.conf"
NVCC = "usr/local/cuda-12.4/bin/nvcc"
LOCK_FILE = "var/lib/airgap/install.lock"


@pytest.fixture(scope="module")
def gated_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle (real collect) whose CUDA runfile is then replaced by the gated stand-in, the lock and
    SHA256SUMS rewritten to match, as its collector would have made it."""
    work = tmp_path_factory.mktemp("signals")
    bundle = build_bundle(work)
    src = work / "gated-src"
    src.mkdir()
    (src / "install.sh").write_text(GATED_CUDA)
    (src / "install.sh").chmod(0o755)
    run = _makeself(src, work / "gated.run", "CUDA 12.4.0 (gated stand-in)").read_bytes()
    lock = Lock.read(bundle)
    (art,) = [a for a in lock.artifacts if a.layer == "cuda"]
    (bundle / art.path).write_bytes(run)
    art.sha256, art.size = hashlib.sha256(run).hexdigest(), len(run)
    finalize(bundle, lock)
    return bundle


class Installs:
    """Starts `airgap install --only cuda` processes against one root, and stops whatever is left of them."""

    def __init__(self, bundle: Path, root: Path, gate: Path) -> None:
        self.bundle, self.root, self.gate = bundle, root, gate
        self.started: list[subprocess.Popen[str]] = []
        self.groups: list[int] = []  # installers' process groups seen while running

    def argv(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "airgap",
            "install",
            str(self.bundle),
            "--root",
            str(self.root),
            "--only",
            "cuda",
            *extra,
        ]

    def env(self, at: str = "before") -> dict[str, str]:
        return dict(os.environ, PYTHONUNBUFFERED="1", AIRGAP_TEST_GATE=str(self.gate), AIRGAP_TEST_GATE_AT=at)

    def start(self, at: str = "before") -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            self.argv(),
            env=self.env(at),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own group, so the test can stop all of it
            # As from a terminal: a test run started in the background (nohup, `&`) inherits SIGINT ignored,
            # and airgap rightly keeps an ignored signal ignored, so the INT case would never see it.
            preexec_fn=_default_signals,
        )
        self.started.append(proc)
        return proc

    def run(self, *extra: str, at: str = "before") -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*extra), env=self.env(at), capture_output=True, text=True, timeout=GUARD * 2)

    def wait_running(self, proc: subprocess.Popen[str] | None) -> tuple[int, int]:
        """Until the stand-in holds at its gate: its pid, and the process group airgap runs it in."""
        marker = self.gate / "running"
        deadline = time.monotonic() + GUARD
        while not marker.exists():
            if proc is not None and proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"install ended early ({proc.returncode}):\n{out}{err}")
            assert time.monotonic() < deadline, "the stand-in never reached its gate"
            time.sleep(0.05)
        group = running_child(self.root, "--toolkit")
        assert group is not None, "the lock file does not name the running installer"
        self.groups.append(group)
        return int(marker.read_text()), group

    def release(self) -> None:
        (self.gate / "release").touch()

    def stop_all(self) -> None:
        self.release()
        for group in [*self.groups, *(p.pid for p in self.started)]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        for p in self.started:
            p.wait()


@pytest.fixture
def installs(gated_bundle: Path, tmp_path: Path) -> Iterator[Installs]:
    gate = tmp_path / "gate"
    gate.mkdir()
    ins = Installs(gated_bundle, prepare_root(tmp_path / "root"), gate)
    try:
        yield ins
    finally:
        ins.stop_all()


def alive(pid: int, *, group: bool = False) -> bool:
    """Whether a process (or any process of a group) runs; a zombie does not (nobody may reap it here)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if (fields[2] if group else entry.name) == str(pid) and fields[0] not in ("Z", "X"):
            return True
    return False


def wait_gone(group: int) -> None:
    deadline = time.monotonic() + GUARD
    while alive(group, group=True):
        assert time.monotonic() < deadline, f"process group {group} is still running"
        time.sleep(0.05)


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=GUARD)
    return proc.returncode, out, err


def runs(installs: Installs) -> int:
    return len((installs.gate / "runs").read_text().split())


def test_a_second_install_refuses_at_once_naming_the_first(installs: Installs) -> None:
    first = installs.start()
    installs.wait_running(first)

    second = installs.run()
    assert second.returncode == EXIT_BAD_INPUT, second.stdout + second.stderr
    assert "another airgap install is running on this server" in second.stderr
    assert f"pid {first.pid}, started " in second.stderr and "install" in second.stderr
    assert "nothing was done" in second.stderr and "Traceback" not in second.stderr
    assert runs(installs) == 1  # the second one never started an installer
    # A dry run changes nothing: it needs no lock, and still works while an install runs.
    dry = installs.run("--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would run: sh " in dry.stdout

    installs.release()
    code, out, err = finish(first)
    assert code == 0, out + err
    assert state(installs.root)["layers"]["cuda"]["status"] == "installed"
    assert not (installs.root / LOCK_FILE).exists()  # the lock goes with its holder
    again = installs.run()
    assert again.returncode == 0, again.stdout + again.stderr


@pytest.mark.parametrize(
    ("sig", "code", "name"),
    [
        (signal.SIGINT, EXIT_INTERRUPTED, "INT"),
        (signal.SIGTERM, EXIT_TERMINATED, "TERM"),
        (signal.SIGHUP, EXIT_TERMINATED, "HUP"),
    ],
)
def test_a_signal_is_passed_on_waited_for_and_recorded(
    installs: Installs, sig: signal.Signals, code: int, name: str
) -> None:
    proc = installs.start()
    pid, group = installs.wait_running(proc)
    os.kill(proc.pid, sig)  # to airgap alone, as `kill PID` or systemd's stop would

    returncode, out, err = finish(proc)
    assert returncode == code, out + err
    assert (installs.gate / "got-signal").read_text().strip() == name  # the installer got it, and trapped it
    assert f"stopped by SIG{name} while `sh " in err and "it was passed the signal and exited" in err
    assert "Run the same command again" in err and "Traceback" not in err
    cuda = state(installs.root)["layers"]["cuda"]
    assert cuda["status"] == "interrupted" and f"SIG{name}" in cuda["detail"]
    # airgap waited: nothing of the installer is left running, and the lock is free.
    assert not alive(pid) and not alive(group, group=True)
    assert not (installs.root / LOCK_FILE).exists()
    (log,) = (installs.root / "var/log/airgap").glob("install-*.log")
    assert f"stopped by SIG{name}]" in log.read_text()

    installs.release()
    again = installs.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert state(installs.root)["layers"]["cuda"]["status"] == "installed"
    assert (installs.root / PROFILE).exists() and (installs.root / LD_CONF).exists()


def test_power_cut_during_the_runfile_then_the_rerun_writes_everything(installs: Installs) -> None:
    """kill -9 of airgap and of the installer, once nvcc is in place: the rerun must not take nvcc for a
    finished install (the runfile did not finish), and ends with profile.d and ld.so.conf.d written."""
    proc = installs.start(at="after")
    _pid, group = installs.wait_running(proc)
    assert (installs.root / NVCC).exists()
    for g in (group, proc.pid):
        os.killpg(g, signal.SIGKILL)
    proc.wait()
    wait_gone(group)
    assert not (installs.root / PROFILE).exists() and not (installs.root / LD_CONF).exists()

    installs.release()
    r = installs.run("--json")
    assert r.returncode == 0, r.stdout + r.stderr
    (step,) = json.loads(r.stdout)["steps"]
    assert step["status"] == "installed"
    assert runs(installs) == 2  # the runfile ran again: nvcc alone does not say it completed
    assert (installs.root / PROFILE).read_text().startswith('export PATH="/usr/local/cuda-12.4/bin')
    assert (installs.root / LD_CONF).read_text() == "/usr/local/cuda-12.4/lib64\n"
    third = installs.run("--json")
    assert json.loads(third.stdout)["steps"][0]["status"] == "skipped"


def test_a_kill_after_the_runfile_is_finished_without_running_it_again(installs: Installs) -> None:
    """What a kill -9 between the runfile's end and the configuration files leaves: the toolkit, recorded
    complete, without profile.d and ld.so.conf.d (removed here). The rerun writes just those."""
    installs.release()
    first = installs.run()
    assert first.returncode == 0, first.stdout + first.stderr
    (installs.root / PROFILE).unlink()
    (installs.root / LD_CONF).unlink()

    r = installs.run("--json")
    assert r.returncode == 0, r.stdout + r.stderr
    (step,) = json.loads(r.stdout)["steps"]
    assert step["status"] == "installed" and "already" in step["detail"]
    assert runs(installs) == 1  # the installer did not run again
    assert (installs.root / PROFILE).exists() and (installs.root / LD_CONF).exists()


def test_airgap_killed_alone_leaves_its_installer_and_the_next_install_waits_for_it(installs: Installs) -> None:
    """kill -9 of airgap alone: its installer runs on (nothing can stop it then). The lock is free, but the
    next install must not start a second installer beside it; once it is gone, the install resumes."""
    proc = installs.start(at="after")
    pid, group = installs.wait_running(proc)
    proc.kill()
    proc.wait()
    assert alive(pid)

    refused = installs.run()
    assert refused.returncode == EXIT_BAD_INPUT, refused.stdout + refused.stderr
    assert f"was killed, but the command it was running still runs: process group {group}: sh " in refused.stderr
    assert f"kill -TERM -- -{group}" in refused.stderr
    assert runs(installs) == 1

    installs.release()
    wait_gone(group)
    r = installs.run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert (installs.root / PROFILE).exists() and (installs.root / LD_CONF).exists()


def test_a_command_that_ignores_the_signal_is_killed_after_the_grace(tmp_path: Path) -> None:
    """In this process: the command ignores SIGTERM and sends it to us (its parent); the relay passes it on,
    waits out the grace, then kills the whole group, and puts our own handler back."""
    before = signal.getsignal(signal.SIGTERM)
    script = "trap '' TERM; echo $$ > \"$1/pid\"; kill -TERM $PPID; sleep 600 & wait"
    done = run_relayed(
        ["sh", "-c", script, "sh", str(tmp_path)], env=dict(os.environ), grace=0.5, tell=lambda _line: None
    )
    assert done.stopped_by == signal.SIGTERM
    assert done.returncode == -signal.SIGKILL
    assert "was killed: still running" in done.note
    assert not alive(int((tmp_path / "pid").read_text()))
    assert signal.getsignal(signal.SIGTERM) == before


def test_host_run_outside_an_install_still_passes_the_signal_on(tmp_path: Path) -> None:
    """Host.run raises Interrupted after the command exits; the command saw the signal first."""
    from airgap.errors import Interrupted

    # As in a terminal: a test run started in the background (nohup, `&`) has SIGINT ignored, and airgap
    # rightly leaves an ignored signal ignored.
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.getsignal(signal.SIGINT)
        script = (
            'trap \'echo got > "$1/got"; exit 3\' INT; kill -INT $PPID; while [ ! -e "$1/got" ]; do sleep 0.05; done'
        )
        with pytest.raises(Interrupted) as info:
            # sh cannot trap a signal it was started with ignored: the command starts with SIGINT as a
            # terminal gives it, then becomes sh.
            restore = (
                "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp('sh', sys.argv[1:])"
            )
            argv = [sys.executable, "-c", restore, "sh", "-c", script, "sh", str(tmp_path)]
            Host(root=tmp_path).run(argv, check=False)
        assert "stopped by SIGINT" in info.value.message and "exited 3" in info.value.message
        assert (tmp_path / "got").read_text() == "got\n"
        assert signal.getsignal(signal.SIGINT) == before
    finally:
        signal.signal(signal.SIGINT, outer)
