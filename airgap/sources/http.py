"""Resumable, retrying fetch that hashes while it streams and renames only verified files.

A download lands in `NAME.part`. Its sha256 (and the publisher's md5 where one is checked) is computed
from the bytes as they arrive, so no file is ever read twice. Only when the digest matches is the part
renamed to NAME: a file under its final name is always complete. An interrupted download (dropped
connection, killed process, Ctrl-C, full disk) leaves the part, and the next attempt asks for the rest
with an HTTP Range request. Requests go through `sources.request` (retries, backoff, the status table).

What a server says is not taken on trust. A resume sends `If-Range` with the validator recorded in
`NAME.part.meta` when the part was started, and appends only a 206 for exactly the rest of that file;
anything else starts over from byte 0. A body must be as long as its Content-Length. A Content-Encoding
the server applied anyway is decoded (the stored bytes are the file's, whatever its name). The first bytes
are judged as they arrive (`plausible`): a login page is never stored as a driver. A server that stalls
or trickles fails the attempt (`idle_timeout`, `min_rate`) instead of holding the run forever.

`HttpSource.fetch_artifact` is the one door collect brings an artifact in through: from its URLs, or,
when the artifact names a file on this machine (a blob a local Docker daemon exported), by copying that
file under the same `.part`, hash-while-writing and digest-before-rename discipline, with no HTTP.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import queue
import socket
import threading
import time
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
from airgap.fsutil import write_atomic
from airgap.sources.plausible import SNIFF_BYTES, implausible
from airgap.sources.request import (
    ANY_STATUS,
    RETRY_STATUSES,
    USER_AGENT,
    Cancelled,
    NotFound,
    Retry,
    RetryPolicy,
    UpstreamFailed,
    first_line,
    new_session,
    redact,
    request,
    scrub,
    send,
)

__all__ = [
    "CHUNK",
    "PART_META_SUFFIX",
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
# Beside `NAME.part`: what the server said about the file when the part was started (its ETag or
# Last-Modified, its size), so a resume asks for the rest of *that* file and can tell when it got another.
PART_META_SUFFIX = PART_SUFFIX + ".meta"
# Encodings urllib3 can undo; a body in any other is refused rather than stored encoded.
_DECODABLE = frozenset(urllib3.response.HTTPResponse.CONTENT_DECODERS)


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
    """Fetches files through `mirrors:` with retries; safe to share between threads.

    `timeout` bounds each connect; `idle_timeout` (default 60 s) how long a response may send nothing at
    all, and `min_rate` (bytes/s, averaged over `rate_window` seconds) how slowly a body may trickle:
    either ends the attempt as a retryable failure instead of a download that never finishes."""

    def __init__(
        self,
        mirrors: dict[str, str] | None = None,
        retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 30.0,
        cancel: threading.Event | None = None,
        idle_timeout: float = 60.0,
        min_rate: float = 1024.0,
        rate_window: float = 60.0,
    ) -> None:
        self.mirrors = mirrors or {}
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.cancel = cancel or threading.Event()
        self.idle_timeout = idle_timeout
        self.min_rate = min_rate
        self.rate_window = rate_window
        self._local = threading.local()

    @property
    def policy(self) -> RetryPolicy:
        """The retries, backoff, timeouts and cancellation every request of this collection runs under."""
        return RetryPolicy(
            retries=self.retries,
            backoff=self.backoff,
            timeout=self.timeout,
            cancel=self.cancel,
            idle_timeout=self.idle_timeout,
        )

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
            return self._attempt(real, part, dest.name, what, digests, on_bytes, req, policy)

        while True:
            try:
                size, sha, transferred, resumed = policy.run(attempt, what=what, where=redact(real), hint=_RESUME_HINT)
            except _Mismatch as exc:
                # Bytes resumed from an earlier run may come from an older version of the file on the
                # server: start once from zero before calling the upstream wrong.
                _discard(part)
                if exc.resumed and not restarted_after_mismatch:
                    restarted_after_mismatch = True
                    continue
                raise _integrity_error(what, real, exc) from None
            except _Implausible as exc:
                _discard(part)
                raise exc.error(what, real) from None
            os.replace(part, dest)
            _meta_path(part).unlink(missing_ok=True)
            return FetchResult(dest, url, size, sha, transferred, resumed)

    def _attempt(
        self,
        url: str,
        part: Path,
        name: str,
        what: str,
        digests: list[Digest],
        on_bytes: ByteCounter | None,
        req: _Request,
        policy: RetryPolicy,
    ) -> tuple[int, str, int, int]:
        hashers = _hashers(digests)
        meta = _read_meta(part)
        offset, head = 0, b""
        # A part nothing can tie to the file now on the server (no validator recorded, no digest to
        # check the result) could be spliced with another version's bytes: it is started over instead.
        if part.exists() and (meta is not None or digests):
            offset, head = _rehash_part(part, hashers.values())
        restarted = False
        while True:
            headers = dict(req.headers)
            # A digest is of the file as published, never of a transport encoding of it.
            headers["Accept-Encoding"] = "identity"
            if offset:
                headers["Range"] = f"bytes={offset}-"
                if meta is not None and meta.validator:
                    # The server sends the whole (new) file instead of a range when it changed since.
                    headers["If-Range"] = meta.validator
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
                        if total == offset and (meta is None or meta.size in (None, total)):
                            _Sniffer(name, None, check_magic=not digests, head=head).finish()
                            return self._finish(part, hashers, digests, offset, 0, offset)
                        _discard(part)
                        raise Retry("partial download longer than the file; restarting")
                    raise UpstreamError(f"{what}: {redact(url)} answered HTTP 416 to a request without a Range.")
                encoding = _content_encoding(r)
                if offset and status == 206 and not _resume_matches(r, offset, meta, encoding):
                    # A 206 for other bytes than asked (another start, another total, another version of
                    # the file): none of it may be appended. Start over from zero, at once.
                    if restarted:
                        raise Retry("the server answered a range request with another range")
                    restarted = True
                    _discard(part)
                    offset, head, meta, hashers = 0, b"", None, _hashers(digests)
                    continue
                if offset and status == 200:
                    # The server ignored our Range (or the file changed): the body starts at byte 0.
                    offset, head, hashers = 0, b"", _hashers(digests)
                if not offset:
                    meta = _record_meta(part, r, encoding)
                if offset and on_bytes:
                    on_bytes(offset)
                if encoding and not _decodable(encoding):
                    raise _Implausible(f"sent the body in Content-Encoding {encoding!r}, which airgap cannot undo")
                sniffer = _Sniffer(name, r.headers.get("Content-Type"), check_magic=not digests, head=head)
                length = r.headers.get("Content-Length")
                expected_body = int(length) if length is not None and length.isdigit() else None
                received = self._stream(r, part, offset, hashers, on_bytes, what, sniffer, encoding)
                # With an encoding, Content-Length counts the encoded bytes: compare what crossed the wire.
                wire = r.raw.tell() if encoding else received
            if expected_body is not None and wire != expected_body:
                raise Retry(f"the body ended after {wire} of the {expected_body} bytes its Content-Length promised")
            total = meta.size if meta is not None else None
            if offset and total is None:
                total = _total_from_content_range(r.headers.get("Content-Range", ""))
            if total is not None and not encoding and offset + received != total:
                raise Retry(f"the body ended after {offset + received} of {total} bytes")
            sniffer.finish()
            return self._finish(part, hashers, digests, offset + received, received, offset)

    def _stream(
        self,
        r: requests.Response,
        part: Path,
        offset: int,
        hashers: dict[str, Any],
        on_bytes: ByteCounter | None,
        what: str,
        sniffer: _Sniffer,
        encoding: str,
    ) -> int:
        try:
            return self._pump(
                _body_reader(r, encoding), part, offset, hashers, on_bytes, what, sniffer, watch_rate=True
            )
        except _Cut as exc:
            cause = exc.__cause__
            if _is_timeout(cause):
                raise Retry(
                    f"no data for {self.idle_timeout:g} s after {offset + exc.received} bytes (the server stalled)"
                ) from None
            raise Retry(f"connection cut after {offset + exc.received} bytes: {first_line(cause or exc)}") from None

    def _pump(
        self,
        read_into: Callable[[bytearray], int],
        part: Path,
        offset: int,
        hashers: dict[str, Any],
        on_bytes: ByteCounter | None,
        what: str,
        sniffer: _Sniffer | None = None,
        watch_rate: bool = False,
    ) -> int:
        """Read with `read_into` until it gives nothing, into `part` from `offset`, feeding the hashers;
        synced to disk before returning. A transport failure while reading becomes `_Cut`. `sniffer` sees
        the first bytes before they are written; `watch_rate` ends a body slower than `min_rate`."""
        received = 0
        window_start, window_bytes = time.monotonic(), 0
        if sniffer is not None:
            sniffer.feed(b"")  # a resumed part may already hold enough to judge
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
                        if sniffer is not None and not sniffer.done:
                            try:
                                sniffer.feed(bytes(buf[: min(n, SNIFF_BYTES)]))
                            except _Implausible:
                                sink.give_back(buf)
                                raise
                        sink.put(buf, n)
                        received += n
                        if on_bytes:
                            on_bytes(n)
                        if watch_rate:
                            window_bytes += n
                            elapsed = time.monotonic() - window_start
                            if elapsed >= self.rate_window:
                                if window_bytes < self.min_rate * elapsed:
                                    raise Retry(
                                        f"the body trickled in at {window_bytes / elapsed:.0f} bytes/s over "
                                        f"{elapsed:.0f} s after {offset + received} bytes (the minimum is "
                                        f"{self.min_rate:g} bytes/s)"
                                    )
                                window_start, window_bytes = time.monotonic(), 0
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
    An error in this stage (a full disk) is raised in the receiving thread when the stage closes.

    Buffers come from a pool shared by all downloads and are made only when the receiving side runs out:
    a 4 KiB file uses one, taken from the pool, instead of zero-filling `buffers` MiB and dropping them."""

    # Buffers handed back by finished downloads (at most 16 of CHUNK bytes kept), shared by all threads.
    _pool: queue.LifoQueue[bytearray] = queue.LifoQueue(maxsize=16)

    def __init__(self, f: Any, updates: list[Callable[[Any], None]], buffers: int = 4) -> None:
        self._f = f
        self._updates = updates
        self._filled: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._unmade = buffers  # buffers this download may still take before it waits for one to come back
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hash-write", daemon=True)

    def __enter__(self) -> _HashWriter:
        self._thread.start()
        return self

    def free_buffer(self) -> bytearray:
        if self._error is not None:
            raise self._error
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        if self._unmade:
            self._unmade -= 1
            try:
                return _HashWriter._pool.get_nowait()
            except queue.Empty:
                return bytearray(CHUNK)
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
        # The thread has stopped, so every buffer given back is in _free: the next download reuses them.
        while True:
            try:
                _HashWriter._pool.put_nowait(self._free.get_nowait())
            except (queue.Empty, queue.Full):  # all pooled, or the pool holds enough: the rest is freed
                break
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


def _body_reader(r: requests.Response, encoding: str) -> Callable[[bytearray], int]:
    """A readinto over the body that returns as soon as some bytes arrived (so the rate watch sees a
    trickle), decoding a Content-Encoding the server applied although asked not to."""
    if encoding:
        raw = r.raw

        def decoded(buf: bytearray) -> int:
            data = raw.read1(len(buf), decode_content=True)
            buf[: len(data)] = data
            return len(data)

        return decoded
    # http.client's read1 is one receive at most; urllib3's wrappers copy each chunk twice over, which
    # made a 1 GiB download 1.5-2x slower. Fall back to urllib3 where its internals differ.
    fp = getattr(r.raw, "_fp", None)
    if isinstance(fp, http.client.HTTPResponse):
        plain = fp

        def direct(buf: bytearray) -> int:
            data = plain.read1(len(buf))
            buf[: len(data)] = data
            return len(data)

        return direct

    def fallback(buf: bytearray) -> int:
        data = r.raw.read1(len(buf), decode_content=False)
        buf[: len(data)] = data
        return len(data)

    return fallback


def _content_encoding(r: requests.Response) -> str:
    """The Content-Encoding the body is in ("" for none), lower-cased."""
    value = r.headers.get("Content-Encoding", "").strip().lower()
    return "" if value == "identity" else value


def _decodable(encoding: str) -> bool:
    return all(e.strip() in _DECODABLE for e in encoding.split(",") if e.strip())


def _is_timeout(exc: BaseException | None) -> bool:
    """Whether a read failed because nothing arrived in time (urllib3 wraps the socket's timeout)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, TimeoutError | socket.timeout | urllib3.exceptions.TimeoutError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _rehash_part(part: Path, hashers: object) -> tuple[int, bytes]:
    """Feed an existing part to the hashers (hash state cannot be saved between runs); its size and its
    first bytes (for the plausibility check, which then needs no second read)."""
    size = 0
    head = b""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(part, "rb") as f:
        while n := f.readinto(buf):
            for h in hashers:  # type: ignore[attr-defined]
                h.update(view[:n])
            if size == 0:
                head = bytes(view[: min(n, SNIFF_BYTES)])
            size += n
    return size, head


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".meta")


def _discard(part: Path) -> None:
    """Forget a partial download: its bytes and what was recorded about the file they came from."""
    part.unlink(missing_ok=True)
    _meta_path(part).unlink(missing_ok=True)


@dataclass(frozen=True)
class _PartMeta:
    """What the server said about the file when its `.part` was started."""

    etag: str | None
    last_modified: str | None
    size: int | None

    @property
    def validator(self) -> str | None:
        """What If-Range sends: a strong ETag, else the date (a weak ETag may not be used there)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


def _read_meta(part: Path) -> _PartMeta | None:
    try:
        data = json.loads(_meta_path(part).read_text())
        size = data.get("size")
        return _PartMeta(
            _str_or_none(data.get("etag")),
            _str_or_none(data.get("last_modified")),
            size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        )
    except (OSError, ValueError, AttributeError):
        return None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _record_meta(part: Path, r: requests.Response, encoding: str) -> _PartMeta | None:
    """Note, beside a part started from byte 0, how to recognise the same file when resuming. Nothing is
    recorded (and an old record is dropped) when the server gave no validator: that part is not resumed."""
    length = r.headers.get("Content-Length", "")
    meta = _PartMeta(
        _str_or_none(r.headers.get("ETag")),
        _str_or_none(r.headers.get("Last-Modified")),
        int(length) if length.isdigit() and not encoding else None,
    )
    path = _meta_path(part)
    if meta.validator is None or encoding:
        path.unlink(missing_ok=True)
        return None
    write_atomic(path, json.dumps({"etag": meta.etag, "last_modified": meta.last_modified, "size": meta.size}).encode())
    return meta


def _resume_matches(r: requests.Response, offset: int, meta: _PartMeta | None, encoding: str) -> bool:
    """Whether a 206 is the rest of the file the part holds the start of: its range starts where the part
    ends, runs to the end of a file of the recorded size, and comes from the same version of the file."""
    if encoding:
        return False  # a range of an encoded body is not a range of the file
    parsed = _parse_content_range(r.headers.get("Content-Range", ""))
    if parsed is None:
        return False
    start, end, total = parsed
    if start != offset or (total is not None and end != total - 1):
        return False
    if meta is None:
        return True  # an older part, kept because a digest will check the whole file
    if meta.size is not None and total != meta.size:
        return False
    etag, modified = r.headers.get("ETag"), r.headers.get("Last-Modified")
    if meta.etag and etag and etag != meta.etag:
        return False
    return not (meta.last_modified and modified and modified != meta.last_modified)


def _parse_content_range(value: str) -> tuple[int, int, int | None] | None:
    # "bytes 100-999/1000" (the total may be "*")
    try:
        unit, rest = value.strip().split(" ", 1)
        span, total = rest.split("/", 1)
        first, last = span.split("-", 1)
        start, end = int(first), int(last)
    except ValueError:
        return None
    if unit.lower() != "bytes" or end < start:
        return None
    return start, end, int(total) if total.isdigit() else None


def _total_from_content_range(content_range: str) -> int | None:
    try:
        return int(content_range.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None


class _Implausible(Exception):
    """The body cannot be the file asked for; `reason` says what the server did instead."""

    def __init__(self, reason: str, kind: str | None = None, page: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.page = page

    def error(self, what: str, url: str) -> UpstreamFailed:
        where = redact(url)
        if self.page:
            return UpstreamFailed(
                f"{what}: the server sent a web page, not {self.kind}: log in / check the mirror "
                f"({where} answered with HTML). Nothing was stored.",
                "A mirror or proxy behind a login, or a captive portal, answers with a page: log in (put the "
                "credentials in ~/.netrc, never in the manifest), or check the URL and `mirrors:`.",
            )
        if self.kind:
            return UpstreamFailed(
                f"{what}: {where} sent something that is not {self.kind} ({self.reason}). Nothing was stored.",
                "Check the URL and `mirrors:`. If this really is the file, pin its sha256 in the manifest: "
                "a pinned digest is trusted over what the file name suggests.",
            )
        return UpstreamFailed(
            f"{what}: {where} {self.reason}. Nothing was stored.",
            "Check the URL and `mirrors:`; a proxy between here and the server may be re-encoding downloads.",
        )


class _Sniffer:
    """Judges the first `SNIFF_BYTES` of a body (see `plausible`) as they stream, before they are kept."""

    def __init__(self, name: str, content_type: str | None, *, check_magic: bool, head: bytes = b"") -> None:
        self.name = name
        self.content_type = content_type
        self.check_magic = check_magic
        self.head = head[:SNIFF_BYTES]
        self.done = False

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        self.head += data[: SNIFF_BYTES - len(self.head)]
        if len(self.head) >= SNIFF_BYTES:
            self._judge(complete=False)

    def finish(self) -> None:
        """The body is complete: judge what there is, however short."""
        if not self.done:
            self._judge(complete=True)

    def _judge(self, complete: bool) -> None:
        self.done = True
        verdict = implausible(self.name, self.head, self.content_type, check_magic=self.check_magic, complete=complete)
        if verdict is not None:
            kind, page = verdict
            raise _Implausible(f"it starts with {self.head[:8].hex(' ')}", kind, page)
