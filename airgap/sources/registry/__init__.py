"""Container images from an OCI / Docker registry (Registry HTTP API v2) without a daemon, or from a local
Docker daemon.

One module per job, each importing only those above it in this list:
`reference` (image references as Docker reads them, http or https), `credentials` (where logins are
found), `errors` (a registry's refusals), `auth` (the 401 challenge: Bearer tokens, Basic), `oci` (the
documents: descriptors, a resolved image, platform and config checks), `client` (a manifest and config
from a registry), `daemon` (an image exported from a local daemon, staged for one run).
"""

from airgap.sources.registry.auth import RegistryAuth, parse_challenge, repository_of
from airgap.sources.registry.client import MAX_CONFIG, MAX_MANIFEST, RegistryClient
from airgap.sources.registry.credentials import ENV_AUTH, CredentialLookup, Credentials, lookup_credentials
from airgap.sources.registry.daemon import DAEMON_URL, DaemonExport, daemon_client
from airgap.sources.registry.errors import AccessDenied, ImageNotFound, RegistryError
from airgap.sources.registry.oci import (
    ACCEPT,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    Descriptor,
    ResolvedImage,
    check_config,
    pick_platform,
)
from airgap.sources.registry.reference import DOCKER_HUB, ImageRef, parse_ref, platform_of, scheme_for

__all__ = [
    "ACCEPT",
    "DAEMON_URL",
    "DOCKER_HUB",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "ENV_AUTH",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "MAX_CONFIG",
    "MAX_MANIFEST",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER_TAR",
    "OCI_MANIFEST",
    "AccessDenied",
    "CredentialLookup",
    "Credentials",
    "DaemonExport",
    "Descriptor",
    "ImageNotFound",
    "ImageRef",
    "RegistryAuth",
    "RegistryClient",
    "RegistryError",
    "ResolvedImage",
    "check_config",
    "daemon_client",
    "lookup_credentials",
    "parse_challenge",
    "parse_ref",
    "pick_platform",
    "platform_of",
    "repository_of",
    "scheme_for",
]
