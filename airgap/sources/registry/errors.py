"""How a registry's refusals read: its error classes, and the request table's wording filled for a registry
(the fix names `docker login`, the message quotes the registry's own error code)."""

from __future__ import annotations

import requests

from airgap.errors import UpstreamError
from airgap.redact import scrub
from airgap.sources import request
from airgap.sources.registry.credentials import login_hint


class RegistryError(UpstreamError):
    """A registry refused, failed, or has no such image; the message names the image and the fix."""


class ImageNotFound(RegistryError, request.NotFound):
    """The registry has no such repository or tag."""


class AccessDenied(RegistryError, request.AccessDenied):
    """The registry refused (401/403): a login is missing, or (Docker Hub) the repository does not exist."""


def registry_message(r: requests.Response) -> str:
    """`: MANIFEST_UNKNOWN manifest unknown` from the registry's error body, when it has one."""
    try:
        errors = r.json().get("errors") or []
        first = errors[0]
        # The registry's own words: scrubbed, as a message may quote a signed redirect URL.
        return scrub(f": {first.get('code', '')} {first.get('message', '')}".rstrip())
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


def registry_kinds(host: str) -> request.ErrorKinds:
    """The request table's errors as a registry at `host` raises them."""
    return request.ErrorKinds(
        not_found=ImageNotFound,
        denied=AccessDenied,
        failed=RegistryError,
        not_found_hint=(
            "Check the repository name and tag (`skopeo list-tags` or the registry's web page show which exist), "
            "and `mirrors:` if you use one."
        ),
        denied_hint=login_hint(host),
        failed_hint="Check the network, the registry name, and `mirrors:` if you use one.",
        detail=registry_message,
    )
