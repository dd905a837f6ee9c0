"""Self-install: airgap itself travels in the bundle, for the target's python and arch.

The server has no airgap and no network, so the bundle carries `tool/` (airgap's own wheel, every
dependency as a wheel for `target.python`/`target.arch`, and the `pip` wheel, so the server needs no pip)
and `install.sh` (airgap/install_sh.py), which checks `tool/` against SHA256SUMS, makes a venv with the
server's python3, installs airgap from `tool/` and runs `airgap install` with the same arguments.

Two things here are less obvious than they look:

- airgap's own wheel is written by hand (a wheel is a zip with a dist-info directory), from the package
  directory that is running. No build backend, no network, works for an editable checkout, and the same
  code gives the same bytes (fixed timestamps, sorted entries), so re-collecting does not change its digest.
- `pip download --python-version X.Y --platform ...` picks wheels for the target but evaluates environment
  markers (`; python_version < "3.11"`) against the python running it (seen with pip 23.2: from 3.11 for a
  3.10 target it leaves out exceptiongroup and tomli). So after pip is done, the dependency closure is
  walked again here with the TARGET's markers; what is missing is downloaded in another round, what only
  the local python wanted is dropped.
"""

from __future__ import annotations

import ast
import base64
import csv
import hashlib
import importlib.metadata
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from airgap.bundle_layout import TOOL_DIR
from airgap.digests import sha256_file
from airgap.errors import AirgapError, BadInputError, UpstreamError
from airgap.fsutil import fsync_tree

PROJECT = "airgap"
# Ubuntu 22.04's glibc. The lead passes the target OS's own (airgap.sources.apt.DISTROS[os].glibc).
DEFAULT_GLIBC = "2.35"
PIP_TIMEOUT = 900  # seconds for one `pip download`: a slow mirror, not a hung one
MAX_ROUNDS = 4  # pip download rounds to complete the closure; two are enough in practice
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: deterministic wheel bytes

Log = Callable[[str], None]
RunPip = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class ToolFile:
    """A file of the self-install part of the bundle, for SHA256SUMS (and the lock, if it lists them)."""

    path: str  # bundle-relative, '/'-separated: "tool/airgap-0.1.0-py3-none-any.whl", "install.sh"
    size: int
    sha256: str


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


# --- the target --------------------------------------------------------------------------------------------

_MACHINES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}


def machine_of(arch: str) -> str:
    """Debian's arch names (the manifest's) to the kernel's, which wheel tags and markers use."""
    try:
        return _MACHINES[arch]
    except KeyError:
        raise BadInputError(
            f"target arch {arch!r}: no Linux wheels are known for it.", "Use amd64 (x86_64) or arm64 (aarch64)."
        ) from None


def _xy(python: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)\.(\d+)", python.strip())
    if not m:
        raise BadInputError(f"target python {python!r}: expected MAJOR.MINOR, like 3.10.")
    return int(m[1]), int(m[2])


def _glibc(glibc: str) -> tuple[int, int]:
    m = re.fullmatch(r"2\.(\d+)", glibc.strip())
    if not m or int(m[1]) < 17:
        raise BadInputError(f"glibc {glibc!r}: expected 2.17 or newer, like 2.35.")
    return 2, int(m[1])


def platform_tags(arch: str, glibc: str = DEFAULT_GLIBC) -> list[str]:
    """Every manylinux tag a server with this glibc accepts, newest first (pip's preference order).

    pip does not expand `--platform manylinux_2_28_x86_64` to the older tags it implies: each one must be
    listed (FACTS.md). linux_x86_64 is left out on purpose: on PyPI it marks wheels built for one machine.
    """
    machine = machine_of(arch)
    _, top = _glibc(glibc)
    low = 5 if machine == "x86_64" else 17  # aarch64 wheels start at manylinux2014
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags: list[str] = []
    for minor in range(top, low - 1, -1):
        tags.append(f"manylinux_2_{minor}_{machine}")
        if minor in legacy:
            tags.append(f"{legacy[minor]}_{machine}")
    return tags


def target_tags(python: str, arch: str, glibc: str = DEFAULT_GLIBC) -> list[Tag]:
    """The wheel tags a CPython X.Y on the target accepts (what pip on the server will look for)."""
    xy = _xy(python)
    plats = platform_tags(arch, glibc)
    interp = f"cp{xy[0]}{xy[1]}"
    return [*cpython_tags(xy, abis=[interp], platforms=plats), *compatible_tags(xy, interp, plats)]


def marker_environments(python: str, arch: str) -> list[dict[str, str]]:
    """Marker values of the target. Its patch release is unknown, so two: X.Y.0 and X.Y.99; a requirement
    is kept when either says so (an extra wheel costs little, a missing one breaks the install)."""
    xy = _xy(python)
    base = {
        "implementation_name": "cpython",
        "os_name": "posix",
        "platform_machine": machine_of(arch),
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_version": f"{xy[0]}.{xy[1]}",
        "sys_platform": "linux",
    }
    return [
        dict(base, python_full_version=f"{xy[0]}.{xy[1]}.{p}", implementation_version=f"{xy[0]}.{xy[1]}.{p}")
        for p in (0, 99)
    ]


def marker_applies(marker: Marker | None, envs: Sequence[dict[str, str]], extras: Iterable[str] = ("",)) -> bool:
    if marker is None:
        return True
    return any(marker.evaluate(dict(env, extra=extra)) for env in envs for extra in extras)


# --- airgap's own wheel ------------------------------------------------------------------------------------


@dataclass
class ProjectMeta:
    name: str
    version: str
    summary: str
    requires_python: str
    requires_dist: list[str]
    provides_extra: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was noticed while reading it (stale metadata)


def _pyproject_requirements(package_dir: Path) -> tuple[list[str], str] | None:
    """[project].dependencies and requires-python of the checkout the package sits in, if it is one."""
    pyproject = package_dir.parent / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        import tomllib  # python >= 3.11; on 3.10 the installed metadata is used alone
    except ImportError:
        return None
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, ValueError):
        return None
    if canonicalize_name(str(project.get("name", ""))) != PROJECT:
        return None
    return [str(d) for d in project.get("dependencies", [])], str(project.get("requires-python", ""))


def project_metadata(package_dir: Path | None = None) -> ProjectMeta:
    """airgap's name, version and requirements, as its wheel's METADATA must state them.

    The version is the running code's (`airgap.__version__`). Requirements come from the installed
    metadata (`importlib.metadata`, which works for editable installs too); but an editable install's
    metadata is written when `pip install -e` runs and goes stale when pyproject.toml gains a dependency,
    so when the package sits in a checkout whose pyproject.toml says otherwise, pyproject.toml wins.
    """
    import airgap

    package_dir = package_dir or Path(airgap.__file__).parent
    version = str(Version(airgap.__version__))
    notes: list[str] = []
    try:
        md = importlib.metadata.metadata(PROJECT)
        requires = list(md.get_all("Requires-Dist") or [])
        requires_python = md.get("Requires-Python") or ""
        summary = md.get("Summary") or ""
        extras = list(md.get_all("Provides-Extra") or [])
    except importlib.metadata.PackageNotFoundError:
        md, requires, requires_python, summary, extras = None, [], "", "", []
    from_pyproject = _pyproject_requirements(package_dir)
    if from_pyproject is not None:
        deps, py_req = from_pyproject
        installed = {str(Requirement(r)) for r in requires if "extra ==" not in r.replace("'", '"')}
        if md is None or {str(Requirement(d)) for d in deps} != installed:
            if md is not None:
                notes.append(
                    "the installed metadata of airgap is older than pyproject.toml (run `pip install -e .` "
                    "again); the wheel in tool/ takes its requirements from pyproject.toml"
                )
            requires = deps + [r for r in requires if "extra ==" in r.replace("'", '"')]
            requires_python = py_req or requires_python
    elif md is None:
        raise AirgapError(
            "airgap is not installed as a package here, so its requirements are unknown and tool/ cannot be built.",
            "Install it (`pip install .` or `pip install -e .` in the checkout), or collect with --no-tool.",
        )
    return ProjectMeta(PROJECT, version, summary, requires_python, requires, extras, notes)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _package_files(package_dir: Path) -> list[tuple[str, Path]]:
    """(archive name, file) for every file of the package: sources and data, no bytecode, no dotfiles."""
    out = []
    for dirpath, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                continue
            path = Path(dirpath, name)
            out.append((f"{package_dir.name}/{path.relative_to(package_dir).as_posix()}", path))
    return out


def wheel_name(meta: ProjectMeta) -> str:
    return f"{meta.name}-{meta.version.replace('-', '_')}-py3-none-any.whl"


def build_wheel(dest_dir: Path, package_dir: Path | None = None, meta: ProjectMeta | None = None) -> Path:
    """Write airgap's own wheel into dest_dir: no build backend, no network, the same bytes for the same code."""
    import airgap

    package_dir = package_dir or Path(airgap.__file__).parent
    meta = meta or project_metadata(package_dir)
    dist_info = f"{meta.name}-{meta.version}.dist-info"
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {meta.name}",
        f"Version: {meta.version}",
        *([f"Summary: {meta.summary}"] if meta.summary else []),
        *([f"Requires-Python: {meta.requires_python}"] if meta.requires_python else []),
        *(f"Provides-Extra: {e}" for e in meta.provides_extra),
        *(f"Requires-Dist: {r}" for r in meta.requires_dist),
    ]
    generated = {
        f"{dist_info}/METADATA": ("\n".join(metadata) + "\n").encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: airgap\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist_info}/entry_points.txt": b"[console_scripts]\nairgap = airgap.cli:main\n",
    }
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / wheel_name(meta)
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:

        def add(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)

        for name, path in _package_files(package_dir):
            data = path.read_bytes()
            add(name, data)
            writer.writerow([name, _record_hash(data), len(data)])
        for name, data in generated.items():
            add(name, data)
            writer.writerow([name, _record_hash(data), len(data)])
        writer.writerow([f"{dist_info}/RECORD", "", ""])  # RECORD cannot hold its own hash
        add(f"{dist_info}/RECORD", record.getvalue().encode())
    return target


# --- wheels and their closure ------------------------------------------------------------------------------


@dataclass
class WheelInfo:
    path: Path
    name: str  # canonical
    version: Version
    tags: frozenset[Tag]
    requires: list[Requirement]
    requires_python: str


def read_wheel(path: Path) -> WheelInfo:
    name, version, _build, tags = parse_wheel_filename(path.name)
    with zipfile.ZipFile(path) as zf:
        metas = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if not metas:
            raise AirgapError(f"{path.name}: a wheel without .dist-info/METADATA.", "Delete it and collect again.")
        msg = HeaderParser().parsestr(zf.read(metas[0]).decode("utf-8", "replace"))
    requires = []
    for line in msg.get_all("Requires-Dist") or []:
        try:
            requires.append(Requirement(line))
        except InvalidRequirement:
            continue  # pip itself would refuse such a wheel long before; nothing to follow
    return WheelInfo(
        path, canonicalize_name(name), version, frozenset(tags), requires, msg.get("Requires-Python") or ""
    )


def _plain(req: Requirement) -> str:
    """A requirement without its marker (already evaluated for the target), for pip's command line."""
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}{req.specifier}"


def resolve_closure(
    wheels: Sequence[WheelInfo], roots: Sequence[Requirement], envs: Sequence[dict[str, str]]
) -> tuple[dict[str, WheelInfo], list[Requirement]]:
    """Which of `wheels` the target needs for `roots` (markers evaluated for the target), and what is missing.

    Per name, the newest wheel that meets every specifier seen so far; a requirement nothing meets is
    returned as missing (another pip round fetches it).
    """
    by_name: dict[str, list[WheelInfo]] = {}
    for w in wheels:
        by_name.setdefault(w.name, []).append(w)
    for candidates in by_name.values():
        candidates.sort(key=lambda w: w.version, reverse=True)
    specs: dict[str, SpecifierSet] = {}
    extras: dict[str, set[str]] = {}
    selected: dict[str, WheelInfo] = {}
    missing: dict[str, Requirement] = {}
    pending = [r for r in roots if marker_applies(r.marker, envs)]
    while pending:
        req = pending.pop()
        name = canonicalize_name(req.name)
        specs[name] = specs.get(name, SpecifierSet()) & req.specifier
        have_extras = extras.setdefault(name, set())
        new_extras = set(req.extras) - have_extras
        choice = next((w for w in by_name.get(name, []) if specs[name].contains(w.version, prereleases=True)), None)
        if choice is None:
            missing[name] = req
            continue
        if selected.get(name) is choice and not new_extras:
            continue
        selected[name] = choice
        have_extras |= new_extras
        wanted = ["", *sorted(have_extras)]
        pending += [dep for dep in choice.requires if marker_applies(dep.marker, envs, wanted)]
    for name in list(missing):
        if name in selected and specs[name].contains(selected[name].version, prereleases=True):
            del missing[name]  # a later, looser pass found it
    return selected, list(missing.values())


# --- imports the metadata forgot ---------------------------------------------------------------------------


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """An import inside `try: ... except ImportError` or `if TYPE_CHECKING:` is optional on purpose."""
    child, cur = node, parents.get(node)
    while cur is not None:
        if isinstance(cur, ast.Try) and child in cur.body:
            for h in cur.handlers:
                names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
                if h.type is None or any(
                    isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError", "Exception")
                    for n in names
                ):
                    return True
        if isinstance(cur, ast.If) and "TYPE_CHECKING" in ast.unparse(cur.test):
            return True
        child, cur = cur, parents.get(cur)
    return False


def imported_distributions(package_dir: Path) -> dict[str, list[str]]:
    """Distribution (canonical name; "a or b" when several provide the module) -> files of the package that
    import it unconditionally.

    Modules are mapped to distributions with this machine's installed packages (`pynvml` is nvidia-ml-py);
    an unknown module is taken to be its own distribution.
    """
    stdlib = set(sys.stdlib_module_names)
    dists = importlib.metadata.packages_distributions()
    out: dict[str, list[str]] = {}
    for rel, path in _package_files(package_dir):
        if not rel.endswith(".py"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top in stdlib or top == package_dir.name or _guarded(node, parents):
                    continue
                # A module several distributions provide: any one of them will do.
                key = " or ".join(sorted({canonicalize_name(d) for d in dists.get(top, [top])}))
                files = out.setdefault(key, [])
                if rel not in files:
                    files.append(rel)
    return out


# --- tool/ -------------------------------------------------------------------------------------------------


def _pip_failure(proc: subprocess.CompletedProcess[str], python: str, arch: str, glibc: str) -> AirgapError:
    text = (proc.stderr or "") + (proc.stdout or "")
    tags = (
        f"cp{python.replace('.', '')} (cp{python.replace('.', '')}, abi3, none) on manylinux_2_17 .. "
        f"manylinux_{glibc.replace('.', '_')}_{machine_of(arch)}"
    )
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
            f"no wheel of {pkg} for the target (python {python}, {arch}): tried tags {tags}. "
            f"pip said: {_last_lines(text)}",
            f"Choose a target.python that {bare} publishes wheels for, "
            "or collect with --no-tool and bring airgap to the server another way.",
        )
    return UpstreamError(
        f"pip download for tool/ failed (exit {proc.returncode}): {_last_lines(text)}",
        "Run the same command again; if it keeps failing, collect with --no-tool.",
    )


def _last_lines(text: str, n: int = 4) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "(no output)"


def _pip_download(
    run_pip: RunPip,
    dest: Path,
    reqs: Sequence[str],
    python: str,
    arch: str,
    glibc: str,
    pip_args: Sequence[str],
    constraints: Path | None,
) -> None:
    xy = _xy(python)
    args = [
        "download",
        "--only-binary=:all:",
        "--dest",
        str(dest),
        "--python-version",
        f"{xy[0]}.{xy[1]}",
        "--implementation",
        "cp",
        "--abi",
        f"cp{xy[0]}{xy[1]}",
        "--progress-bar",
        "off",
    ]
    for plat in platform_tags(arch, glibc):
        args += ["--platform", plat]
    if constraints is not None:
        args += ["-c", str(constraints)]
    proc = run_pip([*args, *pip_args, *reqs])
    if proc.returncode != 0:
        raise _pip_failure(proc, python, arch, glibc)


def _clean_leftovers(bundle: Path) -> None:
    """Temp dirs of a run that was killed: never half a tool/, but their bytes are not wanted either."""
    for p in bundle.glob(".tool.*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def build_tool_dir(
    bundle: Path,
    target_python: str,
    target_arch: str,
    run_pip: RunPip = default_run_pip,
    log: Log = _noop,
    *,
    glibc: str = DEFAULT_GLIBC,
    pip_args: Sequence[str] = (),
) -> list[ToolFile]:
    """Fill `bundle/tool/` with airgap's wheel, every dependency's wheel for the target, and pip's wheel.

    target_arch: amd64/arm64 (the manifest's names) or x86_64/aarch64. glibc: the target OS's (newer
    manylinux wheels need it). pip_args: extra arguments for `pip download` (`--index-url URL`; tests pass
    `--no-index --find-links DIR`). Everything is fetched into a temp dir in the bundle and renamed to
    tool/ at the end: a failure leaves the previous tool/ as it was. Returns the files, sorted by path.
    Raises UpstreamError when no wheel exists for the target (naming the package and the tags tried).
    """
    import airgap

    bundle.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(bundle)
    package_dir = Path(airgap.__file__).parent
    meta = project_metadata(package_dir)
    for note in meta.notes:
        log(f"tool: {note}")
    envs = marker_environments(target_python, target_arch)
    xy = ".".join(map(str, _xy(target_python)))
    if meta.requires_python and not SpecifierSet(meta.requires_python).contains(f"{xy}.0", prereleases=True):
        raise BadInputError(
            f"airgap {meta.version} needs python {meta.requires_python}; the target's python is {xy}.",
            "Set target.python to a version it supports (the server then needs that python3), or collect with "
            "--no-tool and bring airgap to the server another way.",
        )
    roots = [Requirement(r) for r in meta.requires_dist]
    roots = [r for r in roots if marker_applies(r.marker, envs)]  # extras ("test") evaluate false: left out
    tmp = Path(tempfile.mkdtemp(dir=bundle, prefix=".tool.tmp-"))
    try:
        own = build_wheel(tmp, package_dir, meta)
        log(f"tool: built {own.name} from {package_dir}")
        log(f"tool: downloading airgap's dependencies and pip for python {xy} on {machine_of(target_arch)}")
        _pip_download(run_pip, tmp, [*(_plain(r) for r in roots), "pip"], xy, target_arch, glibc, pip_args, None)
        missing: list[Requirement] = []
        selected: dict[str, WheelInfo] = {}
        for _round in range(MAX_ROUNDS):
            wheels = [read_wheel(p) for p in sorted(tmp.glob("*.whl")) if p != own]
            selected, missing = resolve_closure(wheels, roots, envs)
            if not missing:
                break
            # pip judged these markers by the python running here, not the target's: fetch them now,
            # holding everything already chosen to its version so the closure stays consistent.
            names = {canonicalize_name(r.name) for r in missing}
            log(f"tool: the target also needs {', '.join(sorted(_plain(r) for r in missing))}")
            pins = tmp / "constraints.txt"
            pins.write_text("".join(f"{w.name}=={w.version}\n" for n, w in sorted(selected.items()) if n not in names))
            try:
                _pip_download(run_pip, tmp, [_plain(r) for r in missing], xy, target_arch, glibc, pip_args, pins)
            finally:
                pins.unlink(missing_ok=True)
        if missing:
            raise UpstreamError(
                f"tool/: could not complete airgap's dependencies for python {xy}: still missing "
                f"{', '.join(_plain(r) for r in missing)}.",
                "Run the same command again; if it persists, collect with --no-tool.",
            )
        _check_imports(package_dir, set(selected), {canonicalize_name(r.name) for r in roots}, log)
        pips = sorted((w for w in (read_wheel(p) for p in tmp.glob("pip-*.whl"))), key=lambda w: w.version)
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
        _check_tags(tmp, target_python, target_arch, glibc)
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
    files = [ToolFile(f"{TOOL_DIR}/{p.name}", p.stat().st_size, sha256_file(p)) for p in sorted(final.iterdir())]
    log(f"tool: {len(files)} wheels, {sum(f.size for f in files)} bytes")
    return files


def _check_imports(package_dir: Path, closure: set[str], direct: set[str], log: Log) -> None:
    """Refuse a tool/ whose airgap would fail to import on the server: a module the code imports that no
    requirement brings (the metadata forgot it). Better a collect-time error than one behind the air gap."""
    imported = imported_distributions(package_dir)

    def among(key: str, names: set[str]) -> bool:
        return any(d in names for d in key.split(" or "))

    indirect = sorted(d for d in imported if among(d, closure) and not among(d, direct) and d != PROJECT)
    if indirect:
        log(
            f"tool: airgap imports {', '.join(indirect)}, which only other packages' requirements bring "
            "(declare them in pyproject.toml so that it stays so)"
        )
    lacking = {d: f for d, f in imported.items() if not among(d, closure) and d != PROJECT}
    if lacking:
        what = "; ".join(f"{d} (imported by {', '.join(files[:3])})" for d, files in sorted(lacking.items()))
        raise AirgapError(
            f"tool/: airgap imports packages its metadata does not require, so the airgap installed from tool/ "
            f"on the server would fail: {what}.",
            "Add them to [project].dependencies in pyproject.toml (and `pip install -e .` again), or collect with "
            "--no-tool.",
        )


def _check_tags(tool: Path, python: str, arch: str, glibc: str) -> None:
    """Every wheel must install on the target: pip checked this while choosing; a wheel that slipped through
    (a find-links dir, a mirror serving odd files) is caught here rather than on the server."""
    accepted = set(target_tags(python, arch, glibc))
    xy = ".".join(map(str, _xy(python)))
    for p in tool.glob("*.whl"):
        w = read_wheel(p)
        if not w.tags & accepted:
            raise UpstreamError(
                f"tool/{p.name}: not installable on python {xy} {machine_of(arch)} (glibc {glibc}).",
                "Check the package index or mirror, then collect again.",
            )
        try:
            ok = not w.requires_python or SpecifierSet(w.requires_python).contains(f"{xy}.0", prereleases=True)
        except InvalidVersion:
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
    return [
        ToolFile(f"{TOOL_DIR}/{p.name}", p.stat().st_size, sha256_file(p))
        for p in sorted(root.iterdir())
        if p.is_file()
    ]
