"""The bundle on disk: lock file, SHA256SUMS, README.txt, written atomically.

A bundle must stay usable by a person with nothing but coreutils: `sha256sum -c SHA256SUMS` checks it,
README.txt explains it, and files keep the names their publishers gave them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from airgap import __version__
from airgap.bundle_layout import LAYER_ORDER, LAYERS_DIR, LOCK_NAME, README_NAME, SUMS_NAME, TOOL_DIR, layer_dir
from airgap.errors import BadInputError, IntegrityError
from airgap.fsutil import write_atomic
from airgap.units import human_size

LOCK_FORMAT = 1


@dataclass
class LockedArtifact:
    layer: str
    name: str
    path: str
    size: int
    sha256: str
    url: str  # canonical upstream URL, credentials removed
    upstream_digest: dict[str, str] | None = None  # {"algorithm", "value", "source"} it was checked against
    upstream_digest_note: str = ""  # why there is none, when there is none
    meta: dict[str, Any] = field(default_factory=dict)  # layer facts: model commit, image config digest...
    # When the file is stored as numbered parts (--max-file-size): [{"path", "size", "sha256"}, ...]
    parts: list[dict[str, Any]] = field(default_factory=list)
    # Delta bundles (collect --since): the file is not carried; the base bundle holds it with this sha256.
    in_base: bool = False


@dataclass
class Lock:
    name: str
    target: dict[str, Any]
    status: str = "partial"  # "complete" once every artifact is in and SHA256SUMS is written
    created: str = ""
    airgap_version: str = __version__
    format: int = LOCK_FORMAT
    skipped_layers: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    # Compatibility errors accepted with --allow-mismatch (airgap/checks.py Finding.to_dict()), so the
    # server side knows the stack was knowingly mismatched and install's preflight keeps them warnings.
    allowed_mismatches: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[LockedArtifact] = field(default_factory=list)
    # For a delta bundle: the bundle it builds on {"name", "created", "lock_sha256"}; install needs --base.
    base: dict[str, str] | None = None
    # airgap itself for the server (tool/ and install.sh): {"python", "arch", "glibc", "files": [{path,size,sha256}]}
    tool: dict[str, Any] | None = None

    def by_path(self) -> dict[str, LockedArtifact]:
        return {a.path: a for a in self.artifacts}

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=False) + "\n").encode()

    @property
    def total_size(self) -> int:
        return sum(a.size for a in self.artifacts if not a.in_base)


def read_lock(bundle: Path) -> Lock:
    path = bundle / LOCK_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        arts = [LockedArtifact(**a) for a in raw.pop("artifacts", [])]
        return Lock(**raw, artifacts=arts)
    except FileNotFoundError:
        raise BadInputError(
            f"{bundle}: no {LOCK_NAME} here, so this is not an airgap bundle (or its collection never started).",
            "Point at the bundle's top directory, the one holding SHA256SUMS and README.txt.",
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise BadInputError(
            f"{path}: unreadable lock file ({exc}).",
            "Run `airgap verify` on the bundle, or `sha256sum -c SHA256SUMS` in it, to see what was damaged.",
        ) from None


def load_base(path: Path) -> tuple[Lock, str]:
    """A full bundle's lock (given the bundle directory or its lock file) and the lock file's sha256."""
    lock_file = path / LOCK_NAME if path.is_dir() else path
    lock = read_lock(lock_file.parent) if lock_file.name == LOCK_NAME else None
    if lock is None:
        raise BadInputError(
            f"{path}: not a bundle directory or an {LOCK_NAME}.",
            "Give the old bundle's directory, or its airgap.lock.json.",
        )
    if lock.base:
        raise BadInputError(
            f"{path}: is itself a delta bundle (based on '{lock.base.get('name')}').",
            "Make deltas against a full bundle: merge the old delta with its base first.",
        )
    return lock, hashlib.sha256(lock_file.read_bytes()).hexdigest()


def write_lock(bundle: Path, lock: Lock) -> bytes:
    data = lock.to_json()
    write_atomic(bundle / LOCK_NAME, data)
    return data


# --- SHA256SUMS ----------------------------------------------------------------------------------------


def format_sums(entries: dict[str, str]) -> bytes:
    """`sha256sum` text mode lines, sorted by path so two bundles diff cleanly."""
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(entries.items())).encode()


def parse_sums(text: str, source: str = SUMS_NAME) -> dict[str, str]:
    """Path -> sha256 from a SHA256SUMS file; a malformed line is reported, not guessed at."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rest = line.partition(" ")
        if not sep or len(digest) != 64 or not rest or rest[0] not in " *":
            raise IntegrityError(
                f"{source}:{n}: not a sha256sum line: {line[:80]!r}.",
                "The file was altered or damaged on the way; copy SHA256SUMS again from the original bundle.",
            )
        out[rest[1:]] = digest.lower()
    return out


def read_sums(bundle: Path) -> dict[str, str]:
    path = bundle / SUMS_NAME
    try:
        return parse_sums(path.read_text(encoding="utf-8"), SUMS_NAME)
    except FileNotFoundError:
        if (bundle / LOCK_NAME).exists():
            raise BadInputError(
                f"{bundle}: {SUMS_NAME} is missing; the collection did not finish or the file was lost.",
                "Run `airgap collect` again into the same directory: it resumes and writes it.",
            ) from None
        raise BadInputError(
            f"{bundle}: no {SUMS_NAME} here; this is not an airgap bundle.",
            "Point at the bundle's top directory, the one holding SHA256SUMS and README.txt.",
        ) from None


def finalize(bundle: Path, lock: Lock) -> None:
    """Write README, the complete lock, then SHA256SUMS last: its presence marks a finished bundle."""
    lock.status = "complete"
    lock_bytes = write_lock(bundle, lock)
    readme = render_readme(lock).encode()
    write_atomic(bundle / README_NAME, readme)
    entries: dict[str, str] = {}
    for a in lock.artifacts:
        if a.in_base:
            continue  # not carried: checked in the base bundle at install time
        if a.parts:
            entries.update({p["path"]: p["sha256"] for p in a.parts})
        else:
            entries[a.path] = a.sha256
    for f in (lock.tool or {}).get("files", []):
        entries[f["path"]] = f["sha256"]
    entries[LOCK_NAME] = hashlib.sha256(lock_bytes).hexdigest()
    entries[README_NAME] = hashlib.sha256(readme).hexdigest()
    write_atomic(bundle / SUMS_NAME, format_sums(entries))


def covered_dirs() -> tuple[str, ...]:
    """Top-level directories in which every file must be listed in SHA256SUMS."""
    return (LAYERS_DIR, TOOL_DIR)


# --- README.txt ----------------------------------------------------------------------------------------

_BY_HAND = {
    "driver": "sh {path} --silent --dkms      (needs gcc, make and the kernel headers; reboot if it "
    "blacklisted nouveau, then run it again)",
    "cuda": "sh {path} --silent --toolkit    (toolkit only; then add /usr/local/cuda/bin to PATH)",
    "docker": "tar -xzf {path} && cp docker/* /usr/bin/ && dockerd &",
    "files": "cp {path} wherever you need it",
}
# Layers with many files get one line for the whole layer directory.
_BY_HAND_LAYER = {
    # apt-get orders Pre-Depends; one `dpkg -i` call refuses a package whose pre-dependency is only unpacked
    "prereqs": "apt-get install ./{dir}/*.deb",
    "cudnn": "apt-get install ./{dir}/*.deb",
    "container_toolkit": "apt-get install ./{dir}/*.deb && nvidia-ctk runtime configure --runtime=docker && "
    "systemctl restart docker",
    "images": "airgap install . --only images   (loads them into dockerd; see {dir}/)",
    "python": "python3 -m venv --without-pip /opt/airgap/venv && /opt/airgap/venv/bin/python "
    '"$(ls {dir}/pip-*.whl)/pip" install --no-index --find-links {dir} --require-hashes '
    "-r {dir}/requirements.lock.txt",
    "models": "cp -r {dir}/* /data/models/ && chown -R 1000:1000 /data/models",
}


def render_readme(lock: Lock) -> str:
    target = lock.target
    lines = [
        f"airgap bundle: {lock.name}",
        "=" * (15 + len(lock.name)),
        "",
        f"Made by airgap {lock.airgap_version} on {lock.created} for {target.get('os')} "
        f"{target.get('arch')} (python {target.get('python')}).",
        f"{len(lock.artifacts)} files, {human_size(lock.total_size)} in all.",
        "",
        "CHECK IT after every copy (USB drive, DVD, network share):",
        "    airgap verify .                 (names each missing, truncated, altered or extra file)",
        "    sha256sum -c SHA256SUMS         (the same check with coreutils alone)",
        "",
        "INSTALL IT on the server:",
        *(
            ["    sudo sh install.sh              (sets up airgap from tool/, then installs every layer)"]
            if lock.tool
            else []
        ),
        "    airgap install .                (every layer in order, offline)",
        "",
        "or by hand, in this order:",
    ]
    by_layer: dict[str, list[LockedArtifact]] = {}
    for a in lock.artifacts:
        by_layer.setdefault(a.layer, []).append(a)
    for layer in LAYER_ORDER:
        if layer in _BY_HAND_LAYER and by_layer.get(layer):
            lines.append(f"    {layer:<8} {_BY_HAND_LAYER[layer].format(dir=f'layers/{layer_dir(layer)}')}")
            continue
        for a in by_layer.get(layer, []):
            how = _BY_HAND.get(layer, "see the airgap documentation for this layer").format(path=a.path)
            if a.name.startswith("docker-compose-"):
                how = f"install -D -m 755 {a.path} /usr/libexec/docker/cli-plugins/docker-compose"
            lines.append(f"    {layer:<8} {how}")
    if any(a.parts for a in lock.artifacts):
        lines += [
            "",
            "Files stored in numbered parts (NAME.001, NAME.002, ...) for the medium's file size limit:",
            "rebuild one by hand with   cat NAME.0?? > NAME   (airgap install reads the parts itself).",
        ]
    if lock.base:
        carried = sum(1 for a in lock.artifacts if not a.in_base)
        lines += [
            "",
            f"DELTA BUNDLE: carries {carried} of {len(lock.artifacts)} files; the rest are in the bundle",
            f"'{lock.base.get('name')}' of {lock.base.get('created')}. Install with",
            "    airgap install . --base /path/of/that/bundle",
        ]
    if lock.skipped_layers:
        lines += ["", f"NOT IN THIS BUNDLE (skipped when collecting): {', '.join(lock.skipped_layers)}."]
    lines += ["", "CONTENTS", ""]
    width = max((len(a.path) for a in lock.artifacts), default=10)
    for a in lock.artifacts:
        if a.in_base:
            lines.append(f"    {a.path:<{width}}  {human_size(a.size):>10}  in the base bundle (unchanged)")
            continue
        checked = (
            f"checked against {a.upstream_digest['algorithm']} from {a.upstream_digest['source']}"
            if a.upstream_digest
            else "no publisher digest: sha256 recorded at download"
        )
        lines.append(f"    {a.path:<{width}}  {human_size(a.size):>10}  {checked}")
    lines += [
        "",
        f"{LOCK_NAME} lists every file with its size, sha256, source URL and the upstream digest it was",
        f"checked against. {SUMS_NAME} covers every file here, the lock included.",
        "",
    ]
    return "\n".join(lines)
