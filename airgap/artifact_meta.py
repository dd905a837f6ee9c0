"""What a layer's collect half leaves in the lock for its install half (and for the checks), typed.

The lock stores each artifact's facts as a JSON object (`LockedArtifact.meta`); the models here say what
each layer puts there. A layer writes them with `to_meta()` and reads them back with `read_meta()`, so a
missing or mistyped key in a damaged lock is named with the artifact and the field instead of surfacing
as a KeyError deep in an install. Nothing here may hold a secret: it is written into the bundle.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airgap.errors import BadInputError


class Meta(BaseModel):
    # Unknown keys are kept, not refused: a layer may record more for people (plan, README) than its
    # install half reads, and an older airgap reads what it knows of a newer lock's facts.
    model_config = ConfigDict(extra="allow")

    def to_meta(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


M = TypeVar("M", bound=Meta)


def read_meta(model: type[M], meta: dict[str, Any], path: str) -> M:
    """`meta` of the artifact at `path` as `model`, or a BadInputError naming the field."""
    try:
        return model.model_validate(meta)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(all)"
        raise BadInputError(
            f"{path}: the lock's facts for this file are damaged or from another airgap version: "
            f"meta.{field}: {err['msg']}.",
            "Run `airgap verify` on the bundle; if it passes, collect the bundle again with this airgap.",
        ) from None


# --- models ---------------------------------------------------------------------------------------------


class ModelInfo(Meta):
    """A model as a whole, on its first artifact: what `plan` shows and the VRAM check reads."""

    repo: str
    revision: str
    commit: str
    params: int | None = None
    dtype: str | None = None
    dtypes: dict[str, int] = Field(default_factory=dict)
    # Bytes the weights take in memory, for VRAM estimates (None if a dtype is unknown).
    weight_bytes: int | None = None
    params_from: list[str] = Field(default_factory=list)
    params_note: str | None = None
    files: int
    size: int


class ModelFileMeta(Meta):
    """One file of a model snapshot: where it sits in the repo, at which commit."""

    repo: str
    revision: str
    commit: str
    path_in_repo: str
    model: ModelInfo | None = None


# --- python ---------------------------------------------------------------------------------------------


class WheelMeta(Meta):
    project: str
    version: str  # as resolved, local label included (2.5.1+cu124)
    requested: bool = False
    # Its Requires-Dist: who pulled in what, for the compatibility checks' messages. None in locks made
    # before airgap recorded it.
    requires: list[str] | None = None


class WheelLockMeta(Meta):
    """The requirements lock the python layer generates, and what it was resolved for."""

    python: str
    platforms: list[str]
    requirements: list[str]
    indexes: list[str]
    pip: str


class UnresolvedMeta(Meta):
    """A placeholder `plan --no-head` shows for what only collect can resolve."""

    unresolved: str


# --- images ---------------------------------------------------------------------------------------------


class ImageMeta(Meta):
    """One image, on its manifest blob: what install loads, tags and checks."""

    role: str = "manifest"
    ref: str
    refs: list[str]
    tags: list[str]
    pinned: str | None = None  # the reference pinned to the manifest's digest (registry images)
    manifest_digest: str
    index_digest: str | None = None
    config_digest: str  # = the image ID `docker images --no-trunc` shows
    platform: str
    media_type: str
    layers: int
    size: int
    source: str  # "registry" or "daemon"


# --- Debian packages ------------------------------------------------------------------------------------


class DebMeta(Meta):
    """One `.deb` of an apt closure: what dpkg needs to order and check it, and why it is there."""

    package: str
    version: str
    architecture: str = ""
    depends: str = ""
    pre_depends: str = ""
    provides: str = ""
    order: int = 0  # the closure's install order
    needed_by: str = ""  # "requested (field)" or the package that pulled it in
    repo: str = ""
    server: str = ""  # what the server was assumed to have (its dpkg status, or the release's defaults)
