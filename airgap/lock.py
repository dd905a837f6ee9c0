"""The lock: the typed contract between the connected PC and the isolated server.

`airgap.lock.json` is the one thing both machines must read the same way. collect writes it; verify,
install, smoke and doctor read it. Both sides import these models, and nothing else crosses: a field added
here is a field both sides see, and a lock that does not fit the models is refused with the field named,
never half-read as untyped dicts.

`format` says which shape a lock has. A reader refuses a newer format plainly (upgrade airgap on this
side) instead of calling the lock damaged; older formats are read as long as the models accept them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from airgap import __version__
from airgap.bundle_layout import LOCK_NAME, MAX_LOCK_BYTES
from airgap.errors import BadInputError

if TYPE_CHECKING:
    # The install side's typed view of the manifest copy; its models (and YAML) are imported when first asked
    # for, so reading a lock (verify) does not build them.
    from airgap.manifest import Manifest

LOCK_FORMAT = 1
# A lock airgap writes is about eight levels deep (lock > manifest > apt > repos > [i] > suites > [j]). The
# JSON decoder's own limit is the interpreter's recursion limit, deep enough that validating or writing the
# lock again fails later (pydantic's serialiser stops at a few hundred): refuse at this depth instead.
MAX_LOCK_DEPTH = 32


class LockModel(BaseModel):
    # Extra keys are refused: a lock with fields this airgap does not know is from a newer airgap (and then
    # `format` says so first) or was edited; either way guessing would be wrong.
    model_config = ConfigDict(extra="forbid")


class UpstreamDigest(LockModel):
    """The publisher's digest a file was checked against at collect time, and where it was published."""

    algorithm: str  # "sha256", "md5", or "git-sha1" (git's blob id)
    value: str
    source: str  # "manifest", or the URL of the checksum list / metadata API (credentials removed)


class Part(LockModel):
    """One numbered part of a file stored split (--max-file-size): NAME.001, NAME.002, ..."""

    path: str
    size: int = Field(ge=0)
    sha256: str


class ToolFile(LockModel):
    """A file of airgap itself in the bundle (tool/ and install.sh)."""

    path: str
    size: int = Field(ge=0)
    sha256: str


class ToolRecord(LockModel):
    """airgap itself for the server: wheels for this python/arch/glibc, so install.sh needs no network."""

    python: str
    arch: str
    glibc: str
    files: list[ToolFile] = Field(default_factory=list)
    # airgap's extras whose wheels tool/ also holds ("fleet": ansible-core for the control node).
    extras: list[str] = Field(default_factory=list)


class BaseRecord(LockModel):
    """For a delta bundle (collect --since): the full bundle it builds on, pinned by its lock's sha256."""

    name: str
    created: str
    lock_sha256: str


class LockedArtifact(LockModel):
    layer: str
    name: str
    path: str
    size: int = Field(ge=0)
    sha256: str
    url: str  # canonical upstream URL, credentials removed
    upstream_digest: UpstreamDigest | None = None
    upstream_digest_note: str = ""  # why there is none, when there is none
    # Facts a layer's collect half leaves for its install half (model commit, image config digest, ...).
    # Each layer reads its own keys; nothing here may be a secret.
    meta: dict[str, Any] = Field(default_factory=dict)
    parts: list[Part] = Field(default_factory=list)
    # Delta bundles: the file is not carried; the base bundle holds it with this sha256.
    in_base: bool = False

    def stored_files(self) -> list[Part]:
        """What is on disk for this artifact: its numbered parts, or the file itself."""
        # Built from fields already validated: model_construct skips a validation per artifact, which in a
        # verify of thousands of files cost more than hashing them.
        return (
            list(self.parts)
            if self.parts
            else [Part.model_construct(path=self.path, size=self.size, sha256=self.sha256)]
        )


class Lock(LockModel):
    name: str
    target: dict[str, Any]
    status: str = "partial"  # "complete" once every artifact is in and SHA256SUMS is written
    created: str = ""
    airgap_version: str = __version__
    format: int = LOCK_FORMAT
    skipped_layers: list[str] = Field(default_factory=list)
    # The manifest as validated at collect time, credentials redacted: the install side rebuilds a typed
    # Manifest from it (InstallContext.manifest).
    manifest: dict[str, Any] = Field(default_factory=dict)
    # Compatibility errors accepted with --allow-mismatch, so the server side knows the stack was knowingly
    # mismatched and install's preflight keeps them warnings.
    allowed_mismatches: list[dict[str, Any]] = Field(default_factory=list)
    artifacts: list[LockedArtifact] = Field(default_factory=list)
    base: BaseRecord | None = None
    tool: ToolRecord | None = None

    _recorded: Manifest | None = PrivateAttr(default=None)

    def recorded_manifest(self) -> Manifest:
        """The manifest as collect validated it (credentials redacted), typed again, built once: what the
        install side reads instead of untyped dicts. A lock whose copy no longer validates is named."""
        if self._recorded is None:
            from airgap.manifest import Manifest

            try:
                self._recorded = Manifest.model_validate(self.manifest)
            except ValidationError as exc:
                err = exc.errors()[0]
                field = ".".join(str(p) for p in ("manifest", *err["loc"]))
                raise BadInputError(
                    f"{LOCK_NAME}: damaged lock file: field {field}: {err['msg']}.",
                    "Run `airgap verify` on the bundle to see what was damaged; copy it again from the original.",
                ) from None
        return self._recorded

    def by_path(self) -> dict[str, LockedArtifact]:
        return {a.path: a for a in self.artifacts}

    def to_json(self) -> bytes:
        return (json.dumps(self.model_dump(mode="json"), indent=2) + "\n").encode()

    @property
    def total_size(self) -> int:
        return sum(a.size for a in self.artifacts if not a.in_base)

    def tool_files(self) -> list[ToolFile]:
        return list(self.tool.files) if self.tool is not None else []

    @classmethod
    def parse(cls, data: bytes, where: str) -> Lock:
        """A lock from its bytes. `where` names it in errors (a path). Raises BadInputError naming the
        field for a damaged lock, and asks for an upgrade for a lock of a newer format."""
        if len(data) > MAX_LOCK_BYTES:
            raise BadInputError(
                f"{where}: {len(data)} bytes is far larger than any lock airgap writes; not reading it.",
                "The file was replaced or damaged: copy the bundle again from the original.",
            )
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise _damaged(where, f"not valid JSON ({str(exc)[:120]})") from None
        if not isinstance(raw, dict):
            raise _damaged(where, "not a JSON object")
        if _deeper_than(data, MAX_LOCK_DEPTH):
            raise _damaged(where, f"nested more than {MAX_LOCK_DEPTH} levels deep")
        fmt = raw.get("format", LOCK_FORMAT)
        if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > LOCK_FORMAT:
            made_by = raw.get("airgap_version", "a newer version")
            raise BadInputError(
                f"{where}: lock format {fmt}, made by airgap {made_by} or newer; this airgap "
                f"({__version__}) reads format {LOCK_FORMAT} and older.",
                "Upgrade airgap on this side (the bundle's tool/ holds the airgap that made it: "
                "`sudo sh install.sh` sets it up).",
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise _damaged(where, f"field {field}: {err['msg']}{more}") from None
        except RecursionError:
            raise _damaged(where, "nested too deeply") from None

    @classmethod
    def read(cls, bundle: Path) -> Lock:
        """The lock of the bundle directory `bundle`."""
        return cls.read_with_digest(bundle)[0]

    @classmethod
    def read_with_digest(cls, bundle: Path) -> tuple[Lock, str]:
        """The lock and the sha256 of the very bytes it was parsed from (read once)."""
        path = bundle / LOCK_NAME
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_LOCK_BYTES + 1)
        except FileNotFoundError:
            raise BadInputError(
                f"{bundle}: no {LOCK_NAME} here, so this is not an airgap bundle (or its collection never started).",
                "Point at the bundle's top directory, the one holding SHA256SUMS and README.txt.",
            ) from None
        except OSError as exc:
            raise BadInputError(
                f"{path}: cannot read the lock file ({exc.strerror}).",
                "Check that the medium is readable and that you may read the bundle's files.",
            ) from None
        return cls.parse(data, str(path)), hashlib.sha256(data).hexdigest()


_JSON_STRING = re.compile(rb'"(?:[^"\\\\]|\\\\.)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")


def _deeper_than(data: bytes, limit: int) -> bool:
    """Whether JSON text (already known to parse) nests objects and arrays more than `limit` levels. Done on
    the text in C-speed passes (strings dropped, brackets kept, innermost pairs removed once per level): a
    walk of the decoded tree in Python cost more than the rest of reading a lock of thousands of files."""
    brackets = _JSON_STRING.sub(b"", data).translate(None, delete=_NOT_BRACKET)
    for _ in range(limit):
        if not brackets:
            return False
        brackets = _EMPTY_PAIR.sub(b"", brackets)
    return bool(brackets)


class LockDamaged(BadInputError):
    """The lock's bytes are not a lock this airgap can read, and not because it is newer: damage."""


def _damaged(where: str, what: str) -> LockDamaged:
    return LockDamaged(
        f"{where}: damaged lock file: {what}.",
        "Run `airgap verify` on the bundle, or `sha256sum -c SHA256SUMS` in it, to see what was damaged; "
        "copy the bundle again from the original.",
    )
