"""A small static HTTP/1.1 file server on loopback, with Range support.

It stands in for NVIDIA's, Docker's and other download hosts in airgap's offline demo and in the test
suite. It is deliberately boring: files under one root, GET and HEAD, one byte range at a time, bodies
sent with sendfile(2) so a downloader can be benchmarked against curl on it.

Subclasses inject faults through two hooks of `StaticFileHandler`: `plan_response` (decide, before any
header is sent, to answer with another status or to ignore Range) and `send_body` (write the body: cut
it short, slow it down, alter bytes). The base class carries no fault logic itself.
"""

from __future__ import annotations

import errno
import io
import os
import selectors
import socket
import sys
import threading
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TypeVar
from urllib.parse import unquote, urlsplit

__all__ = ["LocalHTTPServer", "RequestRecord", "StaticFileHandler"]

# Large enough that a 1 GiB body needs few syscalls, small enough that the byte counter moves while a
# big body is in flight (tests read it to see how far a cut or throttled download got).
_SENDFILE_CHUNK = 64 << 20
_COPY_CHUNK = 1 << 20

# serve_forever only notices shutdown() between polls; the default half second would make every
# test that stops a server pay for it, and a wake-up every 20 ms costs nothing measurable.
_POLL_INTERVAL = 0.02

# errno values meaning "sendfile cannot work on this pair of descriptors"; the copy loop can.
_NO_SENDFILE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK, errno.ENOTSUP}

# The ways a client hanging up shows itself on the server side; none of them is the server's fault.
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


@dataclass(frozen=True)
class RequestRecord:
    """One answered request, as the tests see it."""

    method: str
    path: str
    range: str | None
    status: int
    bytes_sent: int


@dataclass(frozen=True)
class _ByteRange:
    """The outcome of reading a Range header against a file of `size` bytes."""

    start: int
    end: int  # inclusive, as in Content-Range
    satisfiable: bool = True


def parse_range(header: str, size: int) -> _ByteRange | None:
    """Read a single `bytes=` range; None means "ignore Range and send the whole file".

    RFC 9110 lets a server ignore a Range it does not understand or does not want to split into a
    multipart answer, so malformed and multi-range headers fall back to 200 rather than 400.
    """
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    spec = spec.strip()
    if "," in spec:
        return None
    first, dash, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not dash or (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return _ByteRange(0, 0, satisfiable=False)
        return _ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return _ByteRange(0, 0, satisfiable=False)
    return _ByteRange(start, min(end, size - 1))


class StaticFileHandler(BaseHTTPRequestHandler):
    """Serves files below the owning `LocalHTTPServer`'s root; override the hooks to misbehave."""

    protocol_version = "HTTP/1.1"
    server_version = "airgap-localserver"
    sys_version = ""
    # Without a timeout an idle keep-alive client would pin a thread for the life of the process.
    timeout = 60

    server: _Server

    # Per-request state; reset at the start of every request because one handler instance serves all
    # the requests of a keep-alive connection.
    honour_range: bool
    body_bytes_sent: int
    status_sent: int
    url_path: str

    @property
    def owner(self) -> LocalHTTPServer:
        return self.server.owner

    # -- hooks for subclasses ------------------------------------------------------------------------

    def plan_response(self, path: str, file: Path, size: int) -> int | None:
        """Called once per request for an existing file, before any header is written.

        Return an HTTP status to answer with instead of the file (a short text body goes with it), or
        None to serve the file. A subclass may also set `self.honour_range = False` here.
        """
        return None

    def send_body(self, f: BinaryIO, offset: int, length: int) -> None:
        """Write `length` bytes of `f` from `offset` to the client; the headers are already sent.

        Writing fewer bytes is allowed (the base class then closes the connection, which is what a
        cut connection looks like to the client). Count what is written through `write_body` or by
        adding to `self.body_bytes_sent`.
        """
        if length > 0 and not self.sendfile_body(f, offset, length):
            self.copy_body(f, offset, length)

    # -- body writers, usable from overrides ---------------------------------------------------------

    def write_body(self, data: bytes) -> None:
        self.wfile.write(data)
        self.body_bytes_sent += len(data)

    def copy_body(self, f: BinaryIO, offset: int, length: int, chunk: int = _COPY_CHUNK) -> None:
        f.seek(offset)
        remaining = length
        while remaining > 0:
            data = f.read(min(chunk, remaining))
            if not data:
                return  # the file shrank under us; the short body makes the client notice
            self.write_body(data)
            remaining -= len(data)

    def sendfile_body(self, f: BinaryIO, offset: int, length: int) -> bool:
        """Zero-copy send; False when sendfile cannot be used here at all (then nothing was sent)."""
        sendfile = getattr(os, "sendfile", None)
        if sendfile is None:
            return False
        try:
            in_fd = f.fileno()
        except (AttributeError, io.UnsupportedOperation):
            return False
        sock: socket.socket = self.connection
        out_fd = sock.fileno()
        # A socket with a timeout is non-blocking underneath, so sendfile can return EAGAIN and we
        # must wait for room ourselves, honouring the same timeout.
        timeout = sock.gettimeout()
        pos, end = offset, offset + length
        with selectors.DefaultSelector() as sel:
            sel.register(out_fd, selectors.EVENT_WRITE)
            while pos < end:
                try:
                    n = sendfile(out_fd, in_fd, pos, min(end - pos, _SENDFILE_CHUNK))
                except BlockingIOError:
                    if not sel.select(timeout):
                        raise TimeoutError("client stopped reading") from None
                    continue
                except OSError as exc:
                    if pos == offset and exc.errno in _NO_SENDFILE:
                        return False
                    raise
                if n == 0:
                    break  # end of file before `end`: the file shrank
                pos += n
                self.body_bytes_sent += n
        return True

    # -- request handling ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        # Per-request lines on stderr drown test output and the demo; `LocalHTTPServer.requests` keeps
        # the record instead.
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        # Remembered so the request record holds the status the client got even when the body
        # write fails half-way.
        self.status_sent = code
        super().send_response(code, message)

    def _url_path(self) -> str:
        return unquote(urlsplit(self.path).path)

    def _resolve(self, url_path: str) -> Path | None:
        root = self.owner.root
        parts = [p for p in url_path.split("/") if p]
        if not parts or any(p in (".", "..") or "\0" in p or "\\" in p for p in parts):
            return None
        try:
            candidate = root.joinpath(*parts).resolve()
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop, before Python 3.13
            return None
        # Symlinks could still lead out of the root; resolving first makes that check honest.
        if not candidate.is_relative_to(root) or not candidate.is_file():
            return None
        return candidate

    def _serve(self) -> None:
        self.honour_range = True
        self.body_bytes_sent = 0
        self.status_sent = 0
        self.url_path = path = self._url_path()
        range_header = self.headers.get("Range")
        self.owner._begin(self)
        try:
            self._respond(path, range_header)
        except _DISCONNECTS:
            self.close_connection = True
        finally:
            self.owner._record(
                self, RequestRecord(self.command, path, range_header, self.status_sent, self.body_bytes_sent)
            )

    def _respond(self, path: str, range_header: str | None) -> None:
        file = self._resolve(path)
        if file is None:
            self.send_short(404, "not found")
            return
        try:
            f = file.open("rb")
        except OSError:
            self.send_short(404, "not found")
            return
        with f:
            st = os.fstat(f.fileno())
            size = st.st_size
            override = self.plan_response(path, file, size)
            if override is not None:
                self.send_short(override, f"status {override}")
                return

            etag = f'"{size:x}-{st.st_mtime_ns:x}"'
            last_modified = formatdate(st.st_mtime, usegmt=True)
            byte_range = None
            # RFC 9110: Range only applies to GET, and If-Range is a strong comparison, so a changed
            # file (new ETag or date) gets the whole new body instead of a splice of old and new.
            if range_header and self.command == "GET" and self.honour_range:
                if_range = self.headers.get("If-Range")
                if if_range is None or if_range.strip() in (etag, last_modified):
                    byte_range = parse_range(range_header, size)

            if byte_range is not None and not byte_range.satisfiable:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self._common_headers(etag, last_modified)
                self.end_headers()
                return

            if byte_range is None:
                status, offset, length = 200, 0, size
            else:
                status, offset = 206, byte_range.start
                length = byte_range.end - byte_range.start + 1
            self.send_response(status)
            if status == 206:
                self.send_header("Content-Range", f"bytes {offset}-{offset + length - 1}/{size}")
            self.send_header("Content-Length", str(length))
            self._common_headers(etag, last_modified)
            self.end_headers()
            if self.command == "GET":
                self.send_body(f, offset, length)
                if self.body_bytes_sent < length:
                    # The Content-Length promise is broken; keeping the connection would make the
                    # client read the next response as the rest of this body.
                    self.close_connection = True

    def _common_headers(self, etag: str, last_modified: str) -> None:
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)

    def send_short(self, status: int, text: str) -> None:
        """Answer `status` with a small text body (none for HEAD)."""
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.write_body(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Parallel downloaders open many connections at once; the default backlog of 5 drops some.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[StaticFileHandler], owner: LocalHTTPServer):
        self.owner = owner
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], _DISCONNECTS):
            return  # clients hang up mid-request all the time in tests; no traceback for that
        super().handle_error(request, client_address)  # type: ignore[arg-type]


_S = TypeVar("_S", bound="LocalHTTPServer")


class LocalHTTPServer:
    """Serve `root` over HTTP on loopback in a background thread.

    >>> with LocalHTTPServer(Path("tree")) as srv:
    ...     requests.get(srv.url + "/a/b.bin")
    """

    handler_class: type[StaticFileHandler] = StaticFileHandler

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        # Resolved once so the per-request escape check compares like with like.
        self.root = Path(root).resolve()
        self.host = host
        self.port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition(threading.Lock())
        self._records: list[RequestRecord] = []
        self._active: set[StaticFileHandler] = set()
        self.settle_timeout = 1.0

    @property
    def url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def start(self: _S) -> _S:
        if self._httpd is not None:
            return self
        self._httpd = _Server((self.host, self.port), self.handler_class, self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"localserver:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- instrumentation -----------------------------------------------------------------------------

    def _begin(self, handler: StaticFileHandler) -> None:
        with self._changed:
            self._active.add(handler)

    def _record(self, handler: StaticFileHandler, record: RequestRecord) -> None:
        with self._changed:
            self._active.discard(handler)
            self._records.append(record)
            self._changed.notify_all()

    def _settle(self) -> None:
        # A client can hold its whole response before the handler thread gets to file the record,
        # so a test asserting right after a download would race it; waiting briefly for responses in
        # flight removes the race without stalling on a client that really is stuck. Caller holds
        # the lock.
        self._changed.wait_for(lambda: not self._active, timeout=self.settle_timeout)

    @property
    def requests(self) -> list[RequestRecord]:
        """Finished requests, oldest first (waits up to `settle_timeout` for those in flight)."""
        with self._changed:
            self._settle()
            return list(self._records)

    def bytes_sent(self, path_suffix: str | None = None) -> int:
        """Body bytes written, over all requests or those whose path ends with `path_suffix`.

        Counts responses still in flight after `settle_timeout` up to where they have got.
        """
        with self._changed:
            self._settle()
            done = [(r.path, r.bytes_sent) for r in self._records]
            live = [(h.url_path, h.body_bytes_sent) for h in self._active]
        return sum(n for path, n in done + live if path_suffix is None or path.endswith(path_suffix))

    def reset_stats(self) -> None:
        with self._changed:
            self._records.clear()
