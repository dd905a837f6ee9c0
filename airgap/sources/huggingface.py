"""Hugging Face hub metadata: a revision pinned to its commit, the files at that commit with the hub's own
digests, and the parameter count read from safetensors headers.

The bytes themselves are not fetched here: they go through `HttpSource` like every other artifact
(resumable, parallel, one progress display, a re-run transfers nothing already verified). What this module
adds is what only the hub knows: which commit a branch or tag names today, which files that commit holds,
and what each must hash to (sha256 for LFS files, git's blob sha1 for the rest).

Metadata calls go through `huggingface_hub` itself (`HfApi.model_info`, `list_repo_tree`), so the hub's
API, its pagination and its error codes are handled as its own client handles them.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import requests

from airgap import __version__
from airgap.errors import BadInputError, UpstreamError
from airgap.sources.http import HttpSource, redact, scrub
from airgap.sources.request import ANSWERS, RETRY_STATUSES, Retry, UpstreamFailed, parse_retry_after, send

DEFAULT_ENDPOINT = "https://huggingface.co"

# safetensors refuses headers above 100 MB (its MAX_HEADER_SIZE); a bigger one is not a safetensors file.
MAX_HEADER = 100_000_000

# safetensors dtype -> bits per element (safetensors' Dtype enum).
DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
}


# huggingface_hub (and the HTTP library under it) is imported where the hub is asked, not here: it costs a
# third of a second, and `install`, `verify` and `plan --no-head` import the layers without needing it.


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level failures of whichever HTTP library this huggingface_hub release uses (requests
    before 1.0, httpx in 1.x, httpx2 in 2.x); each is a reason to retry, not a hub answer."""
    found: list[type[BaseException]] = [requests.ConnectionError, requests.Timeout]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError")):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(getattr(__import__(module), name))
    return tuple(found)


def hub_base() -> str:
    """The hub's canonical address: HF_ENDPOINT (read now, not when huggingface_hub was imported) or
    huggingface.co. `mirrors:` then rewrite it like any other URL."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_token() -> str | None:
    """HF_TOKEN (or the older HUGGING_FACE_HUB_TOKEN), else the token `hf auth login` saved. Only ever sent
    in request headers: never logged, never in the lock or an error message."""
    env = (os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or "").strip()
    if env:
        return env
    from huggingface_hub import get_token

    return get_token() or None


@dataclass(frozen=True)
class HubFile:
    path: str  # path in the repo, '/'-separated
    size: int
    blob_id: str  # git object id; for an LFS file, that of its pointer
    lfs_sha256: str | None  # sha256 of the bytes, for LFS files only

    @property
    def etag(self) -> str:
        """What the hub sends as the file's ETag, and what its cache names the blob after."""
        return self.lfs_sha256 or self.blob_id


@dataclass
class Snapshot:
    repo: str
    revision: str
    commit: str
    files: list[HubFile]  # after allow/ignore, sorted by path
    all_paths: list[str]  # every file at the commit, for "nothing matched" messages
    gated: bool
    tree_url: str  # canonical metadata URL the digests come from

    def file_url(self, path: str, base: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo, path, revision=self.commit, endpoint=base)


@dataclass
class TensorStats:
    params: int
    by_dtype: dict[str, int]  # elements per dtype

    @property
    def dtype(self) -> str | None:
        """The dtype most parameters are stored in (a checkpoint may keep norms in F32)."""
        return max(self.by_dtype.items(), key=lambda kv: (kv[1], kv[0]))[0] if self.by_dtype else None


T = TypeVar("T")


class HubClient:
    """The hub's metadata for the models layer; `source` supplies mirrors, retries and cancellation."""

    def __init__(self, source: HttpSource, base: str | None = None, token: str | None = None) -> None:
        from huggingface_hub import HfApi

        self.source = source
        self.base = base or hub_base()
        self.endpoint = source.resolve(self.base)  # where API calls really go (a mirror, a local hub)
        self.token = token
        self.api = HfApi(
            endpoint=self.endpoint, token=token or False, library_name="airgap", library_version=__version__
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    # --- metadata -------------------------------------------------------------------------------------

    def snapshot(self, repo: str, revision: str, allow: list[str] | None, ignore: list[str] | None) -> Snapshot:
        """Pin `revision` to a commit and list the files at that commit that `allow`/`ignore` select."""
        from huggingface_hub.hf_api import RepoFile
        from huggingface_hub.utils import filter_repo_objects

        info = self._call(repo, revision, lambda: self.api.model_info(repo, revision=revision))
        commit = info.sha
        if not commit:
            raise UpstreamError(
                f"{repo}: the hub at {redact(self.endpoint)} gave no commit for revision {revision!r}.",
                "Check `mirrors:` or HF_ENDPOINT: it may not be a Hugging Face hub.",
            )
        gated = bool(getattr(info, "gated", False))
        if gated:
            self._check_access(repo, revision)
        # Listed at the commit, not the branch: a push between the two calls cannot mix two trees.
        entries = self._call(
            repo,
            revision,
            lambda: [
                e for e in self.api.list_repo_tree(repo, revision=commit, recursive=True) if isinstance(e, RepoFile)
            ],
        )
        files = [HubFile(e.path, e.size, e.blob_id, e.lfs.sha256 if e.lfs else None) for e in entries]
        # huggingface_hub's own filter, so patterns select exactly what snapshot_download would.
        chosen = list(filter_repo_objects(files, allow_patterns=allow, ignore_patterns=ignore, key=lambda f: f.path))
        chosen.sort(key=lambda f: f.path)
        tree_url = f"{self.base}/api/models/{repo}/tree/{commit}"
        return Snapshot(repo, revision, commit, chosen, sorted(f.path for f in files), gated, tree_url)

    def _check_access(self, repo: str, revision: str) -> None:
        """A gated repo's metadata is public but its files are not: ask now, so the user hears "accept the
        licence" before anything is queued, not a 401 per file later."""
        if not self.token:
            raise gated_error(repo, self.base, token_set=False)
        self._call(repo, revision, lambda: self.api.auth_check(repo))

    def _call(self, repo: str, revision: str, fn: Callable[[], T]) -> T:
        """Run a hub API call with the collection's retries; hub refusals become one-paragraph errors."""
        from huggingface_hub.errors import (
            DisabledRepoError,
            GatedRepoError,
            HfHubHTTPError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        transport = _transport_errors()

        def attempt() -> T:
            try:
                return fn()
            except GatedRepoError:
                raise gated_error(repo, self.base, token_set=bool(self.token)) from None
            except RepositoryNotFoundError:
                raise repo_not_found_error(repo, self.base, token_set=bool(self.token)) from None
            except RevisionNotFoundError:
                raise revision_not_found_error(repo, revision) from None
            except DisabledRepoError:
                raise UpstreamError(
                    f"{repo}: the hub has disabled this repository.",
                    "Choose another model (or another copy of it) in the manifest.",
                ) from None
            except OfflineModeIsEnabled:
                raise BadInputError(
                    "HF_HUB_OFFLINE is set, so huggingface_hub refuses to contact the hub.",
                    "Unset HF_HUB_OFFLINE (collecting needs the hub; it is the server side that runs offline).",
                ) from None
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status in (401, 403):
                    raise access_error(repo, self.base, status, bool(self.token)) from None
                if status not in RETRY_STATUSES:
                    raise UpstreamError(
                        f"{repo}: the hub at {redact(self.endpoint)} answered HTTP {status}.",
                        "Check the repo id and revision in the manifest, and `mirrors:`.",
                    ) from None
                headers = exc.response.headers if exc.response is not None else {}
                raise Retry(f"HTTP {status}", parse_retry_after(headers.get("Retry-After"))) from None
            except transport as exc:
                raise Retry(f"{type(exc).__name__}: {_short(exc)}") from None

        return self.source.policy.run(
            attempt,
            what=repo,
            where=f"the hub at {redact(self.endpoint)}",
            hint="Check the network (and `mirrors:` or HF_ENDPOINT), then run the same command again.",
        )

    # --- safetensors headers --------------------------------------------------------------------------

    def tensor_stats(self, urls: Iterable[str], repo: str) -> tuple[TensorStats | None, str]:
        """Parameters and dtypes over the given safetensors files (shards of one model), from their headers
        alone. (None, why) when a header cannot be read: the count is informative, never a reason to fail
        the collection."""
        urls = list(urls)
        if not urls:
            return None, "no .safetensors file selected"

        def one(url: str) -> TensorStats | str:
            try:
                return count_tensors(self.read_header(url, repo))
            except _HeaderUnreadable as exc:
                return scrub(f"{url.rsplit('/', 1)[-1]}: {exc}")

        # One or two small requests per shard; a 70B checkpoint has ~30 shards, so ask in parallel.
        with ThreadPoolExecutor(max_workers=min(8, len(urls)), thread_name_prefix="safetensors") as pool:
            results = list(pool.map(one, urls))
        total = TensorStats(0, {})
        for got in results:
            if isinstance(got, str):
                return None, got
            total.params += got.params
            for k, v in got.by_dtype.items():
                total.by_dtype[k] = total.by_dtype.get(k, 0) + v
        return total, ""

    def read_header(self, url: str, repo: str) -> dict[str, Any]:
        """The JSON header of a safetensors file: 8 bytes little-endian length, then that many bytes of
        JSON. Read with Range requests, so a 10 GB shard costs a few KiB."""
        # Two exact reads rather than one generous guess: a re-run, which reads every header again, then
        # costs a few KiB per shard, not a fixed chunk of each.
        head = self._range(url, 0, 7, repo)
        if len(head) < 8:
            raise _HeaderUnreadable("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head[:8])
        if n > MAX_HEADER:
            raise _HeaderUnreadable(f"header length {n} is not plausible; not a safetensors file")
        raw = self._range(url, 8, 8 + n - 1, repo) if n else b""
        if len(raw) != n:
            raise _HeaderUnreadable(f"header cut short ({len(raw)} of {n} bytes)")
        try:
            header = json.loads(raw)
        except ValueError as exc:
            raise _HeaderUnreadable(f"header is not JSON ({exc})") from None
        if not isinstance(header, dict):
            raise _HeaderUnreadable("header is not a JSON object")
        return header

    def _range(self, url: str, start: int, end: int, repo: str) -> bytes:
        real = self.source.resolve(url)
        headers = {**self.headers, "Range": f"bytes={start}-{end}"}

        def attempt() -> bytes:
            # The hub redirects LFS files to its CDN; requests drops Authorization on the way there.
            r = send(
                self.source.session,
                "GET",
                real,
                policy=self.source.policy,
                what=repo,
                headers=headers,
                stream=True,
                expect=ANSWERS,
            )
            with r:
                if r.status_code in (401, 403):
                    code = r.headers.get("X-Error-Code", "")
                    if code == "GatedRepo":
                        raise gated_error(repo, self.base, token_set=bool(self.token))
                    raise access_error(repo, self.base, r.status_code, bool(self.token))
                if r.status_code == 416:
                    return b""
                if r.status_code not in (200, 206):
                    raise _HeaderUnreadable(f"{redact(real)} answered HTTP {r.status_code}")
                if r.status_code == 200 and start:
                    raise _HeaderUnreadable("the server ignores Range requests")
                # A 200 (Range ignored) would send the whole file: read only what was asked for.
                return bytes(r.raw.read(end - start + 1))

        try:
            return self.source.policy.run(attempt, what=repo, where=redact(real))
        except UpstreamFailed as exc:
            raise _HeaderUnreadable(exc.message) from None


class _HeaderUnreadable(Exception):
    pass


def count_tensors(header: dict[str, Any]) -> TensorStats:
    """Sum the element counts of every tensor in a safetensors header (`__metadata__` is not a tensor)."""
    stats = TensorStats(0, {})
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(spec, dict) or not isinstance(spec.get("shape"), list):
            raise _HeaderUnreadable(f"tensor {name!r} has no shape")
        n = 1
        for dim in spec["shape"]:
            if not isinstance(dim, int) or dim < 0:
                raise _HeaderUnreadable(f"tensor {name!r} has a bad shape {spec['shape']!r}")
            n *= dim
        dtype = str(spec.get("dtype", "?"))
        stats.params += n
        stats.by_dtype[dtype] = stats.by_dtype.get(dtype, 0) + n
    return stats


# --- errors: one paragraph each, naming the repo and what to do; never the token ----------------------


def gated_error(repo: str, base: str, token_set: bool) -> UpstreamError:
    base = redact(base)  # HF_ENDPOINT may name a mirror with `user:password@`
    page = f"{base}/{repo}"
    if not token_set:
        return UpstreamError(
            f"{repo} is a gated model: the hub serves its files only to a logged-in account that accepted its "
            "licence, and no HF_TOKEN is set.",
            f"Accept the licence on {page} (logged in), create a read token at {base}/settings/tokens, and run "
            "the same command again with HF_TOKEN set in the environment (airgap never writes it anywhere).",
        )
    return UpstreamError(
        f"{repo} is a gated model and the token airgap sent (HF_TOKEN, or your `hf auth login`) has no access "
        "to it yet.",
        f"Accept the licence on {page} with the account that owns the token (some authors approve requests by "
        "hand: the page says when access is granted), or use a token of an account that has access.",
    )


def repo_not_found_error(repo: str, base: str, token_set: bool) -> UpstreamError:
    why = (
        "the token airgap sent (HF_TOKEN, or your `hf auth login`) cannot see it" if token_set else "no HF_TOKEN is set"
    )
    return UpstreamError(
        f"{repo}: no such model repository on {redact(base)}, or it is private and {why}.",
        "Check `repo:` in the manifest (owner/name, as in the model page's URL); for a private repo, set "
        "HF_TOKEN to a read token of an account that can see it.",
    )


def revision_not_found_error(repo: str, revision: str) -> UpstreamError:
    return UpstreamError(
        f"{repo}: revision {revision!r} does not exist (no branch, tag or commit of that name).",
        "Check `revision:` in the manifest: a branch (main), a tag, or a full 40-character commit sha from the "
        "repo's history page.",
    )


def access_error(repo: str, base: str, status: int, token_set: bool) -> UpstreamError:
    base = redact(base)
    if token_set:
        return UpstreamError(
            f"{repo}: the hub refused access (HTTP {status}) with the token airgap sent (HF_TOKEN, or your "
            "`hf auth login`).",
            f"Check that the token is valid and can read {base}/{repo} (a fine-grained token needs read access "
            "to this repo), and accept the model's licence on its page if it has one.",
        )
    return UpstreamError(
        f"{repo}: the hub refused access (HTTP {status}) and no HF_TOKEN is set.",
        f"If the repo is private or gated, accept its licence on {base}/{repo} and set HF_TOKEN to a read token.",
    )


def cache_folder_name(repo: str) -> str:
    """huggingface_hub's cache directory for a model repo: models--owner--name."""
    return "models--" + repo.replace("/", "--")


def _short(exc: BaseException) -> str:
    text = scrub(str(exc))  # the HTTP library's text repeats the URL, query string included
    return text if len(text) < 200 else text[:200] + "..."
