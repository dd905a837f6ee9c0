"""The one redaction of URLs for everything airgap shows or writes: messages, progress, `--json`, the lock.

Credentials travel in URLs two ways: `user:password@` before the host, and signed-URL parameters
(`X-Amz-Signature`, `X-Amz-Credential`, `token=`, `sig=`, `jwt=`, `code=`, ...) in the query, sometimes the
fragment. A list of secret-looking names is always one name short, so it is turned around: the userinfo is
dropped entirely, and every query and fragment value is replaced by `REDACTED` unless its parameter name is
on a short allow-list of names that only ever select *which* public file is meant. `redact` does one URL;
`scrub` does a free text (an exception message from requests, urllib3 or pip, which quote the URL they
failed on, sometimes without its scheme: "Max retries exceeded with url: /f?token=..."); `scrub_data` does
every string of a JSON-like record (the lock's copy of the manifest, an artifact's facts).

A redacted URL keeps its scheme, host, port and path: enough to tell which file and which mirror, and
still a valid `http(s)` URL where the lock's copy of the manifest is validated again on the server.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar, cast
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from airgap.errors import AirgapError, CombinedError, ManifestError

REDACTED = "REDACTED"

# Parameter names whose values are kept. Each only picks a variant of a public download (a release, a
# cache-busting version, an OS/architecture/platform on a vendor's download page) and no signing scheme
# airgap knows (AWS SigV4, GCS, Azure SAS, CloudFront, OAuth, JWT/HMAC links) uses any of them for
# authority. Kept deliberately short: a name not here costs a less informative message, a name wrongly
# here leaks a credential into a bundle a reviewer reads.
ALLOWED_PARAMS = frozenset({"version", "v", "arch", "os", "platform"})
# Even an allowed name keeps only a short, plain value: `;`, `=`, `&` or `%` could smuggle a second
# parameter (`v=1;token=...`) past the allow-list.
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9._~+/:,-]{0,64}$")

# An absolute URL (any scheme, or protocol-relative `//host`) in a text, up to the first character that
# cannot be part of one as messages quote them.
_URL_IN_TEXT = re.compile(r"(?:\b[A-Za-z][A-Za-z0-9+.-]*:)?//[^\s'\"<>`]+")
# A path with a query or fragment holding a `name=value`, as urllib3 quotes a request ("with url:
# /f?sig=..."). The `=` keeps a glob (`*/model?.onnx`) or a plain path with a `#` out of it.
_REF_IN_TEXT = re.compile(r"(?<![\w/:.])/[^\s?#'\"<>`]*[?#][^\s'\"<>`=]*=[^\s'\"<>`]*")
# Sentence punctuation a URL in a message is followed by, not part of it.
_TRAILING = ".,;:!?)]}"


def redact(url: str) -> str:
    """`url` as it may be shown or recorded: no `user:password@`, and every query and fragment value
    `REDACTED` unless its name is in ALLOWED_PARAMS. A text that is not one URL is scrubbed instead."""
    if any(c.isspace() for c in url):
        return scrub(url)
    return _redact_one(url)


def scrub(text: str) -> str:
    """`text` with every URL in it redacted (a message from an HTTP library, pip's output, a note)."""
    if "/" not in text:
        return text
    text = _URL_IN_TEXT.sub(_redact_match, text)
    return _REF_IN_TEXT.sub(_redact_match, text)


T = TypeVar("T")


def scrub_data(value: T) -> T:
    """A JSON-like value (dicts, lists, strings, scalars) with every string in it, keys included, scrubbed."""
    return cast(T, _scrub_any(value))


def _scrub_any(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {_scrub_any(k): _scrub_any(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub_any(v) for v in value)
    return value


E = TypeVar("E", bound=AirgapError)


def scrub_error(exc: E) -> E:
    """`exc` with its message, hint (and a manifest error's problems, a combined error's parts) scrubbed,
    in place: for the last line of defence where an error becomes text."""
    exc.message = scrub(exc.message)
    exc.hint = scrub(exc.hint) if exc.hint is not None else None
    exc.args = (exc.message, *exc.args[1:])
    if isinstance(exc, ManifestError):
        exc.problems = [scrub(p) for p in exc.problems]
    if isinstance(exc, CombinedError):
        for part in exc.errors:
            scrub_error(part)
    return exc


def _redact_match(m: re.Match[str]) -> str:
    found = m.group(0)
    core = found.rstrip(_TRAILING)
    # A `?` or `#` with nothing after it was punctuation, but one with a value after it is kept in the URL.
    return _redact_one(core) + found[len(core) :]


def _redact_one(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed host ("[::1"): cut what could hold a secret without parsing
        return re.sub(r"//[^/?#]*@", "//", url).split("?", 1)[0].split("#", 1)[0]
    netloc = parts.netloc.rpartition("@")[2]
    query = _redact_params(parts.query)
    fragment = _redact_params(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _redact_params(text: str) -> str:
    if not text:
        return text
    out: list[str] = []
    for item in text.split("&"):
        name, sep, value = item.partition("=")
        if not item:
            out.append(item)
        elif not sep:
            # A bare item (`?AbC123`, `#access_token...`) is a value with no name: nothing says it is harmless.
            out.append(item if unquote_plus(item).lower() in ALLOWED_PARAMS else REDACTED)
        elif unquote_plus(name).lower() in ALLOWED_PARAMS and _PLAIN_VALUE.match(value):
            out.append(item)
        else:
            out.append(f"{name}={REDACTED}")
    return "&".join(out)
