"""`tool/`: airgap's own wheel, every dependency's wheel for the target, and pip's wheel.

`pip download --python-version X.Y --platform ...` picks wheels for the target but evaluates environment
markers (`; python_version < "3.11"`) against the python running it (seen with pip 23.2: from 3.11 for a
3.10 target it leaves out exceptiongroup and tomli). So after pip is done, the dependency closure is walked
again with the TARGET's markers (airgap.wheels.resolve_closure); what is missing is downloaded in another
round, what only the local python wanted is dropped.

Everything is fetched into a temp dir in the bundle and renamed to tool/ at the end: a failure leaves the
previous tool/ as it was.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion

from airgap.bundle_layout import TOOL_DIR
from airgap.digests import sha256_file
from airgap.errors import AirgapError, BadInputError, UpstreamError
from airgap.fsutil import fsync_tree
from airgap.lock import ToolFile, ToolRecord
from airgap.selfinstall.imports import check_imports
from airgap.selfinstall.install_sh import write_install_sh
from airgap.selfinstall.own_wheel import build_wheel, package_dir, project_metadata, wheel_name
from airgap.target import Target, platform_tags
from airgap.wheels import WheelInfo, read_wheel, requirement_spec, resolve_closure

# tool/ for a target.os whose glibc airgap does not know and no python.glibc: Ubuntu 22.04's.
FALLBACK_GLIBC = "2.35"
PIP_TIMEOUT = 900  # seconds for one `pip download`: a slow mirror, not a hung one
MAX_ROUNDS = 4  # pip download rounds to complete the closure; two are enough in practice

Log = Callable[[str], None]
RunPip = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _noop(_msg: str) -> None:
    pass


def default_run_pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    """`python -m pip ARGS` with the python running airgap; pip's own config (pip.conf, PIP_INDEX_URL for an
    enterprise mirror) applies, as it would to the user's own pip."""
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONIOENCODING="utf-8")
    try:
        return subprocess.run(
            [sys.executable, "-m", "pip", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=PIP_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UpstreamError(
            f"pip download of airgap's own dependencies took longer than {PIP_TIMEOUT} s.",
            "Check the connection to the package index (or its mirror in pip.conf / PIP_INDEX_URL) and run the "
            "same command again, or collect with --no-tool.",
        ) from None


def tool_target(target: Target) -> Target:
    """The target as tool/ fits it: the server's glibc (FALLBACK_GLIBC when unknown) and only manylinux
    platforms, whatever python.platforms says for the python layer.

    tool/ comes from whatever index pip.conf names, where a linux_<machine> wheel was built for one machine
    and its glibc; PyPI refuses such uploads, so nothing airgap needs is lost.
    """
    glibc = target.glibc or FALLBACK_GLIBC
    return dataclasses.replace(
        target, glibc=glibc, platforms=tuple(platform_tags(target.arch, glibc, manylinux_only=True))
    )


def _last_lines(text: str, n: int = 4) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "(no output)"


def _pip_failure(proc: subprocess.CompletedProcess[str], target: Target) -> AirgapError:
    text = (proc.stderr or "") + (proc.stdout or "")
    plats = target.platform_tags()
    tags = f"{target.abi} ({target.abi}, abi3, none) on {plats[0]} .. {plats[-1]}"
    m = re.search(r"(?:No matching distribution found for|satisfies the requirement) (\S+)", text)
    if (
        re.search(
            r"Max retries exceeded|NewConnectionError|Name or service not known|Network is unreachable|"
            r"Temporary failure in name resolution|ProxyError|SSLError",
            text,
        )
        and not m
    ):
        return UpstreamError(
            "pip could not reach the package index to fetch airgap's own dependencies for tool/: " + _last_lines(text),
            "Check the connection (or the mirror in pip.conf / PIP_INDEX_URL) and run the same command again, "
            "or collect with --no-tool.",
        )
    if m:
        pkg = m[1]
        bare = re.split(r"[<>=!~;( \[]", pkg)[0]
        return UpstreamError(
            f"no wheel of {pkg} for the target (python {target.python}, {target.arch}): tried tags {tags}. "
            f"pip said: {_last_lines(text)}",
            f"Choose a target.python that {bare} publishes wheels for, "
            "or collect with --no-tool and bring airgap to the server another way.",
        )
    return UpstreamError(
        f"pip download for tool/ failed (exit {proc.returncode}): {_last_lines(text)}",
        "Run the same command again; if it keeps failing, collect with --no-tool.",
    )


def _pip_download(
    run_pip: RunPip,
    dest: Path,
    reqs: Sequence[str],
    target: Target,
    pip_args: Sequence[str],
    constraints: Path | None,
) -> None:
    args = [
        "download",
        "--only-binary=:all:",
        "--dest",
        str(dest),
        "--python-version",
        target.python,
        "--implementation",
        "cp",
        "--abi",
        target.abi,
        "--progress-bar",
        "off",
    ]
    for plat in target.platform_tags():
        args += ["--platform", plat]
    if constraints is not None:
        args += ["-c", str(constraints)]
    proc = run_pip([*args, *pip_args, *reqs])
    if proc.returncode != 0:
        raise _pip_failure(proc, target)


def _clean_leftovers(bundle: Path) -> None:
    """Temp dirs of a run that was killed: never half a tool/, but their bytes are not wanted either."""
    for p in bundle.glob(".tool.*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _tool_file(path: Path) -> ToolFile:
    return ToolFile(path=f"{TOOL_DIR}/{path.name}", size=path.stat().st_size, sha256=sha256_file(path))


def build_tool(bundle: Path, target: Target, log: Log = _noop, extras: Sequence[str] = ()) -> ToolRecord:
    """The self-install part of a bundle: tool/ and install.sh, and the lock's record of them. `extras` are
    airgap's extras whose wheels come too (`fleet`)."""
    import airgap

    t = tool_target(target)
    files = build_tool_dir(bundle, t, log=log, extras=extras)
    files.append(write_install_sh(bundle, airgap.__version__, t.python))
    return ToolRecord(python=t.python, arch=t.arch, glibc=t.glibc or FALLBACK_GLIBC, files=files, extras=sorted(extras))


def reuse_tool(
    bundle: Path, target: Target, previous: ToolRecord | None, extras: Sequence[str] = ()
) -> ToolRecord | None:
    """The previous run's tool/ when nothing it depends on changed, else None (build it again).

    Unchanged means: the same python, machine and glibc, airgap's own wheel built now has the same bytes
    as the recorded one (same version, code and requirements: the wheel is deterministic), and every
    recorded file is in tool/ with its recorded size and sha256, and nothing else is. install.sh is
    written again (it costs nothing). This is what spares a re-collect the 20 s of `pip download`.
    """
    import airgap

    if previous is None:
        return None
    t = tool_target(target)
    glibc = t.glibc or FALLBACK_GLIBC
    if (previous.python, previous.arch, previous.glibc, previous.extras) != (t.python, t.arch, glibc, sorted(extras)):
        return None
    root = bundle / TOOL_DIR
    recorded = {f.path: f for f in previous.files if f.path.startswith(f"{TOOL_DIR}/")}
    if not root.is_dir() or {f"{TOOL_DIR}/{p.name}" for p in root.iterdir()} != set(recorded):
        return None
    package = package_dir()
    meta = project_metadata(package)
    own = recorded.get(f"{TOOL_DIR}/{wheel_name(meta)}")
    if own is None:
        return None
    _clean_leftovers(bundle)
    scratch = Path(tempfile.mkdtemp(dir=bundle, prefix=".tool.check-"))
    try:
        if sha256_file(build_wheel(scratch, package, meta)) != own.sha256:
            return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for f in recorded.values():
        path = bundle / f.path
        if path.is_symlink() or not path.is_file() or path.stat().st_size != f.size or sha256_file(path) != f.sha256:
            return None
    files = sorted(recorded.values(), key=lambda f: f.path)
    files.append(write_install_sh(bundle, airgap.__version__, t.python))
    return ToolRecord(python=t.python, arch=t.arch, glibc=glibc, files=files, extras=sorted(extras))


def build_tool_dir(
    bundle: Path,
    target: Target,
    run_pip: RunPip = default_run_pip,
    log: Log = _noop,
    *,
    pip_args: Sequence[str] = (),
    extras: Sequence[str] = (),
) -> list[ToolFile]:
    """Fill `bundle/tool/` with airgap's wheel, every dependency's wheel for the target, and pip's wheel.

    The wheels fit `tool_target(target)`. pip_args: extra arguments for `pip download` (`--index-url URL`;
    tests pass `--no-index --find-links DIR`). Returns the files, sorted by path. Raises UpstreamError when
    no wheel exists for the target (naming the package and the tags tried).
    """
    target = tool_target(target)
    bundle.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(bundle)
    package = package_dir()
    meta = project_metadata(package)
    for note in meta.notes:
        log(f"tool: {note}")
    xy = target.python
    if meta.requires_python and not SpecifierSet(meta.requires_python).contains(f"{xy}.0", prereleases=True):
        raise BadInputError(
            f"airgap {meta.version} needs python {meta.requires_python}; the target's python is {xy}.",
            "Set target.python to a version it supports (the server then needs that python3), or collect with "
            "--no-tool and bring airgap to the server another way.",
        )
    roots = [Requirement(r) for r in meta.requires_dist]
    # Extras not asked for ("test") evaluate false and are left out; asked-for ones ("fleet") come along.
    roots = [r for r in roots if target.wants(r.marker, ("", *extras))]
    # An extra's requirement is wanted as such: without its `extra == ...` marker, which the closure below
    # would judge false again.
    roots = [r if target.wants(r.marker) else _unmarked(r) for r in roots]
    tmp = Path(tempfile.mkdtemp(dir=bundle, prefix=".tool.tmp-"))
    try:
        own = build_wheel(tmp, package, meta)
        log(f"tool: built {own.name} from {package}")
        log(f"tool: downloading airgap's dependencies and pip for python {xy} on {target.machine}")
        _pip_download(run_pip, tmp, [*(requirement_spec(r) for r in roots), "pip"], target, pip_args, None)
        missing: list[Requirement] = []
        selected: dict[str, WheelInfo] = {}
        for _round in range(MAX_ROUNDS):
            wheels = [read_wheel(p) for p in sorted(tmp.glob("*.whl")) if p != own]
            selected, missing = resolve_closure(wheels, roots, target)
            if not missing:
                break
            # pip judged these markers by the python running here, not the target's: fetch them now,
            # holding everything already chosen to its version so the closure stays consistent.
            names = {canonicalize_name(r.name) for r in missing}
            log(f"tool: the target also needs {', '.join(sorted(requirement_spec(r) for r in missing))}")
            pins = tmp / "constraints.txt"
            pins.write_text("".join(f"{w.name}=={w.version}\n" for n, w in sorted(selected.items()) if n not in names))
            try:
                _pip_download(run_pip, tmp, [requirement_spec(r) for r in missing], target, pip_args, pins)
            finally:
                pins.unlink(missing_ok=True)
        if missing:
            raise UpstreamError(
                f"tool/: could not complete airgap's dependencies for python {xy}: still missing "
                f"{', '.join(requirement_spec(r) for r in missing)}.",
                "Run the same command again; if it persists, collect with --no-tool.",
            )
        check_imports(package, set(selected), {canonicalize_name(r.name) for r in roots}, log)
        pips = sorted((read_wheel(p) for p in tmp.glob("pip-*.whl")), key=lambda w: w.version)
        if not pips:
            raise UpstreamError(
                f"tool/: pip download gave no wheel of pip for python {xy}.",
                "Run the same command again, or collect with --no-tool.",
            )
        keep = {own.name, pips[-1].path.name, *(w.path.name for w in selected.values())}
        dropped = sorted(p.name for p in tmp.iterdir() if p.name not in keep)
        for name in dropped:
            (tmp / name).unlink()
        if dropped:
            log(f"tool: not needed on python {xy}: {', '.join(dropped)}")
        _check_tags(tmp, target)
        fsync_tree(tmp)
        final = bundle / TOOL_DIR
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=bundle, prefix=".tool.old-"))
            os.replace(final, old / TOOL_DIR)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = [_tool_file(p) for p in sorted(final.iterdir())]
    log(f"tool: {len(files)} wheels, {sum(f.size for f in files)} bytes")
    return files


def _unmarked(req: Requirement) -> Requirement:
    plain = Requirement(str(req))
    plain.marker = None
    return plain


def _check_tags(tool: Path, target: Target) -> None:
    """Every wheel must install on the target: pip checked this while choosing; a wheel that slipped through
    (a find-links dir, a mirror serving odd files) is caught here rather than on the server."""
    accepted = set(target.wheel_tags())
    xy = target.python
    for p in tool.glob("*.whl"):
        w = read_wheel(p)
        if not w.tags & accepted:
            raise UpstreamError(
                f"tool/{p.name}: not installable on python {xy} {target.machine} (glibc {target.glibc}).",
                "Check the package index or mirror, then collect again.",
            )
        try:
            ok = not w.requires_python or SpecifierSet(w.requires_python).contains(f"{xy}.0", prereleases=True)
        except (InvalidSpecifier, InvalidVersion):
            ok = True
        if not ok:
            raise UpstreamError(
                f"tool/{p.name}: requires python {w.requires_python}, the target has {xy}.",
                "Check the package index or mirror, then collect again.",
            )


def tool_files(bundle: Path) -> list[ToolFile]:
    """The files now in bundle/tool/ (for a finalize that runs without rebuilding them)."""
    root = bundle / TOOL_DIR
    if not root.is_dir():
        return []
    return [_tool_file(p) for p in sorted(root.iterdir()) if p.is_file()]
