"""The bundle's wheels into an index the site already runs (devpi, Nexus, Artifactory, pypiserver), with
the upload API they all accept: PyPI's legacy `file_upload` form, as twine sends it.

What the index already lists (its simple page for the project names the file) is not sent again, and a
"file exists" answer (409, or 400 saying so) counts as already there, so a second run sends nothing. Each
wheel is read through the lock's digest as it is streamed (chain of custody): a wheel changed since the
bundle was verified fails before the request's last byte, so the index never receives it whole. The body
is streamed with its length announced (no chunked encoding, which some indexes refuse) and never held in
memory: a torch wheel is gigabytes.

Credentials come from TWINE_USERNAME/TWINE_PASSWORD, as for twine, and are never printed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import requests
from packaging.utils import canonicalize_name, parse_wheel_filename

from airgap.artifact_meta import WheelMeta, read_meta
from airgap.depot.content import BundleReader
from airgap.errors import BadInputError, UpstreamError
from airgap.lock import LockedArtifact
from airgap.redact import redact
from airgap.sources.request import AccessDenied

BUF = 1 << 20


@dataclass
class Uploaded:
    sent: list[str] = field(default_factory=list)  # wheel file names uploaded now
    present: list[str] = field(default_factory=list)  # already in the index
    bytes: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"sent": self.sent, "present": self.present, "bytes": self.bytes}


def wheels_of(reader: BundleReader) -> list[LockedArtifact]:
    return [a for a in reader.lock.artifacts if a.name.endswith(".whl") and not a.in_base]


def upload_wheels(reader: BundleReader, index: str, simple: str | None = None) -> Uploaded:
    """Upload every wheel of the verified bundle `reader` to the upload URL `index`, asking the simple
    index `simple` (default: INDEX/simple/) what it has first."""
    wheels = wheels_of(reader)
    if not wheels:
        raise BadInputError(
            f"{reader.bundle}: the bundle holds no wheels to upload.",
            "Collect a manifest with a `python:` section, or leave this step out.",
        )
    index = index.rstrip("/") + "/"
    simple = (simple or index + "simple/").rstrip("/") + "/"
    session = requests.Session()
    user, password = os.environ.get("TWINE_USERNAME"), os.environ.get("TWINE_PASSWORD")
    if user and password:
        session.auth = (user, password)
    done = Uploaded()
    listed: dict[str, set[str]] = {}
    for art in wheels:
        meta = read_meta(WheelMeta, art.meta, art.path)
        project = str(canonicalize_name(meta.project))
        if project not in listed:
            listed[project] = _listed(session, simple, project)
        if art.name in listed[project]:
            done.present.append(art.name)
            continue
        if _send(session, index, reader, art, meta):
            done.sent.append(art.name)
            done.bytes += art.size
        else:
            done.present.append(art.name)
    return done


def _listed(session: requests.Session, simple: str, project: str) -> set[str]:
    """File names the index's simple page lists for `project` (none when it has no such project)."""
    url = f"{simple}{project}/"
    try:
        r = session.get(url, timeout=60, headers={"Accept": "text/html"}, allow_redirects=False)
        # A redirect within the index (a name normalised) is followed; one to another host is not: some
        # indexes send what they lack to pypi.org (pypiserver's fallback), whose page says nothing of theirs.
        for _ in range(5):
            if not r.is_redirect:
                break
            target = urljoin(url, r.headers.get("Location", ""))
            if urlsplit(target).netloc != urlsplit(url).netloc:
                return set()
            url = target
            r = session.get(url, timeout=60, headers={"Accept": "text/html"}, allow_redirects=False)
    except requests.RequestException as exc:
        raise UpstreamError(
            f"{redact(url)}: cannot read the index's page for {project} ({type(exc).__name__}).",
            "Check the index's URL (--simple for one that is not INDEX/simple/) and that it is up.",
        ) from None
    if r.status_code == 404:
        return set()
    if r.status_code in (401, 403):
        raise AccessDenied(
            f"{redact(url)}: the index refused to list {project} (HTTP {r.status_code}).",
            "Set TWINE_USERNAME and TWINE_PASSWORD for an account that may read and upload to this index.",
        )
    if not r.ok:
        raise UpstreamError(f"{redact(url)}: HTTP {r.status_code} for the page of {project}.", "Check the index.")
    links = _Links()
    links.feed(r.text)
    return {href.split("#", 1)[0].rsplit("/", 1)[-1] for href in links.hrefs}


def _send(session: requests.Session, index: str, reader: BundleReader, art: LockedArtifact, meta: WheelMeta) -> bool:
    """POST one wheel; False when the index says it has it already."""
    _name, _version, _build, tags = parse_wheel_filename(art.name)
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": meta.project,
        "version": meta.version,
        "filetype": "bdist_wheel",
        "pyversion": sorted({t.interpreter for t in tags})[0],
        "sha256_digest": art.sha256,
    }
    body = _Multipart(fields, art, reader)
    try:
        r = session.post(index, data=body, headers={"Content-Type": body.content_type}, timeout=600)
    except requests.RequestException as exc:
        raise UpstreamError(
            f"{redact(index)}: uploading {art.name} failed ({type(exc).__name__}).",
            "Check the index is up and accepts uploads at this URL (devpi: the index URL; Nexus: the hosted "
            "repository's URL; pypiserver: its root), then run the same command again: what is there is skipped.",
        ) from None
    if r.ok:
        return True
    text = r.text[:300]
    if r.status_code == 409 or (r.status_code == 400 and "exist" in text.lower()):
        return False
    if r.status_code in (401, 403):
        raise AccessDenied(
            f"{redact(index)}: the index refused the upload of {art.name} (HTTP {r.status_code}).",
            "Set TWINE_USERNAME and TWINE_PASSWORD for an account that may upload to this index.",
        )
    raise UpstreamError(
        f"{redact(index)}: the index answered HTTP {r.status_code} to the upload of {art.name}: {text.strip()}",
        "Check that this URL is the index's upload endpoint.",
    )


class _Multipart:
    """A multipart/form-data body streamed from the bundle, with its length known up front."""

    def __init__(self, fields: dict[str, str], art: LockedArtifact, reader: BundleReader) -> None:
        self._boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={self._boundary}"
        head = b"".join(
            f'--{self._boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        )
        head += (
            f'--{self._boundary}\r\nContent-Disposition: form-data; name="content"; filename="{art.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self._head, self._tail = head, f"\r\n--{self._boundary}--\r\n".encode()
        self._art, self._reader = art, reader

    def __len__(self) -> int:
        return len(self._head) + self._art.size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        # chunks() hashes the whole file and raises ChangedSinceVerify after its last chunk if it is not the
        # lock's: the closing boundary is then never sent, so the index never holds a complete upload.
        yield from self._reader.chunks(self._art)
        yield self._tail


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]
