"""`airgap serve`: the depot's services over HTTP, read-only, straight from a verified bundle.

    /                      what is served here
    /simple/...            the Python index (pyindex.py)
    /api/models/...        the Hugging Face API (hub.py), and /{owner}/{name}/resolve/{rev}/{path}
    /files/...             the plain files (files.py)
    /bundle/...            the bundle's artifacts and tool/ by path, for `fleet install --from` (files.py)

A request's path is split into segments and looked up in the services' tables: it is never joined to the
bundle's directory, so `..`, an encoded `%2e%2e` or a link in the bundle cannot reach another file. A
segment `.` or `..` is answered 400 all the same, so a probe is visible in the log as one. GET and HEAD
answer one byte range (`Range: bytes=a-b`, 206; a range past the end, 416); POST only paths-info. One
access log line per request goes to stderr.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TextIO
from urllib.parse import parse_qs, unquote, urlsplit

from airgap import __version__
from airgap.depot.content import Blob, BundleReader, Doc
from airgap.depot.files import BundleShelf, FileShelf
from airgap.depot.hub import JSON, Hub, HubError
from airgap.depot.pyindex import PyIndex
from airgap.errors import AirgapError
from airgap.localserver import parse_range

_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
_MAX_POST = 1 << 20  # paths-info asks for a list of paths; nothing larger is read


@dataclass
class Depot:
    """The services of one verified bundle."""

    reader: BundleReader
    pyindex: PyIndex
    hub: Hub
    files: FileShelf
    bundle: BundleShelf

    @classmethod
    def of(cls, reader: BundleReader) -> Depot:
        lock = reader.lock
        return cls(reader, PyIndex.of(lock), Hub.of(lock), FileShelf.of(lock), BundleShelf.of(lock))

    def summary(self) -> list[str]:
        lines = [f"python index  /simple/      {self.pyindex.wheels} wheels of {len(self.pyindex.projects)} projects"]
        for m in self.hub.models.values():
            lines.append(f"model         /{m.repo}   {m.revision} = {m.commit[:12]}, {len(m.files)} files")
        if not self.hub.models:
            lines.append("hugging face  /api/models/  no model in this bundle")
        lines.append(f"files         /files/       {len(self.files.files)} files and SHA256SUMS")
        lines.append(f"bundle        /bundle/      {len(self.bundle.files)} files, for `airgap fleet install --from`")
        return lines

    def home(self) -> bytes:
        items = "".join(f"<li>{line}</li>\n" for line in self.summary())
        return (
            f"<!DOCTYPE html>\n<html><head><title>airgap depot: {self.reader.lock.name}</title></head>\n<body>"
            f"<h1>airgap depot: {self.reader.lock.name}</h1>\n<ul>\n{items}</ul>\n</body></html>\n"
        ).encode()

    def answer(
        self, method: str, segments: list[str], query: dict[str, list[str]], accept: str, body: bytes
    ) -> Doc | Blob | str | None:
        """Doc or Blob; a str is a redirect; None is 404. Raises HubError for the hub's own errors."""
        head = segments[0] if segments else ""
        rest = segments[1:]
        if method == "POST":
            if head == "api" and len(rest) == 5 and rest[0] == "models" and rest[3] == "paths-info":
                paths = _posted_paths(body)
                return _json(self.hub.paths_info(f"{rest[1]}/{rest[2]}", rest[4], paths))
            return None
        if segments == [""]:
            return Doc(self.home(), "text/html; charset=utf-8")
        if head == "simple":
            return self.pyindex.answer(rest, accept)
        if head == "files":
            return self.files.answer(rest)
        if head == "bundle":
            return self.bundle.answer(rest)
        if head == "api" and len(rest) >= 3 and rest[0] == "models":
            repo, more = f"{rest[1]}/{rest[2]}", rest[3:]
            if not more:
                return _json(self.hub.info(repo, self.hub.default_revision(repo), _flag(query, "blobs")))
            if more[0] == "revision" and len(more) == 2:
                return _json(self.hub.info(repo, more[1], _flag(query, "blobs")))
            if more[0] == "tree" and len(more) >= 2:
                base = "/".join(more[2:]).strip("/")
                return _json(self.hub.tree(repo, more[1], base, _flag(query, "recursive")))
            return None
        if len(segments) >= 5 and segments[2] == "resolve":
            return self.hub.resolve(f"{segments[0]}/{segments[1]}", segments[3], "/".join(segments[4:]))
        return None


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() and c != '"' else f"\\x{ord(c):02x}" for c in text)


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[0].lower() in ("true", "1")


def _json(obj: object) -> Doc:
    return Doc(json.dumps(obj).encode(), JSON)


def _posted_paths(body: bytes) -> list[str]:
    text = body.decode("utf-8", errors="replace")
    if text.lstrip().startswith("{"):
        try:
            paths = json.loads(text).get("paths", [])
        except (ValueError, AttributeError):
            return []
        return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []
    return parse_qs(text).get("paths", [])


class DepotHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        depot: Depot,
        log: TextIO | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.depot = depot
        self.log = log if log is not None else sys.stderr
        self.tls = tls
        self._log_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = super().get_request()
        if self.tls is not None:
            # The handshake happens on the handler's thread, at its first read: a slow client does not hold
            # up the accept loop.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: object, client_address: object) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (*_DISCONNECTS, ssl.SSLError)):
            return  # a client hanging up, or speaking plain HTTP to TLS: not the depot's fault
        super().handle_error(request, client_address)  # type: ignore[arg-type]

    def access(self, line: str) -> None:
        with self._log_lock:
            print(line, file=self.log, flush=True)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{shown}:{port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"airgap-depot/{__version__}"
    sys_version = ""
    timeout = 60
    server: DepotHTTPServer

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request, written when it is over (with the bytes sent): see _handle

    def log_error(self, format: str, *args: object) -> None:
        self.server.access(f"{self.client_address[0]} - error: {_printable(format % args)}")

    def _handle(self) -> None:
        self._status = 0
        self._sent = 0
        self._note = ""
        try:
            self._dispatch()
        except _DISCONNECTS:
            self.close_connection = True
            self._note = self._note or "client hung up"
        finally:
            when = time.strftime("%d/%b/%Y:%H:%M:%S %z")
            note = f" ({self._note})" if self._note else ""
            # The request line is the client's: escaped, so that it cannot forge or break log lines.
            request = _printable(getattr(self, "requestline", ""))
            self.server.access(f'{self.client_address[0]} - - [{when}] "{request}" {self._status} {self._sent}{note}')

    def _dispatch(self) -> None:
        raw = urlsplit(self.path)
        body = b""
        if self.command == "POST":
            length_text = (self.headers.get("Content-Length") or "0").strip()
            length = int(length_text) if length_text.isdigit() else -1
            if not 0 <= length <= _MAX_POST:
                self.close_connection = True
                self._send_doc(413 if length > _MAX_POST else 400, Doc(b"bad request body\n", "text/plain"))
                return
            body = self.rfile.read(length)
        # Split before decoding: a client quotes a revision such as refs/pr/1 into one segment.
        segments = [unquote(s) for s in raw.path.split("/")[1:]] if raw.path.startswith("/") else []
        if not segments or any(s in (".", "..") or "\0" in s or "\\" in s for s in segments):
            self._send_doc(400, Doc(b"bad request path\n", "text/plain"))
            return
        try:
            answer = self.server.depot.answer(
                self.command, segments, parse_qs(raw.query), self.headers.get("Accept", ""), body
            )
        except HubError as e:
            self._send_doc(e.status, e.doc())
            return
        except AirgapError as e:
            self._note = e.message
            self._send_doc(500, Doc(f"{e.message}\n".encode(), "text/plain"))
            return
        if answer is None:
            self._send_doc(404, Doc(b"not found\n", "text/plain"))
        elif isinstance(answer, str):
            self._send_doc(301, Doc(b"", "text/plain", (("Location", answer),)))
        elif isinstance(answer, Doc):
            self._send_doc(200, answer)
        else:
            self._send_blob(answer)

    def _headers(self, status: int, content_type: str, length: int, extra: tuple[tuple[str, str], ...]) -> None:
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def _send_doc(self, status: int, doc: Doc) -> None:
        self._headers(status, doc.content_type, len(doc.body), doc.headers)
        if self.command != "HEAD" and doc.body:
            self.wfile.write(doc.body)
            self._sent += len(doc.body)

    def _send_blob(self, blob: Blob) -> None:
        size = blob.size
        extra = (*blob.headers, ("Accept-Ranges", "bytes"), ("Last-Modified", formatdate(0, usegmt=True)))
        if not any(k == "ETag" for k, _ in blob.headers):
            extra = (*extra, ("ETag", f'"{blob.art.sha256}"'))
        rng = self.headers.get("Range")
        byte_range = parse_range(rng, size) if rng and self.command in ("GET", "HEAD") else None
        if byte_range is not None and not byte_range.satisfiable:
            self._headers(416, "text/plain", 0, (*extra, ("Content-Range", f"bytes */{size}")))
            return
        start, end = (0, size - 1) if byte_range is None else (byte_range.start, byte_range.end)
        status = 200 if byte_range is None else 206
        if status == 206:
            extra = (*extra, ("Content-Range", f"bytes {start}-{end}/{size}"))
        chunks = self.server.depot.reader.chunks(blob.art, start, end) if size else iter(())
        try:
            # The first chunk before the headers: a file changed since verification is refused with a 500,
            # not started and cut.
            first = next(chunks, b"") if self.command != "HEAD" else b""
        except AirgapError as e:
            self._note = e.message
            self._send_doc(500, Doc(f"{e.message}\n".encode(), "text/plain"))
            return
        self._headers(status, blob.content_type, end - start + 1, extra)
        if self.command == "HEAD":
            return
        try:
            for chunk in _chained(first, chunks):
                self.wfile.write(chunk)
                self._sent += len(chunk)
        except AirgapError as e:
            # Mid-body: the bytes promised cannot be sent as the lock has them; the client sees a short body.
            self._note = e.message
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)


def _chained(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def serve(
    depot: Depot,
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None = None,
    ready: Callable[[DepotHTTPServer], None] | None = None,
    log: TextIO | None = None,
) -> None:
    """Serve until interrupted (KeyboardInterrupt, or a stop signal the caller turns into one)."""
    httpd = DepotHTTPServer((host, port), depot, log=log, tls=tls)
    try:
        if ready is not None:
            ready(httpd)
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx
