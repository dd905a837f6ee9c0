"""`airgap push`: a verified bundle's images into an OCI registry of the closed network (the depot's registry).

The bundle is verified first, as `install` does it (SHA256SUMS, its signature and the lock read once, every
file re-hashed), and every blob is hashed again on the read that sends it (`InstallContext.open_artifact`):
bytes that are not the lock's stop the push before the upload that carries them is committed, so the
registry never holds a blob under a digest the bundle did not vouch for.

Per image (OCI distribution spec, `/v2/<name>/...`): each blob is asked for first (HEAD) and sent only when
missing, mounted from another repository of the same push where the registry offers it (POST ?mount=&from=,
201), else uploaded: in one PUT when small, in PATCH chunks (Content-Range) closed by a PUT when large.
Then the manifest by its digest, then the tags. So a second push of the same bundle sends nothing, and an
interrupted one sends only what is missing.

What the bundle holds per image is the manifest of the platform it was collected for (docs/images.md), so
that manifest is what is pushed and tagged; a multi-platform index the source had is not in the bundle and
is not pushed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import requests

from airgap.artifact_meta import ImageMeta, read_meta
from airgap.custody import TRUSTED_KEYS_DIR, Snapshot, trusted_keys
from airgap.errors import AirgapError, BadInputError, ChangedSinceVerify, VerifyFailed
from airgap.host import Host
from airgap.install_context import InstallContext
from airgap.layers.images import BundledImage, bundled_images
from airgap.lock import LockedArtifact
from airgap.signing import PublicKey
from airgap.sources.registry import ACCEPT, AccessDenied, RegistryAuth, RegistryError, lookup_credentials, parse_ref
from airgap.sources.registry.credentials import ENV_AUTH
from airgap.sources.registry.errors import registry_kinds
from airgap.sources.registry.reference import scheme_for
from airgap.sources.request import RetryPolicy, first_line, new_session, refusal, request
from airgap.units import human_size


class TagConflict(AirgapError):
    """A tag in the target registry points at another image and --on-existing-tag is fail: a check failed
    (exit 1), nothing was pushed."""


OnExisting = Literal["skip", "overwrite", "fail"]
ON_EXISTING: tuple[OnExisting, ...] = ("skip", "overwrite", "fail")

# Blobs up to this size go in one PUT; larger ones in PATCH chunks of this size, so no request body is
# larger than this in memory and a registry behind a proxy with a body limit still takes big layers.
CHUNK = 16 << 20
BLOBS_AT_ONCE = 4
Say = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """Where `--registry HOST[:PORT][/PREFIX]` sends images: `<PREFIX>/<repository as collected>`."""

    host: str
    prefix: str
    scheme: str

    def repo(self, repository: str) -> str:
        return f"{self.prefix}/{repository}" if self.prefix else repository

    def api(self, repo: str) -> str:
        return f"{self.scheme}://{self.host}/v2/{repo}"


def parse_target(text: str, insecure: bool) -> Target:
    """HOST[:PORT][/PREFIX], optionally written with https://. Plain HTTP only with --insecure, or for a
    registry on this machine (localhost, 127.0.0.0/8, ::1), as Docker itself does; https otherwise."""
    written = text.strip()
    forced_https = written.startswith("https://")
    if written.startswith("http://"):
        raise BadInputError(
            f"--registry {text}: write the registry without http://.",
            "Give HOST[:PORT][/PREFIX]; plain HTTP is used for localhost, or with --insecure.",
        )
    rest = written.removeprefix("https://").strip("/")
    host, _, prefix = rest.partition("/")
    try:
        ref = parse_ref(f"{host}/{prefix or 'x'}/x") if host else None
    except ValueError as exc:
        raise BadInputError(
            f"--registry {text}: {exc}.", "Write it like registry.example.com:5000 or registry.example.com/mirror."
        ) from None
    if ref is None or ref.registry != host or ("." not in host and ":" not in host and host != "localhost"):
        raise BadInputError(
            f"--registry {text}: {host or 'nothing'} is not a registry host.",
            "Write it like registry.example.com:5000 or registry.example.com/mirror (a host with a dot or a "
            "port, or localhost).",
        )
    if insecure and forced_https:
        raise BadInputError(f"--registry {text} and --insecure contradict each other.", "Drop one of them.")
    scheme = "https" if forced_https else ("http" if insecure else scheme_for(host))
    return Target(host, prefix, scheme)


@dataclass
class PushedRef:
    """One reference as the registry now serves it."""

    source: str  # the reference the bundle collected
    reference: str  # host/prefix/repository:tag in the target ("" tag: pushed by digest only)
    pinned: str  # host/prefix/repository@digest
    digest: str  # the manifest's digest: the lock's
    tag: str  # created, present (already this digest), updated (--on-existing-tag overwrite), skipped, untagged

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass
class PushReport:
    registry: str
    refs: list[PushedRef] = field(default_factory=list)
    blobs_sent: int = 0
    bytes_sent: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    blobs_chunked: int = 0  # of blobs_sent, those sent in more than one request (larger than the chunk size)
    manifests_sent: int = 0
    tags_set: int = 0
    signature: str = ""

    @property
    def transferred(self) -> bool:
        return bool(self.blobs_sent or self.blobs_mounted or self.manifests_sent or self.tags_set)

    @property
    def skipped(self) -> list[PushedRef]:
        return [r for r in self.refs if r.tag == "skipped"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "registry": self.registry,
            "references": [r.to_dict() for r in self.refs],
            "transferred": self.transferred,
            "blobs_sent": self.blobs_sent,
            "bytes_sent": self.bytes_sent,
            "blobs_mounted": self.blobs_mounted,
            "blobs_present": self.blobs_present,
            "blobs_chunked": self.blobs_chunked,
            "manifests_sent": self.manifests_sent,
            "tags_set": self.tags_set,
            "signature": self.signature,
        }


def _trust(session: requests.Session, ca_file: Path | None, url: str) -> None:
    """Check TLS against `ca_file` when given. requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a
    session's `verify`, so with a CA file the environment is not consulted, and the proxy it names for the
    registry (if any) is set by hand."""
    if ca_file is None:
        return
    session.verify = str(ca_file)
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(url))


class _PushAuth(RegistryAuth):
    """RegistryAuth whose token requests trust the same CA as the pushes (a site CA behind --ca-file)."""

    def __init__(self, policy: RetryPolicy, ca_file: Path | None, url: str) -> None:
        super().__init__(policy=policy)
        _trust(self._session, ca_file, url)


@dataclass
class _Planned:
    image: BundledImage
    source: str
    repo: str
    tag: str | None
    current: str | None  # the digest the tag points at now; None: no such tag


class Pusher:
    """The registry half: HEAD, mount, upload, manifests, tags. One session and one auth (its token cache is
    shared by the threads that send an image's blobs at once)."""

    def __init__(
        self, target: Target, ctx: InstallContext, ca_file: Path | None, chunk: int, report: PushReport
    ) -> None:
        self.target = target
        self.ctx = ctx
        self.chunk = chunk
        self.report = report
        self.policy = RetryPolicy(retries=3, backoff=0.5, timeout=60)
        root = f"{target.scheme}://{target.host}/"
        self.session = new_session()
        _trust(self.session, ca_file, root)
        self.auth = _PushAuth(self.policy, ca_file, root)
        creds = lookup_credentials(target.host)
        found = (
            f"the credentials found for {target.host} were refused (or lack push rights)"
            if creds
            else f"no credentials for {target.host} were found"
        )
        # The fix a refusal shows: names the registry and where airgap looks; never the credentials.
        self.kinds = dataclasses.replace(
            registry_kinds(target.host),
            denied=AccessDenied,
            denied_hint=f"{found}. Run `docker login {target.host}` on this machine (airgap reads "
            f"$DOCKER_CONFIG/config.json or ~/.docker/config.json and its credential helpers) or set "
            f"{ENV_AUTH}='{target.host}=USER:PASSWORD', with an account allowed to push.",
            not_found_hint=f"Check --registry {target.host}{'/' + target.prefix if target.prefix else ''}: "
            "is it the registry's address, and does the prefix exist?",
            failed_hint="Check the network path to the registry and its logs, then run the same command again: "
            "what is already there is not sent twice.",
        )
        self.where: dict[str, str] = {}  # blob digest -> a repository of this registry that has it
        self._count = threading.Lock()  # blobs go in parallel: the report's counters are shared

    def probe(self) -> None:
        """`GET /v2/` before anything else: a TLS or connection failure is told with push's own fix (the CA
        file, --insecure) rather than the generic one. Any HTTP answer (200, 401) means the API is there."""
        url = f"{self.target.scheme}://{self.target.host}/v2/"
        try:
            self.session.get(url, timeout=self.policy.timeouts).close()
        except requests.exceptions.SSLError as exc:
            raise RegistryError(
                f"registry {self.target.host}: TLS failed ({first_line(exc)}).",
                "If the registry's certificate is signed by a site CA, give its PEM file with --ca-file; if the "
                "registry speaks plain HTTP, add --insecure.",
            ) from None
        except requests.RequestException as exc:
            raise RegistryError(
                f"registry {self.target.host}: cannot reach {url} ({first_line(exc)}).",
                "Check --registry (host and port) and the network path to it; a registry serving HTTPS "
                "on this machine is written https://HOST:PORT.",
            ) from None

    # --- one request ------------------------------------------------------------------------------------

    def _ask(
        self, method: str, url: str, thing: str, expect: set[int], headers: dict[str, str] | None = None
    ) -> requests.Response:
        return request(
            self.session,
            method,
            url,
            policy=self.policy,
            what=f"registry {self.target.host}",
            thing=thing,
            kinds=self.kinds,
            headers=headers,
            auth=self.auth,
            expect=expect,
        )

    def _send(self, method: str, url: str, body: bytes, thing: str, headers: dict[str, str]) -> requests.Response:
        """A request with a body, sent once: an upload is not blindly repeated (the registry may hold part of
        it); a failed push is run again and resumes at the first blob not there. Auth is already cached for
        the repository by the POST that opened the upload, so no 401 round trip has to resend the body."""
        try:
            r = self.session.request(
                method, url, data=body, headers=headers, auth=self.auth, timeout=self.policy.timeouts
            )
        except requests.RequestException as exc:
            raise RegistryError(
                f"registry {self.target.host}: sending {thing} failed ({first_line(exc)}).", self.kinds.failed_hint
            ) from None
        if not 200 <= r.status_code < 300:
            raise refusal(
                r.status_code,
                what=f"registry {self.target.host}",
                where=self.target.host,
                thing=thing,
                detail=self.kinds.detail(r),
                kinds=self.kinds,
            )
        return r

    # --- tags -------------------------------------------------------------------------------------------

    def tag_digest(self, repo: str, tag: str) -> str | None:
        url = f"{self.target.api(repo)}/manifests/{tag}"
        r = self._ask("HEAD", url, f"manifest {repo}:{tag}", {200, 404}, {"Accept": ACCEPT})
        if r.status_code == 404:
            return None
        served = r.headers.get("Docker-Content-Digest", "")
        if served.startswith("sha256:"):
            return served
        # The header is optional in the spec: the digest of the bytes served is the answer then.
        body = self._ask("GET", url, f"manifest {repo}:{tag}", {200}, {"Accept": ACCEPT}).content
        return "sha256:" + hashlib.sha256(body).hexdigest()

    # --- blobs ------------------------------------------------------------------------------------------

    def push_blob(self, repo: str, art: LockedArtifact) -> None:
        digest = "sha256:" + art.sha256
        base = self.target.api(repo)
        head = self._ask("HEAD", f"{base}/blobs/{digest}", f"blob {repo}@{digest}", {200, 404})
        if head.status_code == 200:
            with self._count:
                self.report.blobs_present += 1
            self.where.setdefault(digest, repo)
            return
        url = f"{base}/blobs/uploads/"
        source = self.where.get(digest)
        opened: requests.Response | None = None
        if source is not None and source != repo:
            # A registry may refuse the mount (no pull right on `from` for this account, a token service that
            # cannot grant two repositories at once): then it is an upload like any other.
            mount = f"{url}?mount={digest}&from={source}"
            r = self._ask("POST", mount, f"an upload to {repo}", {201, 202, 401, 403})
            if r.status_code == 201:  # mounted: the registry linked the blob it already holds
                with self._count:
                    self.report.blobs_mounted += 1
                return
            if r.status_code == 202:
                opened, url = r, mount
            else:
                r.close()
        if opened is None:
            opened = self._ask("POST", url, f"an upload to {repo}", {202})
        location = self._location(opened, url)
        self._upload(repo, art, digest, location)
        with self._count:
            self.report.blobs_sent += 1
            self.report.bytes_sent += art.size
        self.where.setdefault(digest, repo)

    def _location(self, r: requests.Response, url: str) -> str:
        loc = r.headers.get("Location")
        if not loc:
            raise RegistryError(
                f"registry {self.target.host}: it opened an upload without saying where to send it (no Location).",
                "The registry does not follow the OCI distribution spec; check its version.",
            )
        return urljoin(url, loc)

    def _upload(self, repo: str, art: LockedArtifact, digest: str, location: str) -> None:
        """Send the blob's bytes as read through the lock's digest. The next piece is read before the current
        one goes: the read that reaches the end judges the whole blob, so the closing PUT, the one that
        commits it, is only sent once every byte was the lock's."""
        thing = f"blob {repo}@{digest}"
        offset = 0
        with self._reader(art) as f:
            piece = f.read(self.chunk)
            while True:
                following = f.read(self.chunk)  # at the end: ChangedSinceVerify if the bytes were not the lock's
                if not following:
                    sep = "&" if urlsplit(location).query else "?"
                    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(piece))}
                    self._send("PUT", f"{location}{sep}digest={digest}", piece, thing, headers)
                    return
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(len(piece)),
                    "Content-Range": f"{offset}-{offset + len(piece) - 1}",
                }
                if offset == 0:
                    with self._count:
                        self.report.blobs_chunked += 1
                r = self._send("PATCH", location, piece, thing, headers)
                location = self._location(r, location)
                offset += len(piece)
                piece = following

    def _reader(self, art: LockedArtifact) -> _Checked:
        return _Checked(self.ctx, art)

    # --- manifests --------------------------------------------------------------------------------------

    def push_manifest(self, repo: str, img: BundledImage, ref: str) -> None:
        """Put the manifest under `ref` (its digest or a tag), its bytes read through the lock's digest."""
        with self._reader(img.manifest) as f:
            body = f.read()  # to the end: the digest check
        url = f"{self.target.api(repo)}/manifests/{ref}"
        self._send("PUT", url, body, f"manifest {repo}:{ref}", {"Content-Type": img.manifest_media_type})

    def manifest_present(self, repo: str, digest: str) -> bool:
        r = self._ask(
            "HEAD",
            f"{self.target.api(repo)}/manifests/{digest}",
            f"manifest {repo}@{digest}",
            {200, 404},
            {"Accept": ACCEPT},
        )
        return r.status_code == 200


class _Checked:
    """`ctx.open_artifact`, with a ChangedSinceVerify worded for a push: nothing of that blob was committed."""

    def __init__(self, ctx: InstallContext, art: LockedArtifact) -> None:
        self._f = ctx.open_artifact(art)

    def __enter__(self) -> _Checked:
        return self

    def read(self, n: int = -1) -> bytes:
        try:
            return self._f.read(n)
        except ChangedSinceVerify as exc:
            raise ChangedSinceVerify(
                exc.message.replace("it was not installed", "it was not committed to the registry; the push stopped"),
                "Someone or something wrote to the bundle during the push, or the medium returns other bytes on a "
                "second read. Copy the bundle to a disk only you can write, run `airgap verify` on it, and push "
                "from there.",
            ) from None

    def __exit__(self, *exc: object) -> None:
        try:
            self._f.close()
        except ChangedSinceVerify:
            if exc[0] is None:
                raise


def _refs_of(img: BundledImage) -> list[str]:
    meta = read_meta(ImageMeta, img.manifest.meta, img.manifest.path)
    return meta.refs


def plan(pusher: Pusher, images: list[BundledImage]) -> list[_Planned]:
    """Every (image, reference) and where its tag points now; two images onto one tag is refused here."""
    out: list[_Planned] = []
    seen: dict[tuple[str, str], str] = {}
    for img in images:
        for source in _refs_of(img):
            ref = parse_ref(source)
            repo = pusher.target.repo(ref.repository)
            if ref.tag:
                other = seen.setdefault((repo, ref.tag), img.manifest_digest)
                if other != img.manifest_digest:
                    raise BadInputError(
                        f"two images of the bundle would both be {pusher.target.host}/{repo}:{ref.tag} "
                        f"({other} and {img.manifest_digest}): they come from different registries with the "
                        "same repository path.",
                        "Push to two --registry prefixes, or collect them under different tags.",
                    )
            current = pusher.tag_digest(repo, ref.tag) if ref.tag else None
            out.append(_Planned(img, source, repo, ref.tag, current))
    return out


def push_bundle(
    bundle: Path,
    registry: str,
    *,
    on_existing_tag: OnExisting = "fail",
    ca_file: Path | None = None,
    insecure: bool = False,
    key: PublicKey | None = None,
    trusted_dir: Path = Path(TRUSTED_KEYS_DIR),
    verify: bool = True,
    chunk: int = CHUNK,
    say: Say = print,
    warn: Say = print,
) -> PushReport:
    """Verify BUNDLE, then push each of its images to `registry`; the report of every reference pushed.
    `verify=False` only skips the up-front re-hash (tests of the hash on use); every blob is still hashed
    as it is sent."""
    target = parse_target(registry, insecure)
    if ca_file is not None and not ca_file.is_file():
        raise BadInputError(f"--ca-file {ca_file}: no such file.", "Give the PEM file of the site's CA.")
    keys = trusted_keys(trusted_dir, [key] if key is not None else [])
    snapshot = Snapshot.read(bundle, keys, keys_dir=str(trusted_dir))
    lock = snapshot.require_lock()
    if snapshot.signature.status == "unchecked":
        warn(f"signature NOT checked: {snapshot.signature.detail}")
    if verify:
        from airgap.verify import verify_bundle

        say(f"verifying {bundle} ...")
        v = verify_bundle(snapshot)
        if not v.ok:
            lines = [f"  {p.kind.upper():<10} {p.path}: {p.detail}" for p in v.problems]
            raise VerifyFailed(
                "The bundle failed verification; nothing was pushed:\n" + "\n".join(lines),
                "Copy the named files again from the original bundle (airgap verify BUNDLE lists them).",
            )
        say(f"verified {v.files} files in {v.seconds:.1f}s")
    # The install's reading of the bundle: the lock read once, every blob hashed on the read that uses it.
    ctx = InstallContext(host=Host(), bundle=bundle, lock=lock)
    images = bundled_images(ctx)
    if not images:
        raise BadInputError(f"{bundle}: the bundle holds no images; nothing to push.", "Push a bundle with `images:`.")
    in_base = [a.path for img in images for a in (img.manifest, img.config, *img.layers) if a.in_base]
    if in_base:
        raise BadInputError(
            f"{bundle}: a delta bundle: {in_base[0]} is carried by its base bundle, not this one.",
            "Push the full bundle (or the base first, then this one is not needed for its images).",
        )
    report = PushReport(registry=f"{target.host}{'/' + target.prefix if target.prefix else ''}")
    report.signature = snapshot.signature.status
    pusher = Pusher(target, ctx, ca_file, chunk, report)
    pusher.probe()
    planned = plan(pusher, images)
    conflicts = [p for p in planned if p.tag and p.current not in (None, p.image.manifest_digest)]
    if conflicts and on_existing_tag == "fail":
        names = "; ".join(
            f"{target.host}/{p.repo}:{p.tag} is {p.current}, the bundle's is {p.image.manifest_digest}"
            for p in conflicts
        )
        raise TagConflict(
            f"{len(conflicts)} tag(s) already point at other images, so nothing was pushed: {names}.",
            "Run again with --on-existing-tag skip (leave them) or --on-existing-tag overwrite (move them).",
        )
    pushed: set[tuple[str, str]] = set()
    for p in planned:
        img = p.image
        if (p.repo, img.manifest_digest) not in pushed:
            pushed.add((p.repo, img.manifest_digest))
            if not pusher.manifest_present(p.repo, img.manifest_digest):
                say(f"pushing {target.host}/{p.repo}@{img.manifest_digest} ({human_size(img.size)})")
                blobs = _unique([img.config, *img.layers])
                # A few blobs at once, as docker and skopeo push: one at a time left the link idle while each
                # was read and hashed. Each is still committed only after its last byte matched the lock.
                with ThreadPoolExecutor(max_workers=min(BLOBS_AT_ONCE, len(blobs)), thread_name_prefix="push") as pool:
                    for done in [pool.submit(pusher.push_blob, p.repo, art) for art in blobs]:
                        done.result()
                pusher.push_manifest(p.repo, img, img.manifest_digest)
                report.manifests_sent += 1
            else:
                report.blobs_present += len(_unique([img.config, *img.layers]))
        state = "untagged"
        if p.tag:
            if p.current == img.manifest_digest:
                state = "present"
            elif p.current is not None and on_existing_tag == "skip":
                state = "skipped"
                warn(f"{target.host}/{p.repo}:{p.tag} left at {p.current} (--on-existing-tag skip)")
            else:
                pusher.push_manifest(p.repo, img, p.tag)
                report.tags_set += 1
                state = "updated" if p.current is not None else "created"
        where = f"{target.host}/{p.repo}"
        report.refs.append(
            PushedRef(
                source=p.source,
                reference=f"{where}:{p.tag}" if p.tag else "",
                pinned=f"{where}@{img.manifest_digest}",
                digest=img.manifest_digest,
                tag=state,
            )
        )
    return report


def _unique(arts: list[LockedArtifact]) -> list[LockedArtifact]:
    """An image may list one layer twice; it is sent once."""
    return list({a.sha256: a for a in arts}.values())
