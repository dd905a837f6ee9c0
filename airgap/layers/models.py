"""Model weights from the Hugging Face hub.

Collect: each `models:` entry's revision is pinned to the exact commit, the files at that commit are
selected with `allow`/`ignore` (huggingface_hub's own matching), and each becomes one artifact checked
against the hub's digest: sha256 for LFS files, git's blob sha1 for the others. The bytes are fetched by
the HTTP source like every other artifact. In the bundle a model lives in
`layers/09-models/<owner>--<name>/<path in repo>`.

Install: each model's files are copied (or moved) to `dest` (default `/data/models/<name>`, the directory
vLLM's `--model` takes), hashed on the way, owned by `owner` (default 1000:1000, the uid serving containers
run as), and optionally laid out as a Hugging Face cache under `hf_home` so `HF_HUB_OFFLINE=1` programs
find the model by its repo id. Files already in place with the right sha256 are left alone (hashes are
believed within one install run only). Every change to the server goes through `Host`, so `--dry-run`
prints it and the install log records it.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from airgap.artifact_meta import ModelFileMeta, ModelInfo, read_meta
from airgap.artifacts import Artifact, Digest
from airgap.digests import sha256_file
from airgap.dossier.pickles import is_pickle_name
from airgap.errors import BadInputError, DiskFullError, InstallError, IntegrityError
from airgap.host import Owner
from airgap.install_context import InstallContext
from airgap.layers.base import Layer, ResolveContext
from airgap.lock import LockedArtifact
from airgap.manifest import HF_REPO_RE, Manifest, ModelSpec, safe_file_name
from airgap.parts import source_files
from airgap.safepaths import bad_name_char, install_dir_problem, is_commit, normalise
from airgap.sources.huggingface import DTYPE_BITS, HubClient, HubFile, Snapshot, cache_folder_name, hub_token
from airgap.units import human_size

DEFAULT_DEST = "/data/models"
DEFAULT_OWNER = "1000:1000"


def bundle_folder(repo: str) -> str:
    """`owner--name`: two repos with the same name under different owners (a model and its quantised
    copy) must not share a folder, and `--` is how huggingface_hub's own cache spells a repo id."""
    return repo.replace("/", "--")


def default_dest(repo: str) -> str:
    return f"{DEFAULT_DEST}/{repo.split('/', 1)[1]}"


def format_params(n: int | None) -> str:
    """8030261248 -> '8.03B'; the way model cards count parameters."""
    if n is None:
        return "?"
    for unit, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


@dataclass
class ModelSummary:
    """One model as `plan` shows it: what was pinned, how big, how many parameters."""

    repo: str
    revision: str
    commit: str
    files: int
    size: int
    params: int | None
    dtype: str | None

    def line(self) -> str:
        dtype = f" {self.dtype}" if self.dtype else ""
        return (
            f"{self.repo} @ {self.revision} = {self.commit[:12]}: {self.files} files, {human_size(self.size)}, "
            f"{format_params(self.params)} parameters{dtype}"
        )


def model_summaries(artifacts: list[Artifact]) -> list[ModelSummary]:
    """Per model, from the `ModelInfo` the layer puts on each model's first artifact."""
    out = []
    for art in artifacts:
        if art.layer != "models" or "model" not in art.meta:
            continue
        m = read_meta(ModelFileMeta, art.meta, art.path).model
        if m is not None:
            out.append(ModelSummary(m.repo, m.revision, m.commit, m.files, m.size, m.params, m.dtype))
    return out


class ModelsLayer(Layer):
    name = "models"
    section = "models"
    by_hand_dir = "cp -r {dir}/* /data/models/ && chown -R 1000:1000 /data/models"
    installable = True
    preflight = frozenset({"disk"})

    # --- collect ----------------------------------------------------------------------------------------

    def plan(self, manifest: Manifest) -> list[Artifact]:
        return []  # which files, and their digests, only the hub can say

    def resolve(self, manifest: Manifest, ctx: ResolveContext) -> list[Artifact]:
        source = ctx.source
        if source is None or not manifest.models:
            return []  # `plan --no-head`: no network, and nothing about a model is known without it
        check_entries(manifest)
        token = hub_token()
        client = HubClient(source, token=token)
        headers = client.headers
        out: list[Artifact] = []
        for i, spec in enumerate(manifest.models):
            snap = client.snapshot(spec.repo, spec.revision, spec.allow, spec.ignore)
            if not snap.files:
                where = "allow" if spec.allow else "ignore" if spec.ignore else "repo"
                raise manifest.error(("models", i, where), _nothing_matched(spec, snap))
            arts = [self._artifact(manifest, i, spec, snap, client.base, f, headers) for f in snap.files]
            counted = checkpoint_files(snap.files)
            stats, why = client.tensor_stats([snap.file_url(f.path, client.base) for f in counted], spec.repo)
            model = ModelInfo(
                repo=spec.repo,
                revision=spec.revision,
                commit=snap.commit,
                params=stats.params if stats else None,
                dtype=stats.dtype if stats else None,
                dtypes=dict(sorted(stats.by_dtype.items())) if stats else {},
                weight_bytes=_weight_bytes(stats.by_dtype) if stats else None,
                params_from=[f.path for f in counted],
                params_note=why or None,
                files=len(arts),
                size=sum(f.size for f in snap.files),
            )
            arts[0].meta["model"] = model.to_meta()
            out.extend(arts)
        return out

    def _artifact(
        self,
        manifest: Manifest,
        i: int,
        spec: ModelSpec,
        snap: Snapshot,
        base: str,
        f: HubFile,
        headers: dict[str, str],
    ) -> Artifact:
        parts = f.path.split("/")
        if not all(safe_file_name(p) for p in parts):
            raise manifest.error(
                ("models", i, "repo"),
                f"{spec.repo} has a file named {f.path!r}, which cannot be stored in a bundle (a control character, "
                f"a backslash or a '.'/'..' component); leave it out with `ignore: [{f.path!r}]`",
            )
        if is_pickle_name(f.path) and not spec.allow_pickle:
            raise manifest.error(
                ("models", i, "repo"),
                f"{spec.repo} has {f.path!r}, a pickle-based file: loading it can run any code it carries. Leave "
                f"it out with `ignore: [{f.path!r}]` (most repos carry the same weights as .safetensors), or, "
                "if this model is only published so, set `allow_pickle: true` on the entry: `airgap dossier` "
                "then lists every global it imports, and install places it only after that scan",
            )
        if f.lfs_sha256:
            upstream = Digest("sha256", f.lfs_sha256, snap.tree_url)
        else:
            upstream = Digest("git-sha1", f.blob_id, snap.tree_url, f.size)
        return Artifact(
            layer=self.name,
            name=f"{bundle_folder(spec.repo)}/{f.path}",
            urls=[snap.file_url(f.path, base)],
            field=("models", i, "repo"),
            upstream=upstream,
            size=f.size,
            headers=dict(headers),
            meta=ModelFileMeta(
                repo=spec.repo, revision=spec.revision, commit=snap.commit, path_in_repo=f.path
            ).to_meta(),
        )

    # --- install ----------------------------------------------------------------------------------------

    def installed(self, ctx: InstallContext) -> str | None:
        models = self._models(ctx)
        if not models:
            return "the bundle holds no model"
        for m in models:
            todo = self._todo(ctx, m)
            if todo.files or todo.blobs or todo.links or todo.ref or todo.owned:
                return None
        names = ", ".join(f"{m.repo} in {m.dest}" for m in models)
        return f"already in place with the right sha256: {names}"

    def install(self, ctx: InstallContext) -> str:
        models = self._models(ctx)
        plans = [(m, self._todo(ctx, m)) for m in models]
        self._check_space(ctx, plans)
        lines = []
        for m, todo in plans:
            with _install_errors(m):
                lines.append(self._install_one(ctx, m, todo))
        return "; ".join(lines) if lines else "no model in the bundle"

    def _models(self, ctx: InstallContext) -> list[_Model]:
        specs = {s.repo: s for s in ctx.manifest.models}
        models: dict[str, _Model] = {}
        # Not ctx.artifacts(): it joins split files into a temp copy, and a model is copied (streamed from its
        # parts) straight to where it belongs.
        for art in (a for a in ctx.lock.artifacts if a.layer == self.name):
            try:
                meta = read_meta(ModelFileMeta, art.meta, art.path)
            except BadInputError as exc:
                raise InstallError(exc.message, exc.hint) from None
            repo, rel = meta.repo, meta.path_in_repo
            if not all(safe_file_name(p) for p in str(rel).split("/")):
                raise InstallError(
                    f"{art.path}: the lock names an unsafe path in the repo ({rel!r}).",
                    "The lock was altered: run `airgap verify` on the bundle.",
                )
            if is_pickle_name(rel) and (why := pickle_not_cleared(ctx.bundle, art, specs.get(repo))):
                raise InstallError(
                    f"{art.path}: a pickle-based model file (it can run code when loaded) that {why}; not installed.",
                    "Set `allow_pickle: true` on the model's manifest entry if the site accepts pickles, collect "
                    "again, run `airgap dossier` on the bundle and review the globals it lists; or collect the "
                    "model without this file (`ignore:`).",
                )
            m = models.get(repo)
            if m is None:
                m = models[repo] = _checked_model(repo, specs.get(repo), meta, ctx.options.model_dest.get(repo))
            m.files.append(_File(art, *_sources(ctx, art), rel, _checked_etag(repo, art)))
        return list(models.values())  # --model-dest naming another model: refused up front (installer.py)

    # What is missing, decided up front so the disk check knows the sizes and a re-run does only the rest.
    def _todo(self, ctx: InstallContext, m: _Model) -> _Todo:
        host = ctx.host
        hashes = _hashes(ctx)
        todo = _Todo()

        def mine(server_path: str) -> None:
            """Something of this model already there, to be given to its owner: named one by one, never a
            tree to walk (a directory the serving user owns may be a link by now)."""
            if _owner_differs(host.path(server_path), m.uid, m.gid):
                todo.owned.append(server_path)

        dests = [(f, host.path(f"{m.dest}/{f.rel}")) for f in m.files]
        ok = hashes.in_place_many([(p, f.art.size, f.art.sha256) for f, p in dests])
        mine(m.dest)
        for d in _subdirs(f.rel for f in m.files):
            mine(f"{m.dest}/{d}")
        for f, p in dests:
            if not ok[p]:
                todo.files.append(f)
            else:
                mine(f"{m.dest}/{f.rel}")
        if m.hf_home:
            storage = host.path(m.storage)
            for d in ("", "/blobs", "/snapshots", f"/snapshots/{m.commit}", "/refs"):
                mine(m.storage + d)
            for d in _subdirs(f.rel for f in m.files):
                mine(f"{m.storage}/snapshots/{m.commit}/{d}")
            if m.revision != m.commit:
                for d in _subdirs([m.revision]):
                    mine(f"{m.storage}/refs/{d}")
                ref = storage / "refs" / m.revision
                todo.ref = not ref.is_file() or ref.read_text(errors="replace") != m.commit
                if not todo.ref:
                    mine(f"{m.storage}/refs/{m.revision}")
            blobs = []
            for f, dest_file in dests:
                blob = storage / "blobs" / f.etag
                link = storage / "snapshots" / m.commit / f.rel
                if not (link.is_symlink() and os.path.realpath(link) == os.path.realpath(blob)):
                    todo.links.append(f)
                else:
                    mine(f"{m.storage}/snapshots/{m.commit}/{f.rel}")
                if _same_inode(blob, dest_file):
                    # A hard link to the dest file, hashed above; if that file is replaced, so must this be.
                    if not ok[dest_file]:
                        todo.blobs.append(f)
                else:
                    blobs.append((f, blob))
            blob_ok = hashes.in_place_many([(b, f.art.size, f.art.sha256) for f, b in blobs])
            todo.blobs += [f for f, b in blobs if not blob_ok[b]]
            todo.owned += [
                f"{m.storage}/blobs/{f.etag}" for f, b in blobs if blob_ok[b] and _owner_differs(b, m.uid, m.gid)
            ]
        return todo

    def _check_space(self, ctx: InstallContext, plans: list[tuple[_Model, _Todo]]) -> None:
        """Sum what each filesystem must take before copying anything: a copy that fills the disk half-way
        leaves a model that does not load, and an operator who learns it an hour later."""
        host = ctx.host
        need: dict[int, int] = {}
        where: dict[int, tuple[Path, str]] = {}
        for m, todo in plans:
            dest_dir = host.path(m.dest)
            dev = _device(dest_dir)
            where.setdefault(dev, (dest_dir, m.dest))
            for f in todo.files:
                # A move of a whole file within one filesystem is a rename and takes no room.
                if not (ctx.options.move and f.movable and _movable(f.sources[0]) and _device(f.sources[0]) == dev):
                    need[dev] = need.get(dev, 0) + f.art.size
            if m.hf_home:
                cache_dir = host.path(m.storage)
                cdev = _device(cache_dir)
                where.setdefault(cdev, (cache_dir, m.hf_home))
                if cdev != dev:  # on the same filesystem, blobs are hard links to the dest files
                    need[cdev] = need.get(cdev, 0) + sum(f.art.size for f in todo.blobs)
        for dev, n in need.items():
            local, shown = where[dev]
            free = shutil.disk_usage(_existing_ancestor(local)).free
            if n > free:
                raise InstallError(
                    f"models: not enough disk space for {shown}: the models need {human_size(n)} "
                    f"({n} bytes) there and the filesystem has {human_size(free)} ({free} bytes) free. "
                    "Nothing was copied.",
                    "Free space on that filesystem, or mount a larger disk at that path, then run the install "
                    "again (with --move, files on the bundle's own filesystem are moved and need no space).",
                )

    def _install_one(self, ctx: InstallContext, m: _Model, todo: _Todo) -> str:
        host = ctx.host
        done = 0
        moved = ctx.options.move
        # The parents of an install directory stay root's; the directory and all below it are the owner's,
        # given as each file and directory is made (no chown -R afterwards, which a link could redirect).
        _makedirs(ctx, posixpath.dirname(m.dest))
        _makedirs(ctx, m.dest, m.owner)
        for f in todo.files:
            target = f"{m.dest}/{f.rel}"
            _makedirs(ctx, posixpath.dirname(target), m.owner)
            if not host.dry_run and not all(p.is_file() for p in f.sources):
                raise InstallError(
                    f"{m.repo}: {f.art.path} is not in the bundle and {target} is not in place.",
                    "Copy the bundle again from the original (an earlier --move install spends the bundle's "
                    "copy of each file it places), then run the install again.",
                )
            how = self._place(ctx, m, f, target, move=moved)
            if not host.dry_run:
                host.note(f"{how} {f.art.path} -> {target} ({f.art.size} bytes, sha256 ok)")
                done += f.art.size
        cache = self._install_cache(ctx, m, todo) if m.hf_home else ""
        for path in todo.owned:  # what was already in place, owned by someone else (e.g. a new `owner:`)
            host.chown(path, m.uid, m.gid)
        kept = len(m.files) - len(todo.files)
        verb = "moved" if moved else "copied"
        return (
            f"{m.repo} @ {m.commit[:12]}: {len(todo.files)} files ({human_size(done)}) {verb} to {m.dest}, "
            f"{kept} already in place, owner {m.uid}:{m.gid}{cache}"
        )

    def _install_cache(self, ctx: InstallContext, m: _Model, todo: _Todo) -> str:
        """huggingface_hub's cache layout: blobs/<etag> (sha256 for LFS files, git blob id otherwise),
        snapshots/<commit>/<path> as relative links to the blobs, refs/<revision> holding the commit."""
        host = ctx.host
        assert m.hf_home is not None
        # HF_HOME's parents stay root's; HF_HOME and what airgap makes in it are the owner's, as they are made.
        if todo.blobs or todo.links or todo.ref:
            _makedirs(ctx, posixpath.dirname(m.hf_home))
        if todo.blobs:
            _makedirs(ctx, f"{m.storage}/blobs", m.owner)
        for f in todo.blobs:
            blob = f"{m.storage}/blobs/{f.etag}"
            src = f"{m.dest}/{f.rel}"
            if _device(host.path(src)) == _device(host.path(blob).parent):
                host.hardlink(src, blob)  # same bytes, no second copy of a 16 GB file
            else:
                self._copy(ctx, m, _opener(host.path(src)), blob, f)
        for f in todo.links:
            link = f"{m.storage}/snapshots/{m.commit}/{f.rel}"
            parent = posixpath.dirname(link)
            _makedirs(ctx, parent, m.owner)
            # Relative, as huggingface_hub makes them: valid under --root and inside a container mount.
            host.symlink(posixpath.relpath(f"{m.storage}/blobs/{f.etag}", parent), link, owner=m.owner)
        if todo.ref:
            ref = f"{m.storage}/refs/{m.revision}"  # the revision is a checked ref name (_ref_problem)
            _makedirs(ctx, posixpath.dirname(ref), m.owner)
            # No trailing newline: huggingface_hub compares the file's whole text with the commit.
            host.write_file(ref, m.commit, owner=m.owner)
        host.note(f"{m.repo}: Hugging Face cache at {m.hf_home}/hub ({cache_folder_name(m.repo)})")
        return f"; HF cache in {m.hf_home} (HF_HOME={m.hf_home} HF_HUB_OFFLINE=1)"

    def _place(self, ctx: InstallContext, m: _Model, f: _File, target: str, move: bool) -> str:
        """Put one file of the bundle at `target` (a server path); says whether it was moved or copied."""
        host = ctx.host
        src = f.sources[0]
        if move and f.movable and _movable(src) and _device(src) == _device(host.path(target).parent):
            # Renamed to a temp name beside the target and hashed there before it takes its name: the bundle
            # may have changed since it was verified.
            host.move_file(src, target, sha256=f.art.sha256, what=f.art.path, owner=m.owner)
            if not host.dry_run:
                _hashes(ctx).remember(host.path(target), f.art.sha256)
            return "moved"
        # A file split into parts (FAT32, DVDs) is streamed from them: no joined copy on the way.
        self._copy(ctx, m, lambda: ctx.open_artifact(f.art), target, f)
        if move and not f.in_base:
            try:
                for part in f.sources:
                    host.discard(part)
            except OSError as exc:
                # Read-only media (a DVD, a write-protected drive): the copy is in place and checked; the
                # bundle just keeps its file, so --move falls back to a copy instead of failing the layer.
                host.note(f"--move: {f.art.path} stays in the bundle ({exc.strerror}); it was copied")
                return "copied"
            return "moved"
        return "copied"

    def _copy(self, ctx: InstallContext, m: _Model, open_source: Callable[[], BinaryIO], target: str, f: _File) -> None:
        """Copy through the host, which checks the sha256 before the file takes its real name."""
        host = ctx.host
        host.copy_stream(open_source, target, sha256=f.art.sha256, what=f.art.path, owner=m.owner)
        if not host.dry_run:
            _hashes(ctx).remember(host.path(target), f.art.sha256)


# --- collect-side helpers ------------------------------------------------------------------------------


def check_entries(manifest: Manifest) -> None:
    """Problems in `models:` that the schema cannot see: a repo listed twice, two models in one `dest`."""
    seen: dict[str, int] = {}
    dests: dict[str, int] = {}
    for i, spec in enumerate(manifest.models):
        if spec.repo in seen:
            other = manifest.location(("models", seen[spec.repo]))
            raise manifest.error(
                ("models", i, "repo"), f"{spec.repo} is listed twice (also at {other}); keep one entry per repo"
            )
        seen[spec.repo] = i
        dest = (spec.dest or default_dest(spec.repo)).rstrip("/")
        if not dest.startswith("/") or ".." in dest.split("/"):
            raise manifest.error(
                ("models", i, "dest"), f"{spec.dest!r} is not an absolute path; write it like {default_dest(spec.repo)}"
            )
        if dest in dests:
            raise manifest.error(
                ("models", i, "dest"),
                f"{spec.repo} would be installed into {dest}, like the model at "
                f"{manifest.location(('models', dests[dest]))}; give one of them its own `dest:`",
            )
        dests[dest] = i


SHARD_RE = re.compile(r"^(?P<stem>.+)-\d{5}-of-\d{5}\.safetensors$")


def checkpoint_files(files: list[HubFile]) -> list[HubFile]:
    """The safetensors files that make up the model's one checkpoint, for the parameter count. Repos often
    carry two copies of the weights (Mistral's `consolidated.safetensors` beside transformers'
    `model-0000N-of-0000M.safetensors`); summing both would double the count. Top-level files first;
    shards group by their stem; transformers' `model` set wins, else the biggest set."""
    tensors = [f for f in files if f.path.endswith(".safetensors")]
    top = [f for f in tensors if "/" not in f.path] or tensors
    sets: dict[str, list[HubFile]] = {}
    for f in top:
        m = SHARD_RE.match(f.path)
        sets.setdefault(m.group("stem") if m else f.path.removesuffix(".safetensors"), []).append(f)
    if not sets:
        return []
    if "model" in sets:
        return sets["model"]
    return max(sets.values(), key=lambda fs: (sum(f.size for f in fs), fs[0].path))


def _nothing_matched(spec: ModelSpec, snap: Snapshot) -> str:
    shown = ", ".join(snap.all_paths[:12]) + (", ..." if len(snap.all_paths) > 12 else "")
    return (
        f"no file of {spec.repo} at {snap.commit[:12]} matches allow={spec.allow!r} ignore={spec.ignore!r}; "
        f"the repo holds: {shown or 'no files'}"
    )


def _weight_bytes(by_dtype: dict[str, int]) -> int | None:
    bits = 0
    for dtype, n in by_dtype.items():
        if dtype not in DTYPE_BITS:
            return None
        bits += n * DTYPE_BITS[dtype]
    return (bits + 7) // 8


# --- install-side helpers ------------------------------------------------------------------------------


@dataclass
class _File:
    art: LockedArtifact
    sources: list[Path]  # the file in the bundle, or its parts when split for FAT32 or DVDs
    in_base: bool  # held by the base bundle of a delta: copied, never moved out of it
    rel: str  # path in the repo
    etag: str  # the hub's ETag: the name of its blob in a Hugging Face cache

    @property
    def movable(self) -> bool:
        """--move renames only a whole file (not split into parts) of the bundle being installed."""
        return not self.in_base and not self.art.parts and len(self.sources) == 1


@dataclass
class _Model:
    repo: str
    revision: str
    commit: str
    dest: str  # server path
    uid: int
    gid: int
    hf_home: str | None
    files: list[_File] = field(default_factory=list)

    @property
    def owner(self) -> Owner:
        return (self.uid, self.gid)

    @property
    def storage(self) -> str:
        return f"{self.hf_home}/hub/{cache_folder_name(self.repo)}"


@dataclass
class _Todo:
    files: list[_File] = field(default_factory=list)  # to copy or move into dest
    blobs: list[_File] = field(default_factory=list)  # to put in the cache's blobs/
    links: list[_File] = field(default_factory=list)  # snapshot links to (re)make
    ref: bool = False
    owned: list[str] = field(default_factory=list)  # server paths in place but owned by someone else


class _Hashes:
    """sha256 of files already hashed in this install run, keyed by what would change if the file did:
    installed() and install() both look at every file, and a 70B model takes minutes to hash. One per
    InstallContext (`_hashes`), so nothing is believed across runs."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, int, int, int], str] = {}

    def remember(self, path: Path, sha256: str) -> None:
        """A file just written with bytes already checked: no need to read it again."""
        self._known[_stat_key(path.stat())] = sha256

    def in_place_many(self, items: list[tuple[Path, int, str]]) -> dict[Path, bool]:
        """Whether each path holds a regular file with this size and sha256; hashes in parallel."""

        def check(item: tuple[Path, int, str]) -> tuple[Path, bool]:
            path, size, sha = item
            try:
                st = path.stat()
            except OSError:
                return path, False
            # A symlink in a model directory may point outside what a container mounts: not "in place".
            if path.is_symlink() or not path.is_file() or st.st_size != size:
                return path, False
            key = _stat_key(st)
            got = self._known.get(key)
            if got is None:
                got = sha256_file(path)
                self._known[key] = got
            return path, got == sha

        if not items:
            return {}
        with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1, len(items)))) as pool:
            return dict(pool.map(check, items))


def _makedirs(ctx: InstallContext, server_path: str, owner: Owner | None = None) -> None:
    """host.makedirs once per directory per run: a dry run makes nothing, so without this it would announce
    a directory again for every file in it, and a parent the real run finds already made."""
    made: set[str] = ctx.memo((ModelsLayer.name, "made"), set)
    if server_path in made:
        return
    ctx.host.makedirs(server_path, owner=owner)
    while server_path not in made and server_path != "/":
        made.add(server_path)
        server_path = posixpath.dirname(server_path)


def _hashes(ctx: InstallContext) -> _Hashes:
    return ctx.memo((ModelsLayer.name, "sha256"), _Hashes)


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _opener(path: Path) -> Callable[[], BinaryIO]:
    return lambda: path.open("rb")


def _etag(art: LockedArtifact) -> str:
    d = art.upstream_digest
    if d and d.algorithm in ("sha256", "git-sha1"):
        return d.value
    return art.sha256


def _sources(ctx: InstallContext, art: LockedArtifact) -> tuple[list[Path], bool]:
    """The files holding an artifact (its parts when split) and whether they are in a delta's base bundle;
    the same choice InstallContext.open_artifact makes."""
    if art.in_base and ctx.base is not None and ctx.base_lock is not None:
        return source_files(ctx.base, ctx.base_lock.by_path()[art.path]), True
    return source_files(ctx.bundle, art), False


# What the lock may say, checked at install: root makes directories and files from these names, and the
# lock may have been edited on the way (whoever holds the drive can rewrite SHA256SUMS too).
REF_PART_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
ETAG_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


def pickle_not_cleared(bundle: Path, art: LockedArtifact, spec: ModelSpec | None) -> str | None:
    """Why the pickle file `art` may not be installed, None when it is cleared: its manifest entry (the
    lock's copy) allows pickles AND the bundle's dossier (dossier/dossier.json, listed in SHA256SUMS and so
    verified with the bundle) scanned a file of this path and sha256 to the end."""
    if spec is None or not spec.allow_pickle:
        return "the manifest does not allow (allow_pickle is not set for its model)"
    from airgap.digests import NotRegularFile, read_beneath

    try:
        data = read_beneath(bundle, "dossier/dossier.json", 256 << 20)
        scanned = json.loads(data).get("code_files", [])
    except (FileNotFoundError, NotRegularFile):
        return "no dossier has scanned (the bundle holds no dossier/dossier.json: run `airgap dossier` on it)"
    except (OSError, ValueError, AttributeError):
        return "the bundle's dossier cannot be read to clear"
    for c in scanned if isinstance(scanned, list) else []:
        if isinstance(c, dict) and c.get("path") == art.path and c.get("sha256") == art.sha256:
            return None if c.get("parsed") else "the dossier's scan could not read to the end"
    return "the bundle's dossier has not scanned (make the dossier again: `airgap dossier`)"


def _refused(repo: str, field: str, value: str, why: str) -> BadInputError:
    return BadInputError(
        f"models: {repo}: {field} {value!r} is refused: {why}. Nothing was installed.",
        "The bundle's lock was edited after collect, or its manifest names a system location: on the connected "
        "PC, fix the manifest (dest like /data/models/NAME, hf_home like /data/hf) and get a new bundle collected.",
    )


def _ref_problem(revision: str) -> str | None:
    """Why a revision cannot name a file under the cache's refs/ (`main`, `v1.0` and `refs/pr/1` can)."""
    parts = revision.split("/")
    if len(parts) > 4 or not all(REF_PART_RE.match(p) and p not in (".", "..") for p in parts):
        return "a ref is made of letters, digits, '.', '_' and '-' (parts joined by '/', like refs/pr/1)"
    return None


def _dest_problem(dest: str) -> str | None:
    if not dest.startswith("/") or ".." in dest.split("/"):
        return "not an absolute path without '..'"
    return install_dir_problem(dest)


def _checked_model(repo: str, spec: ModelSpec | None, meta: ModelFileMeta, dest_here: str | None = None) -> _Model:
    """The model as the lock describes it, every name root will make a path from checked first. `dest_here`
    is this server's own place for it (`install --model-dest`), checked as the manifest's `dest` is."""
    if not HF_REPO_RE.match(repo) or bad_name_char(repo):
        raise _refused(repo, "repo", repo, "not a Hugging Face repo id (owner/name)")
    if dest_here is not None and (why := _dest_problem(dest_here)):
        raise BadInputError(
            f"--model-dest {repo}={dest_here}: refused: {why}. Nothing was installed.",
            f"Give an absolute directory outside the system's own, like {default_dest(repo)} or /srv/models/NAME.",
        )
    dest = dest_here or (spec.dest if spec else None) or default_dest(repo)
    if why := install_dir_problem(dest):
        raise _refused(repo, "models[].dest", dest, why)
    hf_home = spec.hf_home if spec else None
    if hf_home is not None:
        if why := install_dir_problem(hf_home):
            raise _refused(repo, "models[].hf_home", hf_home, why)
        hf_home = normalise(hf_home)
    if not is_commit(meta.commit):
        raise _refused(repo, "commit", meta.commit, "a commit is 40 lower-case hex digits")
    if meta.revision != meta.commit and (why := _ref_problem(meta.revision)):
        raise _refused(repo, "revision", meta.revision, why)
    uid, gid = (int(x) for x in ((spec.owner if spec else None) or DEFAULT_OWNER).split(":"))
    return _Model(repo, meta.revision, meta.commit, normalise(dest), uid, gid, hf_home)


def _checked_etag(repo: str, art: LockedArtifact) -> str:
    etag = _etag(art)
    if not ETAG_RE.match(etag):
        raise _refused(repo, f"{art.path}: digest", etag, "a blob name is a sha256 or git sha1 in hex")
    return etag


def _subdirs(rels: Iterable[str]) -> list[str]:
    """Every directory on the way to these relative paths (`a/b/c` gives `a` and `a/b`), parents first."""
    out: set[str] = set()
    for rel in rels:
        parts = rel.split("/")[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(out, key=lambda d: (d.count("/"), d))


def _movable(path: Path) -> bool:
    """`--move` renames only a plain file that root owns, has one name and only root may write: anyone
    else could write to it after it is hashed (through an open descriptor or another name). Others are
    copied, hashed on the way, and then removed from the bundle."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_nlink == 1 and not st.st_mode & 0o022


@contextmanager
def _install_errors(m: _Model) -> Iterator[None]:
    """What the host refuses (a changed file, a full disk, a planted link is an InstallError already), as
    this layer's failure, named, with its fix."""
    try:
        yield
    except (DiskFullError, IntegrityError) as exc:
        raise InstallError(f"models: {exc.message}", exc.hint) from None
    except PermissionError as exc:
        # Containers serving the model run as its owner (1000 for vLLM's and most images): files left to
        # root are the usual cause of "Permission denied" on mounted models, so ownership is not optional.
        raise InstallError(
            f"models: {m.repo}: cannot make {exc.filename or 'a file'} for {m.uid}:{m.gid} (permission denied).",
            "Run the install as root (sudo).",
        ) from None


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _device(path: Path) -> int:
    return _existing_ancestor(path).stat().st_dev


def _same_inode(a: Path, b: Path) -> bool:
    try:
        sa, sb = a.stat(), b.stat()
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _owner_differs(path: Path, uid: int, gid: int) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False  # a missing path is counted as missing, not as mis-owned
    return (st.st_uid, st.st_gid) != (uid, gid)
