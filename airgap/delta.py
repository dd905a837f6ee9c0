"""Delta bundles on the install side: the artifacts a delta does not carry must be in its base, intact."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from airgap.digests import sha256_file
from airgap.errors import BadInputError, IntegrityError
from airgap.lock import Lock, LockedArtifact
from airgap.parts import source_files


def check_base(lock: Lock, base: Path | None) -> Lock | None:
    """The base bundle's lock, once every artifact the delta references is found there with its digest.
    None for a full bundle."""
    if lock.base is None:
        if base is not None:
            raise BadInputError("--base was given, but this bundle is complete (not a delta).", "Leave out --base.")
        return None
    if base is None:
        raise BadInputError(
            f"This is a delta bundle: it carries only what changed since '{lock.base.name}' of {lock.base.created}.",
            "Give that bundle with --base /path/of/old/bundle.",
        )
    base_lock, actual = Lock.read_with_digest(base)  # the digest of the very bytes parsed
    if actual != lock.base.lock_sha256:
        raise IntegrityError(
            f"{base}: not the base this delta was made against (its lock differs: "
            f"'{base_lock.name}' of {base_lock.created}; the delta wants '{lock.base.name}' of "
            f"{lock.base.created}).",
            "Give the exact bundle the delta was collected --since.",
        )
    by_path = base_lock.by_path()
    wanted = [a for a in lock.artifacts if a.in_base]
    missing = [a.path for a in wanted if a.path not in by_path or by_path[a.path].sha256 != a.sha256]
    if missing:
        raise IntegrityError(
            f"{base}: the base lacks {', '.join(missing)} (or holds another version of it).",
            "Use the base bundle the delta was made from, complete.",
        )

    def bad(art: LockedArtifact) -> str | None:
        entry = by_path[art.path]
        for part in entry.stored_files():
            path = base / part.path
            if not path.is_file():
                return f"{part.path} (missing)"
            if sha256_file(path) != part.sha256:
                return f"{part.path} (altered)"
        return None

    with ThreadPoolExecutor() as pool:
        problems = [p for p in pool.map(bad, wanted) if p]
    if problems:
        raise IntegrityError(
            f"{base}: the base bundle is damaged: {', '.join(problems)}.",
            "Copy those files again from the original base bundle.",
        )
    return base_lock


def base_files(base: Path, base_lock: Lock, art: LockedArtifact) -> list[Path]:
    return source_files(base, base_lock.by_path()[art.path])
