"""The one path every HTTP request of airgap takes: retries, backoff, timeouts and what each answer means.

Every source (downloads, a registry's manifests and tokens, the hub's metadata, a Python index's probe)
sends through `send`/`request` here, or runs its own attempt (a hub API call made by huggingface_hub) under
`RetryPolicy.run`. So there is one list of statuses worth another try, one backoff (exponential, with
jitter, so parallel workers that failed together do not retry together), one reading of `Retry-After`, a
timeout on every connect and every read, and one table (`refusal`) that turns an answer into airgap's
error: 404/410 "has no", 401/403 "refused access" with a login hint, anything else "answered HTTP N",
and retryable failures that outlast the retries "failed after N attempts". URLs in errors are redacted, and
so is the HTTP library's own exception text quoted in them (`first_line`): it repeats the URL it failed on.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

import requests
import requests.auth

from airgap import __version__
from airgap.errors import AirgapError, UpstreamError

# The one redaction (airgap/redact.py), re-exported for the sources that import it from here.
from airgap.redact import redact as redact
from airgap.redact import scrub as scrub
from airgap.sources.netcause import NetCause, net_cause
from airgap.sources.netcause import first_line as first_line

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
ANY_STATUS = range(100, 600)
# Statuses a caller reads itself: every answer but the ones retried.
ANSWERS = frozenset(ANY_STATUS) - RETRY_STATUSES
SUCCESS = range(200, 300)
USER_AGENT = f"airgap/{__version__}"

T = TypeVar("T")


class Cancelled(AirgapError):
    """Raised inside a request or a download when the user interrupted the command."""


class NotFound(UpstreamError):
    """The upstream has no such thing (404, 410), or none of the candidate URLs had it."""

    def __init__(self, message: str, hint: str | None = None, status: int = 404) -> None:
        super().__init__(message, hint)
        self.status = status


class AccessDenied(UpstreamError):
    """The upstream refused (401, 403, 407): credentials are missing or wrong."""

    def __init__(self, message: str, hint: str | None = None, status: int = 403) -> None:
        super().__init__(message, hint)
        self.status = status


class UpstreamFailed(UpstreamError):
    """The upstream could not be reached, answered what it should not, or kept failing through the retries."""


class Retry(Exception):
    """Raised by one attempt that is worth another: a connection cut, a timeout, a retryable status.
    `retry_after` is the server's `Retry-After`, in seconds, when it sent one; `cause` why no connection
    was made, when none was (what the error names, with its fix, once the retries are spent)."""

    def __init__(self, reason: str, retry_after: float | None = None, cause: NetCause | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.cause = cause


def _reason_phrase(r: requests.Response) -> str:
    return f" {r.reason}" if r.reason else ""


NETRC_HINT = (
    "If this upstream or mirror needs credentials, put them in ~/.netrc (never in the manifest); "
    "otherwise check the URL."
)


@dataclass(frozen=True)
class ErrorKinds:
    """How one kind of upstream reports the table's answers: the error classes raised (a registry raises
    its own, which callers catch), the fix suggested for each, and what of a refusal's body to quote."""

    not_found: type[NotFound] = NotFound
    denied: type[AccessDenied] = AccessDenied
    failed: type[UpstreamError] = UpstreamFailed
    not_found_hint: str = "Check the name and version in the manifest, and `mirrors:` if you use one."
    denied_hint: str = NETRC_HINT
    failed_hint: str = (
        "Check the network (proxy, firewall) and `mirrors:` if you use one, then run the same command again."
    )
    detail: Callable[[requests.Response], str] = _reason_phrase


UPSTREAM = ErrorKinds()


def refusal(
    status: int, *, what: str, where: str, thing: str, detail: str = "", kinds: ErrorKinds = UPSTREAM
) -> UpstreamError:
    """The table: the error for an answer `status` from `where` (a host, already redacted) about `thing`,
    for the artifact or image `what`. Retryable statuses only reach here once the retries are spent."""
    if status in (404, 410):
        return kinds.not_found(f"{what}: {where} has no {thing} ({status}{detail}).", kinds.not_found_hint, status)
    if status in (401, 403, 407):
        return kinds.denied(f"{what}: {where} refused access to {thing} ({status}{detail}).", kinds.denied_hint, status)
    return kinds.failed(f"{what}: {where} answered HTTP {status}{detail} for {thing}.", kinds.failed_hint)


def exhausted(
    what: str, where: str, attempts: int, last: str, kinds: ErrorKinds, hint: str | None, cause: NetCause | None = None
) -> UpstreamError:
    if cause is not None and cause.kind not in ("timeout", "connection"):
        # No connection was ever made: the cause is the news, with its own fix ("--retries" mends no DNS
        # failure or refused port). A timeout or an unclassified failure keeps the caller's advice.
        host = host_of(where) if "://" in where else where
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        return kinds.failed(f"{what}: {where}: cannot reach {host}: {cause.text} ({tries}).", cause.fix)
    return kinds.failed(f"{what}: {where} failed after {attempts} attempts (last: {last}).", hint or kinds.failed_hint)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: `retries` after the first attempt, waits of `backoff * 2**n` seconds (at most
    `max_wait`) scaled by a random factor in [0.5, 1), or what `Retry-After` asks (at most
    `max_retry_after`); `timeout` bounds each connect, and each read unless `idle_timeout` is given: the
    longest a response may go without sending a byte. `cancel` ends any wait at once."""

    retries: int = 5
    backoff: float = 1.0
    timeout: float = 30.0
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)
    max_wait: float = 30.0
    max_retry_after: float = 120.0
    statuses: frozenset[int] = RETRY_STATUSES
    idle_timeout: float | None = None

    @property
    def timeouts(self) -> tuple[float, float]:
        """(connect, read) as requests takes them; the read timeout applies to every socket read, so a
        server that stops sending mid-body fails that read after `idle_timeout` seconds."""
        return self.timeout, self.idle_timeout if self.idle_timeout is not None else self.timeout

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """The wait before attempt `failures + 1` (`failures` >= 1)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return min(self.backoff * (2 ** (failures - 1)), self.max_wait) * (0.5 + random.random() / 2)

    def wait(self, failures: int, retry_after: float | None, what: str) -> None:
        if self.cancel.wait(self.delay(failures, retry_after)):
            raise Cancelled(f"{what}: interrupted while waiting to retry.")

    def run(
        self,
        attempt: Callable[[], T],
        *,
        what: str,
        where: str,
        kinds: ErrorKinds = UPSTREAM,
        hint: str | None = None,
    ) -> T:
        """`attempt()` until it returns, retrying each `Retry` it raises; once the retries are spent,
        `kinds.failed` saying how many attempts were made and what the last one met."""
        failures = 0
        while True:
            if self.cancel.is_set():
                raise Cancelled(f"{what}: interrupted.")
            try:
                return attempt()
            except Retry as exc:
                failures += 1
                if failures > self.retries:
                    raise exhausted(what, where, failures, exc.reason, kinds, hint, exc.cause) from None
                self.wait(failures, exc.retry_after, what)


def new_session() -> requests.Session:
    """A session as airgap sends: its own User-Agent, and identity encoding only (a digest is of the bytes
    as published, not of a transport encoding). Sessions are not shared between threads."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept-Encoding"] = "identity"
    return session


def host_of(url: str) -> str:
    """`host[:port]` of a URL, without any `user:password@`, for messages."""
    return urlsplit(url).netloc.rsplit("@", 1)[-1]


def path_of(url: str) -> str:
    return urlsplit(redact(url)).path or "/"


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    what: str,
    thing: str | None = None,
    kinds: ErrorKinds = UPSTREAM,
    headers: Mapping[str, str] | None = None,
    auth: requests.auth.AuthBase | None = None,
    stream: bool = False,
    expect: Container[int] = SUCCESS,
) -> requests.Response:
    """One attempt. Returns the response when its status is in `expect`; raises `Retry` for what
    `policy` retries (a connection failure, a timeout, a retryable status, with its `Retry-After`), and
    the table's error for any other answer. `thing` names what was asked for (default: the URL's path)."""
    try:
        r = session.request(
            method,
            url,
            headers=dict(headers or {}),
            auth=auth,
            stream=stream,
            timeout=policy.timeouts,
            allow_redirects=True,
        )
    except requests.exceptions.SSLError as exc:
        host = host_of(url)
        raise kinds.failed(
            f"{what}: TLS with {host} failed ({first_line(exc)}).",
            f"If {host} is served over plain HTTP, check the URL (or, for a registry, list it under "
            "`insecure_registries:`); if it uses a private CA, add that CA to this PC's trust store "
            "(REQUESTS_CA_BUNDLE).",
        ) from None
    except requests.exceptions.ChunkedEncodingError as exc:
        raise Retry(f"connection failed: {first_line(exc)}") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        cause = net_cause(exc, host_of(url))
        if cause is not None and cause.lasting:  # the name does not exist: no retry will make it
            raise kinds.failed(
                f"{what}: {redact(url)}: cannot reach {host_of(url)}: {cause.text}.", cause.fix
            ) from None
        # An unclassified failure's words are "connection failed (...)": the library's first line says more.
        reason = (
            cause.text if cause is not None and cause.kind != "connection" else f"connection failed: {first_line(exc)}"
        )
        raise Retry(reason, cause=cause) from None
    except requests.exceptions.TooManyRedirects:
        raise kinds.failed(
            f"{what}: {redact(url)} redirects in a loop (more than {session.max_redirects} redirects).",
            "The server (or the `mirrors:` entry for it) is misconfigured: ask its operator, or use another mirror.",
        ) from None
    except requests.exceptions.InvalidSchema as exc:  # a redirect to file://, ftp://: never followed
        raise kinds.failed(
            f"{what}: {redact(url)} redirected to a URL that is not http(s) ({first_line(exc)}); not followed.",
            "airgap fetches only over HTTP(S): give the file's http(s) URL in the manifest, or another mirror.",
        ) from None
    except requests.RequestException as exc:  # a malformed URL: no retry mends those
        raise kinds.failed(
            f"{what}: {redact(url)} could not be asked ({first_line(exc)}).", kinds.failed_hint
        ) from None
    status = r.status_code
    if status in expect:
        return r
    if status in policy.statuses:
        retry_after = parse_retry_after(r.headers.get("Retry-After"))
        r.close()
        raise Retry(f"HTTP {status}", retry_after)
    try:
        error = refusal(
            status, what=what, where=host_of(url), thing=thing or path_of(url), detail=kinds.detail(r), kinds=kinds
        )
    finally:
        r.close()
    raise error


def request(
    session: requests.Session,
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    what: str,
    thing: str | None = None,
    kinds: ErrorKinds = UPSTREAM,
    headers: Mapping[str, str] | None = None,
    auth: requests.auth.AuthBase | None = None,
    stream: bool = False,
    expect: Container[int] = SUCCESS,
    where: str | None = None,
    hint: str | None = None,
) -> requests.Response:
    """`send` under `policy`: the answer once one is in `expect`, else the table's error. `where` names the
    upstream when the retries are spent (default: the redacted URL), `hint` replaces the fix then."""

    def attempt() -> requests.Response:
        return send(
            session,
            method,
            url,
            policy=policy,
            what=what,
            thing=thing,
            kinds=kinds,
            headers=headers,
            auth=auth,
            stream=stream,
            expect=expect,
        )

    return policy.run(attempt, what=what, where=where or redact(url), kinds=kinds, hint=hint)


def get(
    url: str,
    *,
    policy: RetryPolicy,
    what: str,
    headers: Mapping[str, str] | None = None,
    expect: Container[int] = SUCCESS,
    where: str | None = None,
    hint: str | None = None,
) -> requests.Response:
    """A one-off GET, body read, on a session of its own closed before returning: for callers that hold no
    source (a probe of a Python index, an error message's listing)."""
    with new_session() as session:
        return request(
            session, "GET", url, policy=policy, what=what, headers=headers, expect=expect, where=where, hint=hint
        )
