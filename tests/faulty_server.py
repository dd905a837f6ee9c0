"""A `LocalHTTPServer` that misbehaves on request, per URL path, for downloader tests.

Faults are set and cleared at runtime from the test thread while handler threads read them, so every
access goes through one lock, and each request takes a snapshot of what applies to it up front: a
fault changed mid-body never half-applies.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from airgap.localserver import LocalHTTPServer, StaticFileHandler

__all__ = ["FaultyHTTPServer", "RequestFaults"]


@dataclass
class _Counted:
    """A fault that applies to the next `times` requests (forever when times is None)."""

    value: int
    times: int | None
    head: bool = False
    retry_after: str | None = None

    def applies(self, method: str) -> bool:
        return method == "GET" or (self.head and method == "HEAD")


@dataclass
class _PathFaults:
    fail: _Counted | None = None
    drop: _Counted | None = None
    ignore_range: bool = False
    corrupt: set[int] = field(default_factory=set)
    bytes_per_second: float | None = None
    not_found: bool = False
    page: tuple[bytes, str] | None = None
    gzip: str | None = None
    extra_length: int = 0
    ignore_if_range: bool = False
    content_range_shift: tuple[int, int] = (0, 0)
    stall_after: int | None = None


@dataclass(frozen=True)
class RequestFaults:
    """What one request gets, decided once before its headers are sent."""

    status: int | None = None
    retry_after: str | None = None  # the Retry-After header sent with `status`
    drop_after: int | None = None
    ignore_range: bool = False
    corrupt: frozenset[int] = frozenset()
    bytes_per_second: float | None = None
    extra_length: int = 0  # added to the Content-Length announced; the body stays the file's
    ignore_if_range: bool = False
    content_range_shift: tuple[int, int] = (0, 0)  # added to the (start, total) a 206 announces
    stall_after: int | None = None

    @property
    def touches_body(self) -> bool:
        return (
            self.drop_after is not None
            or bool(self.corrupt)
            or self.bytes_per_second is not None
            or self.stall_after is not None
        )


def _consume(fault: _Counted | None, method: str) -> tuple[_Counted | None, _Counted | None]:
    """The fault if it fires for this request, and what is left of it afterwards."""
    if fault is None or not fault.applies(method):
        return None, fault
    if fault.times is None:
        return fault, fault
    fault.times -= 1
    return fault, (fault if fault.times > 0 else None)


class FaultyHandler(StaticFileHandler):
    faults: RequestFaults

    def plan_response(self, path: str, file: Path, size: int) -> int | None:
        self.faults = cast(FaultyHTTPServer, self.owner).take_faults(path, self.command)
        if self.faults.ignore_range:
            self.honour_range = False
        if self.faults.ignore_if_range:
            # A server (or cache) that answers a Range as if the file never changed.
            del self.headers["If-Range"]
        return self.faults.status

    def send_header(self, keyword: str, value: str) -> None:
        fx = getattr(self, "faults", None)
        if fx is not None and keyword == "Content-Length" and fx.extra_length:
            value = str(int(value) + fx.extra_length)
        if fx is not None and keyword == "Content-Range" and fx.content_range_shift != (0, 0):
            span, total = value.split(" ", 1)[1].split("/")
            first, last = (int(x) for x in span.split("-"))
            start, grow = fx.content_range_shift
            value = f"bytes {first + start}-{last + start}/{int(total) + grow}"
        super().send_header(keyword, value)

    def _respond(self, path: str, range_header: str | None) -> None:
        special = cast(FaultyHTTPServer, self.owner).special(path)
        if special is None:
            super()._respond(path, range_header)
            return
        file = self._resolve(path)
        page, gz = special
        if page is not None:
            body, content_type = page
            extra: list[tuple[str, str]] = []
        elif file is not None and gz:
            # The whole file, gzip-encoded on the way although the client asked for identity.
            body, content_type = gzip.compress(file.read_bytes(), mtime=0), "application/octet-stream"
            extra = [("Content-Encoding", gz)]
        else:
            self.send_short(404, "not found")
            return
        self.faults = RequestFaults()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command == "GET":
            self.write_body(body)

    # One handler serves every request of a kept-alive connection: no request may see the last one's faults.
    def do_GET(self) -> None:
        self.faults = RequestFaults()
        super().do_GET()

    def do_HEAD(self) -> None:
        self.faults = RequestFaults()
        super().do_HEAD()

    def send_short(self, status: int, text: str) -> None:
        retry_after = self.faults.retry_after
        if retry_after is None:
            super().send_short(status, text)
            return
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Retry-After", retry_after)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.write_body(body)

    def send_body(self, f: BinaryIO, offset: int, length: int) -> None:
        fx = self.faults
        if fx.extra_length:
            # The promise is larger than the body: the base class sees the full body sent, so the
            # connection must be closed here for the client to see the body end early.
            self.close_connection = True
        if not fx.touches_body:
            super().send_body(f, offset, length)
            return
        if fx.stall_after is not None:
            f.seek(offset)
            self.write_body(f.read(min(length, fx.stall_after)))
            self.wfile.flush()
            # Stalled for good: only the server's stop ends it, long after any client deadline.
            cast(FaultyHTTPServer, self.owner).stopping.wait()
            self.close_connection = True
            return
        # A cut is just a shorter body: the base class sees fewer bytes than Content-Length promised
        # and closes the connection, which the client reads as an incomplete response.
        limit = length if fx.drop_after is None else min(length, fx.drop_after)
        if not fx.corrupt and fx.bytes_per_second is None:
            super().send_body(f, offset, limit)
            return
        self._slow_copy(f, offset, limit, fx)

    def _slow_copy(self, f: BinaryIO, offset: int, length: int, fx: RequestFaults) -> None:
        stopping = cast(FaultyHTTPServer, self.owner).stopping
        bps = fx.bytes_per_second
        # About 20 writes a second keeps the rate smooth without a syscall per byte.
        chunk = 64 << 10 if bps is None else max(1, min(64 << 10, int(bps / 20)))
        f.seek(offset)
        pos, end = offset, offset + length
        while pos < end:
            data = f.read(min(chunk, end - pos))
            if not data:
                return
            hits = [o - pos for o in fx.corrupt if pos <= o < pos + len(data)]
            if hits:
                buf = bytearray(data)
                for i in hits:
                    buf[i] ^= 0xFF
                data = bytes(buf)
            self.write_body(data)
            pos += len(data)
            # Waiting on the stop event rather than sleeping lets server.stop() end a throttled body
            # at once instead of after the whole slow transfer.
            if bps is not None and pos < end and stopping.wait(len(data) / bps):
                return


class FaultyHTTPServer(LocalHTTPServer):
    """`LocalHTTPServer` with per-path faults (paths as the server sees them, e.g. "/nvidia/x.run")."""

    handler_class = FaultyHandler

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(root, host, port)
        self._faults_lock = threading.Lock()
        self._faults: dict[str, _PathFaults] = {}
        self.stopping = threading.Event()

    def _edit(self, path: str) -> _PathFaults:
        # Caller holds _faults_lock.
        return self._faults.setdefault(path, _PathFaults())

    def fail(
        self, path: str, status: int = 500, times: int | None = 1, head: bool = False, retry_after: str | None = None
    ) -> None:
        """The next `times` GETs (and HEADs if `head`) of `path` answer `status`; None: every one. With
        `retry_after`, the answer carries that `Retry-After` header (seconds or an HTTP date)."""
        with self._faults_lock:
            self._edit(path).fail = _Counted(status, times, head, retry_after)

    def drop_after(self, path: str, nbytes: int, times: int | None = 1) -> None:
        """The next `times` GETs of `path` send normal headers, then close after `nbytes` body bytes."""
        with self._faults_lock:
            self._edit(path).drop = _Counted(nbytes, times)

    def ignore_range(self, path: str) -> None:
        """Answer 200 with the whole file even when a Range is asked for."""
        with self._faults_lock:
            self._edit(path).ignore_range = True

    def corrupt(self, path: str, offset: int = 0) -> None:
        """Serve `path` with the byte at file offset `offset` XORed with 0xFF (calls accumulate)."""
        with self._faults_lock:
            self._edit(path).corrupt.add(offset)

    def throttle(self, path: str, bytes_per_second: float) -> None:
        """Send the body of `path` at about `bytes_per_second`."""
        if bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive")
        with self._faults_lock:
            self._edit(path).bytes_per_second = bytes_per_second

    def not_found(self, path: str) -> None:
        """Answer 404 for `path` (GET and HEAD) although the file exists."""
        with self._faults_lock:
            self._edit(path).not_found = True

    def serve_page(self, path: str, body: bytes, content_type: str = "text/html; charset=utf-8") -> None:
        """Answer every GET and HEAD of `path` with 200 and `body` (a login page, a captive portal)."""
        with self._faults_lock:
            self._edit(path).page = (body, content_type)

    def gzip_encode(self, path: str, header: str = "gzip") -> None:
        """Send `path` whole, gzipped, with `Content-Encoding: HEADER` whatever Accept-Encoding says (Range
        ignored). Another `header` than gzip labels the body with an encoding it is not in."""
        with self._faults_lock:
            self._edit(path).gzip = header

    def lie_length(self, path: str, extra: int) -> None:
        """Announce a Content-Length `extra` bytes longer than the body sent, then close the connection."""
        with self._faults_lock:
            self._edit(path).extra_length = extra

    def ignore_if_range(self, path: str) -> None:
        """Honour Range even when If-Range no longer matches: the rest of the *new* file, as a 206."""
        with self._faults_lock:
            self._edit(path).ignore_if_range = True

    def shift_content_range(self, path: str, start: int = 0, total: int = 0) -> None:
        """Announce a 206's Content-Range moved by `start` and with a total off by `total` (bytes sent
        are those of the range asked for)."""
        with self._faults_lock:
            self._edit(path).content_range_shift = (start, total)

    def stall_after(self, path: str, nbytes: int) -> None:
        """Send the headers and `nbytes` of the body of `path`, then nothing until the server stops."""
        with self._faults_lock:
            self._edit(path).stall_after = nbytes

    def special(self, path: str) -> tuple[tuple[bytes, str] | None, str | None] | None:
        """The page or encoding `path` is answered with instead of its file, if any."""
        with self._faults_lock:
            pf = self._faults.get(path)
            if pf is None or (pf.page is None and pf.gzip is None):
                return None
            return pf.page, pf.gzip

    def clear(self) -> None:
        with self._faults_lock:
            self._faults.clear()

    def take_faults(self, path: str, method: str) -> RequestFaults:
        """Decide what this request gets, using up one of each counted fault that fires."""
        with self._faults_lock:
            pf = self._faults.get(path)
            if pf is None:
                return RequestFaults()
            if pf.not_found:
                return RequestFaults(status=404)
            failed, pf.fail = _consume(pf.fail, method)
            if failed is not None:
                # A failed request never reaches the body, so it must not use up a drop as well.
                return RequestFaults(status=failed.value, retry_after=failed.retry_after)
            drop, pf.drop = _consume(pf.drop, method) if method == "GET" else (None, pf.drop)
            return RequestFaults(
                drop_after=drop.value if drop is not None else None,
                ignore_range=pf.ignore_range,
                corrupt=frozenset(pf.corrupt),
                bytes_per_second=pf.bytes_per_second,
                extra_length=pf.extra_length,
                ignore_if_range=pf.ignore_if_range,
                content_range_shift=pf.content_range_shift,
                stall_after=pf.stall_after,
            )

    def start(self) -> FaultyHTTPServer:
        self.stopping.clear()
        return super().start()

    def stop(self) -> None:
        self.stopping.set()
        super().stop()
