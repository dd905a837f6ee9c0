#!/usr/bin/env python3
"""Moves a bundle between the hosts of a fleet: fetch it from a depot or a peer, or serve it to peers.

    python3 bundle_peer.py fetch DIR URL [URL ...]
    python3 bundle_peer.py serve DIR --bind ADDRESS --port PORT --pidfile FILE [--idle-exit SECONDS]
    python3 bundle_peer.py stop --pidfile FILE

`airgap fleet install` copies this file to each host next to the bundle's copy and runs it there with the
host's own python3, so it uses the standard library only (python 3.8 and later: what Ansible needs on a host
anyway).

fetch: DIR holds the bundle's SHA256SUMS and lock (sent by the control node over SSH, so they are the trusted
list; the lock is checked against its SHA256SUMS line). Every artifact or tool/ wheel it names that DIR
lacks, or holds with other bytes, is fetched from URL/PATH, trying the URLs in order, into PATH.part, hashed
on the way and renamed only when its sha256 is the listed one. A server may send no more than the size the
lock records (a hostile one cannot fill the disk) and no slower than --grace seconds plus --min-rate bytes
a second per file (a trickling one cannot hold the host). A .part left by an
interrupted run is resumed with a Range request when the server answers 206 at the right offset, else
fetched again. One JSON line on stdout says what was fetched and from where; exit 1 when a file could not be
had from any URL (the control node then copies the bundle itself).

serve: answers GET and HEAD (one byte range) for exactly the files SHA256SUMS lists, looked up by name, never
joined to DIR, so nothing else on the host is reachable. It forks into the background once it listens and
the pidfile is written, so the task that starts it ends when the peers can fetch; it exits on SIGTERM (stop)
or after --idle-exit seconds without a request, so a playbook cut short leaves no server behind for long.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import socket
import stat
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHUNK = 1 << 20
TIMEOUT = 60  # seconds without a byte from the server before a fetch gives up on it
PARALLEL = 4
LOCK = "airgap.lock.json"
MAX_LOCK = 256 << 20  # as airgap reads a lock: nothing larger is one


def read_sums(directory: str) -> list[tuple[str, str]]:
    """(sha256, relative path) of every line of DIR/SHA256SUMS; a path leaving DIR is refused."""
    entries = []
    with open(os.path.join(directory, "SHA256SUMS"), encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            digest, sep, path = line.partition("  ")
            if not sep:
                digest, sep, path = line.partition(" *")
            parts = path.split("/")
            if not sep or len(digest) != 64 or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise SystemExit(f"SHA256SUMS line {number}: not a `sha256  relative/path` line: {line[:200]!r}")
            entries.append((digest.lower(), path))
    return entries


def file_sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            h = hashlib.sha256()
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
            return h.hexdigest()
    except OSError:
        return None


class FetchError(Exception):
    pass


def _url(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + urllib.parse.quote(path)


def _hash_prefix(path: str) -> tuple[Any, int]:
    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
                size += len(block)
    except OSError:
        return hashlib.sha256(), 0
    return h, size


@dataclass
class Pace:
    """How slow a server may be: a file of N bytes must have arrived GRACE + N / MIN_RATE seconds after its
    request, so a server trickling bytes (each one inside the socket timeout) cannot hold a host forever."""

    grace: float = 60.0
    min_rate: float = float(1 << 20)  # bytes per second: hosts and depots share a LAN

    def deadline(self, size: int) -> float:
        return time.monotonic() + self.grace + size / self.min_rate


def expected_sizes(directory: str, sums: list[tuple[str, str]]) -> dict[str, int]:
    """Each listed file's size from the lock (checked against its SHA256SUMS line first): a server may not
    send more than that, so a hostile one cannot fill the host's disk before the hash says no."""
    listed = {p: d for d, p in sums}
    try:
        with open(os.path.join(directory, LOCK), "rb") as f:
            raw = f.read(MAX_LOCK)
    except OSError as exc:
        raise SystemExit(f"{LOCK}: cannot read it ({exc}): the control node sends it with SHA256SUMS") from None
    if listed.get(LOCK) != hashlib.sha256(raw).hexdigest():
        raise SystemExit(f"{LOCK} is not the one SHA256SUMS lists: the copy on this host was altered")
    lock = json.loads(raw)
    sizes: dict[str, int] = {}
    for art in lock.get("artifacts") or []:
        if art.get("in_base"):
            continue
        for stored in art.get("parts") or [art]:
            sizes[str(stored["path"])] = int(stored["size"])
    for tool in (lock.get("tool") or {}).get("files") or []:
        sizes[str(tool["path"])] = int(tool["size"])
    return sizes


def fetch_one(directory: str, digest: str, path: str, size: int, base: str, pace: Pace) -> int:
    """Fetch PATH (SIZE bytes) from BASE into DIRECTORY; the bytes received. Raises FetchError saying why not."""
    target = os.path.join(directory, path)
    part = target + ".part"
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    h, have = _hash_prefix(part)
    if have > size:
        os.unlink(part)
        h, have = hashlib.sha256(), 0
    url = _url(base, path)
    if not url.startswith(("http://", "https://")):
        raise FetchError(f"{base}: only http:// and https:// are fetched from")
    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    received = 0
    deadline = pace.deadline(size - have)
    try:
        with urllib.request.urlopen(request, timeout=min(TIMEOUT, pace.grace)) as response:
            if response.status == 206:
                content_range = response.headers.get("Content-Range", "")
                if not content_range.startswith(f"bytes {have}-"):
                    raise FetchError(f"{url}: answered a range other than the one asked ({content_range!r})")
                mode = "ab"
            else:
                h, mode, have = hashlib.sha256(), "wb", 0
            if response.headers.get("Content-Encoding", "identity") not in ("identity", ""):
                raise FetchError(f"{url}: sent the file encoded ({response.headers['Content-Encoding']})")
            with open(part, mode) as out:
                # read1: whatever one receive brings, so the size and pace checks run however the bytes come.
                for block in iter(lambda: response.read1(CHUNK), b""):
                    received += len(block)
                    if have + received > size:
                        out.close()
                        os.unlink(part)  # nothing of it is kept: it is not the file
                        raise FetchError(f"{url}: sends more than the {size} bytes the lock records")
                    if time.monotonic() > deadline:
                        raise FetchError(
                            f"{url}: too slow ({have + received} of {size} bytes in the time allowed, "
                            f"{pace.grace:.0f} s plus {pace.min_rate / (1 << 20):.1f} MiB/s)"
                        )
                    h.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            os.unlink(part)  # the .part is longer than the file: start again, next time
        raise FetchError(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    if h.hexdigest() != digest:
        os.unlink(part)
        raise FetchError(f"{url}: its bytes are not the ones SHA256SUMS lists (sha256 {h.hexdigest()})")
    os.replace(part, target)
    return received


def fetch(directory: str, urls: list[str], pace: Pace) -> int:
    sums = read_sums(directory)
    sizes = expected_sizes(directory, sums)
    wanted = [(d, p) for d, p in sums if file_sha256(os.path.join(directory, p)) != d]
    summary: dict[str, Any] = {"files": 0, "bytes": 0, "from": {}, "failed": []}
    lock = threading.Lock()

    def one(item: tuple[str, str]) -> None:
        digest, path = item
        tried = []
        if path not in sizes:  # not in the lock: one of the files the control node sends itself
            tried.append("not an artifact or tool/ wheel of the lock: sent by the control node, never fetched")
        for base in urls if not tried else []:
            try:
                got = fetch_one(directory, digest, path, sizes[path], base, pace)
            except FetchError as exc:
                tried.append(str(exc))
                continue
            with lock:
                summary["files"] += 1
                summary["bytes"] += got
                summary["from"][base] = summary["from"].get(base, 0) + 1
            return
        with lock:
            summary["failed"].append({"path": path, "tried": tried})

    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(one, wanted))
    print(json.dumps(summary, sort_keys=True))
    return 1 if summary["failed"] else 0


class _PeerServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], directory: str) -> None:
        self.files = {p: os.path.join(directory, p) for _, p in read_sums(directory)}
        self.last = time.monotonic()
        self.busy = 0
        self.guard = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _PeerHandler)


class _PeerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _PeerServer
    timeout = TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no log file on the host: the fetching side reports what it got and from where

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        with self.server.guard:
            self.server.busy += 1
        try:
            self._send(body)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        finally:
            with self.server.guard:
                self.server.busy -= 1
                self.server.last = time.monotonic()

    def _send(self, body: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        local = self.server.files.get(path)
        if local is None:
            self.send_error(404)
            return
        try:
            # Never through a link: only the regular files the list names, as the copy was checked.
            fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            self.send_error(404)
            return
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                self.send_error(404)
                return
            size = st.st_size
            start, end = 0, size - 1
            wanted = self.headers.get("Range", "")
            status = 200
            if wanted.startswith("bytes=") and "," not in wanted:
                first, _, last = wanted[6:].partition("-")
                if first.isdigit():
                    start = int(first)
                    end = min(int(last), size - 1) if last.isdigit() else size - 1
                    if start >= size or end < start:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not body:
                return
            f.seek(start)
            left = end - start + 1
            while left > 0:
                block = f.read(min(CHUNK, left))
                if not block:
                    break
                self.wfile.write(block)
                left -= len(block)


def serve(directory: str, bind: str, port: int, pidfile: str, idle_exit: float) -> int:
    server = _PeerServer((bind, port), directory)  # binding fails here, in the task's own output
    reader, writer = os.pipe()
    if os.fork() > 0:
        os.close(writer)
        ready = os.read(reader, 64)
        print(json.dumps({"serving": f"http://{bind}:{port}/", "files": len(server.files), "ok": ready == b"ok"}))
        return 0 if ready == b"ok" else 1
    os.close(reader)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    tmp = f"{pidfile}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, pidfile)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())

    def watch() -> None:
        while True:
            time.sleep(min(5.0, idle_exit))
            with server.guard:
                idle = server.busy == 0 and time.monotonic() - server.last > idle_exit
            if idle:
                server.shutdown()
                return

    threading.Thread(target=watch, daemon=True).start()
    os.write(writer, b"ok")
    os.close(writer)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        try:
            with open(pidfile) as f:
                if f.read().strip() == str(os.getpid()):
                    os.unlink(pidfile)
        except OSError:
            pass
    os._exit(0)


def stop(pidfile: str) -> int:
    """Stop the server of PIDFILE, if it still runs; it is this script's `serve` (checked), never another."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        print(json.dumps({"stopped": False, "why": "no server"}))
        return 0
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
    except OSError:
        cmdline = []
    if any(a.endswith(b"bundle_peer.py") for a in cmdline) and b"serve" in cmdline:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.1)
    with contextlib.suppress(OSError):
        os.unlink(pidfile)
    print(json.dumps({"stopped": True, "pid": pid}))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bundle_peer.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch")
    f.add_argument("directory")
    f.add_argument("urls", nargs="+")
    f.add_argument("--grace", type=float, default=Pace.grace, help="seconds every file may take on top of...")
    f.add_argument("--min-rate", type=float, default=Pace.min_rate, help="...its size at this many bytes/s")
    s = sub.add_parser("serve")
    s.add_argument("directory")
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--pidfile", required=True)
    s.add_argument("--idle-exit", type=float, default=1800.0)
    t = sub.add_parser("stop")
    t.add_argument("--pidfile", required=True)
    args = parser.parse_args(argv)
    if args.command == "fetch":
        return fetch(args.directory, args.urls, Pace(args.grace, args.min_rate))
    if args.command == "serve":
        return serve(args.directory, args.bind, args.port, args.pidfile, args.idle_exit)
    return stop(args.pidfile)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
