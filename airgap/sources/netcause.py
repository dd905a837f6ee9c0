"""Why a request got no answer, in words a user can act on, and the fix that fits.

The HTTP library says "Max retries exceeded with url ... (Caused by NameResolutionError(...))": the cause is
three exceptions deep and the advice a user needs differs by cause. A name that does not resolve wants the
host name and this PC's DNS or proxy checked, not more retries; a refused connection wants the server or
mirror started; a proxy error wants the proxy variables looked at. `plan` names the cause of each host it
cannot reach, and `collect` (through `airgap.sources.request.send`) says the same words and the fix.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass

import requests
import urllib3.exceptions

from airgap.redact import scrub


@dataclass(frozen=True)
class NetCause:
    """Why a host could not be reached. `text` is what plan and collect print ("connection refused");
    `fix` what to do about it; `lasting` is True when trying again at once cannot help (the name does not
    exist), so no retry is spent on it."""

    kind: str  # "dns", "refused", "tls", "proxy", "timeout", "connection"
    text: str
    fix: str
    lasting: bool = False


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, every URL in it redacted, for a message. Scrubbed before it
    is cut: a cut URL could hide its query from the scrub."""
    text = scrub(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."


def net_cause(exc: BaseException, host: str = "the host") -> NetCause | None:
    """The cause of a failed request from the exception requests raised (and the urllib3/socket ones under
    it); None when the exception is not about reaching the host (a malformed URL, a redirect loop)."""
    chain = causes(exc)
    if any(isinstance(e, requests.exceptions.ProxyError | urllib3.exceptions.ProxyError) for e in chain):
        return NetCause(
            "proxy",
            f"proxy error ({first_line(exc)}); check HTTPS_PROXY/HTTP_PROXY/NO_PROXY",
            "Check the proxy this PC is told to use (HTTPS_PROXY, HTTP_PROXY; NO_PROXY for hosts to reach "
            "directly, such as a local mirror), then run the same command again.",
        )
    if any(isinstance(e, requests.exceptions.SSLError | ssl.SSLError) for e in chain):
        return NetCause(
            "tls",
            f"TLS error ({first_line(chain[-1])})",
            f"If {host} is served over plain HTTP, check the URL (and `mirrors:`); if it uses a private CA, "
            "add that CA to this PC's trust store (REQUESTS_CA_BUNDLE).",
        )
    gai = [e for e in chain if isinstance(e, socket.gaierror)]
    if gai or any(isinstance(e, urllib3.exceptions.NameResolutionError) for e in chain):
        # EAI_NONAME is a resolver's answer that the name does not exist; EAI_AGAIN ("temporary failure")
        # is what no reachable DNS server looks like, which may pass.
        lasting = any(e.errno == socket.EAI_NONAME for e in gai)
        return NetCause(
            "dns",
            "DNS: cannot resolve the host name"
            + (" (no such name)" if lasting else " (no DNS server answered)" if gai else ""),
            f"Check the host name {host} in the manifest and in `mirrors:`; if it is right, this PC cannot "
            "resolve it: check its DNS settings, or the proxy it should go through (HTTPS_PROXY).",
            lasting,
        )
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or any(
        isinstance(e, OSError) and e.errno == errno.ECONNREFUSED for e in chain
    ):
        return NetCause(
            "refused",
            "connection refused",
            f"Nothing accepts connections at {host}: check that the server or mirror is up and that the port in "
            "the URL (or `mirrors:`) is right, then run the same command again.",
        )
    if any(isinstance(e, requests.Timeout | TimeoutError | socket.timeout) for e in chain):
        return NetCause(
            "timeout",
            "timed out",
            f"{host} did not answer in time: check the network (firewall, proxy) and `mirrors:`; on a slow "
            "link raise --timeout or --retries, then run the same command again.",
        )
    if isinstance(exc, requests.ConnectionError):
        return NetCause(
            "connection",
            f"connection failed ({first_line(chain[-1])})",
            "Check the network (proxy, firewall) and `mirrors:` if you use one, then run the same command again.",
        )
    return None


def unreachable_cause(exc: requests.RequestException) -> str | None:
    """`net_cause`'s words alone: what `plan` prints for a host it cannot reach."""
    cause = net_cause(exc)
    return cause.text if cause is not None else None


def causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it wraps: requests puts urllib3's error in args[0], urllib3 its cause in `.reason`
    and `__cause__`/`__context__`."""
    out: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if any(e is seen for seen in out):
            continue
        out.append(e)
        nexts = [getattr(e, "reason", None), e.__cause__, e.__context__, *e.args]
        todo.extend(n for n in nexts if isinstance(n, BaseException))
    return out
