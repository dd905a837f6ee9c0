"""Ed25519 signatures over SHA256SUMS, in minisign's formats.

Why minisign's formats: the security officer at the gate can check a bundle with the stock `minisign`
tool (`minisign -Vm SHA256SUMS -x SHA256SUMS.sig -p airgap.pub`), without trusting airgap itself.
SHA256SUMS covers the lock and every file, so one signature covers the whole bundle.

Formats (https://jedisct1.github.io/minisign/):
  public key   "untrusted comment: ...\\n" + base64("Ed" + key_id[8] + public_key[32])
  signature    "untrusted comment: ...\\n" + base64("ED" + key_id[8] + sig[64])        (sig of BLAKE2b-512(file))
               "trusted comment: ...\\n"   + base64(global_sig[64])                    (sig of sig + trusted comment)
The secret key is airgap's own file (minisign's is scrypt-encrypted): "Ed" + key_id + seed[32], mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from airgap.digests import file_kind
from airgap.errors import AirgapError, BadInputError

# cryptography is imported where a key is made, loaded or used: `airgap verify` without a trusted key and
# every command that never signs start without it.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PUBKEY_ALG = b"Ed"
SIG_PREHASHED = b"ED"  # minisign >= 0.8 default: sign BLAKE2b-512 of the file, fine for huge files
SIG_LEGACY = b"Ed"
SECRET_TAG = "airgap secret key"
# A minisign signature file is ~300 bytes (the trusted comment is one line); a key file ~100.
MAX_SIG_BYTES = 64 << 10
MAX_KEY_BYTES = 64 << 10


class SignatureError(AirgapError):
    """A signature is missing, malformed, by another key, or does not match."""


@dataclass(frozen=True)
class PublicKey:
    key_id: bytes
    key: Ed25519PublicKey
    source: str = field(default="", compare=False)  # the file it was loaded from, for reports

    @property
    def key_id_hex(self) -> str:
        # minisign prints key ids as the 8 bytes read little-endian, in upper-case hex
        return self.key_id[::-1].hex().upper()


@dataclass(frozen=True)
class SecretKey:
    key_id: bytes
    key: Ed25519PrivateKey

    def public(self) -> PublicKey:
        return PublicKey(self.key_id, self.key.public_key())


@dataclass(frozen=True)
class SignatureInfo:
    key_id: str
    trusted_comment: str
    prehashed: bool


@dataclass(frozen=True)
class ParsedSignature:
    """A minisign signature file, well formed but not yet checked against any key."""

    key_id: bytes
    sig: bytes
    prehashed: bool
    trusted_comment: bytes  # as signed: the global signature covers these exact bytes
    global_sig: bytes

    @property
    def key_id_hex(self) -> str:
        return self.key_id[::-1].hex().upper()


def generate() -> SecretKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return SecretKey(os.urandom(8), Ed25519PrivateKey.generate())


def _raw_public(pk: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return pk.public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_key_text(pk: PublicKey) -> str:
    blob = PUBKEY_ALG + pk.key_id + _raw_public(pk.key)
    return f"untrusted comment: minisign public key {pk.key_id_hex}\n{base64.b64encode(blob).decode()}\n"


def write_keypair(sk: SecretKey, stem: Path) -> tuple[Path, Path]:
    """Write STEM.key (0600) and STEM.pub; refuse to overwrite a key: losing one orphans every bundle."""
    secret, public = stem.with_suffix(".key"), stem.with_suffix(".pub")
    for p in (secret, public):
        if p.exists():
            raise BadInputError(
                f"{p}: already exists; airgap will not overwrite a key.",
                "Choose another name with -o, or move the old key away first.",
            )
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    seed = sk.key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    blob = base64.b64encode(PUBKEY_ALG + sk.key_id + seed).decode()
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"untrusted comment: {SECRET_TAG} {sk.public().key_id_hex}; keep it on the collecting side\n{blob}\n")
    public.write_text(public_key_text(sk.public()))
    return secret, public


def _read_key_file(path: Path, what: str) -> bytes:
    """A key file's bytes, bounded, regular files only (a FIFO named *.pub must not hang a verify)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such {what}.", "Give the path of the file `airgap keygen` wrote.") from None
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read the {what}: {exc.strerror}.") from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BadInputError(f"{path}: is {file_kind(mode)}, not a {what} file.")
        data = f.read(MAX_KEY_BYTES + 1)
    if len(data) > MAX_KEY_BYTES:
        raise BadInputError(f"{path}: far too large for a {what}.", "Give the .pub file from `airgap keygen`.")
    return data


def _second_line(data: bytes, path: Path, what: str) -> bytes:
    lines = data.decode("utf-8", errors="replace").splitlines()
    try:
        return base64.b64decode(lines[1], validate=True)
    except (IndexError, binascii.Error):
        raise BadInputError(
            f"{path}: not a minisign-format {what}.", "Expected two lines: 'untrusted comment: ...' and a base64 line."
        ) from None


def load_public(path: Path) -> PublicKey:
    data = _read_key_file(path, "public key")
    blob = _second_line(data, path, "public key")
    if SECRET_TAG in data.decode("utf-8", errors="replace").splitlines()[0]:
        # Same length and tag as a public key: only the comment tells them apart. Never treat a seed as a key.
        raise BadInputError(
            f"{path}: this is a secret key, not an Ed25519 minisign public key.",
            "Give the .pub file; keep the .key file on the collecting side.",
        )
    if len(blob) != 42 or blob[:2] != PUBKEY_ALG:
        raise BadInputError(f"{path}: not an Ed25519 minisign public key.", "Use the .pub file from `airgap keygen`.")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return PublicKey(blob[2:10], Ed25519PublicKey.from_public_bytes(blob[10:]), source=str(path))


def load_secret(path: Path) -> SecretKey:
    if not path.is_file():
        raise BadInputError(f"{path}: no such secret key.", "Create one with `airgap keygen -o NAME`.")
    first = path.read_text(errors="replace").splitlines()[:1]
    if first and first[0].startswith("untrusted comment: minisign public key"):
        raise BadInputError(f"{path}: this is a public key; signing needs the secret key (the .key file).")
    if not first or SECRET_TAG not in first[0]:
        raise BadInputError(f"{path}: not an airgap secret key.", "Create one with `airgap keygen -o NAME`.")
    blob = _second_line(path.read_bytes(), path, "secret key")
    if len(blob) != 42 or blob[:2] != PUBKEY_ALG:
        raise BadInputError(f"{path}: damaged airgap secret key.", "Use a backup of the key, or make a new one.")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return SecretKey(blob[2:10], Ed25519PrivateKey.from_private_bytes(blob[10:]))


def sign(sk: SecretKey, data: bytes, trusted_comment: str) -> str:
    """A minisign signature file's text for `data`."""
    if "\n" in trusted_comment:
        raise ValueError("a trusted comment is one line")
    sig = sk.key.sign(hashlib.blake2b(data, digest_size=64).digest())
    global_sig = sk.key.sign(sig + trusted_comment.encode())
    return (
        f"untrusted comment: signature from airgap secret key {sk.public().key_id_hex}\n"
        f"{base64.b64encode(SIG_PREHASHED + sk.key_id + sig).decode()}\n"
        f"trusted comment: {trusted_comment}\n"
        f"{base64.b64encode(global_sig).decode()}\n"
    )


def parse_signature(sig_bytes: bytes, sig_name: str = "SHA256SUMS.sig") -> ParsedSignature:
    """The parts of a minisign signature file; SignatureError when it is not one (damaged or replaced)."""
    # Lines end at \n only (minisign's own reader; a trailing \r is dropped): the trusted comment is signed
    # as bytes, so no other character may end a line.
    lines = [line[:-1] if line.endswith(b"\r") else line for line in sig_bytes.split(b"\n")]
    if (
        len(lines) < 4
        or not lines[0].startswith(b"untrusted comment: ")
        or not lines[2].startswith(b"trusted comment: ")
    ):
        raise SignatureError(
            f"{sig_name}: not a minisign signature file.", "Sign the bundle again (airgap sign BUNDLE --key KEY)."
        )
    try:
        blob = base64.b64decode(lines[1], validate=True)
        global_sig = base64.b64decode(lines[3], validate=True)
    except binascii.Error:
        raise SignatureError(f"{sig_name}: damaged (not base64).", "Copy it again from the original bundle.") from None
    if len(blob) != 74 or blob[:2] not in (SIG_PREHASHED, SIG_LEGACY) or len(global_sig) != 64:
        raise SignatureError(
            f"{sig_name}: not an Ed25519 minisign signature.", "Copy it again from the original bundle."
        )
    return ParsedSignature(
        key_id=blob[2:10],
        sig=blob[10:],
        prehashed=blob[:2] == SIG_PREHASHED,
        trusted_comment=lines[2][len(b"trusted comment: ") :],
        global_sig=global_sig,
    )


def check_parsed(
    pk: PublicKey, data: bytes, parsed: ParsedSignature, sig_name: str = "SHA256SUMS.sig"
) -> SignatureInfo:
    """Check a parsed signature of `data` with `pk`; SignatureError says which part does not hold."""
    if parsed.key_id != pk.key_id:
        raise SignatureError(
            f"{sig_name}: signed by key {parsed.key_id_hex}, not by the key given ({pk.key_id_hex}).",
            "Check you were given the right public key; a bundle signed by another key is not to be trusted.",
        )
    from cryptography.exceptions import InvalidSignature

    message = hashlib.blake2b(data, digest_size=64).digest() if parsed.prehashed else data
    try:
        pk.key.verify(parsed.sig, message)
    except InvalidSignature:
        raise SignatureError(
            f"{sig_name}: the signature does not match SHA256SUMS: the sums (or the signature) were changed "
            "after signing.",
            "Do not install this bundle; get an intact copy from the collecting side.",
        ) from None
    try:
        pk.key.verify(parsed.global_sig, parsed.sig + parsed.trusted_comment)
    except InvalidSignature:
        raise SignatureError(
            f"{sig_name}: the trusted comment was altered after signing.",
            "Do not install this bundle; get an intact copy from the collecting side.",
        ) from None
    return SignatureInfo(pk.key_id_hex, parsed.trusted_comment.decode("utf-8", errors="replace"), parsed.prehashed)


def check_signature(pk: PublicKey, data: bytes, sig_bytes: bytes, sig_name: str = "SHA256SUMS.sig") -> SignatureInfo:
    """Check the signature file's bytes `sig_bytes` over `data` (SHA256SUMS's bytes, read once) with `pk`."""
    return check_parsed(pk, data, parse_signature(sig_bytes, sig_name), sig_name)


def trusted_comment(bundle_name: str) -> str:
    return f"timestamp:{int(time.time())}\tfile:SHA256SUMS\tbundle:{bundle_name}"


def sign_bundle(bundle: Path, sk: SecretKey, bundle_name: str) -> Path:
    from airgap.bundle_layout import SIG_NAME, SUMS_NAME
    from airgap.fsutil import write_atomic

    sums = bundle / SUMS_NAME
    if not sums.is_file():
        raise BadInputError(
            f"{bundle}: no {SUMS_NAME}; only a finished bundle can be signed.", "Run `airgap collect` to the end first."
        )
    write_atomic(bundle / SIG_NAME, sign(sk, sums.read_bytes(), trusted_comment(bundle_name)).encode())
    return bundle / SIG_NAME


def check_bundle_signature(bundle: Path, pk: PublicKey) -> SignatureInfo:
    """Check `bundle`'s signature with `pk`, reading SHA256SUMS and its signature once each, without
    following links. Prefer `airgap.custody.Snapshot`, which also keeps the bytes it judged."""
    from airgap.bundle_layout import MAX_SUMS_BYTES, SIG_NAME, SUMS_NAME
    from airgap.digests import read_bundle_file

    sig = read_bundle_file(bundle, SIG_NAME, MAX_SIG_BYTES)
    if sig is None:
        raise SignatureError(
            f"{bundle}: no {SIG_NAME}: the bundle is not signed, and a key was given.",
            "Ask for a signed bundle (airgap sign BUNDLE --key KEY on the collecting side).",
        )
    sums = read_bundle_file(bundle, SUMS_NAME, MAX_SUMS_BYTES)
    if sums is None:
        raise SignatureError(f"{bundle}: no {SUMS_NAME}: not a finished airgap bundle.")
    return check_signature(pk, sums, sig, SIG_NAME)
