"""The manifest: what a bundle must hold, validated in full before anything is fetched.

Every problem is reported as `manifest.yaml:LINE: field.path: what is wrong; what would be right`,
all of them at once, so a user fixes the file in one pass instead of one error per run.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from airgap.errors import BadInputError, ManifestError

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DRIVER_VERSION_RE = re.compile(r"^\d{3}\.\d{2,3}(\.\d{2,3})?$")
SEMVER3_RE = re.compile(r"^\d+\.\d+\.\d+$")
PYTHON_RE = re.compile(r"^3\.\d{1,2}$")
OS_RE = re.compile(r"^(ubuntu|debian|rhel|rocky|almalinux)-\d+(\.\d+)?$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
HF_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
OWNER_RE = re.compile(r"^\d+:\d+$")


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL; write it like https://host/path/file")
    return value


def _check_sha256(value: object) -> str:
    if not isinstance(value, str):
        kind = "a number" if isinstance(value, (int, float)) else f"a {type(value).__name__}"
        raise ValueError(f"YAML read this digest as {kind}, not text; put it in quotes")
    value = value.strip().lower()
    if not SHA256_RE.match(value):
        raise ValueError(
            f"{value!r} is not a sha256 digest; it must be exactly 64 hex characters (as printed by `sha256sum FILE`)"
        )
    return value


def _version(pattern: re.Pattern[str], example: str) -> Any:
    def check(value: Any) -> str:
        if isinstance(value, float):
            raise ValueError(f'YAML read this version as the number {value!r}; quote it, e.g. "{example}"')
        value = str(value).strip()
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not a valid version; expected a version like {example}")
        return value

    return check


def safe_file_name(name: str) -> bool:
    """A name that can sit in `layers/NN-x/` and in SHA256SUMS without escaping or path tricks."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\n\r\t\0")


class StrictModel(BaseModel):
    # Unknown keys are typos far more often than intent: reject them (with a did-you-mean).
    model_config = ConfigDict(extra="forbid", frozen=True)


class PinnedDownload(StrictModel):
    """Fields shared by every HTTP-fetched item: a hand-pinned URL and digest win over derived ones."""

    url: str | None = None
    sha256: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v)

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha(cls, v: object) -> str | None:
        return None if v is None else _check_sha256(v)


class Target(StrictModel):
    os: str
    arch: Literal["amd64", "arm64"] = "amd64"
    python: str = "3.10"
    kernel: str | None = None
    gpus: list[str] = Field(default_factory=list)

    _os = field_validator("os", mode="before")(
        lambda v: _check_pattern(v, OS_RE, "ubuntu-22.04 (distribution-release)")
    )
    _py = field_validator("python", mode="before")(_version(PYTHON_RE, "3.10"))


def _check_pattern(value: Any, pattern: re.Pattern[str], example: str) -> str:
    value = str(value).strip()
    if not pattern.match(value):
        raise ValueError(f"{value!r} is not valid; expected something like {example}")
    return value


class DriverSpec(PinnedDownload):
    version: str
    _v = field_validator("version", mode="before")(_version(DRIVER_VERSION_RE, "550.90.07"))


class CudaSpec(PinnedDownload):
    version: str
    _v = field_validator("version", mode="before")(_version(SEMVER3_RE, "12.4.0"))


APT_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(\s*=\s*\S+|\s*\((<<|<=|=|>=|>>)\s*[^)\s]+\s*\))?$")


def _apt_packages(v: list[str] | None) -> list[str] | None:
    for item in v or []:
        if not APT_PACKAGE_RE.match(item.strip()):
            raise ValueError(
                f"{item!r} is not a Debian package request; write it like `dkms`, "
                "`nvidia-container-toolkit=1.16.2` or `gcc-12 (>= 12.3)`"
            )
    return v


class CudnnSpec(StrictModel):
    version: str
    packages: list[str] | None = None  # default: libcudnnN-cuda-M and libcudnnN-dev-cuda-M
    # The CUDA major version in the package names (libcudnn9-cuda-12); default: cuda.version's, else 12.
    cuda_major: int | None = None
    _v = field_validator("version", mode="before")(_version(re.compile(r"^\d+(\.\d+){0,3}$"), "9"))
    _pkgs = field_validator("packages")(_apt_packages)


class DockerSpec(PinnedDownload):
    version: str
    # Compose v2 plugin release (`docker compose`); the static tgz does not carry it.
    compose: str | None = None
    _v = field_validator("version", mode="before")(_version(SEMVER3_RE, "25.0.3"))

    @field_validator("compose", mode="before")
    @classmethod
    def _compose(cls, v: Any) -> str | None:
        return None if v is None else _version(SEMVER3_RE, "2.29.7")(str(v).removeprefix("v"))


class ContainerToolkitSpec(StrictModel):
    version: str
    _v = field_validator("version", mode="before")(_version(SEMVER3_RE, "1.16.2"))


class ImageSpec(StrictModel):
    ref: str
    platform: str | None = None
    local: bool = False

    @field_validator("ref")
    @classmethod
    def _ref(cls, v: str) -> str:
        name = v.split("@", 1)[0]
        if ":" in name.rsplit("/", 1)[-1]:
            name = name.rsplit(":", 1)[0]
        if not v or any(c.isspace() for c in v) or name != name.lower():
            raise ValueError(
                f"{v!r} is not an image reference; write it like vllm/vllm-openai:v0.6.3 "
                "(repository names are lower case, no spaces)"
            )
        return v

    @field_validator("platform")
    @classmethod
    def _platform(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?$", v):
            raise ValueError(f"{v!r} is not a platform; write it like linux/amd64 or linux/arm64/v8")
        return v


# Where the python layer's virtual environment goes on the server when python.venv does not say; what
# smoke and doctor look at when the bundle does not say either.
DEFAULT_VENV = "/opt/airgap/venv"


class PythonSpec(StrictModel):
    requirements: list[str] = Field(min_length=1)
    index_urls: list[str] = Field(default_factory=lambda: ["https://pypi.org/simple"])
    venv: str = DEFAULT_VENV
    # The server's glibc, which decides the manylinux tags a wheel may carry; default from target.os.
    glibc: str | None = None
    # Platform tags to accept instead of the manylinux ladder derived from target.arch and glibc.
    platforms: list[str] | None = None
    # Modules to import after the install; default: the top-level modules of each requirement.
    imports: list[str] | None = None

    @field_validator("index_urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        return [_check_url(u) for u in v]

    @field_validator("venv")
    @classmethod
    def _venv(cls, v: str) -> str:
        if not v.startswith("/") or ".." in v.split("/"):
            raise ValueError(f"{v!r} is not an absolute path; write it like /opt/airgap/venv")
        return v

    @field_validator("glibc", mode="before")
    @classmethod
    def _glibc(cls, v: Any) -> str | None:
        if v is None:
            return None
        if isinstance(v, float):
            raise ValueError(f'YAML read this version as the number {v!r}; quote it, e.g. "2.35"')
        if not re.match(r"^2\.\d{1,2}$", str(v)):
            raise ValueError(f'{v!r} is not a glibc version; write it like "2.35" (`ldd --version` on the server)')
        return str(v)


class AptRepoSpec(StrictModel):
    """An apt repository: `deb URL SUITE COMPONENTS`, or a flat one (`deb URL /`) with suites: ["/"]."""

    name: str
    url: str
    suites: list[str] = Field(default_factory=lambda: ["/"], min_length=1)
    components: list[str] = Field(default_factory=lambda: ["main"])
    keyring: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v).rstrip("/")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a usable repository name; use letters, digits, '.', '_' and '-'")
        return v


class AptSpec(StrictModel):
    """Debian packages for the server: where they come from and how to check them."""

    # The driver build's prerequisites (build-essential, gcc-12, dkms, linux-headers-<target.kernel>).
    prereqs: bool = False
    # More packages for the prereqs layer (e.g. python3.10-venv, nfs-common).
    packages: list[str] = Field(default_factory=list)
    # Keyrings (binary .gpg or armored .asc, relative to the manifest) by repository name: ubuntu, debian,
    # nvidia-container, cuda, or a name from `repos`.
    keyrings: dict[str, str] = Field(default_factory=dict)
    repos: list[AptRepoSpec] = Field(default_factory=list)
    # A copy of the server's /var/lib/dpkg/status: what it already has is left out precisely.
    target_status: str | None = None

    _pkgs = field_validator("packages")(_apt_packages)


class ModelSpec(StrictModel):
    repo: str
    revision: str = "main"
    allow: list[str] | None = None
    ignore: list[str] | None = None
    dest: str | None = None
    owner: str = "1000:1000"
    # Also install into a Hugging Face cache under this HF_HOME (files in <hf_home>/hub/models--owner--name),
    # so programs run with HF_HOME=<hf_home> HF_HUB_OFFLINE=1 find the model by repo id.
    hf_home: str | None = None

    @field_validator("hf_home")
    @classmethod
    def _hf_home(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or ".." in v.split("/")):
            raise ValueError(f"{v!r} is not an absolute path; write it like /data/hf (the HF_HOME programs will use)")
        return v

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not HF_REPO_RE.match(v):
            raise ValueError(f"{v!r} is not a Hugging Face repo id; write it like meta-llama/Llama-3.1-8B-Instruct")
        return v

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: Any) -> str:
        if not OWNER_RE.match(str(v)):
            raise ValueError(f'{v!r} is not uid:gid; write it like "1000:1000"')
        return str(v)


class FileSpec(PinnedDownload):
    url: str  # required here, optional on other downloads
    name: str | None = None

    @model_validator(mode="after")
    def _name(self) -> FileSpec:
        name = self.file_name
        if not safe_file_name(name):
            raise ValueError(
                f"cannot use {name!r} as a file name in the bundle; add `name: some-file.tar.gz` to this entry"
            )
        return self

    @property
    def file_name(self) -> str:
        return self.name or unquote(urlsplit(self.url).path.rsplit("/", 1)[-1])


def _str_to(key: str) -> Any:
    """Let a list item be written as a bare string (`- ubuntu:22.04`) for its main key."""

    def convert(items: Any) -> Any:
        if isinstance(items, list):
            return [{key: i} if isinstance(i, str) else i for i in items]
        return items

    return convert


class Manifest(StrictModel):
    name: str
    target: Target
    driver: DriverSpec | None = None
    cuda: CudaSpec | None = None
    cudnn: CudnnSpec | None = None
    docker: DockerSpec | None = None
    container_toolkit: ContainerToolkitSpec | None = None
    images: Annotated[list[ImageSpec], Field(default_factory=list)]
    python: PythonSpec | None = None
    models: Annotated[list[ModelSpec], Field(default_factory=list)]
    files: Annotated[list[FileSpec], Field(default_factory=list)]
    apt: AptSpec | None = None
    mirrors: dict[str, str] = Field(default_factory=dict)
    insecure_registries: list[str] = Field(default_factory=list)

    _source: Path = PrivateAttr(default=Path("manifest.yaml"))
    _lines: dict[tuple[str | int, ...], int] = PrivateAttr(default_factory=dict)

    _images = field_validator("images", mode="before")(_str_to("ref"))
    _models = field_validator("models", mode="before")(_str_to("repo"))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a usable bundle name; use letters, digits, '.', '_' and '-'")
        return v

    @field_validator("mirrors")
    @classmethod
    def _mirrors(cls, v: dict[str, str]) -> dict[str, str]:
        out = {}
        for prefix, replacement in v.items():
            _check_url(prefix)
            _check_url(replacement)
            out[prefix.rstrip("/")] = replacement.rstrip("/")
        return out

    def location(self, path: tuple[str | int, ...]) -> str:
        """`file:line` of a field, or of its nearest ancestor that has a line."""
        return f"{self._source.name}:{_line_for(self._lines, path)}"

    def error(self, path: tuple[str | int, ...], what: str) -> ManifestError:
        """An error about a field that passed the schema but failed a later check (e.g. a table lookup)."""
        return ManifestError([f"{self.location(path)}: {_dotted(path)}: {what}"])

    @property
    def source(self) -> Path:
        return self._source


# --- loading -------------------------------------------------------------------------------------------


def load(path: str | Path) -> Manifest:
    """Read and validate a manifest; raise ManifestError listing every problem with file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(
            f"{path}: no such manifest file.",
            "Check the path; `airgap collect --help` shows an example and manifests/ holds real ones.",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read the manifest: {exc}.") from None
    return loads(text, source=path)


def loads(text: str, source: str | Path = "manifest.yaml") -> Manifest:
    source = Path(source)
    data, lines = _parse_yaml(text, source)
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(_format_errors(exc, lines, source.name)) from None
    manifest._source = source
    manifest._lines = lines
    return manifest


def _parse_yaml(text: str, source: Path) -> tuple[dict[str, Any], dict[tuple[str | int, ...], int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source.name}:{mark.line + 1}:{mark.column + 1}" if mark else source.name
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        raise ManifestError(
            [
                f"{where}: not valid YAML: {what}; check the indentation and quoting near that line "
                "(tabs, and a ':' or '#' inside an unquoted value, are the usual causes)"
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise ManifestError([f"{source.name}: not valid YAML: {exc}"]) from None
    if node is None or data is None:
        raise ManifestError([f"{source.name}:1: the manifest is empty; start from an example in manifests/"])
    if not isinstance(data, dict):
        raise ManifestError(
            [
                f"{source.name}:1: the manifest must be a mapping of sections (name:, target:, ...), "
                f"not a {type(data).__name__}"
            ]
        )
    lines: dict[tuple[str | int, ...], int] = {(): 1}
    problems: list[str] = []
    _walk(node, (), lines, problems, source.name)
    if problems:
        raise ManifestError(problems)
    return data, lines


def _walk(
    node: yaml.Node,
    path: tuple[str | int, ...],
    lines: dict[tuple[str | int, ...], int],
    problems: list[str],
    fname: str,
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            child = (*path, key)
            if key in seen:
                problems.append(
                    f"{fname}:{line}: {_dotted(child)}: key given twice (first on line {seen[key]}); keep one"
                )
            seen[key] = line
            lines[child] = line
            _walk(value_node, child, lines, problems, fname)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*path, i)
            lines[child] = item.start_mark.line + 1
            _walk(item, child, lines, problems, fname)


def _line_for(lines: dict[tuple[str | int, ...], int], path: tuple[str | int, ...]) -> int:
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return 1


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _format_errors(exc: ValidationError, lines: dict[tuple[str | int, ...], int], fname: str) -> list[str]:
    problems: list[tuple[int, str]] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        kind = err["type"]
        line = _line_for(lines, loc)
        if kind == "extra_forbidden":
            known = _fields_at(loc[:-1])
            bad = str(loc[-1])
            close = difflib.get_close_matches(bad, known, n=1, cutoff=0.6)
            fix = f"did you mean '{close[0]}'?" if close else f"known keys here: {', '.join(known)}"
            msg = f"unknown key '{bad}'; {fix}"
        elif kind == "missing":
            msg = f"required field is missing; add `{loc[-1]}:` here"
        else:
            text = err["msg"].removeprefix("Value error, ")
            # Our own validators already name the value and the fix; pydantic's type errors do not.
            msg = text if kind == "value_error" else f"{text}; got {err.get('input')!r}"
        problems.append((line, f"{fname}:{line}: {_dotted(loc)}: {msg}"))
    return [text for _, text in sorted(problems, key=lambda p: p[0])]


def _fields_at(loc: tuple[str | int, ...]) -> list[str]:
    """The keys allowed at a location of the schema, for did-you-mean suggestions."""
    tp: Any = Manifest
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, int):
            args = typing.get_args(tp)
            tp = args[0] if args else Any
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    """Strip Optional[...] and Annotated[...] to reach the model or container type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0]
        else:
            return tp
