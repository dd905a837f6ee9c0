"""The bundle's model snapshots behind the Hugging Face hub's HTTP API, so that `HF_ENDPOINT=http://DEPOT`
makes huggingface_hub's `snapshot_download` and `hf_hub_download` (and the programs built on them: vLLM,
transformers) work unchanged.

What huggingface_hub asks for, and what is answered (its hf_api.py, file_download.py and
_snapshot_download.py are the reference):

- `GET /api/models/{repo}[/revision/{rev}]`: the snapshot's commit as `sha`, its files as `siblings`
  (`?blobs=true`: with size, blobId and lfs);
- `GET /api/models/{repo}/tree/{rev}[/{path}]` (`?recursive=true`): files and directories, with git's blob id
  as `oid` and, for LFS files, the sha256 as `lfs.oid`;
- `POST /api/models/{repo}/paths-info/{rev}`: the same entries for the paths asked;
- `HEAD`/`GET /{repo}/resolve/{rev}/{path}`: the bytes (byte ranges too), with `X-Repo-Commit`, and `ETag`
  the name huggingface_hub gives the blob in its cache: the sha256 for an LFS file (also as `X-Linked-Etag`
  with `X-Linked-Size`, as the hub sends before its CDN redirect), git's blob id for the others. The bytes
  are sent directly, not redirected: the depot is its own CDN.

A snapshot answers to the revision the manifest named (`main`, a tag) and to its commit. Which files are LFS
files is what the hub said at collect time: the lock keeps the hub's digest of each file (sha256 for LFS,
git's blob id otherwise), and an LFS file's blob id is that of its pointer, computed from the sha256 and size.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from airgap.artifact_meta import ModelFileMeta, read_meta
from airgap.depot.content import Blob, Doc
from airgap.errors import BadInputError
from airgap.lock import Lock, LockedArtifact
from airgap.manifest import safe_file_name
from airgap.safepaths import is_commit

JSON = "application/json"


class HubError(Exception):
    """An answer the hub gives as an error: status, its X-Error-Code, a message."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def doc(self) -> Doc:
        headers = (("X-Error-Message", self.message),) + ((("X-Error-Code", self.code),) if self.code else ())
        return Doc(json.dumps({"error": self.message}).encode(), JSON, headers)


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class HubFile:
    path: str  # in the repo
    art: LockedArtifact
    lfs: bool
    blob_id: str  # git's object id: of the bytes, or of the LFS pointer

    @property
    def etag(self) -> str:
        return self.art.sha256 if self.lfs else self.blob_id

    def entry(self) -> dict[str, Any]:
        e: dict[str, Any] = {"type": "file", "oid": self.blob_id, "size": self.art.size, "path": self.path}
        if self.lfs:
            pointer = lfs_pointer(self.art.sha256, self.art.size)
            e["lfs"] = {"oid": self.art.sha256, "size": self.art.size, "pointerSize": len(pointer)}
        return e


@dataclass
class HubModel:
    repo: str
    revision: str
    commit: str
    files: dict[str, HubFile] = field(default_factory=dict)

    def entries(self) -> dict[str, HubFile | None]:
        """Every path of the snapshot, directories (None) included, sorted."""
        out: dict[str, HubFile | None] = {}
        for path, f in self.files.items():
            parts = path.split("/")
            for i in range(1, len(parts)):
                out.setdefault("/".join(parts[:i]), None)
            out[path] = f
        return dict(sorted(out.items()))


def _dir_entry(model: HubModel, path: str) -> dict[str, Any]:
    # A tree's oid is not in the lock; a stable stand-in, unique per commit and directory.
    oid = hashlib.sha1(f"{model.commit}:{path}".encode(), usedforsecurity=False).hexdigest()
    return {"type": "directory", "oid": oid, "size": 0, "path": path}


@dataclass
class Hub:
    models: dict[str, HubModel] = field(default_factory=dict)

    @classmethod
    def of(cls, lock: Lock) -> Hub:
        hub = cls()
        for art in lock.artifacts:
            if art.layer != "models" or art.in_base:
                continue
            meta = read_meta(ModelFileMeta, art.meta, art.path)
            if not is_commit(meta.commit) or not all(safe_file_name(p) for p in meta.path_in_repo.split("/")):
                raise BadInputError(
                    f"{art.path}: the lock names commit {meta.commit!r} and path {meta.path_in_repo!r}, which a "
                    "hub cannot serve.",
                    "The lock was altered: run `airgap verify` on the bundle, or collect it again.",
                )
            model = hub.models.setdefault(meta.repo, HubModel(meta.repo, meta.revision, meta.commit))
            model.files[meta.path_in_repo] = _hub_file(meta.path_in_repo, art)
        for model in hub.models.values():
            model.files = dict(sorted(model.files.items()))
        return hub

    @property
    def file_count(self) -> int:
        return sum(len(m.files) for m in self.models.values())

    def model(self, repo: str, revision: str) -> HubModel:
        model = self._repo(repo)
        if revision not in (model.revision, model.commit):
            raise HubError(
                404,
                "RevisionNotFound",
                f"Invalid rev id: {revision} (this depot holds {repo} at {model.revision} = {model.commit})",
            )
        return model

    def _repo(self, repo: str) -> HubModel:
        model = self.models.get(repo)
        if model is None:
            raise HubError(404, "RepoNotFound", f"Repository not found: {repo} is not in this bundle")
        return model

    def default_revision(self, repo: str) -> str:
        """What `/api/models/{repo}` (no revision) answers with: the snapshot the bundle holds."""
        return self._repo(repo).revision

    # --- API --------------------------------------------------------------------------------------------

    def info(self, repo: str, revision: str, blobs: bool) -> dict[str, Any]:
        model = self.model(repo, revision)
        siblings = []
        for path, f in model.files.items():
            s: dict[str, Any] = {"rfilename": path}
            if blobs:
                s.update(size=f.art.size, blobId=f.blob_id)
                if f.lfs:  # the model API spells the LFS digest `sha256`; the tree API `oid`
                    pointer = lfs_pointer(f.art.sha256, f.art.size)
                    s["lfs"] = {"size": f.art.size, "sha256": f.art.sha256, "pointerSize": len(pointer)}
            siblings.append(s)
        return {
            "_id": hashlib.md5(repo.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo,
            "modelId": repo,
            "author": repo.split("/")[0],
            "sha": model.commit,
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }

    def tree(self, repo: str, revision: str, base: str, recursive: bool) -> list[dict[str, Any]]:
        model = self.model(repo, revision)
        entries = model.entries()
        if base and base not in entries:
            raise HubError(404, "EntryNotFound", f'{base} does not exist on "{revision}"')
        if base and entries[base] is not None:
            raise HubError(400, None, f"{base} is a file, not a directory")
        prefix = base + "/" if base else ""
        return [
            f.entry() if f is not None else _dir_entry(model, p)
            for p, f in entries.items()
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])
        ]

    def paths_info(self, repo: str, revision: str, paths: list[str]) -> list[dict[str, Any]]:
        model = self.model(repo, revision)
        entries = model.entries()
        out = []
        for p in paths:
            if p in entries:
                f = entries[p]
                out.append(f.entry() if f is not None else _dir_entry(model, p))
        return out

    def resolve(self, repo: str, revision: str, path: str) -> Blob:
        model = self.model(repo, revision)
        f = model.files.get(path)
        if f is None:
            raise HubError(404, "EntryNotFound", f"Entry not found: {path}")
        return Blob(f.art, "application/octet-stream", resolve_headers(model, f))


def resolve_headers(model: HubModel, f: HubFile) -> tuple[tuple[str, str], ...]:
    headers = [("X-Repo-Commit", model.commit), ("ETag", f'"{f.etag}"')]
    if f.lfs:
        headers += [("X-Linked-Etag", f'"{f.etag}"'), ("X-Linked-Size", str(f.art.size))]
    return tuple(headers)


def _hub_file(path: str, art: LockedArtifact) -> HubFile:
    d = art.upstream_digest
    if d is not None and d.algorithm == "git-sha1":
        return HubFile(path, art, False, d.value)
    # An LFS file (the hub gave its sha256), or one without a hub digest: served as an LFS file, whose blob
    # name in a client's cache is its sha256.
    return HubFile(path, art, True, git_blob_id(lfs_pointer(art.sha256, art.size)))
