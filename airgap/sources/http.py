"""Resumable, retrying HTTP fetch that hashes while it streams and renames only verified files.

A download lands in `NAME.part`. Its sha256 (and the publisher's md5 where one is checked) is computed
from the bytes as they arrive, so no file is ever read twice. Only when the digest matches is the part
renamed to NAME: a file under its final name is always complete. An interrupted download (dropped
connection, killed process, Ctrl-C, full disk) leaves the part, and the next attempt asks for the rest
with an HTTP Range request.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import queue
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
import requests.auth
import urllib3

from airgap import __version__
from airgap.artifacts import Digest
from airgap.bundle_layout import PART_SUFFIX
from airgap.errors import AirgapError, DiskFullError, IntegrityError, UpstreamError

CHUNK = 1 << 20
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = f"airgap/{__version__}"

ByteCounter = Callable[[int], None]


class Cancelled(AirgapError):
    """Raised inside a download when the user interrupted the collection."""


class _Retryable(Exception):
    """A failure worth another attempt (connection cut, 5xx, short body)."""


class _NotFound(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


_SECRET_QUERY_KEYS = re.compile(r"(token|sig|signature|secret|password|passwd|key|credential|auth)", re.I)


def redact(url: str) -> str:
    """The URL without `user:password@` or secret-looking query values (signed URLs carry their
    credentials there), for anything shown, logged or written to the bundle."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        query = "&".join(
            f"{k}=***" if _SECRET_QUERY_KEYS.search(k) else (f"{k}={v}" if sep else k)
            for k, sep, v in (item.partition("=") for item in query.split("&"))
        )
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


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

    # requests.Session is not documented as thread-safe: give each worker thread its own.
    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            # Identity only: the digest is of the bytes as published, not of a transport encoding.
            session.headers["Accept-Encoding"] = "identity"
            self._local.session = session
        return session

    def resolve(self, url: str) -> str:
        return apply_mirrors(url, self.mirrors)

    def head(self, urls: list[str]) -> HeadInfo:
        """Size of the first candidate URL that exists, without downloading (for `plan`)."""
        last = HeadInfo(urls[0], 0, None)
        for url in urls:
            try:
                r = self.session.head(self.resolve(url), allow_redirects=True, timeout=self.timeout)
            except requests.RequestException:
                return HeadInfo(url, 0, None)
            length = r.headers.get("Content-Length")
            last = HeadInfo(url, r.status_code, int(length) if length and r.ok else None)
            if r.status_code != 404:
                return last
        return last

    def get_text(self, url: str, what: str) -> str:
        """A small text file (a publisher's checksum list), with the same retries as a download."""
        real = self.resolve(url)
        for attempt in range(self.retries + 1):
            try:
                r = self.session.get(real, timeout=self.timeout)
                if r.status_code in RETRY_STATUSES:
                    raise _Retryable(f"HTTP {r.status_code}")
                if r.status_code == 404:
                    raise _NotFound(404)
                r.raise_for_status()
                return r.text
            except (_Retryable, requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self.retries:
                    raise UpstreamError(
                        f"{what}: {redact(real)} failed after {attempt + 1} attempts ({exc})."
                    ) from None
                self._sleep(attempt)
            except _NotFound:
                raise UpstreamError(f"{what}: {redact(real)} answered 404 Not Found.") from None
            except requests.HTTPError as exc:
                raise UpstreamError(f"{what}: {redact(real)} answered {exc.response.status_code}.") from None
        raise AssertionError("unreachable")

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
        request = _Request(headers or {}, auth)
        for url in urls:
            try:
                return self._fetch_one(url, dest, what, [d for d in (expected, extra) if d], on_bytes, request)
            except _NotFound as exc:
                tried.append(f"{redact(self.resolve(url))} ({exc.status})")
        raise UpstreamError(
            f"{what}: not found upstream; tried {'; '.join(tried)}.",
            "Check the version in the manifest, or pin the exact `url:` for this entry "
            "(and check `mirrors:` if you use one).",
        )

    def _fetch_one(
        self,
        url: str,
        dest: Path,
        what: str,
        digests: list[Digest],
        on_bytes: ByteCounter | None,
        request: _Request,
    ) -> FetchResult:
        real = self.resolve(url)
        part = dest.with_name(dest.name + PART_SUFFIX)
        restarted_after_mismatch = False
        failures = 0
        while True:
            if self.cancel.is_set():
                raise Cancelled(f"{what}: interrupted; the partial download is kept for the next run.")
            try:
                size, sha, transferred, resumed = self._attempt(real, part, what, digests, on_bytes, request)
            except _Retryable as exc:
                failures += 1
                if failures > self.retries:
                    raise UpstreamError(
                        f"{what}: {redact(real)} failed after {failures} attempts (last: {exc}).",
                        "The partial download is kept: run the same command again to resume, "
                        "or use --retries to try harder.",
                    ) from None
                self._sleep(failures - 1)
                continue
            except _Mismatch as exc:
                # Bytes resumed from an earlier run may come from an older version of the file on the
                # server: start once from zero before calling the upstream wrong.
                part.unlink(missing_ok=True)
                if exc.resumed and not restarted_after_mismatch:
                    restarted_after_mismatch = True
                    continue
                raise IntegrityError(
                    f"{what}: the bytes from {redact(real)} do not match the expected {exc.digest.algorithm} "
                    f"({exc.digest.source}): expected {exc.digest.value}, got {exc.actual}. "
                    "Nothing was kept.",
                    "If the manifest pins this sha256, check it against the publisher; if a mirror serves "
                    "this file, its copy may be corrupt or stale.",
                ) from None
            os.replace(part, dest)
            return FetchResult(dest, url, size, sha, transferred, resumed)

    def _attempt(
        self,
        url: str,
        part: Path,
        what: str,
        digests: list[Digest],
        on_bytes: ByteCounter | None,
        request: _Request,
    ) -> tuple[int, str, int, int]:
        hashers: dict[str, Any] = {"sha256": hashlib.sha256()}
        for d in digests:
            hashers.setdefault(d.algorithm, _new_hasher(d))
        offset = _rehash_part(part, hashers.values()) if part.exists() else 0
        headers = dict(request.headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            r = self.session.get(url, headers=headers, stream=True, timeout=self.timeout, auth=request.auth)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Retryable(f"connection failed: {_short(exc)}") from None
        with r:
            status = r.status_code
            if status == 404 or status == 410:
                raise _NotFound(status)
            if status in RETRY_STATUSES:
                raise _Retryable(f"HTTP {status}")
            if status in (401, 403):
                raise UpstreamError(
                    f"{what}: {redact(url)} answered {status} (access refused).",
                    "If this upstream or mirror needs credentials, put them in ~/.netrc (never in the "
                    "manifest); otherwise check the URL.",
                )
            if status == 416 and offset:
                # The part is at least as long as the file: either complete, or junk from a bigger one.
                total = _total_from_content_range(r.headers.get("Content-Range", ""))
                if total == offset:
                    return self._finish(part, hashers, digests, offset, 0, offset)
                part.unlink()
                raise _Retryable("partial download longer than the file; restarting")
            if status not in (200, 206):
                raise UpstreamError(f"{what}: {redact(url)} answered HTTP {status} {r.reason}.")
            if offset and (status == 200 or not _range_starts_at(r.headers.get("Content-Range", ""), offset)):
                # The server ignored our Range: the body starts at byte 0, so the part starts over too.
                offset = 0
                hashers = {"sha256": hashlib.sha256()} | {d.algorithm: _new_hasher(d) for d in digests}
            if offset and on_bytes:
                on_bytes(offset)
            length = r.headers.get("Content-Length")
            expected_body = int(length) if length is not None else None
            received = self._stream(r, part, offset, hashers, on_bytes, what)
        if expected_body is not None and received < expected_body:
            raise _Retryable(f"connection closed after {received} of {expected_body} bytes")
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
        received = 0
        read_into = _body_reader(r)
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
                        n = read_into(buf)
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
        except (
            urllib3.exceptions.HTTPError,
            requests.RequestException,
            http.client.HTTPException,
            ConnectionError,
            TimeoutError,
        ) as exc:
            raise _Retryable(f"connection cut after {offset + received} bytes: {_short(exc)}") from None
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

    def _sleep(self, attempt: int) -> None:
        delay = min(self.backoff * (2**attempt), 30.0) * (0.5 + random.random() / 2)
        if self.cancel.wait(delay):
            raise Cancelled("interrupted while waiting to retry; partial downloads are kept for the next run.")


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
        return fp.readinto  # type: ignore[no-any-return]
    return r.raw.readinto  # type: ignore[no-any-return]


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


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "..."
