"""Resumable, retrying fetch that hashes while it streams and renames only verified files.

A download lands in `NAME.part`. Its sha256 (and the publisher's md5 where one is checked) is computed
from the bytes as they arrive, so no file is ever read twice. Only when the digest matches is the part
renamed to NAME: a file under its final name is always complete. An interrupted download (dropped
connection, killed process, Ctrl-C, full disk) leaves the part, and the next attempt asks for the rest
with an HTTP Range request. Requests go through `sources.request` (retries, backoff, the status table).

`HttpSource.fetch_artifact` is the one door collect brings an artifact in through: from its URLs, or,
when the artifact names a file on this machine (a blob a local Docker daemon exported), by copying that
file under the same `.part`, hash-while-writing and digest-before-rename discipline, with no HTTP.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
import requests.auth
import urllib3

from airgap.artifacts import Artifact, Digest
from airgap.bundle_layout import PART_SUFFIX
from airgap.errors import DiskFullError, IntegrityError, UpstreamError
from airgap.sources.request import (
    ANY_STATUS,
    RETRY_STATUSES,
    USER_AGENT,
    Cancelled,
    NotFound,
    Retry,
    RetryPolicy,
    first_line,
    new_session,
    redact,
    request,
    scrub,
    send,
)

__all__ = [
    "CHUNK",
    "RETRY_STATUSES",
    "USER_AGENT",
    "ByteCounter",
    "Cancelled",
    "FetchResult",
    "HeadInfo",
    "HttpSource",
    "apply_mirrors",
    "file_name_from_url",
    "redact",
    "scrub",
]

CHUNK = 1 << 20

ByteCounter = Callable[[int], None]

# What a download's GET may answer and still be read here; 404/410/401/403 and the rest are the table's.
_DOWNLOAD_ANSWERS = frozenset({200, 206, 416})
_RESUME_HINT = "The partial download is kept: run the same command again to resume, or use --retries to try harder."


def file_name_from_url(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def apply_mirrors(url: str, mirrors: dict[str, str]) -> str:
    """Rewrite the longest matching prefix; a prefix matches only at a path boundary."""
    best = ""
    for prefix in mirrors:
        if (url == prefix or url.startswith(prefix + "/")) and len(prefix) > len(best):
            best = prefix
    return mirrors[best] + url[len(best) :] if best else url


@dataclass
class FetchResult:
    path: Path
    url: str  # canonical URL that served it (before mirrors)
    size: int
    sha256: str
    transferred: int  # bytes that crossed the network in this run
    resumed_from: int  # bytes that were already in the .part when this run started
    skipped: bool = False


@dataclass
class HeadInfo:
    url: str
    status: int
    size: int | None


class HttpSource:
    """Fetches files through `mirrors:` with retries; safe to share between threads."""

    def __init__(
        self,
        mirrors: dict[str, str] | None = None,
        retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 30.0,
        cancel: threading.Event | None = None,
    ) -> None:
        self.mirrors = mirrors or {}
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.cancel = cancel or threading.Event()
        self._local = threading.local()

    @property
    def policy(self) -> RetryPolicy:
        """The retries, backoff, timeout and cancellation every request of this collection runs under."""
        return RetryPolicy(retries=self.retries, backoff=self.backoff, timeout=self.timeout, cancel=self.cancel)

    # requests.Session is not documented as thread-safe: give each worker thread its own.
    @property
    def session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = new_session()
        return session

    def resolve(self, url: str) -> str:
        return apply_mirrors(url, self.mirrors)

    def head(self, urls: list[str]) -> HeadInfo:
        """Size of the first candidate URL that exists, without downloading (for `plan`). One attempt per
        URL: a size is only informative, and plan must not wait out backoffs on a dead host."""
        last = HeadInfo(urls[0], 0, None)
        for url in urls:
            try:
                r = send(
                    self.session, "HEAD", self.resolve(url), policy=self.policy, what=redact(url), expect=ANY_STATUS
                )
            except (Retry, UpstreamError):
                return HeadInfo(url, 0, None)
            r.close()
            length = r.headers.get("Content-Length")
            last = HeadInfo(url, r.status_code, int(length) if length and r.ok else None)
            if r.status_code != 404:
                return last
        return last

    def get_text(self, url: str, what: str) -> str:
        """A small text file (a publisher's checksum list), with the same retries as a download."""
        return request(self.session, "GET", self.resolve(url), policy=self.policy, what=what).text

    def fetch_artifact(self, art: Artifact, dest: Path, on_bytes: ByteCounter | None = None) -> FetchResult:
        """Bring `art` to `dest`, checked against its expected digest: copied from `art.local` when the
        bytes are already on this machine, downloaded from `art.urls` otherwise."""
        if art.local is not None:
            url = art.urls[0] if art.urls else art.local.as_uri()
            return self.copy_local(art.local, url, dest, art.path, art.expected, on_bytes)
        return self.fetch(
            art.urls, dest, what=art.path, expected=art.expected, on_bytes=on_bytes, headers=art.headers, auth=art.auth
        )

    def fetch(
        self,
        urls: list[str],
        dest: Path,
        what: str,
        expected: Digest | None = None,
        extra: Digest | None = None,
        on_bytes: ByteCounter | None = None,
        headers: dict[str, str] | None = None,
        auth: requests.auth.AuthBase | None = None,
    ) -> FetchResult:
        """Download the first of `urls` that exists to `dest`, checked against `expected` (sha256, md5 or
        git-sha1) and `extra` (a second digest, e.g. the publisher's md5 when a sha256 is pinned).
        `headers` and `auth` apply to this download only and are never logged."""
        tried: list[str] = []
        req = _Request(headers or {}, auth)
        for url in urls:
            try:
                return self._fetch_one(url, dest, what, [d for d in (expected, extra) if d], on_bytes, req)
            except NotFound as exc:
                tried.append(f"{redact(self.resolve(url))} ({exc.status})")
        raise NotFound(
            f"{what}: not found upstream; tried {'; '.join(tried)}.",
            "Check the version in the manifest, or pin the exact `url:` for this entry "
            "(and check `mirrors:` if you use one).",
        )

    def copy_local(
        self,
        src: Path,
        url: str,
        dest: Path,
        what: str,
        expected: Digest | None = None,
        on_bytes: ByteCounter | None = None,
    ) -> FetchResult:
        """Copy a file of this machine to `dest` as a download lands: through `.part`, hashed while written,
        renamed only when `expected` matches. `url` is the canonical URL recorded for it."""
        digests = [expected] if expected else []
        part = dest.with_name(dest.name + PART_SUFFIX)
        hashers = _hashers(digests)
        try:
            with open(src, "rb") as f:
                size = self._pump(f.readinto, part, 0, hashers, on_bytes, what)
        except FileNotFoundError:
            raise UpstreamError(
                f"{what}: {src} is gone; it was staged for this run only.", "Run the same command again."
            ) from None
        try:
            _size, sha, _transferred, _resumed = self._finish(part, hashers, digests, size, 0, 0)
        except _Mismatch as exc:
            part.unlink(missing_ok=True)
            raise _integrity_error(what, url, exc) from None
        os.replace(part, dest)
        return FetchResult(dest, url, size, sha, 0, 0)

    def _fetch_one(
        self,
        url: str,
        dest: Path,
        what: str,
        digests: list[Digest],
        on_bytes: ByteCounter | None,
        req: _Request,
    ) -> FetchResult:
        real = self.resolve(url)
        part = dest.with_name(dest.name + PART_SUFFIX)
        policy = self.policy
        restarted_after_mismatch = False

        def attempt() -> tuple[int, str, int, int]:
            if self.cancel.is_set():
                raise Cancelled(f"{what}: interrupted; the partial download is kept for the next run.")
            return self._attempt(real, part, what, digests, on_bytes, req, policy)

        while True:
            try:
                size, sha, transferred, resumed = policy.run(attempt, what=what, where=redact(real), hint=_RESUME_HINT)
            except _Mismatch as exc:
                # Bytes resumed from an earlier run may come from an older version of the file on the
                # server: start once from zero before calling the upstream wrong.
                part.unlink(missing_ok=True)
                if exc.resumed and not restarted_after_mismatch:
                    restarted_after_mismatch = True
                    continue
                raise _integrity_error(what, real, exc) from None
            os.replace(part, dest)
            return FetchResult(dest, url, size, sha, transferred, resumed)

    def _attempt(
        self,
        url: str,
        part: Path,
        what: str,
        digests: list[Digest],
        on_bytes: ByteCounter | None,
        req: _Request,
        policy: RetryPolicy,
    ) -> tuple[int, str, int, int]:
        hashers = _hashers(digests)
        offset = _rehash_part(part, hashers.values()) if part.exists() else 0
        headers = dict(req.headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        r = send(
            self.session,
            "GET",
            url,
            policy=policy,
            what=what,
            headers=headers,
            auth=req.auth,
            stream=True,
            expect=_DOWNLOAD_ANSWERS,
        )
        with r:
            status = r.status_code
            if status == 416:
                if offset:
                    # The part is at least as long as the file: either complete, or junk from a bigger one.
                    total = _total_from_content_range(r.headers.get("Content-Range", ""))
                    if total == offset:
                        return self._finish(part, hashers, digests, offset, 0, offset)
                    part.unlink()
                    raise Retry("partial download longer than the file; restarting")
                raise UpstreamError(f"{what}: {redact(url)} answered HTTP 416 to a request without a Range.")
            if offset and (status == 200 or not _range_starts_at(r.headers.get("Content-Range", ""), offset)):
                # The server ignored our Range: the body starts at byte 0, so the part starts over too.
                offset = 0
                hashers = _hashers(digests)
            if offset and on_bytes:
                on_bytes(offset)
            length = r.headers.get("Content-Length")
            expected_body = int(length) if length is not None else None
            received = self._stream(r, part, offset, hashers, on_bytes, what)
        if expected_body is not None and received < expected_body:
            raise Retry(f"connection closed after {received} of {expected_body} bytes")
        return self._finish(part, hashers, digests, offset + received, received, offset)

    def _stream(
        self,
        r: requests.Response,
        part: Path,
        offset: int,
        hashers: dict[str, Any],
        on_bytes: ByteCounter | None,
        what: str,
    ) -> int:
        try:
            return self._pump(_body_reader(r), part, offset, hashers, on_bytes, what)
        except _Cut as exc:
            raise Retry(
                f"connection cut after {offset + exc.received} bytes: {first_line(exc.__cause__ or exc)}"
            ) from None

    def _pump(
        self,
        read_into: Callable[[bytearray], int],
        part: Path,
        offset: int,
        hashers: dict[str, Any],
        on_bytes: ByteCounter | None,
        what: str,
    ) -> int:
        """Read with `read_into` until it gives nothing, into `part` from `offset`, feeding the hashers;
        synced to disk before returning. A transport failure while reading becomes `_Cut`."""
        received = 0
        try:
            with open(part, "r+b" if offset else "wb") as f:
                f.seek(offset)
                f.truncate()
                # Receiving and hashing+writing overlap in two threads (all three release the GIL), so a
                # download costs about max(network, sha256) instead of their sum.
                with _HashWriter(f, [h.update for h in hashers.values()]) as sink:
                    while True:
                        if self.cancel.is_set():
                            raise Cancelled(f"{what}: interrupted; the partial download is kept for the next run.")
                        buf = sink.free_buffer()
                        try:
                            n = read_into(buf)
                        except (
                            urllib3.exceptions.HTTPError,
                            requests.RequestException,
                            http.client.HTTPException,
                            ConnectionError,
                            TimeoutError,
                        ) as exc:
                            sink.give_back(buf)
                            raise _Cut(received) from exc
                        if not n:
                            sink.give_back(buf)
                            break
                        sink.put(buf, n)
                        received += n
                        if on_bytes:
                            on_bytes(n)
                # On disk before the caller may rename it "complete": people collect straight onto a USB
                # drive and pull it out when the command returns.
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise DiskFullError(
                    f"{what}: no space left on the device holding {part.parent} "
                    f"({os.strerror(exc.errno or 0)}) after {offset + received} bytes.",
                    "Free space or choose another output directory with -o; the partial download "
                    f"{part.name} is kept and will resume, and no file was marked complete.",
                ) from None
            raise
        return received

    def _finish(
        self,
        part: Path,
        hashers: dict[str, Any],
        digests: list[Digest],
        size: int,
        transferred: int,
        resumed: int,
    ) -> tuple[int, str, int, int]:
        for d in digests:
            actual = hashers[d.algorithm].hexdigest()
            if actual != d.value.lower():
                raise _Mismatch(d, actual, resumed > 0)
        return size, hashers["sha256"].hexdigest(), transferred, resumed


def _integrity_error(what: str, url: str, exc: _Mismatch) -> IntegrityError:
    return IntegrityError(
        f"{what}: the bytes from {redact(url)} do not match the expected {exc.digest.algorithm} "
        f"({redact(exc.digest.source)}): expected {exc.digest.value}, got {exc.actual}. "
        "Nothing was kept.",
        "If the manifest pins this sha256, check it against the publisher; if a mirror serves "
        "this file, its copy may be corrupt or stale.",
    )


class _Cut(Exception):
    """The body stopped arriving after `received` bytes (the transport's exception is the cause)."""

    def __init__(self, received: int) -> None:
        super().__init__(f"cut after {received} bytes")
        self.received = received


class _HashWriter:
    """The second stage of a download: hashes and writes filled buffers in order, on its own thread.
    An error in this stage (a full disk) is raised in the receiving thread when the stage closes."""

    def __init__(self, f: Any, updates: list[Callable[[Any], None]], buffers: int = 4) -> None:
        self._f = f
        self._updates = updates
        self._filled: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(buffers):
            self._free.put(bytearray(CHUNK))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hash-write", daemon=True)

    def __enter__(self) -> _HashWriter:
        self._thread.start()
        return self

    def free_buffer(self) -> bytearray:
        if self._error is not None:
            raise self._error
        return self._free.get()

    def give_back(self, buf: bytearray) -> None:
        self._free.put(buf)

    def put(self, buf: bytearray, n: int) -> None:
        self._filled.put((buf, n))

    def _run(self) -> None:
        while (item := self._filled.get()) is not None:
            buf, n = item
            if self._error is None:
                try:
                    chunk = memoryview(buf)[:n]
                    for update in self._updates:
                        update(chunk)
                    self._f.write(chunk)
                except BaseException as exc:  # handed to the receiving thread, which decides
                    self._error = exc
            self._free.put(buf)

    def __exit__(self, *exc: object) -> None:
        self._filled.put(None)
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise self._error


@dataclass(frozen=True)
class _Request:
    headers: dict[str, str]
    auth: requests.auth.AuthBase | None


def _hashers(digests: list[Digest]) -> dict[str, Any]:
    """sha256 (what the lock records) and one hasher per other digest to check."""
    hashers: dict[str, Any] = {"sha256": hashlib.sha256()}
    for d in digests:
        hashers.setdefault(d.algorithm, _new_hasher(d))
    return hashers


def _new_hasher(d: Digest) -> Any:
    if d.algorithm == "git-sha1":
        if d.size is None:
            raise ValueError("a git-sha1 digest needs the file size")
        h = hashlib.sha1(usedforsecurity=False)
        h.update(b"blob %d\0" % d.size)  # git's blob id covers this header, then the bytes
        return h
    return hashlib.new(d.algorithm)


class _Mismatch(Exception):
    def __init__(self, digest: Digest, actual: str, resumed: bool) -> None:
        self.digest = digest
        self.actual = actual
        self.resumed = resumed


def _body_reader(r: requests.Response) -> Callable[[bytearray], int]:
    """http.client's readinto receives straight into our buffer; urllib3's copies each chunk twice, which
    made a 1 GiB download 1.5-2x slower. Fall back to urllib3 where its internals differ."""
    fp = getattr(r.raw, "_fp", None)
    if fp is not None and callable(getattr(fp, "readinto", None)) and not r.headers.get("Content-Encoding"):
        readinto: Callable[[bytearray], int] = fp.readinto
        return readinto
    raw_readinto: Callable[[bytearray], int] = r.raw.readinto
    return raw_readinto


def _rehash_part(part: Path, hashers: object) -> int:
    """Feed an existing part to the hashers (hash state cannot be saved between runs) and return its size."""
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(part, "rb") as f:
        while n := f.readinto(buf):
            for h in hashers:  # type: ignore[attr-defined]
                h.update(view[:n])
            size += n
    return size


def _range_starts_at(content_range: str, offset: int) -> bool:
    # "bytes 100-999/1000"
    try:
        unit, rest = content_range.split(" ", 1)
        return unit == "bytes" and int(rest.split("-", 1)[0]) == offset
    except ValueError:
        return False


def _total_from_content_range(content_range: str) -> int | None:
    try:
        return int(content_range.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None
