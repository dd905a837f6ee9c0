"""Chain of custody: what a bundle says about itself, read once, and whether a trusted key vouches for it.

Whoever holds the drive can change any byte of it, and a local user can swap files while airgap runs. So
SHA256SUMS, its signature and the lock are each read exactly once, into memory (`Snapshot.read`), and every
later decision (the signature, the lock, which files must exist with which digests) is made on those bytes:
rewriting SHA256SUMS or the lock after the read changes nothing. The three files are opened without
following links and must be regular files (a FIFO must not hang us, a link to /dev/zero must not be read),
and each is size-bounded.

Signatures are policy, not a flag: public keys installed on the server (`/etc/airgap/keys/*.pub`) and any
`--key` are the trusted keys. When there is one, a valid signature by one of them is required. When there
is none, a signature cannot be checked, and the verdict says exactly that ("unchecked"), never "valid".
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from airgap.bundle_layout import LOCK_NAME, MAX_LOCK_BYTES, MAX_SUMS_BYTES, SIG_NAME, SUMS_NAME, TRUSTED_KEYS_DIR
from airgap.digests import NotRegularFile, read_beneath, read_bundle_file
from airgap.errors import AirgapError, BadInputError, IntegrityError, VerifyFailed
from airgap.signing import (
    MAX_SIG_BYTES,
    ParsedSignature,
    PublicKey,
    SignatureError,
    check_parsed,
    load_public,
    parse_signature,
)

if TYPE_CHECKING:
    from airgap.lock import Lock

# SHA256SUMS holds ~100-200 bytes a file: 64 MiB is several hundred thousand files, far beyond any bundle.

Status = Literal["valid", "invalid", "unchecked", "unsigned"]


def trusted_keys(keys_dir: Path, extra: Sequence[PublicKey] = ()) -> list[PublicKey]:
    """Every *.pub in keys_dir (minisign public key files; a missing dir = none) plus `extra` (--key).
    A file there that is not a valid public key is a BadInputError naming it: a broken trust store must
    not quietly become "no trusted key", which would turn mandatory signatures off."""
    keys: list[PublicKey] = []
    try:
        names = sorted(e.name for e in os.scandir(keys_dir) if e.name.endswith(".pub"))
    except FileNotFoundError:
        names = []
    except NotADirectoryError:
        raise BadInputError(
            f"{keys_dir}: not a directory; it should hold the trusted public keys (*.pub).",
            "Make it a directory holding the .pub files of the keys bundles are signed with.",
        ) from None
    except OSError as exc:
        raise BadInputError(
            f"{keys_dir}: cannot list the trusted keys ({exc.strerror}).",
            "Run as root (the directory is usually readable by root only), or point --trusted-keys elsewhere.",
        ) from None
    for name in names:
        keys.append(load_public(keys_dir / name))
    seen: set[tuple[bytes, bytes]] = set()
    out: list[PublicKey] = []
    for k in [*keys, *extra]:
        ident = (k.key_id, _raw(k))
        if ident not in seen:
            seen.add(ident)
            out.append(k)
    return out


def _raw(pk: PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return pk.key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class SignatureVerdict:
    """What can be said about SHA256SUMS.sig with the keys at hand.

    valid      checked with a trusted key and it holds
    invalid    damaged, not minisign, does not match SHA256SUMS, or its trusted comment was altered
    unchecked  well formed, but by a key that is not trusted (or there is no trusted key): nothing is known
    unsigned   there is no SHA256SUMS.sig
    """

    status: Status
    key_id: str  # of the signature when known (minisign hex), else ""
    trusted_comment: str  # only when valid: an unchecked comment is not trusted and is not shown as such
    detail: str  # one sentence a human reads
    required: bool  # trusted keys exist, so a valid signature is mandatory
    key_file: str = ""  # the public key file that checked it, when valid

    @property
    def acceptable(self) -> bool:
        return self.status == "valid" or (not self.required and self.status in ("unchecked", "unsigned"))

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "key_id": self.key_id,
            "trusted_comment": self.trusted_comment,
            "detail": self.detail,
            "required": self.required,
            "public_key_file": self.key_file,
            "acceptable": self.acceptable,
        }


def judge_signature(
    sums_bytes: bytes, sig_bytes: bytes | None, keys: Sequence[PublicKey], keys_dir: str = TRUSTED_KEYS_DIR
) -> SignatureVerdict:
    """The verdict on a signature's bytes (None: no signature file) over SHA256SUMS's bytes."""
    required = bool(keys)
    ids = ", ".join(sorted({k.key_id_hex for k in keys}))
    if sig_bytes is None:
        if required:
            detail = (
                f"the bundle is not signed (no {SIG_NAME}), and a valid signature by a trusted key ({ids}) is required"
            )
        else:
            detail = f"the bundle is not signed (no {SIG_NAME})"
        return SignatureVerdict("unsigned", "", "", detail, required)
    try:
        parsed = parse_signature(sig_bytes, SIG_NAME)
    except SignatureError as exc:
        return SignatureVerdict("invalid", "", "", exc.message, required)
    candidates = [k for k in keys if k.key_id == parsed.key_id]
    if not candidates:
        if required:
            detail = (
                f"signed by key ID {parsed.key_id_hex}, not by a trusted key ({ids}): the signature cannot be "
                "checked, and a valid one is required"
            )
        else:
            detail = f"signed by key ID {parsed.key_id_hex}; no trusted key: pass --key or install it in {keys_dir}"
        return SignatureVerdict("unchecked", parsed.key_id_hex, "", detail, required)
    return _check_with(sums_bytes, parsed, candidates, required)


def _check_with(
    sums_bytes: bytes, parsed: ParsedSignature, candidates: Sequence[PublicKey], required: bool
) -> SignatureVerdict:
    failure: SignatureError | None = None
    for pk in candidates:  # two trusted keys with one key ID: either may be the signer
        try:
            info = check_parsed(pk, sums_bytes, parsed, SIG_NAME)
        except SignatureError as exc:
            failure = failure or exc
            continue
        where = f" ({pk.source})" if pk.source else ""
        return SignatureVerdict(
            "valid",
            info.key_id,
            info.trusted_comment,
            f"valid signature by trusted key ID {info.key_id}{where}",
            required,
            key_file=pk.source,
        )
    assert failure is not None
    return SignatureVerdict("invalid", parsed.key_id_hex, "", failure.message, required)


@dataclass(frozen=True)
class Snapshot:
    """SHA256SUMS, its signature and the lock, each read exactly once (O_NOFOLLOW, regular files only,
    size-bounded), everything later decided from these bytes."""

    bundle: Path
    sums_bytes: bytes
    sums: dict[str, str]  # relative path -> sha256; duplicates / unsafe names refused in parse
    signature: SignatureVerdict
    lock_sha256: str  # of the bytes read ("" when they could not be read)
    sums_sha256: str
    lock_bytes: bytes = b""
    # The lock is typed (parsed, validated) in a thread started by `read`: that is most of a small verify's
    # start-up, and the caller hashes files meanwhile. `lock`, `lock_problem` and `lock_error` wait for it.
    _lock_parse: _LockParse | None = field(default=None, repr=False, compare=False)

    @property
    def lock(self) -> Lock | None:
        """The lock, parsed only after sha256(lock_bytes) == sums["airgap.lock.json"]; None otherwise."""
        return self._lock_parse.result()[0] if self._lock_parse else None

    @property
    def lock_problem(self) -> str:
        """Why `lock` is None ("" when it is not)."""
        return self._lock_parse.result()[1] if self._lock_parse else ""

    @property
    def lock_error(self) -> AirgapError | None:
        """The error the lock's parse raised (e.g. "made by a newer airgap: upgrade"), re-raised by
        require_lock so its exit code and hint survive."""
        return self._lock_parse.result()[2] if self._lock_parse else None

    @classmethod
    def read(cls, bundle: Path, keys: Sequence[PublicKey], *, keys_dir: str = TRUSTED_KEYS_DIR) -> Snapshot:
        """Read the bundle's three files once. `keys` are the trusted keys (`trusted_keys`); `keys_dir` only
        names where trusted keys go, in the verdict's words. BadInputError: not a directory, not a bundle;
        IntegrityError: SHA256SUMS is not a regular file, too large, malformed, or lists a path twice or
        one outside the bundle."""
        if not bundle.is_dir():
            if bundle.exists():
                raise BadInputError(f"{bundle}: not a directory.", "Give the path of the bundle's top directory.")
            raise BadInputError(f"{bundle}: no such directory.", "Give the path of the bundle's top directory.")
        sums_bytes = read_bundle_file(bundle, SUMS_NAME, MAX_SUMS_BYTES)
        if sums_bytes is None:
            from airgap.journal import unfinished

            if (not_yet := unfinished(bundle)) is not None:
                raise not_yet  # a collection in progress: not damage, and never reported as such
            if os.path.lexists(bundle / LOCK_NAME):
                raise BadInputError(
                    f"{bundle}: {SUMS_NAME} is missing; the collection did not finish or the file was lost.",
                    "Copy it again from the original bundle; if that one lacks it too, its collection was "
                    "interrupted: get it finished (or a new bundle collected) on the connected PC.",
                )
            raise BadInputError(
                f"{bundle}: no {SUMS_NAME} here; this is not an airgap bundle.",
                "Point at the bundle's top directory, the one holding SHA256SUMS and README.txt.",
            )
        from airgap.sums import parse_sums_bytes  # here: `airgap verify --help` needs only TRUSTED_KEYS_DIR

        sums = parse_sums_bytes(sums_bytes, SUMS_NAME)
        try:
            sig_bytes = read_bundle_file(bundle, SIG_NAME, MAX_SIG_BYTES)
        except IntegrityError as exc:
            # A signature file that is a link or a FIFO is no signature anyone can vouch for: invalid.
            verdict = SignatureVerdict("invalid", "", "", exc.message, bool(keys))
        else:
            verdict = judge_signature(sums_bytes, sig_bytes, keys, keys_dir)
        parse, lock_sha, lock_bytes = _read_lock(bundle, sums)
        return cls(
            bundle=bundle,
            sums_bytes=sums_bytes,
            sums=sums,
            signature=verdict,
            lock_sha256=lock_sha,
            sums_sha256=hashlib.sha256(sums_bytes).hexdigest(),
            lock_bytes=lock_bytes,
            _lock_parse=parse,
        )

    def require_lock(self) -> Lock:
        """The lock, when it may be acted on: the signature is acceptable and the lock's bytes are the ones
        SHA256SUMS lists. Otherwise VerifyFailed naming why (or the lock's own error, e.g. a newer format)."""
        if not self.signature.acceptable:
            raise VerifyFailed(
                f"{self.bundle}: signature: {self.signature.detail}; the bundle is not used.",
                "Get an intact bundle signed by a trusted key, or check the right public key is installed.",
            )
        if self.lock is not None:
            return self.lock
        if self.lock_error is not None:
            raise self.lock_error
        raise VerifyFailed(
            f"{self.bundle / LOCK_NAME}: {self.lock_problem}.",
            "Run `airgap verify` on the bundle to see what was damaged; copy it again from the original.",
        )


class _LockParse:
    """(lock, problem, error) of a lock, worked out in a thread (or given outright when there is nothing to
    parse). A bug in the parse is re-raised where the result is asked for, not lost in the thread."""

    def __init__(self, done: tuple[Lock | None, str, AirgapError | None] | None = None) -> None:
        self._done = done
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, data: bytes, where: str) -> _LockParse:
        job = cls()
        job._thread = threading.Thread(target=job._run, args=(data, where), name="lock-parse", daemon=True)
        job._thread.start()
        return job

    def _run(self, data: bytes, where: str) -> None:
        from airgap.lock import Lock

        try:
            self._done = (Lock.parse(data, where), "", None)
        except BadInputError as exc:
            self._done = (None, exc.message, exc)
        except BaseException as exc:  # re-raised in result(): a thread must not swallow it
            self._failure = exc

    def result(self) -> tuple[Lock | None, str, AirgapError | None]:
        if self._thread is not None:
            self._thread.join()
        if self._failure is not None:
            raise self._failure
        assert self._done is not None
        return self._done


def _read_lock(bundle: Path, sums: dict[str, str]) -> tuple[_LockParse, str, bytes]:
    """(parse, sha256, bytes): the lock's bytes read once; their parse started only once they match
    SHA256SUMS."""
    try:
        data = read_beneath(bundle, LOCK_NAME, MAX_LOCK_BYTES)
    except FileNotFoundError:
        return _LockParse((None, f"{LOCK_NAME} is missing", None)), "", b""
    except NotRegularFile as exc:
        why = f"{LOCK_NAME} is {exc.what}, not a regular file; airgap does not follow or read it"
        return _LockParse((None, why, None)), "", b""
    except OSError as exc:
        return _LockParse((None, f"cannot read {LOCK_NAME} ({exc.strerror})", None)), "", b""
    digest = hashlib.sha256(data).hexdigest()
    want = sums.get(LOCK_NAME)
    if want is None:
        why = f"{SUMS_NAME} does not list {LOCK_NAME}, so nothing vouches for it"
        return _LockParse((None, why, None)), digest, data
    if digest != want:
        why = f"{LOCK_NAME} does not match its {SUMS_NAME} line (sha256 {digest}, expected {want})"
        return _LockParse((None, why, None)), digest, data
    return _LockParse.start(data, str(bundle / LOCK_NAME)), digest, data
