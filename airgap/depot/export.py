"""`airgap export`: the depot's answers as a static tree, for a web server the site already runs.

    DEST/www/                                    the document root
      index.html
      simple/index.{html,json}                   PEP 503 / PEP 691 (pyindex.py)
      simple/<project>/index.{html,json}, <wheel>
      files/index.html, files/SHA256SUMS, files/<name>
      api/models/<owner>/<name>/index.json       GET /api/models/{repo}
      api/models/<owner>/<name>/revision/<rev>   GET /api/models/{repo}/revision/{rev} (with blobs)
      api/models/<owner>/<name>/tree/<rev>       GET /api/models/{repo}/tree/{rev}?recursive=true
      <owner>/<name>/resolve/<commit>/<path>     the model's files
      <owner>/<name>/resolve/<revision>          a link to <commit>
    DEST/nginx/airgap-depot.conf                 an nginx server block that serves www/ as the clients need
    DEST/EXPORTED                                what was exported, from which bundle, when

A static tree answers what a file can: a tree listing is always the recursive one (snapshot_download asks
for no other), POST paths-info is not answered, and a revision with a `/` in it (refs/pr/1) is left out.
The headers huggingface_hub reads (X-Repo-Commit, ETag, X-Linked-Etag, X-Linked-Size) and the index's
content types cannot be files: the nginx configuration sets them, from maps generated here.

Every file is copied from the verified bundle through its lock digest, into a temporary directory beside
DEST that is renamed into place only when whole: a failure leaves no half-written export, and a previous
export at DEST is replaced only by a complete new one.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from airgap.depot.apt_repo import AptRepo, AptSigner, write_apt_repo
from airgap.depot.content import Blob, BundleReader
from airgap.depot.files import SUMS, FileShelf
from airgap.depot.hub import Hub, resolve_headers
from airgap.depot.pyindex import PyIndex
from airgap.depot.server import Depot
from airgap.errors import AirgapError, BadInputError, DiskFullError, IntegrityError
from airgap.safepaths import relative_path_problem

MARKER = "EXPORTED"
_SIMPLE_REF = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_RESERVED_TOP = {"simple", "files", "api", "index.html"}


@dataclass
class Exported:
    dest: Path
    files: int
    bytes: int
    notes: list[str]
    apt: AptRepo | None = None  # the signed apt repository under www/apt/, when a site key was given


def export_depot(
    reader: BundleReader,
    dest: Path,
    server_name: str = "_",
    listen: str = "80",
    apt_signer: AptSigner | None = None,
) -> Exported:
    """Write the static tree of `reader`'s bundle to `dest` (replacing an earlier export there as a whole);
    with `apt_signer`, also the bundle's .debs as an apt repository signed by that site key (www/apt/)."""
    depot = Depot.of(reader)
    _check_dest(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    except OSError as exc:
        raise _cannot_write(dest, exc) from None
    try:
        w = _Writer(reader, work / "www")
        _simple(w, depot.pyindex)
        _files(w, depot.files)
        notes = _hub(w, depot.hub)
        apt = write_apt_repo(reader.bundle, reader.lock, work / "www" / "apt", apt_signer) if apt_signer else None
        w.doc("index.html", depot.home())
        (work / "nginx").mkdir()
        (work / "nginx" / "airgap-depot.conf").write_text(nginx_conf(depot.hub, dest, server_name, listen))
        summary = {
            "bundle": reader.lock.name,
            "created": reader.lock.created,
            "files": w.files,
            "bytes": w.bytes,
            "notes": notes,
        }
        (work / MARKER).write_text(json.dumps(summary, indent=2) + "\n")
        os.chmod(work, 0o755)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(dest, old)
            os.rename(work, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(work, dest)
        if apt is not None:
            apt.root = dest / "www" / "apt"
        return Exported(dest, w.files, w.bytes, notes, apt)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _cannot_write(dest, exc) from None
        raise


def _cannot_write(dest: Path, exc: OSError) -> AirgapError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            f"--to {dest}: the disk filled up while exporting; nothing was left there.",
            "The export is a copy of the bundle's wheels, models and files: free that much room, or export "
            "to another disk.",
        )
    return BadInputError(
        f"--to {dest}: cannot write the export there ({exc.strerror}: {exc.filename}); nothing was left there.",
        "Give a directory on a writable disk that this user may create files in.",
    )


def _check_dest(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise BadInputError(
            f"--to {dest}: not a directory.", "Give a directory to write the export to (it is made if missing)."
        )
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MARKER).is_file():
        raise BadInputError(
            f"--to {dest}: the directory holds files that are not an earlier export; export replaces its "
            "destination as a whole, so it does not write there.",
            "Give an empty or new directory (or one an earlier `airgap export` wrote).",
        )


class _Writer:
    def __init__(self, reader: BundleReader, root: Path) -> None:
        self.reader = reader
        self.root = root
        self.files = 0
        self.bytes = 0
        root.mkdir(parents=True)

    def _path(self, rel: str) -> Path:
        if problem := relative_path_problem(rel):
            raise IntegrityError(
                f"the bundle's lock names {rel[:120]!r}, which cannot be a file of the export: {problem}; "
                "nothing was exported.",
                "The lock was altered (a collect never writes such a name): copy the bundle again from the "
                "original, signed if you can.",
            )
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def doc(self, rel: str, body: bytes) -> None:
        self._path(rel).write_bytes(body)

    def blob(self, rel: str, blob: Blob) -> None:
        # Opened exclusively: two names of the lock landing on one path would be a bug, not an overwrite.
        with open(self._path(rel), "xb") as out:
            for chunk in self.reader.chunks(blob.art):
                out.write(chunk)
        self.files += 1
        self.bytes += blob.size


def _simple(w: _Writer, index: PyIndex) -> None:
    w.doc("simple/index.html", index.root_html())
    w.doc("simple/index.json", index.root_json())
    for project, wheels in index.projects.items():
        w.doc(f"simple/{project}/index.html", index.project_html(project))
        w.doc(f"simple/{project}/index.json", index.project_json(project))
        for name, blob in wheels.items():
            w.blob(f"simple/{project}/{name}", blob)


def _files(w: _Writer, shelf: FileShelf) -> None:
    w.doc("files/index.html", shelf.listing())
    w.doc(f"files/{SUMS}", shelf.sums())
    for name, blob in shelf.files.items():
        w.blob(f"files/{name}", blob)


def _hub(w: _Writer, hub: Hub) -> list[str]:
    notes = []
    for repo, model in hub.models.items():
        owner = repo.split("/")[0]
        if owner in _RESERVED_TOP:
            notes.append(f"{repo}: left out: its owner's name is one of the depot's own paths ({owner}/)")
            continue
        api = f"api/models/{repo}"
        w.doc(f"{api}/index.json", json.dumps(hub.info(repo, model.revision, blobs=True)).encode())
        tree = json.dumps(hub.tree(repo, model.commit, "", recursive=True)).encode()
        revs = [model.commit]
        if model.revision != model.commit:
            if _SIMPLE_REF.match(model.revision):
                revs.append(model.revision)
            else:
                notes.append(f"{repo}: revision {model.revision!r} is served by its commit {model.commit} only")
        for rev in revs:
            w.doc(f"{api}/revision/{rev}", json.dumps(hub.info(repo, rev, blobs=True)).encode())
            w.doc(f"{api}/tree/{rev}", tree)
        for path, f in model.files.items():
            w.blob(f"{repo}/resolve/{model.commit}/{path}", Blob(f.art))
        for rev in revs[1:]:
            os.symlink(model.commit, w.root / repo / "resolve" / rev)
    return notes


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def nginx_conf(hub: Hub, dest: Path, server_name: str, listen: str) -> str:
    """An nginx configuration for the exported tree (include it in the `http` block: conf.d/ does)."""
    root = dest / "www"
    lines = [
        "# Generated by airgap export: the depot's Python index, Hugging Face endpoint and files.",
        "# Include from the http block (e.g. /etc/nginx/conf.d/airgap-depot.conf).",
        "",
        "map $http_accept $airgap_simple_index {",
        "    default index.html;",
        '    "~application/vnd\\.pypi\\.simple\\.v1\\+json" index.json;',
        "}",
    ]
    commits, etags, linked, sizes = [], [], [], []
    for repo, model in hub.models.items():
        revs = [model.commit] + ([model.revision] if _SIMPLE_REF.match(model.revision) else [])
        commits.append(f"    {_quoted('~^/' + re.escape(repo) + '/resolve/')} {model.commit};")
        for path, f in model.files.items():
            headers = dict(resolve_headers(model, f))
            for rev in dict.fromkeys(revs):
                uri = _quoted(f"/{repo}/resolve/{rev}/{path}")
                etags.append(f"    {uri} {_quoted(headers['ETag'])};")
                if "X-Linked-Etag" in headers:
                    linked.append(f"    {uri} {_quoted(headers['X-Linked-Etag'])};")
                    sizes.append(f"    {uri} {headers['X-Linked-Size']};")
    # The maps' keys are whole URIs: nginx's default bucket (32 or 64 bytes) refuses to start with them
    # ("could not build map_hash"). Sized for the longest key here; if the site's nginx.conf sets these
    # already, drop these two lines (nginx refuses a duplicate).
    longest = max((len(e) for e in commits + etags), default=64)
    bucket = 128
    while bucket < longest + 64:
        bucket *= 2
    # Before the first map: nginx fixes the sizes when it meets one.
    lines[3:3] = [f"map_hash_bucket_size {bucket};", f"map_hash_max_size {max(2048, 4 * len(etags))};", ""]
    for name, entries in (
        ("airgap_repo_commit", commits),
        ("airgap_etag", etags),
        ("airgap_linked_etag", linked),
        ("airgap_linked_size", sizes),
    ):
        lines += [f"map $uri ${name} {{", '    default "";', *entries, "}"]
    lines += [
        "",
        "server {",
        f"    listen {listen};",
        f"    server_name {server_name};",
        f"    root {root};",
        "    autoindex off;",
        "    disable_symlinks off;",
        "    location = / { index index.html; }",
        "    location /simple/ {",
        "        types { application/vnd.pypi.simple.v1+json json; text/html html; }",
        "        default_type application/octet-stream;",
        "        add_header Vary Accept;",
        "        try_files $uri$airgap_simple_index $uri =404;",
        "    }",
        "    location /files/ {",
        "        types { text/plain SHA256SUMS; text/html html; }",
        "        default_type application/octet-stream;",
        "        try_files $uri $uri/index.html =404;",
        "    }",
        "    location /api/models/ {",
        "        default_type application/json;",
        "        types { application/json json; }",
        "        try_files $uri $uri/index.json =404;",
        "    }",
        "    location ~ ^/[^/]+/[^/]+/resolve/ {",
        "        types { }",
        "        default_type application/octet-stream;",
        "        etag off;  # the hub's ETag (sha256 or git blob id) instead, from the map",
        "        add_header X-Repo-Commit $airgap_repo_commit always;",
        "        add_header ETag $airgap_etag always;",
        "        add_header X-Linked-Etag $airgap_linked_etag always;",
        "        add_header X-Linked-Size $airgap_linked_size always;",
        "        add_header Accept-Ranges bytes always;",
        "    }",
        "    location / { return 404; }",
        "}",
        "",
    ]
    return "\n".join(lines)
