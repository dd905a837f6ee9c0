"""airgap's own wheel, written by hand from the package directory that is running.

A wheel is a zip with a dist-info directory: no build backend, no network, and it works for an editable
checkout. The same code gives the same bytes (fixed timestamps, sorted entries), so re-collecting does not
change its digest.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from airgap.errors import AirgapError

PROJECT = "airgap"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: deterministic wheel bytes


def package_dir() -> Path:
    """The directory of the airgap package that is running."""
    import airgap

    return Path(airgap.__file__).parent


@dataclass
class ProjectMeta:
    name: str
    version: str
    summary: str
    requires_python: str
    requires_dist: list[str]
    provides_extra: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was noticed while reading it (stale metadata)


def _pyproject_requirements(package: Path) -> tuple[list[str], str, list[str]] | None:
    """The Requires-Dist lines of the checkout the package sits in, if it is one ([project].dependencies,
    then each optional dependency with its `extra == NAME` marker), requires-python, and the extras."""
    pyproject = package.parent / "pyproject.toml"
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
    lines = [str(d) for d in project.get("dependencies", [])]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {}) or {}
    for extra, reqs in optional.items():
        for text in reqs:
            req = Requirement(str(text))
            own = f"({req.marker}) and " if req.marker else ""
            req.marker = None
            lines.append(f'{req}; {own}extra == "{extra}"')
    return lines, str(project.get("requires-python", "")), list(optional)


def project_metadata(package: Path | None = None) -> ProjectMeta:
    """airgap's name, version and requirements, as its wheel's METADATA must state them.

    The version is the running code's (`airgap.__version__`). Requirements come from the installed
    metadata (`importlib.metadata`, which works for editable installs too); but an editable install's
    metadata is written when `pip install -e` runs and goes stale when pyproject.toml gains a dependency,
    so when the package sits in a checkout whose pyproject.toml says otherwise, pyproject.toml wins.
    """
    import airgap

    package = package or package_dir()
    version = str(Version(airgap.__version__))
    notes: list[str] = []
    try:
        md = importlib.metadata.metadata(PROJECT)
        requires = list(md.get_all("Requires-Dist") or [])
        requires_python = next(iter(md.get_all("Requires-Python") or []), "")
        summary = next(iter(md.get_all("Summary") or []), "")
        extras = list(md.get_all("Provides-Extra") or [])
    except importlib.metadata.PackageNotFoundError:
        md, requires, requires_python, summary, extras = None, [], "", "", []
    from_pyproject = _pyproject_requirements(package)
    if from_pyproject is not None:
        lines, py_req, declared = from_pyproject
        if md is None or {str(Requirement(d)) for d in lines} != {str(Requirement(r)) for r in requires}:
            if md is not None:
                notes.append(
                    "the installed metadata of airgap is older than pyproject.toml (run `pip install -e .` "
                    "again); the wheel in tool/ takes its requirements from pyproject.toml"
                )
            requires, extras = lines, declared
            requires_python = py_req or requires_python
    elif md is None:
        raise AirgapError(
            "airgap is not installed as a package here, so its requirements are unknown and tool/ cannot be built.",
            "Install it (`pip install .` or `pip install -e .` in the checkout), or collect with --no-tool.",
        )
    return ProjectMeta(PROJECT, version, summary, requires_python, requires, extras, notes)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def package_files(package: Path) -> list[tuple[str, Path]]:
    """(archive name, file) for every file of the package: sources and data, no bytecode, no dotfiles."""
    out = []
    for dirpath, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                continue
            path = Path(dirpath, name)
            out.append((f"{package.name}/{path.relative_to(package).as_posix()}", path))
    return out


def wheel_name(meta: ProjectMeta) -> str:
    return f"{meta.name}-{meta.version.replace('-', '_')}-py3-none-any.whl"


def build_wheel(dest_dir: Path, package: Path | None = None, meta: ProjectMeta | None = None) -> Path:
    """Write airgap's own wheel into dest_dir: no build backend, no network, the same bytes for the same code."""
    package = package or package_dir()
    meta = meta or project_metadata(package)
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

        for name, path in package_files(package):
            data = path.read_bytes()
            add(name, data)
            writer.writerow([name, _record_hash(data), len(data)])
        for name, data in generated.items():
            add(name, data)
            writer.writerow([name, _record_hash(data), len(data)])
        writer.writerow([f"{dist_info}/RECORD", "", ""])  # RECORD cannot hold its own hash
        add(f"{dist_info}/RECORD", record.getvalue().encode())
    return target
