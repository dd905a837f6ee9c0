"""Python wheels for the server's interpreter, installed offline into the virtual environment the manifest names.

Collect: airgap/sources/pypi.py resolves the closure for target.python / target.arch / glibc; each wheel is
an artifact checked against the index's sha256, and `requirements.lock.txt` is generated from the same
resolution. Install: `python -m venv --without-pip` (Debian and Ubuntu ship venv's pip bootstrap in a
separate package, python3-venv, that a minimal server lacks), then pip itself is run from its wheel in the
bundle: `python pip-X.whl/pip install --no-index --find-links DIR --require-hashes -r requirements.lock.txt`,
which also installs pip into the venv. Then every top-level requirement is imported.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TypedDict

from packaging.utils import canonicalize_name

from airgap.artifact_meta import UnresolvedMeta, WheelLockMeta, WheelMeta, read_meta
from airgap.artifacts import Artifact, Digest
from airgap.errors import InstallError
from airgap.host import Host
from airgap.install_context import InstallContext
from airgap.layers.base import Layer, ResolveContext
from airgap.manifest import DEFAULT_VENV, Manifest
from airgap.sources.pypi import LOCK_NAME, requirement_name, resolve_wheels
from airgap.target import Target

# Run by the venv's python: which of the lock's distributions are installed at other versions than pinned.
VERSIONS_SCRIPT = r"""
import importlib.metadata as md, json, re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
want = json.loads(sys.argv[1])
have = {norm(d.metadata["Name"] or ""): d.version for d in md.distributions()}
print(json.dumps({k: have.get(k) for k, v in want.items() if have.get(k) != v}))
"""

# Run by the venv's python: import the top-level modules of the named distributions (or the given modules).
IMPORT_SCRIPT = r"""
import importlib, importlib.metadata as md, json, sys
dists, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def top_modules(name):
    try:
        d = md.distribution(name)
    except md.PackageNotFoundError:
        return None
    top = d.read_text("top_level.txt")
    if top:
        found = {line.strip().split("/")[0] for line in top.splitlines() if line.strip()}
    else:
        found = set()
        for f in d.files or []:
            p = f.parts
            if len(p) == 1 and p[0].endswith(".py"):
                found.add(p[0][:-3])
            elif len(p) == 2 and p[1] == "__init__.py":
                found.add(p[0])
            elif len(p) == 1 and p[0].endswith(".so"):
                found.add(p[0].split(".")[0])
    return sorted(m for m in found if m.isidentifier() and not m.startswith("_"))
report = {"imported": [], "failed": {}, "missing": []}
todo = list(modules)
for name in dists:
    mods = top_modules(name)
    if mods is None:
        report["missing"].append(name)
    else:
        todo += mods
for mod in dict.fromkeys(todo):
    try:
        importlib.import_module(mod)
        report["imported"].append(mod)
    except BaseException as exc:
        report["failed"][mod] = f"{type(exc).__name__}: {exc}"[:300]
print(json.dumps(report))
"""


class ImportReport(TypedDict):
    """What IMPORT_SCRIPT prints."""

    imported: list[str]
    failed: dict[str, str]  # module -> the exception, shortened
    missing: list[str]  # distributions not installed at all


class PythonLayer(Layer):
    name = "python"
    section = "python"
    by_hand_dir = (
        f"python3 -m venv --without-pip {DEFAULT_VENV} && {DEFAULT_VENV}/bin/python "
        '"$(ls {dir}/pip-*.whl)/pip" install --no-index --find-links {dir} --require-hashes '
        "-r {dir}/requirements.lock.txt"
    )
    installable = True
    preflight = frozenset({"disk"})

    def target(self, manifest: Manifest) -> Target:
        target = Target.of(manifest)
        if target.glibc is None and not target.platforms:
            raise manifest.error(
                ("python",),
                f"the glibc of {manifest.target.os} is not known to airgap, and it "
                'decides which manylinux wheels the server runs; add `glibc: "2.35"` (what '
                "`ldd --version` prints on the server) to the python section",
            )
        return target

    def plan(self, manifest: Manifest) -> list[Artifact]:
        return [
            Artifact(
                self.name,
                f"{LOCK_NAME} (resolved at collect)",
                [],
                ("python", "requirements"),
                no_digest_reason="known once resolved: each wheel is checked against the index's sha256",
                meta=UnresolvedMeta(unresolved="pip resolves the wheels for the target at collect time").to_meta(),
            )
        ]

    def resolve(self, manifest: Manifest, ctx: ResolveContext) -> list[Artifact]:
        source = ctx.source
        if source is None:
            return self.plan(manifest)
        spec = manifest.python
        assert spec is not None
        target = self.target(manifest)
        # pip is silent for as long as it takes (minutes for a large closure): say what runs.
        ctx.say(f"resolving wheels for {target.abi} {target.platform_tags()[0]} (pip) ...")
        started = time.monotonic()
        ws = resolve_wheels(spec.requirements, spec.index_urls, target, manifest.mirrors, source, say=ctx.say)
        ctx.say(f"resolved {len(ws.wheels)} wheels in {time.monotonic() - started:.1f} s")
        arts = [
            Artifact(
                self.name,
                w.file_name,
                [w.url],
                ("python", "requirements"),
                upstream=Digest("sha256", w.sha256, w.index),
                meta=WheelMeta(
                    project=w.project, version=w.version, requested=w.requested, requires=w.requires
                ).to_meta(),
            )
            for w in ws.wheels
        ]
        arts.append(
            Artifact(
                self.name,
                LOCK_NAME,
                [],
                ("python", "requirements"),
                content=ws.lock_text().encode(),
                meta=WheelLockMeta(
                    python=target.python,
                    platforms=target.platform_tags(),
                    requirements=spec.requirements,
                    indexes=spec.index_urls,
                    pip=ws.pip_version,
                ).to_meta(),
            )
        )
        return arts

    # --- install ----------------------------------------------------------------------------------------

    def installed(self, ctx: InstallContext) -> str | None:
        venv = _venv(ctx)
        vpy = ctx.host.path(venv) / "bin" / "python"
        if not vpy.exists():
            return None
        pins = _pins(ctx)
        res = ctx.host.run([str(vpy), "-c", VERSIONS_SCRIPT, json.dumps(pins)], check=False, changes=False, timeout=120)
        try:
            wrong = json.loads(res.output.strip().splitlines()[-1]) if res.returncode == 0 else None
        except (ValueError, IndexError):
            wrong = None
        if wrong == {}:
            return f"all {len(pins)} packages already in {venv} at the lock's versions"
        return None

    def install(self, ctx: InstallContext) -> str:
        host = ctx.host
        venv = _venv(ctx)
        want = ctx.manifest.target.python
        files = ctx.artifacts(self.name)
        lock = next((p for a, p in files if a.name == LOCK_NAME), None)
        pip_wheel = next(
            (
                p
                for a, p in files
                if a.name != LOCK_NAME and canonicalize_name(read_meta(WheelMeta, a.meta, a.path).project) == "pip"
            ),
            None,
        )
        if lock is None or pip_wheel is None:
            raise InstallError(
                f"the bundle's python layer lacks {LOCK_NAME} or pip's wheel.",
                "Get a new bundle collected on the connected PC with this version of airgap.",
            )
        vpy = host.path(venv) / "bin" / "python"
        if vpy.exists():
            got = _python_version(host, str(vpy))
            if got != want:
                raise InstallError(
                    f"{venv} exists with Python {got or 'unknown'}, and the wheels are for {want}.",
                    f"Remove {venv}, or get a bundle collected on the connected PC with python.venv set to "
                    "another path.",
                )
        else:
            server_py = _server_python(host, want)
            host.run([server_py, "-m", "venv", "--without-pip", str(host.path(venv))], timeout=300)
        links = None if host.dry_run else Path(tempfile.mkdtemp(prefix="airgap-wheels-"))
        try:
            if links is not None:
                # pip's --find-links takes a directory; the wheels may be joined copies of split files
                # elsewhere, so give it one made of links to wherever each file really is.
                for art, path in files:
                    (links / art.name).symlink_to(path.resolve())
            find = str(links) if links is not None else str(lock.parent)
            argv = [
                str(vpy),
                f"{pip_wheel}/pip",
                "install",
                "--isolated",
                "--no-index",
                "--find-links",
                find,
                "--require-hashes",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--no-warn-script-location",
                "--no-input",
                "-r",
                f"{find}/{LOCK_NAME}",
            ]
            res = host.run(argv, check=False, timeout=3600)
            if res.returncode != 0:
                raise InstallError(
                    f"pip could not install the bundle's wheels into {venv} (exit {res.returncode}).",
                    "The wheels are for Python " + want + "; check the server's python matches, and that the "
                    "bundle verifies (`airgap verify`). The output above names the package.",
                    res,
                )
        finally:
            if links is not None:
                shutil.rmtree(links, ignore_errors=True)
        pins = _pins(ctx)
        if host.dry_run:
            return f"{len(pins)} packages would be installed into {venv}"
        report = self._import_check(ctx, vpy)
        return (
            f"{len(pins)} packages installed in {venv} (Python {want}); imported "
            f"{', '.join(report['imported'][:8]) or 'nothing'}"
        )

    def _import_check(self, ctx: InstallContext, vpy: Path) -> ImportReport:
        spec = ctx.manifest.python
        modules = (spec.imports if spec else None) or []
        dists = [] if modules or spec is None else [requirement_name(r) for r in spec.requirements]
        res = ctx.host.run(
            [str(vpy), "-c", IMPORT_SCRIPT, json.dumps(dists), json.dumps(modules)],
            check=False,
            changes=False,
            timeout=900,
        )
        try:
            report: ImportReport = json.loads(res.output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise InstallError(
                "the import check in the new environment did not run.", "See its output in the install log.", res
            ) from None
        problems = [f"{m}: {e}" for m, e in report["failed"].items()]
        problems += [f"{d}: not installed" for d in report["missing"]]
        if problems:
            raise InstallError(
                "the wheels installed, but these do not import:\n" + "\n".join(f"  - {p}" for p in problems),
                "A module that needs a system library (libGL, a CUDA library) fails here when the "
                "server lacks it; add that library to the bundle (apt.packages), or list the "
                "modules to check in python.imports.",
                res,
            )
        return report


def _venv(ctx: InstallContext) -> str:
    spec = ctx.manifest.python
    return spec.venv if spec is not None else DEFAULT_VENV


def _pins(ctx: InstallContext) -> dict[str, str]:
    wheels = [read_meta(WheelMeta, a.meta, a.path) for a in ctx.entries("python") if a.name != LOCK_NAME]
    return {canonicalize_name(w.project): w.version for w in wheels}


def _python_version(host: Host, python: str) -> str | None:
    res = host.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], check=False, changes=False, timeout=60
    )
    out = res.output.strip().splitlines()
    return out[-1].strip() if res.returncode == 0 and out else None


def _server_python(host: Host, want: str) -> str:
    """The server's python whose version the wheels were resolved for."""
    seen = []
    for name in (f"python{want}", "python3"):
        path = host.which(name)
        if path is None:
            continue
        got = _python_version(host, path)
        if got == want:
            return path
        seen.append(f"{path} is {got or 'unknown'}")
    found = "; ".join(seen) if seen else "no python3 on the PATH"
    raise InstallError(
        f"the bundle's wheels are for Python {want}, and this server has no such python ({found}).",
        f"Install python{want} first (its .deb can come in the bundle's apt.packages), or get a bundle "
        "collected on the connected PC with target.python set to this server's version.",
    )
