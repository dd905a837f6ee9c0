"""Python wheels for the TARGET interpreter and platform, and the hashed lock that installs them offline.

pip resolves the closure *for the server* (`--python-version`, `--implementation cp`, `--abi`, one
`--platform` per accepted tag, `--only-binary=:all:`): `pip install --dry-run --report` gives every wheel's
URL and sha256 without installing anything, and mostly without downloading (indexes serve the metadata
apart, PEP 658). Each wheel then becomes an artifact the HTTP source downloads, checked against that sha256,
and `requirements.lock.txt` (every line `name==version --hash=sha256:...`) is written from the same report.

pip-compile is not used: it resolves for the interpreter it runs on, which on the connected PC is rarely the
server's (and environment markers would be judged against the wrong Python).

pip does not widen `--platform manylinux_2_28_x86_64` to the older tags a glibc 2.28 system also runs, so
every tag the server accepts is listed (airgap.target.Target.platform_tags), linux_<arch> included: the
PyTorch index's CUDA wheels carry it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from airgap.errors import AirgapError, BadInputError, UpstreamError
from airgap.sources.http import HttpSource, apply_mirrors, redact, scrub
from airgap.sources.request import RetryPolicy, get
from airgap.target import Target
from airgap.wheels import Dist, parse_requirements, requirement_spec, resolve_closure

MIN_PIP = (22, 2)  # `pip install --dry-run --report`
# From 23.3 `install --dry-run` downloads no wheel whose metadata it could read apart (PEP 658 or fast-deps).
FAST_DEPS_PIP = (23, 3)
LOCK_NAME = "requirements.lock.txt"
# pip's own config files may name indexes or find-links dirs of this PC; the manifest alone decides.
_PIP_INDEX_ENV = (
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_NO_INDEX",
    "PIP_CONFIG_FILE",
    "PIP_TARGET",
    "PIP_PREFIX",
    "PIP_USER",
    "PIP_REQUIRE_VIRTUALENV",
    "PIP_ONLY_BINARY",
    "PIP_NO_BINARY",
    "PIP_PLATFORM",
    "PIP_PYTHON_VERSION",
    "PIP_ABI",
    "PIP_IMPLEMENTATION",
)


@dataclass
class Wheel:
    project: str  # the distribution name as its metadata spells it
    version: str
    file_name: str
    url: str  # canonical (mirrors undone)
    sha256: str
    requested: bool  # a top-level requirement (vs. a dependency)
    index: str = ""  # which index listed it, for the lock's digest source
    requires: list[str] = field(default_factory=list)  # its Requires-Dist: who pulled in what


@dataclass
class WheelSet:
    wheels: list[Wheel]
    target: Target
    requirements: list[str]
    index_urls: list[str]
    pip_version: str = ""
    notes: list[str] = field(default_factory=list)

    def lock_text(self) -> str:
        """requirements.lock.txt: what `pip install --require-hashes` needs, and a header saying for what."""
        head = [
            f"# airgap lock for {self.target.describe()}",
            # A requirement may be a direct reference (`name @ https://user:pass@host/x.whl?token=...`).
            f"# requirements: {scrub(', '.join(self.requirements))}",
            f"# indexes: {', '.join(redact(u) for u in self.index_urls)}",
            "# install offline: pip install --no-index --find-links DIR --require-hashes -r requirements.lock.txt",
        ]
        lines = [
            f"{w.project}=={w.version} \\\n    --hash=sha256:{w.sha256}"
            for w in sorted(self.wheels, key=lambda w: canonicalize_name(w.project))
        ]
        return "\n".join(head + lines) + "\n"


def requirement_name(req: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    return m.group(1) if m else req.strip()


def _pip_version() -> tuple[int, ...]:
    try:
        from pip import __version__ as v
    except ImportError:
        return ()
    return tuple(int(x) for x in re.findall(r"\d+", v)[:2])


def pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PIP_INDEX_ENV}
    env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf: indexes come from the manifest only
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def unmirror(url: str, mirrors: dict[str, str]) -> str:
    """The canonical URL of a file a mirror served (a mirror's index links to its own copies)."""
    best = ""
    for replacement in mirrors.values():
        if (url == replacement or url.startswith(replacement + "/")) and len(replacement) > len(best):
            best = replacement
    if not best:
        return url
    prefix = next(p for p, r in mirrors.items() if r == best)
    return prefix + url[len(best) :]


def resolve_wheels(
    requirements: list[str],
    index_urls: list[str],
    target: Target,
    mirrors: dict[str, str],
    source: HttpSource | None = None,
    extra: tuple[str, ...] = ("pip",),
    say: Callable[[str], None] | None = None,
) -> WheelSet:
    """The closure of `requirements` (plus `extra`: pip itself, to bootstrap the venv offline) as wheels for
    `target`. Raises with the package, the tags tried and what the index has when a wheel is missing."""
    if not _pip_version():
        raise BadInputError(
            f"pip is not installed for {sys.executable}, and it resolves the wheels.",
            f"Install it: {sys.executable} -m ensurepip, or apt-get install python3-pip.",
        )
    if _pip_version() < MIN_PIP:
        raise BadInputError(
            f"pip {'.'.join(map(str, _pip_version()))} is too old to resolve for another "
            "platform (`--dry-run --report` came in pip 22.2).",
            f"Upgrade it: {sys.executable} -m pip install -U pip",
        )
    indexes = [apply_mirrors(u, mirrors) for u in index_urls]
    # pip only warns about an index it cannot reach and resolves from the others: torch would then come from
    # PyPI instead of the CUDA index the manifest names. An unreachable index is an error here.
    check_indexes(index_urls, indexes, requirement_name(requirements[0]) if requirements else "pip")
    reqs = list(requirements) + [
        e for e in extra if canonicalize_name(e) not in {canonicalize_name(requirement_name(r)) for r in requirements}
    ]
    # pip evaluates environment markers with the Python it runs on, not --python-version (pip issue #11664):
    # collecting on 3.11 for a 3.10 server would leave out exceptiongroup, tomli, async-timeout... Walk the
    # closure again with the target's markers; resolve once more with what was missing; drop what only
    # this machine wanted.
    data: dict[str, Any] = {}
    for _round in range(MAX_MARKER_ROUNDS):
        data = _pip_report(reqs, indexes, index_urls, target, mirrors)
        missing, unneeded = target_gaps(data.get("install", []), reqs, target)
        if not missing:
            break
        if say is not None:
            say(scrub(f"the target's python also needs {', '.join(missing)}: resolving again ..."))
        reqs += missing
    else:
        raise UpstreamError(
            f"the Python requirements did not settle for {target.describe()} after "
            f"{MAX_MARKER_ROUNDS} rounds (still missing: {', '.join(missing)}).",
            "Pin the missing packages in python.requirements.",
        )
    data["install"] = [
        i
        for i in data.get("install", [])
        if canonicalize_name(str((i.get("metadata") or {}).get("name", ""))) not in unneeded
    ]
    return _wheel_set(data, requirements, index_urls, target, mirrors, source)


MAX_MARKER_ROUNDS = 4


def target_gaps(items: list[dict[str, Any]], roots: list[str], target: Target) -> tuple[list[str], set[str]]:
    """(requirements the target needs that pip left out, names only the collecting Python needed).

    `items` is pip's report's `install` list; its closure is walked again with the target's markers.
    """
    dists = []
    for item in items:
        meta = item.get("metadata") or {}
        try:
            version = Version(str(meta.get("version", "")))
        except InvalidVersion:
            continue  # not a version pip would have chosen; a requirement on it is reported missing
        requires = parse_requirements(meta.get("requires_dist") or [])
        dists.append(Dist(canonicalize_name(str(meta.get("name", ""))), version, requires))
    selected, missing = resolve_closure(dists, parse_requirements(roots), target)
    return [requirement_spec(r) for r in missing], {d.name for d in dists} - set(selected)


def _pip_report(
    reqs: list[str], indexes: list[str], index_urls: list[str], target: Target, mirrors: dict[str, str]
) -> dict[str, Any]:
    # An index without PEP 658 metadata makes pip download each wheel it considers, whole, just to read its
    # requirements (gigabytes for torch and its CUDA wheels), and collect then downloads the same wheels
    # again. With fast-deps pip reads a wheel's METADATA through HTTP range requests instead (a few kB);
    # a server without ranges gets the whole-file download as before. The feature is marked experimental
    # in pip, so a run that fails for any other reason than the requirements themselves is done again
    # without it.
    fast = _pip_version() >= FAST_DEPS_PIP
    output, data = _run_pip_report(reqs, indexes, target, fast)
    if data is None and fast and not _resolution_failed(output):
        output, data = _run_pip_report(reqs, indexes, target, False)
    if data is None:
        raise explain_failure(output, reqs, index_urls, target, mirrors)
    return data


def _resolution_failed(output: str) -> bool:
    """pip failed because of the requirements (no such wheel, conflicting pins), not how it read them."""
    return bool(_NO_MATCH.search(output) or _NO_VERSION.search(output) or "ResolutionImpossible" in output)


def _run_pip_report(
    reqs: list[str], indexes: list[str], target: Target, fast: bool
) -> tuple[str, dict[str, Any] | None]:
    """pip's output, and its report (None when it failed)."""
    with tempfile.TemporaryDirectory(prefix="airgap-pip-") as tmp:
        report = Path(tmp) / "report.json"
        argv = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--no-cache-dir",
            "--ignore-installed",
            "--target",
            str(Path(tmp) / "target"),
            "--report",
            str(report),
            "--only-binary=:all:",
            "--python-version",
            target.python,
            "--implementation",
            "cp",
            "--abi",
            target.abi,
            "--abi",
            "abi3",
            "--abi",
            "none",
        ]
        if fast:
            argv.append("--use-feature=fast-deps")
        for tag in target.platform_tags():
            argv += ["--platform", tag]
        argv += ["--", *reqs]
        # The indexes go to pip in its environment, not its command line: an index URL may carry
        # `user:password@` (a mirror behind a login), and any local user can read another's argv.
        env = pip_env()
        env["PIP_INDEX_URL"] = indexes[0]
        if indexes[1:]:
            env["PIP_EXTRA_INDEX_URL"] = " ".join(indexes[1:])
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=3600, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise UpstreamError(
                "pip did not finish resolving the Python requirements within an hour.",
                "Check the indexes in python.index_urls answer (and `mirrors:`).",
            ) from None
        if proc.returncode != 0 or not report.exists():
            return proc.stdout + proc.stderr, None
        return proc.stdout + proc.stderr, json.loads(report.read_text())


def _wheel_set(
    data: dict[str, Any],
    requirements: list[str],
    index_urls: list[str],
    target: Target,
    mirrors: dict[str, str],
    source: HttpSource | None,
) -> WheelSet:
    wheels = []
    requested_names = {canonicalize_name(requirement_name(r)) for r in requirements}
    for item in data.get("install", []):
        info = item.get("download_info") or {}
        url = info.get("url", "")
        meta = item.get("metadata") or {}
        name, version = meta.get("name", ""), meta.get("version", "")
        sha = ((info.get("archive_info") or {}).get("hashes") or {}).get("sha256")
        file_name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])  # PyTorch's index: torch-2.5.1%2Bcu124-...whl
        if not url.startswith(("http://", "https://")) or not file_name.endswith(".whl"):
            raise AirgapError(
                f"pip chose {name} {version} from {redact(url)}, which is not a wheel on an index.",
                "Use only http(s) indexes in python.index_urls.",
            )
        canonical = unmirror(url.split("#", 1)[0], mirrors)
        if sha is None:
            sha = _hash_url(canonical, source, file_name)
        wheels.append(
            Wheel(
                name,
                version,
                file_name,
                canonical,
                sha,
                canonicalize_name(name) in requested_names,
                index_of(canonical, index_urls),
                [str(r) for r in meta.get("requires_dist") or []],
            )
        )
    return WheelSet(wheels, target, list(requirements), list(index_urls), data.get("pip_version", ""))


def check_indexes(index_urls: list[str], resolved: list[str], probe: str) -> None:
    """Every index must answer (any HTTP status below 500: a 404 for the probed project is an answer)."""
    for canonical, url in zip(index_urls, resolved, strict=True):
        try:
            get(
                f"{url.rstrip('/')}/{canonicalize_name(probe)}/",
                policy=RetryPolicy(retries=2, backoff=0.5),
                what="python",
                headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"},
                expect=range(100, 500),
                where=f"the index {redact(canonical)}" + (f" at {redact(url)}" if url != canonical else ""),
            )
            continue
        except UpstreamError as exc:
            why = exc.message
        raise UpstreamError(
            f"{why} pip would silently resolve from the other "
            "indexes and could pick a wrong build (a CPU torch instead of a CUDA one).",
            "Check the network or proxy (HTTPS_PROXY), or point `mirrors:` at a mirror of this index.",
        )


def index_of(url: str, index_urls: list[str]) -> str:
    """Which index listed a file, for the lock: by host; PyPI's files live on files.pythonhosted.org."""
    host = urlsplit(url).netloc
    for u in index_urls:
        if urlsplit(u).netloc == host:
            return u
    if host == "files.pythonhosted.org":
        pypi = next((u for u in index_urls if urlsplit(u).netloc == "pypi.org"), None)
        if pypi:
            return pypi
    return index_urls[0] if len(index_urls) == 1 else "one of " + ", ".join(index_urls)


def _hash_url(url: str, source: HttpSource | None, name: str) -> str:
    """An index that publishes no sha256 for a file: download it once to hash it (the lock needs it)."""
    if source is None:
        raise AirgapError(
            f"{name}: the index gives no sha256 for it and no download is allowed here.",
            "Run without --no-head, or use an index that publishes hashes.",
        )
    with tempfile.TemporaryDirectory(prefix="airgap-hash-") as tmp:
        return source.fetch([url], Path(tmp) / name, what=f"python {name} (to hash it)").sha256


_NO_MATCH = re.compile(r"No matching distribution found for ([A-Za-z0-9][A-Za-z0-9._-]*)")
_NO_VERSION = re.compile(
    r"Could not find a version that satisfies the requirement ([A-Za-z0-9][A-Za-z0-9._-]*)"
    r"[^\n]*\(from versions: ([^)]*)\)"
)


def explain_failure(
    output: str, reqs: list[str], index_urls: list[str], target: Target, mirrors: dict[str, str]
) -> AirgapError:
    """Turn pip's failure into one paragraph: which package, the tags tried, what the index does have."""
    # pip's own lines quote index and file URLs with their query strings (it masks only passwords).
    tail = scrub("\n".join(line for line in output.strip().splitlines()[-12:] if line.strip()))
    m = _NO_MATCH.search(output) or _NO_VERSION.search(output)
    if m is None:
        if "ResolutionImpossible" in output or "conflict" in output.lower():
            return BadInputError(
                f"pip found no set of versions that fits every requirement for {target.describe()}:\n{tail}",
                "Loosen or change the pins in python.requirements so that they agree.",
            )
        return UpstreamError(
            f"pip could not resolve the Python requirements for {target.describe()}:\n{tail}",
            "Check the indexes in python.index_urls (and `mirrors:`) answer from this PC.",
        )
    name = m.group(1)
    pinned = next(
        (
            p.group(1)
            for r in reqs
            if canonicalize_name(requirement_name(r)) == canonicalize_name(name)
            for p in [re.search(r"==\s*([^\s,;]+)", r)]
            if p
        ),
        None,
    )
    found = available_files(name, index_urls, mirrors, target.machine, pinned)
    if found.startswith("No index lists"):
        return BadInputError(
            f"python: no project named {name} on {', '.join(redact(u) for u in index_urls)}.",
            "Check the name in python.requirements, or add the index that has it to python.index_urls.",
        )
    tags = target.platform_tags()
    tried = (
        f"{target.abi}/abi3/none with {', '.join(tags[:3])} ... {tags[-1]} ({len(tags)} platform tags), "
        "and py3-none-any"
    )
    return BadInputError(
        f"python: no wheel of {name}{'==' + pinned if pinned else ''} fits the target (CPython {target.python}, "
        f"{target.arch}, glibc {target.glibc or 'not stated'}). Tried {tried}. {found}",
        "Pick a version that publishes a wheel for the target (python.requirements), add the index that has "
        "one (python.index_urls, e.g. https://download.pytorch.org/whl/cu124 for torch), or build the wheel on "
        "a machine like the server and serve it from a local index. Source distributions are refused on "
        "purpose: the server has no compiler or network to build them.",
    )


def available_files(
    name: str, index_urls: list[str], mirrors: dict[str, str], machine: str, pinned: str | None = None
) -> str:
    """What the indexes list for `name` (the pinned version, else the newest ones), for errors."""
    parts = []
    for index in index_urls:
        url = apply_mirrors(f"{index.rstrip('/')}/{canonicalize_name(name)}/", mirrors)
        try:
            r = get(
                url,
                policy=RetryPolicy(retries=1, backoff=0.5),
                what=f"python {name}",
                headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"},
            )
        except UpstreamError:
            continue
        if r.status_code != 200:
            continue
        if "json" in r.headers.get("Content-Type", ""):
            files = [f.get("filename", "") for f in r.json().get("files", [])]
        else:
            files = re.findall(r">([^<>]+\.(?:whl|tar\.gz|zip|tar\.bz2))<", r.text)
        by_version: dict[str, list[tuple[str, str]]] = {}
        for f in files:
            version, py, plat = _split_file(f)
            if version:
                by_version.setdefault(version, []).append((py, plat))
        if not by_version:
            continue
        if pinned is not None and pinned in by_version:
            shown = [pinned]
        else:
            shown = sorted(by_version, key=_version_key, reverse=True)[:2]
        parts.append(
            f"{redact(index)} has "
            + "; ".join(f"{name} {v}: {_summary(by_version[v], machine)}" for v in shown)
            + ("" if pinned is None or pinned in by_version else f" (no {pinned} at all)")
        )
    return ("What exists: " + " | ".join(parts) + ".") if parts else f"No index lists any file of {name}."


def _summary(files: list[tuple[str, str]], machine: str) -> str:
    pys = sorted(
        {py for py, plat in files if py != "sdist"},
        key=lambda t: (re.sub(r"\d+", "", t), int(re.sub(r"\D", "", t) or 0)),
    )  # cp39 < cp311
    linux = sorted(
        {
            p
            for py, plat in files
            if py != "sdist"
            for p in plat.split(".")
            if (machine in p and "linux" in p) or p == "any"
        }
    )
    text = f"wheels for {', '.join(pys)}" if pys else "no wheels"
    if pys:
        text += f" (Linux {machine}: {', '.join(linux[:4])})" if linux else f" (none for Linux {machine})"
    if any(py == "sdist" for py, _ in files):
        text += ", and a source distribution"
    return text


def _split_file(file_name: str) -> tuple[str, str, str]:
    """(version, python tag or 'sdist', platform tags) of a wheel or sdist file name."""
    if file_name.endswith(".whl"):
        bits = file_name[:-4].split("-")
        return (bits[1], bits[-3], bits[-1]) if len(bits) >= 5 else ("", "", "")
    stem = re.sub(r"\.(tar\.gz|zip|tar\.bz2)$", "", file_name)
    m = re.match(r"(.*?)-(\d[^-]*)$", stem)
    return (m.group(2), "sdist", "") if m else ("", "", "")


def _version_key(v: str) -> tuple[tuple[int, str], ...]:
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.+-]", v))
