"""The manifest: what a bundle must hold, validated in full before anything is fetched.

Every problem is reported as `manifest.yaml:LINE: field.path: what is wrong; what would be right`,
all of them at once, so a user fixes the file in one pass instead of one error per run.

A manifest may come from someone else, and what it names becomes files in the bundle and directories root
creates on the server. So it is read within bounds (size, nesting, no YAML aliases, which can expand a few
lines into gigabytes), and every name that becomes a path is one airgap can write into SHA256SUMS and read
back, and every install directory is away from the system's (airgap.safepaths).
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from airgap import safepaths
from airgap.errors import BadInputError, ManifestError

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DRIVER_VERSION_RE = re.compile(r"^\d{3}\.\d{2,3}(\.\d{2,3})?$")
SEMVER3_RE = re.compile(r"^\d+\.\d+\.\d+$")
PYTHON_RE = re.compile(r"^3\.\d{1,2}$")
OS_RE = re.compile(r"^(ubuntu|debian|rhel|rocky|almalinux)-\d+(\.\d+)?$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
HF_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
OWNER_RE = re.compile(r"^\d+:\d+$")

# Bounds on what is parsed (invariant 7). Real manifests are a few kilobytes and six levels deep.
MAX_MANIFEST_BYTES = 1 << 20
MAX_MANIFEST_DEPTH = 16
# The longest name a Linux file system takes for one path component.
MAX_NAME_BYTES = 255


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


def file_name_problem(name: str) -> str | None:
    """Why `name` cannot be one file's name in the bundle, or None.

    The name is written into SHA256SUMS and the lock and must come back the same from both: `sha256sum`
    escapes a backslash or newline, and Python's line reading splits at \\x0c, \\x1c, \\x85 and U+2028,
    which is how a file could pass `sha256sum -c` and then fail `airgap verify`. Bidi overrides and escape
    sequences would make the name read differently in a terminal than on disk. A leading `-` is allowed:
    every bundle path starts with `layers/`, so a name never reaches a command as an option."""
    if not name:
        return "it is empty"
    if name in (".", ".."):
        return f"{name!r} names a directory, not a file"
    if "/" in name or "\\" in name:
        return "it holds a '/' or '\\' (a file in the bundle is named without directories)"
    if bad := safepaths.bad_name_char(name):
        return f"it holds {bad}, which a bundle's file name may not (it would not read back the same)"
    if not _is_text(name):
        return "it holds a lone surrogate, which is not text a file system can store"
    if len(name.encode()) > MAX_NAME_BYTES:
        return f"it is longer than the {MAX_NAME_BYTES} bytes a file name may have"
    return None


def _is_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def safe_file_name(name: str) -> bool:
    """A name that can sit in `layers/NN-x/` and in SHA256SUMS without escaping or path tricks."""
    return file_name_problem(name) is None


def url_file_name(url: str) -> str:
    """The file name a URL gives its download: the last path segment, percent-decoded."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def _check_install_dir(value: str, example: str) -> str:
    """An absolute directory root creates (and may hand to the serving user), normalised."""
    if problem := safepaths.install_dir_problem(value):
        raise ValueError(f"{value!r} cannot be an install directory: {problem}; write it like {example}")
    return safepaths.normalise(value)


class StrictModel(BaseModel):
    # Unknown keys are typos far more often than intent: reject them (with a did-you-mean).
    model_config = ConfigDict(extra="forbid", frozen=True)


class PinnedDownload(StrictModel):
    """Fields shared by every HTTP-fetched item: a hand-pinned URL and digest win over derived ones."""

    # The download is stored under the URL's last path segment (driver, cuda, docker); files: may rename it.
    _url_names_file: ClassVar[bool] = True

    url: str | None = None
    sha256: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        _check_url(v)
        if cls._url_names_file and (problem := file_name_problem(url_file_name(v))):
            raise ValueError(
                f"the file name this URL ends with, {url_file_name(v)!r}, cannot be a file in the bundle: "
                f"{problem}; use the URL that names the file itself"
            )
        return v

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
        if bad := safepaths.bad_name_char(v):
            raise ValueError(f"{v!r} holds {bad}; write the reference like vllm/vllm-openai:v0.6.3")
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
        # `python -m venv /usr` would write bin/python over the system's.
        return _check_install_dir(v, DEFAULT_VENV)

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
    # Pickle-based weights (.bin, .pt, .pth, .pkl, .ckpt) can run code when loaded: collect refuses them
    # unless this is true, and install places them only once the bundle's dossier has scanned them.
    allow_pickle: bool = False

    @field_validator("dest")
    @classmethod
    def _dest(cls, v: str | None, info: ValidationInfo) -> str | None:
        # Root creates this directory and hands it, recursively, to `owner`: never a system location.
        if v is None:
            return None
        repo = info.data.get("repo")
        example = f"/data/models/{repo.split('/', 1)[1]}" if repo else "/data/models/<name>"
        for_repo = f"the directory for {repo}" if repo else "the model's directory"
        if problem := safepaths.install_dir_problem(v):
            raise ValueError(f"{v!r} cannot be {for_repo}: {problem}; write it like {example}")
        return safepaths.normalise(v)

    @field_validator("hf_home")
    @classmethod
    def _hf_home(cls, v: str | None) -> str | None:
        return None if v is None else _check_install_dir(v, "/data/hf (the HF_HOME programs will use)")

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
    _url_names_file: ClassVar[bool] = False  # checked with `name`, which may replace it

    url: str  # required here, optional on other downloads
    name: str | None = Field(default=None, validate_default=True)

    # validate_default: with no `name`, the name the URL gives is the one to check.
    @field_validator("name", mode="after")
    @classmethod
    def _name(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None:
            if problem := file_name_problem(v):
                raise ValueError(
                    f"{v!r} cannot be a file name in the bundle: {problem}; write it like some-file.tar.gz"
                )
            return v
        url = info.data.get("url")  # absent when the URL itself was refused
        if url is not None and (problem := file_name_problem(url_file_name(url))):
            raise ValueError(
                f"not given, and the name the URL ends with, {url_file_name(url)!r}, cannot be a file in the "
                f"bundle: {problem}; add `name: some-file.tar.gz` to this entry"
            )
        return v

    @property
    def file_name(self) -> str:
        return self.name or url_file_name(self.url)


def _str_to(key: str) -> Any:
    """Let a list item be written as a bare string (`- ubuntu:22.04`) for its main key."""

    def convert(items: Any) -> Any:
        if isinstance(items, list):
            return [{key: i} if isinstance(i, str) else i for i in items]
        return items

    return convert


class DepotSpec(StrictModel):
    """The closed network's depot (docs/depot.md): each host's install points its clients at it (apt
    sources with signed-by, pip's index, Docker's registry mirror, HF_ENDPOINT). Nothing here is a secret:
    credentials in the URL are refused."""

    url: str  # where `airgap serve`, or the nginx of `airgap export`, answers: http(s)://HOST[:PORT]
    registry: str | None = None  # HOST[:PORT] where `airgap push` put the images
    apt_key: str | None = None  # the depot apt repository's public key (export's airgap-depot.gpg)
    ca_file: str | None = None  # the site CA (PEM) the depot's and the registry's certificates chain to
    # Debian packages the depot host itself needs (the web server for `airgap export`), carried in the depot
    # layer's directory with their dependencies and installed by hand there: never on every server.
    server_packages: list[str] = Field(default_factory=lambda: ["nginx"])

    @field_validator("url")
    @classmethod
    def _depot_url(cls, v: str) -> str:
        _check_url(v)
        parts = urlsplit(v)
        if parts.username or parts.password:
            raise ValueError("a depot URL must not carry credentials: the lock and every host would keep them")
        if parts.query or parts.fragment:
            raise ValueError(f"{v!r}: give the depot's base URL, like http://depot.example.internal:8080")
        return v.rstrip("/")

    @field_validator("registry")
    @classmethod
    def _registry(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?", v):
            raise ValueError(f"{v!r} is not HOST[:PORT]; write it like depot.example.internal:5000")
        return v


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
    depot: DepotSpec | None = None
    # The bundle is also a control node's kit: tool/ carries ansible-core (airgap's `fleet` extra), so
    # `airgap fleet` runs inside the closed network with nothing from outside (docs/fleet.md).
    fleet: bool = False

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


# --- checks that need more than the manifest -------------------------------------------------------------


def check_tool_python(manifest: Manifest) -> None:
    """Refuse a target.python airgap itself cannot run on, when the bundle is to carry it (tool/): install.sh
    runs airgap on the server with that python, so collecting for it would fail at the self-install, or
    produce a bundle whose install.sh cannot work. ManifestError (exit 2), before anything is fetched."""
    from packaging.specifiers import SpecifierSet

    from airgap.errors import AirgapError
    from airgap.selfinstall.own_wheel import project_metadata

    try:
        meta = project_metadata()
    except AirgapError:
        return  # requirements unknown: building tool/ says so, with its own fix
    if not meta.requires_python:
        return
    supported = SpecifierSet(meta.requires_python)
    xy = manifest.target.python
    if supported.contains(f"{xy}.0", prereleases=True):
        return
    example = next((f"3.{n}" for n in range(8, 20) if supported.contains(f"3.{n}.0", prereleases=True)), None)
    instead = f' (e.g. "{example}"; the server then needs that python3)' if example else ""
    raise manifest.error(
        ("target", "python"),
        f'"{xy}" is a python airgap {meta.version} cannot run on (it needs python {meta.requires_python}), and '
        f"the bundle's tool/ puts airgap on the server to run with target.python; set target.python to a "
        f"version it supports{instead}, or collect with --no-tool and bring airgap to the server another way",
    )


# --- loading -------------------------------------------------------------------------------------------


def load(path: str | Path) -> Manifest:
    """Read and validate a manifest; raise ManifestError listing every problem with file and line."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            # Bounded: a manifest given as /dev/zero or a multi-gigabyte file is refused, not read whole.
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise BadInputError(
            f"{path}: no such manifest file.",
            "Check the path; `airgap collect --help` shows an example and manifests/ holds real ones.",
        ) from None
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read the manifest: {exc}.") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise _too_large(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: cannot read the manifest: {exc}.", "Save it as UTF-8 text.") from None
    return loads(text, source=path)


def loads(text: str, source: str | Path = "manifest.yaml") -> Manifest:
    source = Path(source)
    if len(text) > MAX_MANIFEST_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_MANIFEST_BYTES:
        raise _too_large(source)
    data, lines = _parse_yaml(text, source)
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(_format_errors(exc, lines, source.name)) from None
    manifest._source = source
    manifest._lines = lines
    return manifest


def _too_large(source: Path) -> ManifestError:
    return ManifestError(
        [
            f"{source}: larger than {MAX_MANIFEST_BYTES // (1 << 20)} MiB, the most a manifest may be, so it was "
            "not read; a manifest lists what to fetch in a few kilobytes: check that this is the manifest file"
        ]
    )


class _Composer(yaml.SafeLoader):
    """PyYAML's safe loader, composing within bounds: anchors and aliases are refused where they stand
    (never expanded, so an alias bomb costs nothing), and nesting stops at MAX_MANIFEST_DEPTH before the
    composer's recursion goes deeper. Problems are collected as `file:line: path: what; fix`."""

    def __init__(self, text: str, fname: str) -> None:
        super().__init__(text)
        self.fname = fname
        self.path: list[str | int] = []
        self.depth = 0
        self.refused: list[str] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # `index` is a sequence position, a mapping key's node (for its value), or None (root, or a key).
        step: str | int | None = None
        if isinstance(index, int) and not isinstance(index, bool):
            step = index
        elif isinstance(index, yaml.ScalarNode):
            step = index.value
        elif isinstance(index, yaml.Node):
            step = "?"  # a value under a complex key; a manifest has none, and the schema says so
        event = self.peek_event()
        line = event.start_mark.line + 1
        if step is not None:
            self.path.append(step)
        self.depth += 1
        try:
            where = f"{self.fname}:{line}: {_dotted(tuple(self.path))}"
            if self.depth > MAX_MANIFEST_DEPTH:
                raise ManifestError(
                    [
                        f"{where}: nested more than {MAX_MANIFEST_DEPTH} levels deep, and no manifest field is "
                        "more than a few; check the brackets and indentation near that line"
                    ]
                )
            if isinstance(event, yaml.AliasEvent):
                self.get_event()
                self.refused.append(
                    f"{where}: a YAML alias (*{event.anchor}) is not accepted in a manifest (aliases can expand a "
                    "few lines into gigabytes); write the value out in full here"
                )
                # A null in its place: composing goes on to find every other alias, and nothing is built.
                return yaml.ScalarNode("tag:yaml.org,2002:null", "")
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                self.refused.append(
                    f"{where}: a YAML anchor (&{anchor}) is not accepted in a manifest, nor are aliases to it; "
                    f"remove `&{anchor}` and write the value out wherever it is used"
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1
            if step is not None:
                self.path.pop()


# Refusals of anchors and aliases shown before the rest are summed up: an alias bomb has hundreds.
_MAX_SHOWN_REFUSALS = 5


def _parse_yaml(text: str, source: Path) -> tuple[dict[str, Any], dict[tuple[str | int, ...], int]]:
    loader = _Composer(text, source.name)
    try:
        node = loader.get_single_node()
        if loader.refused:
            more = len(loader.refused) - _MAX_SHOWN_REFUSALS
            tail = [f"{source.name}: ... and {more} more anchors and aliases"] if more > 0 else []
            raise ManifestError(loader.refused[:_MAX_SHOWN_REFUSALS] + tail)
        data = None if node is None else loader.construct_document(node)
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
    finally:
        loader.dispose()
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
            _check_text(key_node, child, problems, fname)
            _walk(value_node, child, lines, problems, fname)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*path, i)
            lines[child] = item.start_mark.line + 1
            _walk(item, child, lines, problems, fname)
    else:
        _check_text(node, path, problems, fname)


def _check_text(node: yaml.Node, path: tuple[str | int, ...], problems: list[str], fname: str) -> None:
    """No value or key may hold a control character, a line separator or a bidi override: none has a use in
    a manifest, and every one of them makes a value read differently (in a terminal, in SHA256SUMS) than it
    is. Newlines and tabs are the exception: YAML's block scalars make them, and the fields that become
    names or paths refuse them on their own."""
    value = node.value
    if not isinstance(value, str):
        return
    bad = safepaths.bad_name_char(value.replace("\n", " ").replace("\t", " "))
    if bad is None and not _is_text(value):
        bad = "a lone surrogate (not text)"
    if bad is not None:
        line = node.start_mark.line + 1
        problems.append(f"{fname}:{line}: {_dotted(path)}: {value!r} holds {bad}; remove it")


def _line_for(lines: dict[tuple[str | int, ...], int], path: tuple[str | int, ...]) -> int:
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return 1


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for p in path:
        # A key is shown as written unless it holds something a terminal would act on (an escape, a bidi
        # override): then quoted and escaped, like every value in a message.
        key = p if isinstance(p, str) and p.isprintable() else repr(p)
        out += f"[{p}]" if isinstance(p, int) else (f".{key}" if out else key)
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
