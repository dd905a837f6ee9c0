"""A registry's 401 challenge, answered: Bearer tokens from the challenge's realm, or Basic credentials.

`RegistryAuth` is a `requests` auth object, so the same one serves the registry client's manifest requests
and `HttpSource`'s blob downloads; token requests go through the one request path (`sources.request`).
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
import requests.auth

from airgap.sources.registry.credentials import CredentialLookup, Credentials, lookup_credentials
from airgap.sources.registry.errors import RegistryError, registry_kinds
from airgap.sources.request import RetryPolicy, new_session, redact, request

_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]] | None:
    """`Bearer realm="...",service="...",scope="..."` -> ("bearer", {...}); `Basic realm=...` -> ("basic", ...)."""
    scheme, _, params = header.strip().partition(" ")
    if not scheme:
        return None
    return scheme.lower(), {k.lower(): a or b for k, a, b in _CHALLENGE_PARAM.findall(params)}


def repository_of(url: str) -> str | None:
    """The repository an API URL is about (works behind a mirror prefix too): /v2/<repo>/blobs/..."""
    path = urlsplit(url).path
    m = re.search(r"/v2/(.+?)/(?:manifests|blobs|tags)/", path)
    return m.group(1) if m else None


class RegistryAuth(requests.auth.AuthBase):
    """Answers a registry's 401 with what its WWW-Authenticate asks for, and resends the request.

    Bearer: a token from the challenge's realm for the challenge's scope (or `repository:<repo>:pull`,
    read from the URL, which also works behind a mirror), asked with the host's credentials when there
    are some, anonymously otherwise (Docker Hub, nvcr.io, ghcr.io, Harbor). Basic: the host's credentials.
    The answer is cached per host and repository and sent up front on later requests, so parallel blob
    downloads do not each pay a 401 round trip; a cached token that has expired is refreshed on its 401.
    Usable as `auth=` of any requests call, HttpSource.fetch included. Holds no secret in its repr.
    """

    def __init__(self, credentials: CredentialLookup | None = None, policy: RetryPolicy | None = None) -> None:
        self._credentials = credentials or lookup_credentials
        self._policy = policy or RetryPolicy()
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], str] = {}
        self._scopes: dict[tuple[str, str], str] = {}  # the scope each cached token was asked for
        # Used under self._lock only, so one session serves every thread.
        self._session = new_session()
        self.token_requests = 0  # how often a token endpoint was asked (tests and diagnostics)

    def __repr__(self) -> str:
        return "RegistryAuth()"

    @staticmethod
    def _key(url: str) -> tuple[str, str]:
        return urlsplit(url).netloc.lower(), repository_of(url) or ""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        value = self._cache.get(self._key(r.url or ""))
        if value and "Authorization" not in r.headers:
            r.headers["Authorization"] = value
        r.register_hook("response", self._handle_401)
        return r

    def _handle_401(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        if r.status_code != 401:
            return r
        challenge = parse_challenge(r.headers.get("WWW-Authenticate", ""))
        request_ = r.request
        if challenge is None or request_.url is None:
            return r
        tried = request_.headers.get("Authorization")
        value = self._answer(challenge, request_.url, tried)
        if value is None or value == tried:
            return r  # nothing new to offer: the caller sees the 401 and says what to do
        r.content  # noqa: B018  # drain the 401 so its connection can be reused for the retry
        r.close()
        retry = request_.copy()
        retry.headers["Authorization"] = value
        # Sent through the adapter directly, as requests' own HTTPDigestAuth does: the hooks do not run
        # again on the answer, so a wrong token cannot loop.
        again: requests.Response = r.connection.send(retry, **kwargs)
        again.history.append(r)
        again.request = retry
        return again

    def _answer(self, challenge: tuple[str, dict[str, str]], url: str, tried: str | None) -> str | None:
        scheme, params = challenge
        key = self._key(url)
        host = urlsplit(url).netloc
        repo = key[1]
        scope = params.get("scope") or (f"repository:{repo}:pull" if repo else "") if scheme == "bearer" else ""
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached != tried and self._scopes.get(key) == scope:
                # Another thread already got a fresh answer for this very scope. (A pull token another thread
                # cached does not answer an upload's push challenge: pushes send blobs in parallel.)
                return cached
            creds = self._credentials(host)
            if scheme == "basic":
                value = creds.basic() if creds else None
            elif scheme == "bearer" and params.get("realm"):
                value = self._token(params["realm"], params.get("service", ""), scope, creds, host)
            else:
                value = None
            if value is not None:
                self._cache[key] = value
                self._scopes[key] = scope
            return value

    def _token(self, realm: str, service: str, scope: str, creds: Credentials | None, host: str) -> str:
        query = {k: v for k, v in (("service", service), ("scope", scope)) if v}
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        headers = {"Authorization": creds.basic()} if creds else {}
        self.token_requests += 1
        r = request(
            self._session,
            "GET",
            url,
            policy=self._policy,
            what=f"registry {host}",
            thing=f"a token with the credentials found for {host}" if creds else "an anonymous token",
            kinds=registry_kinds(host),
            headers=headers,
            hint="Check the network path to the token service (proxy, firewall); the registry sends clients "
            "there to log in.",
        )
        try:
            reply = r.json()
            token = reply.get("token") or reply.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise RegistryError(
                f"registry {host}: its token service {redact(realm)} answered HTTP {r.status_code} without a token."
            )
        return f"Bearer {token}"
