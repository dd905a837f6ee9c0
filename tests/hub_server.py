"""A local stand-in for the Hugging Face hub, speaking enough of its HTTP API for the real
`huggingface_hub` client (through `endpoint=` or HF_ENDPOINT) and for airgap's models layer.

What it serves, as huggingface.co does (huggingface_hub's hf_api.py, file_download.py and
utils/_http.py are the reference for what the client reads):

- `GET /api/models/{repo}[/revision/{rev}]` (`?blobs=true` adds size, blobId and lfs per sibling);
- `GET /api/models/{repo}/tree/{rev}[/{path}]`, `recursive`, paginated with a `Link: <...>; rel="next"`
  header once a page holds `page_size` entries (the hub pages at 1000);
- `POST /api/models/{repo}/paths-info/{rev}` (form field `paths`, repeated);
- `GET /api/models/{repo}/auth-check`;
- `HEAD`/`GET /{repo}/resolve/{rev}/{path}`: small (git) files are answered directly with the git blob
  id as ETag; LFS files with a 302 to a content-addressed "CDN" path carrying `X-Linked-Etag` (the
  sha256) and `X-Linked-Size`, as the hub redirects to its CDN. Both carry `X-Repo-Commit`. The CDN is
  reached under another host name (`localhost` instead of `127.0.0.1`), so a client that forwards the
  Authorization header across hosts, which requests and httpx must not do, is caught.
- errors with the hub's `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) and
  status codes: 401 for a repo that is missing or private when no token is sent, 404 otherwise; a gated
  repo's files are 401 without a token and 403 with a token that has no access, while its metadata stays
  public.

Faults for the tests: `corrupt` (wrong bytes for one file), `cut` (the connection drops once mid-body),
`fail` (an error status for the next requests to a path), and `gate`/`make_private` (a token is required).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, quote, unquote, urlsplit

from airgap.localserver import parse_range

__all__ = ["HubFile", "HubRepo", "HubRequest", "HubServer", "git_blob_id"]

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".msgpack", ".h5", ".model")


def git_blob_id(data: bytes) -> str:
    """Git's object id for a blob: sha1 over a "blob <size>\\0" header and the bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class HubFile:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        """The LFS pointer git stores in place of the bytes."""
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def blob_id(self) -> str:
        # For an LFS file git holds the pointer, so the hub's blob id is the pointer's, not the content's.
        return git_blob_id(self.pointer if self.lfs else self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class HubRepo:
    repo_id: str
    commits: dict[str, dict[str, HubFile]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    gated: bool = False  # metadata public, files need a token with access
    private: bool = False  # everything hidden without a token with access
    token: str | None = None  # the token that has access

    def commit_of(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


@dataclass(frozen=True)
class HubRequest:
    method: str
    path: str  # decoded URL path
    query: str
    range: str | None
    status: int
    bytes_sent: int
    authorization: str | None
    host: str
    content: str | None = None  # sha256 of the file whose bytes this request served, if any

    @property
    def is_cdn(self) -> bool:
        return self.path.startswith("/cdn/")


@dataclass
class _Cut:
    at: int  # absolute byte offset at which the body stops
    times: int


class HubServer:
    """The hub on 127.0.0.1, in a background thread; a context manager that always stops it."""

    def __init__(self, page_size: int = 1000, cdn_host: str = "localhost") -> None:
        self.page_size = page_size
        self.cdn_host = cdn_host
        self.repos: dict[str, HubRepo] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._active = 0  # requests being answered
        self._records: list[HubRequest] = []
        self._corrupt: dict[str, int] = {}  # sha256 of the content -> offset of the flipped byte
        self._cuts: dict[str, _Cut] = {}
        self._failures: list[tuple[str, int, list[int]]] = []  # (path prefix, status, [times left])
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- life cycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HubServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler, self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name=f"hub:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- content ----------------------------------------------------------------------------------

    def add_commit(
        self,
        repo_id: str,
        files: dict[str, bytes],
        branch: str = "main",
        lfs: Callable[[str, bytes], bool] | None = None,
    ) -> str:
        """Make `files` the whole tree of a new commit on `branch`; returns its sha."""
        is_lfs = lfs or (lambda path, data: path.endswith(LFS_SUFFIXES) or len(data) >= 10 << 20)
        with self._lock:
            repo = self.repos.setdefault(repo_id, HubRepo(repo_id))
            tree = {p: HubFile(d, is_lfs(p, d)) for p, d in files.items()}
            parent = repo.refs.get(branch, "")
            h = hashlib.sha1(f"{repo_id}\n{parent}\n{len(repo.commits)}".encode(), usedforsecurity=False)
            for p in sorted(tree):
                h.update(f"{p}\0{tree[p].blob_id}\n".encode())
            sha = h.hexdigest()
            repo.commits[sha] = tree
            repo.refs[branch] = sha
            return sha

    def set_ref(self, repo_id: str, ref: str, commit: str) -> None:
        with self._lock:
            self.repos[repo_id].refs[ref] = commit

    def gate(self, repo_id: str, token: str) -> None:
        with self._lock:
            self.repos[repo_id].gated = True
            self.repos[repo_id].token = token

    def make_private(self, repo_id: str, token: str) -> None:
        with self._lock:
            self.repos[repo_id].private = True
            self.repos[repo_id].token = token

    def file(self, repo_id: str, path: str, revision: str = "main") -> HubFile:
        repo = self.repos[repo_id]
        commit = repo.commit_of(revision)
        assert commit is not None, revision
        return repo.commits[commit][path]

    # --- faults -----------------------------------------------------------------------------------

    def corrupt(self, repo_id: str, path: str, offset: int = -1) -> None:
        """Every body of this file comes with one byte flipped (the last one by default)."""
        f = self.file(repo_id, path)
        with self._lock:
            self._corrupt[f.sha256] = offset % len(f.data)

    def cut(self, repo_id: str, path: str, at: int, times: int = 1) -> None:
        """The next `times` bodies of this file that cover byte `at` stop there and the connection drops."""
        f = self.file(repo_id, path)
        with self._lock:
            self._cuts[f.sha256] = _Cut(at, times)

    def fail(self, path_prefix: str, status: int = 503, times: int = 1) -> None:
        """The next `times` requests whose URL path starts with `path_prefix` get `status` (a hub having a
        bad minute)."""
        with self._lock:
            self._failures.append((path_prefix, status, [times]))

    def clear_faults(self) -> None:
        with self._lock:
            self._corrupt.clear()
            self._cuts.clear()
            self._failures.clear()

    def _failure(self, path: str) -> int | None:
        with self._lock:
            for prefix, status, left in self._failures:
                if path.startswith(prefix) and left[0] > 0:
                    left[0] -= 1
                    return status
        return None

    def _body_faults(self, sha256: str, start: int, end: int) -> tuple[int | None, int | None]:
        """(offset to flip, offset to stop at) for a body covering [start, end]; consumes a cut."""
        with self._lock:
            flip = self._corrupt.get(sha256)
            stop = None
            cut = self._cuts.get(sha256)
            if cut is not None and cut.times > 0 and start < cut.at <= end:
                cut.times -= 1
                stop = cut.at
            return flip, stop

    # --- what the tests look at -------------------------------------------------------------------

    def _settle(self) -> None:
        # A client can read a whole response before the handler thread files its record: wait briefly for
        # answers in flight, so a test looking right after a call sees every request. Caller holds the lock.
        self._changed.wait_for(lambda: self._active == 0, timeout=2)

    @property
    def requests(self) -> list[HubRequest]:
        with self._changed:
            self._settle()
            return list(self._records)

    def reset_requests(self) -> None:
        with self._changed:
            self._settle()
            self._records.clear()

    def _begin(self) -> None:
        with self._changed:
            self._active += 1

    def _record(self, record: HubRequest) -> None:
        with self._changed:
            self._active -= 1
            self._records.append(record)
            self._changed.notify_all()

    def body_bytes(self, sha256: str) -> int:
        """Bytes of this content sent in bodies (the CDN or a direct resolve), over all requests."""
        return sum(r.bytes_sent for r in self.requests if r.method == "GET" and r.content == sha256)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[_Handler], hub: HubServer) -> None:
        self.hub = hub
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)  # type: ignore[arg-type]

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Keep-alive clients would hold handler threads until their timeout; end them with the server."""
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up mid-body is what the fault tests do on purpose


class _HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str) -> None:
        self.status, self.code, self.message = status, code, message


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    # --- dispatch ---------------------------------------------------------------------------------

    def _handle(self) -> None:
        self._status = 0
        self._sent = 0
        self._content: str | None = None
        self.hub._begin()
        raw = urlsplit(self.path)
        try:
            # Split before decoding: the client quotes a revision such as refs/pr/1 into one segment.
            segments = [unquote(s) for s in raw.path.split("/")[1:]]
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if self.command == "POST" else b""
            try:
                status = self.hub._failure(unquote(raw.path))
                if status is not None:
                    raise _HubError(status, None, f"status {status}")
                self._route(segments, parse_qs(raw.query), body)
            except _HubError as e:
                self._send_json(e.status, {"error": e.message}, {"X-Error-Code": e.code, "X-Error-Message": e.message})
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        finally:
            self.hub._record(
                HubRequest(
                    self.command,
                    unquote(raw.path),
                    raw.query,
                    self.headers.get("Range"),
                    self._status,
                    self._sent,
                    self.headers.get("Authorization"),
                    self.headers.get("Host", ""),
                    self._content,
                )
            )

    def _route(self, seg: list[str], query: dict[str, list[str]], body: bytes) -> None:
        if seg[:1] == ["cdn"] and len(seg) == 2:
            return self._cdn(seg[1])
        if seg[:2] == ["api", "models"] and len(seg) >= 4:
            repo_id = f"{seg[2]}/{seg[3]}"
            rest = seg[4:]
            if not rest:
                return self._info(repo_id, "main", query)
            if rest[0] == "revision" and len(rest) == 2:
                return self._info(repo_id, rest[1], query)
            if rest[0] == "tree" and len(rest) >= 2:
                return self._tree(repo_id, rest[1], "/".join(rest[2:]), query)
            if rest[0] == "paths-info" and len(rest) == 2 and self.command == "POST":
                return self._paths_info(repo_id, rest[1], body)
            if rest == ["auth-check"]:
                self._repo(repo_id, files=True)
                return self._send_json(200, {"ok": True})
        if len(seg) >= 5 and seg[2] == "resolve":
            return self._resolve(f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]))
        raise _HubError(404, None, "Not Found")

    # --- access -----------------------------------------------------------------------------------

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[7:] if auth.startswith("Bearer ") else None

    def _repo(self, repo_id: str, files: bool) -> HubRepo:
        """The repo, or the error the hub gives: `files` marks a request for file contents."""
        repo = self.hub.repos.get(repo_id)
        token = self._token()
        if repo is None or (repo.private and token != repo.token):
            # The hub does not tell a private repo from a missing one; 401 when no token was sent.
            raise _HubError(404 if token else 401, "RepoNotFound", "Repository not found")
        if repo.gated and files and token != repo.token:
            if token is None:
                raise _HubError(
                    401,
                    "GatedRepo",
                    f"Access to model {repo_id} is restricted. You must have "
                    "access to it and be authenticated to access it. Please log in.",
                )
            raise _HubError(
                403,
                "GatedRepo",
                f"Access to model {repo_id} is restricted and you are not in the "
                f"authorized list. Visit https://huggingface.co/{repo_id} to ask for access.",
            )
        return repo

    def _commit(self, repo: HubRepo, revision: str) -> str:
        commit = repo.commit_of(revision)
        if commit is None:
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    # --- API --------------------------------------------------------------------------------------

    def _info(self, repo_id: str, revision: str, query: dict[str, list[str]]) -> None:
        repo = self._repo(repo_id, files=False)
        commit = self._commit(repo, revision)
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, f in sorted(repo.commits[commit].items()):
            s: dict[str, object] = {"rfilename": path}
            if blobs:
                s.update(size=len(f.data), blobId=f.blob_id)
                if f.lfs:
                    s["lfs"] = {"size": len(f.data), "sha256": f.sha256, "pointerSize": len(f.pointer)}
            siblings.append(s)
        self._send_json(
            200,
            {
                "_id": hashlib.md5(repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit,
                "lastModified": "2026-11-01T00:00:00.000Z",
                "createdAt": "2026-10-01T00:00:00.000Z",
                "private": repo.private,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "library_name": "transformers",
                "siblings": siblings,
            },
        )

    @staticmethod
    def _entry(path: str, f: HubFile | None) -> dict[str, object]:
        if f is None:
            oid = hashlib.sha1(f"tree:{path}".encode(), usedforsecurity=False).hexdigest()
            return {"type": "directory", "oid": oid, "size": 0, "path": path}
        e: dict[str, object] = {"type": "file", "oid": f.blob_id, "size": len(f.data), "path": path}
        if f.lfs:
            e["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": len(f.pointer)}
        return e

    @staticmethod
    def _all_entries(tree: dict[str, HubFile]) -> dict[str, HubFile | None]:
        out: dict[str, HubFile | None] = {}
        for path, f in tree.items():
            parts = path.split("/")
            for i in range(1, len(parts)):
                out.setdefault("/".join(parts[:i]), None)
            out[path] = f
        return dict(sorted(out.items()))

    def _tree(self, repo_id: str, revision: str, base: str, query: dict[str, list[str]]) -> None:
        repo = self._repo(repo_id, files=False)
        commit = self._commit(repo, revision)
        entries = self._all_entries(repo.commits[commit])
        if base and base not in entries:
            raise _HubError(404, "EntryNotFound", f'{base} does not exist on "{revision}"')
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = base + "/" if base else ""
        listed = [
            self._entry(p, f)
            for p, f in entries.items()
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])
        ]
        start = int(query.get("cursor", ["0"])[0])
        page = listed[start : start + self.hub.page_size]
        headers: dict[str, str | None] = {}
        if start + self.hub.page_size < len(listed):
            params = "&".join(f"{k}={quote(v[0])}" for k, v in query.items() if k != "cursor")
            path = urlsplit(self.path).path
            nxt = f"http://{self.headers.get('Host')}{path}?{params}&cursor={start + self.hub.page_size}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._send_json(200, page, headers)

    def _paths_info(self, repo_id: str, revision: str, body: bytes) -> None:
        repo = self._repo(repo_id, files=False)
        commit = self._commit(repo, revision)
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            paths = json.loads(body or b"{}").get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        entries = self._all_entries(repo.commits[commit])
        self._send_json(200, [self._entry(p, entries[p]) for p in paths if p in entries])

    # --- files ------------------------------------------------------------------------------------

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(repo_id, files=True)
        commit = self._commit(repo, revision)
        f = repo.commits[commit].get(path)
        if f is None:
            raise _HubError(404, "EntryNotFound", f"Entry not found: {path}")
        headers = {"X-Repo-Commit": commit, "ETag": f'"{f.blob_id}"', "Accept-Ranges": "bytes"}
        if f.lfs:
            headers.update(
                {
                    "X-Linked-Etag": f'"{f.sha256}"',
                    "X-Linked-Size": str(len(f.data)),
                    # A signed CDN URL: its query carries a secret-looking key, as the real one does.
                    "Location": f"http://{self.hub.cdn_host}:{self.hub.port}/cdn/{f.sha256}?X-Amz-Signature=s3cr3t",
                }
            )
            self._send(302, b"", headers)
            return
        self._send_file(f, headers)

    def _cdn(self, sha256: str) -> None:
        for repo in list(self.hub.repos.values()):
            for tree in list(repo.commits.values()):
                for f in tree.values():
                    if f.lfs and f.sha256 == sha256:
                        return self._send_file(f, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"})
        raise _HubError(404, None, "NoSuchKey")

    def _send_file(self, f: HubFile, headers: dict[str, str]) -> None:
        self._content = f.sha256
        size = len(f.data)
        rng = self.headers.get("Range")
        byte_range = parse_range(rng, size) if rng and self.command == "GET" else None
        if byte_range is not None and not byte_range.satisfiable:
            self._send(416, b"", {**headers, "Content-Range": f"bytes */{size}"})
            return
        start, end = (0, size - 1) if byte_range is None else (byte_range.start, byte_range.end)
        status = 200 if byte_range is None else 206
        if status == 206:
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
        headers["Content-Type"] = "application/octet-stream"
        if self.command == "HEAD":
            self._send(status, b"", {**headers, "Content-Length": str(end - start + 1)})
            return
        data = f.data[start : end + 1]
        flip, stop = self.hub._body_faults(f.sha256, start, end)
        if flip is not None and start <= flip <= end:
            i = flip - start
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
        if stop is not None:
            self._send(status, data[: stop - start], {**headers, "Content-Length": str(end - start + 1)}, cut=True)
            return
        self._send(status, data, headers)

    # --- writing ----------------------------------------------------------------------------------

    def _send_json(self, status: int, obj: object, headers: dict[str, str | None] | None = None) -> None:
        extra = {k: v for k, v in (headers or {}).items() if v is not None}
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **extra})

    def _send(self, status: int, body: bytes, headers: dict[str, str], cut: bool = False) -> None:
        self._status = status
        self.send_response(status)
        if "Content-Length" not in headers:
            headers = {**headers, "Content-Length": str(len(body))}
        for k, v in headers.items():
            self.send_header(k, v)
        if cut:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
            self._sent += len(body)
        if cut:
            # The promised Content-Length is not met: the client sees a dropped connection.
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
