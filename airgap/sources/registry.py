"""Daemonless pull from an OCI / Docker registry (Registry HTTP API v2), and export from a local daemon.

Only manifests, indexes and image configs (small JSON documents, checked against their digests here)
are fetched by this module. Layer blobs are downloaded by `HttpSource` like any other file, with
`RegistryAuth` handed to it: resume, retries, parallelism and hash-while-streaming stay in one place.

Image references are read as Docker reads them (`ubuntu` is `registry-1.docker.io/library/ubuntu:latest`),
a registry on localhost or 127.0.0.0/8 is spoken to over plain HTTP as Docker does, any other over HTTPS
unless the manifest lists it in `insecure_registries:`. Credentials come from the environment or the
Docker/containers auth files and are only ever put in request headers: never in an error, the lock or a log.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

import requests
import requests.auth

from airgap.errors import AirgapError, BadInputError, IntegrityError, UpstreamError
from airgap.sources.http import RETRY_STATUSES, USER_AGENT, HttpSource, redact

# --- media types (OCI image spec, Docker distribution) -------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

# Registries refuse manifests over 4 MiB; configs of real images are tens of KiB. The caps only stop a
# broken server from filling memory.
MAX_MANIFEST = 4 << 20
MAX_CONFIG = 64 << 20

DOCKER_HUB = "registry-1.docker.io"
_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
# The key `docker login` uses for Docker Hub in config.json.
_HUB_AUTH_KEY = "https://index.docker.io/v1/"

# Canonical URLs of blobs exported from a local Docker daemon. `.invalid` can never resolve (RFC 2606),
# so such a URL in a lock can never be mistaken for, or fetched from, a real host.
DAEMON_URL = "http://docker-daemon.invalid"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_DOMAIN_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::\d+)?$"
)


class RegistryError(UpstreamError):
    """A registry refused, failed, or has no such image; the message names the image and the fix."""


# --- references ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    """An image reference split as Docker splits it."""

    written: str  # as the manifest wrote it
    registry: str  # the host[:port] to talk to (Docker Hub: registry-1.docker.io)
    repository: str  # path in that registry ("library/ubuntu")
    tag: str | None
    digest: str | None  # "sha256:<hex>"

    @property
    def is_hub(self) -> bool:
        return self.registry == DOCKER_HUB

    @property
    def domain(self) -> str:
        return "docker.io" if self.is_hub else self.registry

    @property
    def name(self) -> str:
        """The repository name as `docker images` shows it: `ubuntu`, `vllm/vllm-openai`, `nvcr.io/nvidia/cuda`."""
        if self.is_hub:
            return self.repository.removeprefix("library/")
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def docker_tag(self) -> str:
        """`name:tag` to tag the loaded image with. `docker tag` cannot set a digest, so a digest-only
        reference becomes `name:sha256-<hex>` (the convention cosign and others use)."""
        if self.tag:
            return f"{self.name}:{self.tag}"
        if self.digest:
            return f"{self.name}:{self.digest.replace(':', '-')}"
        return f"{self.name}:latest"

    def pinned(self, digest: str) -> str:
        """Fully qualified `domain/repository@sha256:...`: what the bundle holds, whatever the tag does later."""
        return f"{self.domain}/{self.repository}@{digest}"

    def base_url(self, insecure: Iterable[str] = ()) -> str:
        """Canonical API URL of the repository (before `mirrors:`)."""
        return f"{scheme_for(self.registry, insecure)}://{self.registry}/v2/{self.repository}"

    def __str__(self) -> str:
        return self.written


def parse_ref(text: str) -> ImageRef:
    """Parse `ubuntu`, `vllm/vllm-openai:v0.6.3`, `nvcr.io/nvidia/cuda:12.4.0-base`, `host:5000/a/b@sha256:...`.
    Raises ValueError with a sentence saying what is wrong."""
    written = text.strip()
    rest, _, digest = written.partition("@")
    if digest and not _DIGEST_RE.match(digest):
        raise ValueError(f"{digest!r} is not a sha256 digest; write it like @sha256:<64 hex characters>")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise ValueError(f"{tag!r} is not a valid tag (letters, digits, '_', '.', '-', at most 128)")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, remainder
        if not _DOMAIN_RE.match(domain):
            raise ValueError(f"{domain!r} is not a registry host; write it like registry.example.com:5000")
    else:
        domain, path = "docker.io", rest
    if domain.lower() in _HUB_NAMES:
        domain = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"  # Docker Hub's official images live under library/
    if not _PATH_RE.match(path):
        raise ValueError(f"{path!r} is not a repository name; use lower-case letters, digits and . _ - separated by /")
    return ImageRef(written, domain, path, tag, digest or None)


def _host_only(registry: str) -> str:
    if registry.startswith("["):
        return registry[1:].split("]", 1)[0]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def scheme_for(registry: str, insecure: Iterable[str] = ()) -> str:
    """http for loopback (Docker does the same) and for registries listed in `insecure_registries:`."""
    host = _host_only(registry).lower()
    if host == "localhost" or host.endswith(".localhost"):
        return "http"
    try:
        if ipaddress.ip_address(host).is_loopback:
            return "http"
    except ValueError:
        pass
    for entry in insecure:
        entry = entry.strip().lower()
        entry = entry.split("://", 1)[-1].rstrip("/")
        if entry in (registry.lower(), host):
            return "http"
    return "https"


def platform_of(spec_platform: str | None, arch: str) -> str:
    return spec_platform or f"linux/{arch}"


# --- credentials ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


ENV_AUTH = "AIRGAP_REGISTRY_AUTH"


def _auth_keys(host: str) -> list[str]:
    """The keys `docker login` may have stored this host's credentials under."""
    h = host.lower()
    if h in _HUB_NAMES:
        return [_HUB_AUTH_KEY, "docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1"]
    return [h, f"https://{h}", f"http://{h}", f"https://{h}/v1/", f"https://{h}/v2/"]


def _normalise_key(key: str) -> str:
    k = key.lower().split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if k in _HUB_NAMES else k


def lookup_credentials(host: str, env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for a registry host, from (first wins): AIRGAP_REGISTRY_AUTH ("host=user:password",
    several separated by spaces or newlines), REGISTRY_AUTH_FILE (podman/skopeo's auth.json), then
    $DOCKER_CONFIG/config.json or ~/.docker/config.json (`auths` entries, `credHelpers`, `credsStore`)."""
    env = os.environ if env is None else env
    want = _normalise_key(host)
    for item in env.get(ENV_AUTH, "").split():
        key, sep, userpass = item.partition("=")
        user, colon, password = userpass.partition(":")
        if sep and colon and _normalise_key(key) == want:
            return Credentials(user, password)
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    config_dir = env.get("DOCKER_CONFIG")
    files.append(Path(config_dir) / "config.json" if config_dir else Path.home() / ".docker" / "config.json")
    for path in files:
        found = _from_config_file(path, host, want)
        if found is not None:
            return found
    return None


def _from_config_file(path: Path, host: str, want: str) -> Credentials | None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    helpers = config.get("credHelpers") or {}
    for key, helper in helpers.items():
        if _normalise_key(key) == want:
            return _from_helper(str(helper), host)
    for key, entry in (config.get("auths") or {}).items():
        if _normalise_key(key) != want or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            return Credentials(user, password)
        if entry.get("username") and entry.get("password"):
            return Credentials(str(entry["username"]), str(entry["password"]))
    if config.get("credsStore"):
        return _from_helper(str(config["credsStore"]), host)
    return None


def _from_helper(helper: str, host: str) -> Credentials | None:
    """Ask `docker-credential-<helper> get`, as docker does (Docker Desktop, pass, secretservice)."""
    exe = shutil.which(f"docker-credential-{helper}")
    if exe is None:
        return None
    server = _HUB_AUTH_KEY if _normalise_key(host) == "docker.io" else host
    try:
        proc = subprocess.run([exe, "get"], input=server, capture_output=True, text=True, timeout=30)
        reply = json.loads(proc.stdout) if proc.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if not isinstance(reply, dict) or not reply.get("Secret"):
        return None
    if reply.get("Username") == "<token>":
        return None  # an OAuth identity token: not supported; the anonymous flow is tried instead
    return Credentials(str(reply.get("Username", "")), str(reply["Secret"]))


# --- the 401 challenge flow ----------------------------------------------------------------------------

_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]] | None:
    """`Bearer realm="...",service="...",scope="..."` -> ("bearer", {...}); `Basic realm=...` -> ("basic", ...)."""
    scheme, _, params = header.strip().partition(" ")
    if not scheme:
        return None
    return scheme.lower(), {k.lower(): a or b for k, a, b in _CHALLENGE_PARAM.findall(params)}


def repository_of(url: str) -> str | None:
    """The repository an API URL is about (works behind a mirror prefix too): /v2/<repo>/blobs/..."""
    path = urlsplit(url).path
    m = re.search(r"/v2/(.+?)/(?:manifests|blobs|tags)/", path)
    return m.group(1) if m else None


CredentialLookup = Callable[[str], "Credentials | None"]


class RegistryAuth(requests.auth.AuthBase):
    """Answers a registry's 401 with what its WWW-Authenticate asks for, and resends the request.

    Bearer: a token from the challenge's realm for the challenge's scope (or `repository:<repo>:pull`,
    read from the URL, which also works behind a mirror), asked with the host's credentials when there
    are some, anonymously otherwise (Docker Hub, nvcr.io, ghcr.io, Harbor). Basic: the host's credentials.
    The answer is cached per host and repository and sent up front on later requests, so parallel blob
    downloads do not each pay a 401 round trip; a cached token that has expired is refreshed on its 401.
    Usable as `auth=` of any requests call, HttpSource.fetch included. Holds no secret in its repr.
    """

    def __init__(self, credentials: CredentialLookup | None = None, timeout: float = 30.0) -> None:
        self._credentials = credentials or lookup_credentials
        self._timeout = timeout
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], str] = {}
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self.token_requests = 0  # how often a token endpoint was asked (tests and diagnostics)

    def __repr__(self) -> str:
        return "RegistryAuth()"

    @staticmethod
    def _key(url: str) -> tuple[str, str]:
        return urlsplit(url).netloc.lower(), repository_of(url) or ""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        value = self._cache.get(self._key(r.url or ""))
        if value and "Authorization" not in r.headers:
            r.headers["Authorization"] = value
        r.register_hook("response", self._handle_401)
        return r

    def _handle_401(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        if r.status_code != 401:
            return r
        challenge = parse_challenge(r.headers.get("WWW-Authenticate", ""))
        request = r.request
        if challenge is None or request.url is None:
            return r
        tried = request.headers.get("Authorization")
        value = self._answer(challenge, request.url, tried)
        if value is None or value == tried:
            return r  # nothing new to offer: the caller sees the 401 and says what to do
        r.content  # noqa: B018  # drain the 401 so its connection can be reused for the retry
        r.close()
        retry = request.copy()
        retry.headers["Authorization"] = value
        # Sent through the adapter directly, as requests' own HTTPDigestAuth does: the hooks do not run
        # again on the answer, so a wrong token cannot loop.
        again = r.connection.send(retry, **kwargs)
        again.history.append(r)
        again.request = retry
        return again

    def _answer(self, challenge: tuple[str, dict[str, str]], url: str, tried: str | None) -> str | None:
        scheme, params = challenge
        key = self._key(url)
        host = urlsplit(url).netloc
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached != tried:
                return cached  # another thread already got a fresh answer
            creds = self._credentials(host)
            if scheme == "basic":
                value = creds.basic() if creds else None
            elif scheme == "bearer" and params.get("realm"):
                repo = key[1]
                scope = params.get("scope") or (f"repository:{repo}:pull" if repo else "")
                value = self._token(params["realm"], params.get("service", ""), scope, creds, host)
            else:
                value = None
            if value is not None:
                self._cache[key] = value
            return value

    def _token(self, realm: str, service: str, scope: str, creds: Credentials | None, host: str) -> str:
        query = {k: v for k, v in (("service", service), ("scope", scope)) if v}
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        headers = {"Authorization": creds.basic()} if creds else {}
        self.token_requests += 1
        try:
            r = self._session.get(url, headers=headers, timeout=self._timeout)
        except requests.RequestException as exc:
            raise RegistryError(
                f"registry {host}: its token service {redact(realm)} could not be reached ({type(exc).__name__}).",
                "Check the network path to it (proxy, firewall); the registry sends clients there to log in.",
            ) from None
        if r.status_code in (401, 403):
            raise RegistryError(
                f"registry {host}: its token service {redact(realm)} refused "
                f"{'the credentials found for ' + host if creds else 'an anonymous token'} ({r.status_code}).",
                _login_hint(host),
            )
        try:
            reply = r.json()
            token = reply.get("token") or reply.get("access_token")
        except ValueError:
            token = None
        if not r.ok or not token:
            raise RegistryError(
                f"registry {host}: its token service {redact(realm)} answered HTTP {r.status_code} without a token."
            )
        return f"Bearer {token}"


def _login_hint(host: str) -> str:
    login = "docker login" if _normalise_key(host) == "docker.io" else f"docker login {host}"
    return (
        f"If it needs a login, run `{login}` on this PC (airgap reads ~/.docker/config.json and its "
        f"credential helpers) or set {ENV_AUTH}='{host}=USER:PASSWORD'; credentials are never written "
        "to the bundle. Otherwise check the image name."
    )


# --- resolving an image --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


@dataclass
class ResolvedImage:
    """One image for one platform, everything needed to store it content-addressed."""

    ref: ImageRef
    platform: str
    manifest: bytes
    manifest_digest: str
    manifest_media_type: str
    config: bytes
    config_descriptor: Descriptor
    layers: list[Descriptor]
    blob_urls: Callable[[Descriptor], list[str]]  # canonical URLs to download a layer from
    source: str = "registry"  # or "docker-daemon"
    index_digest: str | None = None  # the index (manifest list) the tag pointed at, when there was one
    manifest_url: str = ""

    @property
    def config_digest(self) -> str:
        return self.config_descriptor.digest

    @property
    def size(self) -> int:
        return len(self.manifest) + self.config_descriptor.size + sum(d.size for d in self.layers)


def _descriptor(raw: Any, what: str) -> Descriptor:
    try:
        digest, size = str(raw["digest"]), int(raw["size"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{what} has no digest/size") from None
    if not _DIGEST_RE.match(digest):
        raise ValueError(f"{what} has digest {digest!r}; only sha256 is supported")
    return Descriptor(str(raw.get("mediaType", "")), digest, size)


def _platform_str(p: Mapping[str, Any]) -> str:
    parts = [str(p.get("os", "")), str(p.get("architecture", ""))]
    if p.get("variant"):
        parts.append(str(p["variant"]))
    return "/".join(parts)


def _matches(entry: Mapping[str, Any], want: str) -> bool:
    os_, _, rest = want.partition("/")
    arch, _, variant = rest.partition("/")
    if entry.get("os") != os_ or entry.get("architecture") != arch:
        return False
    have = entry.get("variant") or ""
    if not variant:
        return True
    # Docker treats arm64 and arm64/v8 as the same platform.
    return have == variant or (arch == "arm64" and variant == "v8" and not have)


def pick_platform(index: Mapping[str, Any], want: str, image: str) -> Descriptor:
    """The index entry for `want` (linux/amd64, linux/arm64/v8); an error listing what exists otherwise."""
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
    # Build attestations sit in indexes as platform unknown/unknown: not images.
    images = [m for m in entries if (m.get("platform") or {}).get("os") not in (None, "unknown")]
    for m in images:
        if _matches(m.get("platform") or {}, want):
            return _descriptor(m, f"{image}: the index entry for {want}")
    available = sorted({_platform_str(m["platform"]) for m in images})
    raise BadInputError(
        f"image {image}: no {want} variant; the registry has {', '.join(available) or 'no platform entries'}.",
        f"Set `target.arch` (or this image's `platform:`) to one of those, or choose an image built for {want}.",
    )


def _check_digest(data: bytes, digest: str, what: str, url: str) -> None:
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise IntegrityError(
            f"{what}: the bytes from {redact(url)} do not match the digest {digest} (got {actual}).",
            "The registry or a mirror in between serves a corrupt or stale copy; try again later or another mirror.",
        )


class RegistryClient:
    """Reads manifests and configs of images; layer blobs are left to HttpSource (see module doc)."""

    def __init__(self, source: HttpSource, insecure: Iterable[str] = (), auth: RegistryAuth | None = None) -> None:
        self.source = source
        self.insecure = list(insecure)
        self.auth = auth or RegistryAuth(timeout=source.timeout)

    def _get(
        self, url: str, image: str, what: str, accept: str | None = None, limit: int = MAX_MANIFEST
    ) -> requests.Response:
        real = self.source.resolve(url)
        headers = {"Accept": accept} if accept else {}
        for attempt in range(self.source.retries + 1):
            try:
                r = self.source.session.get(real, headers=headers, auth=self.auth, timeout=self.source.timeout)
            except requests.exceptions.SSLError as exc:
                host = urlsplit(real).netloc
                raise RegistryError(
                    f"image {image}: TLS with {host} failed ({_first_line(exc)}).",
                    f"If {host} is a registry served over plain HTTP, list it under `insecure_registries:` "
                    "in the manifest; if it uses a private CA, add that CA to this PC's trust store "
                    "(REQUESTS_CA_BUNDLE).",
                ) from None
            except requests.RequestException as exc:  # refused, reset, timed out, cut mid-body
                if attempt == self.source.retries:
                    raise RegistryError(
                        f"image {image}: cannot reach {redact(real)} after {attempt + 1} attempts "
                        f"({type(exc).__name__}).",
                        "Check the network, the registry name, and `mirrors:` if you use one.",
                    ) from None
                self._sleep(attempt)
                continue
            if r.status_code in RETRY_STATUSES and attempt < self.source.retries:
                self._sleep(attempt)
                continue
            if r.status_code in (401, 403):
                raise AccessDenied(
                    f"image {image}: {urlsplit(real).netloc} refused access to {what} "
                    f"({r.status_code}{_registry_message(r)}).",
                    _login_hint(urlsplit(real).netloc),
                )
            if r.status_code == 404:
                raise ImageNotFound(
                    f"image {image}: {urlsplit(real).netloc} has no {what} (404{_registry_message(r)}).",
                    "Check the repository name and tag (`skopeo list-tags` or the registry's web page show "
                    "which exist), and `mirrors:` if you use one.",
                )
            if not r.ok:
                raise RegistryError(f"image {image}: {redact(real)} answered HTTP {r.status_code} for {what}.")
            if len(r.content) > limit:
                raise RegistryError(f"image {image}: {what} from {redact(real)} is larger than {limit} bytes.")
            return r
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int) -> None:
        if self.source.cancel.wait(min(self.source.backoff * (2**attempt), 30.0)):
            raise AirgapError("interrupted while waiting to retry a registry request.")

    def resolve(self, ref: ImageRef, platform: str) -> ResolvedImage:
        base = ref.base_url(self.insecure)
        image = ref.written
        url = f"{base}/manifests/{ref.reference}"
        r = self._get(url, image, f"manifest {ref.repository}:{ref.reference}", ACCEPT)
        body = r.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if ref.digest:
            _check_digest(body, ref.digest, f"image {image}: manifest", url)
        else:
            served = r.headers.get("Docker-Content-Digest", "")
            if served.startswith("sha256:") and served != digest:
                raise IntegrityError(
                    f"image {image}: the manifest from {redact(self.source.resolve(url))} hashes to {digest}, "
                    f"but the registry says {served}.",
                    "A proxy or mirror altered it on the way; try again, or without the mirror.",
                )
        doc = _json(body, image, "manifest")
        media = _media_type(doc, r.headers.get("Content-Type", ""))
        index_digest = None
        if media in INDEX_TYPES:
            index_digest = digest
            entry = pick_platform(doc, platform, image)
            url = f"{base}/manifests/{entry.digest}"
            r = self._get(url, image, f"manifest {ref.repository}@{entry.digest} ({platform})", ACCEPT)
            body = r.content
            _check_digest(body, entry.digest, f"image {image}: {platform} manifest", url)
            digest = entry.digest
            doc = _json(body, image, "manifest")
            media = _media_type(doc, r.headers.get("Content-Type", "") or entry.media_type)
        if media not in MANIFEST_TYPES:
            raise RegistryError(
                f"image {image}: the registry sent a manifest of type {media or 'unknown'}, which airgap cannot "
                "store (Docker schema 1 and nested indexes are not supported).",
                "Push the image again with a current Docker or skopeo, which write schema 2 / OCI manifests.",
            )
        try:
            config = _descriptor(doc.get("config"), "the manifest's config")
            layers = [_descriptor(layer, f"layer {i}") for i, layer in enumerate(doc.get("layers") or [])]
        except ValueError as exc:
            raise RegistryError(f"image {image}: malformed manifest: {exc}.") from None
        for layer in doc.get("layers") or []:
            if layer.get("urls"):
                raise RegistryError(
                    f"image {image}: it has foreign layers (fetched from {layer['urls'][0]}, Windows images); "
                    "airgap collects Linux images only."
                )
        cfg_url = f"{base}/blobs/{config.digest}"
        cfg = self._get(cfg_url, image, f"config blob {config.digest}", limit=MAX_CONFIG).content
        _check_digest(cfg, config.digest, f"image {image}: config", cfg_url)
        check_config(cfg, layers, platform, image, pinned_platform=index_digest is None)

        def blob_urls(d: Descriptor) -> list[str]:
            return [f"{base}/blobs/{d.digest}"]

        return ResolvedImage(
            ref=ref,
            platform=platform,
            manifest=body,
            manifest_digest=digest,
            manifest_media_type=media,
            config=cfg,
            config_descriptor=config,
            layers=layers,
            blob_urls=blob_urls,
            index_digest=index_digest,
            manifest_url=f"{base}/manifests/{digest}",
        )


class ImageNotFound(RegistryError):
    """The registry has no such repository or tag."""


class AccessDenied(RegistryError):
    """The registry refused (401/403): a login is missing, or (Docker Hub) the repository does not exist."""


def check_config(cfg: bytes, layers: list[Descriptor], platform: str, image: str, pinned_platform: bool) -> None:
    """What `docker load` would refuse on the server, refused now: a layer count the config disagrees
    with, or (for a single-platform image) the wrong platform."""
    doc = _json(cfg, image, "config")
    diff_ids = (doc.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        raise RegistryError(
            f"image {image}: its config lists {len(diff_ids)} layers but its manifest {len(layers)}; "
            "`docker load` would refuse it.",
            "The image is malformed in the registry; push it again.",
        )
    if pinned_platform and doc.get("architecture"):
        have = _platform_str(doc)
        if not _matches(doc, platform):
            raise BadInputError(
                f"image {image}: it is built for {have} only (no multi-platform index), but {platform} is wanted.",
                f"Set `target.arch` (or this image's `platform: {have}`) to match, or use a {platform} image.",
            )


def _json(data: bytes, image: str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise RegistryError(f"image {image}: the registry sent a {what} that is not a JSON object.")
    return doc


def _media_type(doc: Mapping[str, Any], content_type: str) -> str:
    media = str(doc.get("mediaType") or content_type.split(";", 1)[0].strip())
    if media in INDEX_TYPES | MANIFEST_TYPES:
        return media
    # OCI allows mediaType to be left out of the document; the shape says what it is.
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc and "config" in doc:
        return OCI_MANIFEST
    return media


def _registry_message(r: requests.Response) -> str:
    """`: MANIFEST_UNKNOWN manifest unknown` from the registry's error body, when it has one."""
    try:
        errors = r.json().get("errors") or []
        first = errors[0]
        return f": {first.get('code', '')} {first.get('message', '')}".rstrip()
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


# --- a local Docker daemon -----------------------------------------------------------------------------


def daemon_client(env: Mapping[str, str] | None = None, timeout: float = 600) -> Any | None:
    """A docker SDK client for the daemon DOCKER_HOST (or the default socket) names, or None when no
    daemon answers. Cheap when there is none: no socket, no wait."""
    env = dict(os.environ if env is None else env)
    host = env.get("DOCKER_HOST", "")
    if not host and not Path("/var/run/docker.sock").exists():
        return None
    if host.startswith("unix://") and not Path(host[len("unix://") :]).exists():
        return None
    try:
        import docker  # imported here: collect from a registry must not need it loaded
        import docker.errors

        # A short timeout for the probe: a DOCKER_HOST=tcp://... that does not answer must not hang collect.
        client = docker.from_env(environment=env, timeout=5)
        client.ping()
        client.api.timeout = int(timeout)
        return client
    except Exception:  # any failure to connect means: no usable daemon here
        return None


class _ChunkReader:
    """A file-like reader over an iterator of byte chunks (the SDK's export stream), for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            rest = self._buf[self._pos :]
            self._buf, self._pos = b"", 0
            return rest + b"".join(self._chunks)
        while len(self._buf) - self._pos < n:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            # Only the unread tail (shorter than n) is copied: reading stays linear in the stream size.
            self._buf, self._pos = self._buf[self._pos :] + chunk, 0
        out = self._buf[self._pos : self._pos + n]
        self._pos += len(out)
        return out


class DaemonExport:
    """Images exported from a local Docker daemon, staged content-addressed in a temporary directory and
    served on 127.0.0.1 so collect downloads them like any other blob (resume, hash, parallel)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dir: Path | None = None
        self._server: Any = None

    @property
    def url(self) -> str:
        return self._server.url if self._server is not None else ""

    def _stage(self) -> Path:
        with self._lock:
            if self._dir is None:
                from airgap.localserver import LocalHTTPServer

                self._dir = Path(tempfile.mkdtemp(prefix="airgap-docker-export-"))
                self._server = LocalHTTPServer(self._dir).start()
                # The staged copy is only needed until collect has downloaded it into the bundle.
                atexit.register(self.close)
            return self._dir

    def close(self) -> None:
        with self._lock:
            if self._server is not None:
                self._server.stop()
                self._server = None
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def export(self, client: Any, ref: ImageRef, platform: str) -> ResolvedImage:
        import docker.errors

        image = ref.written
        try:
            img = client.images.get(image)
        except docker.errors.ImageNotFound:
            raise ImageNotFound(
                f"image {image}: the local Docker daemon has no such image.",
                "Build or pull it on this PC first (`docker images` lists what it has), or drop `local: true` "
                "to pull it from its registry.",
            ) from None
        except docker.errors.APIError as exc:
            raise UpstreamError(f"image {image}: the local Docker daemon failed: {_first_line(exc)}.") from None
        attrs = img.attrs
        have = {
            "os": attrs.get("Os", ""),
            "architecture": attrs.get("Architecture", ""),
            "variant": attrs.get("Variant", ""),
        }
        if not _matches(have, platform):
            raise BadInputError(
                f"image {image}: the local Docker daemon has it for {_platform_str(have)}, not {platform}.",
                f"Build it for {platform} (`docker buildx build --platform {platform} --load ...`), or change "
                "`target.arch` / this image's `platform:`.",
            )
        stage = self._stage() / img.id.replace(":", "-")
        blobs = stage / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        files: dict[str, tuple[str, int]] = {}
        links: dict[str, str] = {}
        tar_manifest: Any = None
        try:
            reader = _ChunkReader(iter(client.api.get_image(img.id, chunk_size=1 << 20)))
            with tarfile.open(fileobj=reader, mode="r|", bufsize=1 << 20) as tar:  # type: ignore[call-overload]
                for member in tar:
                    if member.issym() or member.islnk():
                        target = (
                            member.linkname
                            if member.islnk()
                            else os.path.normpath(os.path.join(os.path.dirname(member.name), member.linkname))
                        )
                        links[member.name] = target
                    elif member.isfile():
                        src = tar.extractfile(member)
                        assert src is not None
                        if member.name == "manifest.json":
                            tar_manifest = json.loads(src.read())
                            continue
                        files[member.name] = _store_blob(src, blobs)
        except (docker.errors.APIError, tarfile.TarError, OSError, ValueError) as exc:
            raise UpstreamError(
                f"image {image}: exporting it from the local Docker daemon failed: {_first_line(exc)}."
            ) from None

        def blob(name: str) -> tuple[str, int]:
            seen = 0
            while name in links and seen < 16:
                name, seen = links[name], seen + 1
            return files[name]

        try:
            entry = tar_manifest[0]
            cfg_hex, cfg_size = blob(entry["Config"])
            layer_blobs = [blob(name) for name in entry["Layers"]]
        except (TypeError, KeyError, IndexError):
            raise UpstreamError(
                f"image {image}: the local Docker daemon's export has no usable manifest.json."
            ) from None
        config = (blobs / cfg_hex).read_bytes()
        layers = [Descriptor(_layer_media_type(blobs / h), f"sha256:{h}", size) for h, size in layer_blobs]
        config_desc = Descriptor(OCI_CONFIG, f"sha256:{cfg_hex}", cfg_size)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_desc.digest, "size": cfg_size},
                "layers": [{"mediaType": d.media_type, "digest": d.digest, "size": d.size} for d in layers],
            },
            indent=2,
        ).encode()
        check_config(config, layers, platform, image, pinned_platform=True)
        key = img.id.replace(":", "-")

        def blob_urls(d: Descriptor) -> list[str]:
            return [f"{DAEMON_URL}/{key}/blobs/sha256/{d.hex}"]

        return ResolvedImage(
            ref=ref,
            platform=_platform_str(have),
            manifest=manifest,
            manifest_digest="sha256:" + hashlib.sha256(manifest).hexdigest(),
            manifest_media_type=OCI_MANIFEST,
            config=config,
            config_descriptor=config_desc,
            layers=layers,
            blob_urls=blob_urls,
            source="docker-daemon",
            manifest_url=f"{DAEMON_URL}/{key}",
        )


def _store_blob(src: IO[bytes], blobs: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=blobs, prefix=".incoming-")
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(1 << 20):
            h.update(chunk)
            out.write(chunk)
            size += len(chunk)
    hexd = h.hexdigest()
    os.replace(tmp, blobs / hexd)
    return hexd, size


def _layer_media_type(path: Path) -> str:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b":
        return OCI_LAYER_TAR + "+gzip"
    if magic == b"\x28\xb5\x2f\xfd":
        return OCI_LAYER_TAR + "+zstd"
    return OCI_LAYER_TAR
