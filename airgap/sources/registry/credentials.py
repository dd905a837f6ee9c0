"""Registry credentials, found where Docker, podman and skopeo keep them.

From (first wins) AIRGAP_REGISTRY_AUTH, REGISTRY_AUTH_FILE (podman/skopeo's auth.json), then
$DOCKER_CONFIG/config.json or ~/.docker/config.json (`auths`, `credHelpers`, `credsStore`). Credentials are
only ever put in request headers: never in an error, the lock or a log, and never in a repr.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from airgap.sources.registry.reference import HUB_NAMES

ENV_AUTH = "AIRGAP_REGISTRY_AUTH"
# The key `docker login` uses for Docker Hub in config.json.
HUB_AUTH_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


CredentialLookup = Callable[[str], "Credentials | None"]


def normalise_key(key: str) -> str:
    """A host as the auth files key it, reduced to compare: no scheme, no path, Docker Hub's names as one."""
    k = key.lower().split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if k in HUB_NAMES else k


def lookup_credentials(host: str, env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for a registry host, from (first wins): AIRGAP_REGISTRY_AUTH ("host=user:password",
    several separated by spaces or newlines), REGISTRY_AUTH_FILE (podman/skopeo's auth.json), then
    $DOCKER_CONFIG/config.json or ~/.docker/config.json (`auths` entries, `credHelpers`, `credsStore`)."""
    env = os.environ if env is None else env
    want = normalise_key(host)
    for item in env.get(ENV_AUTH, "").split():
        key, sep, userpass = item.partition("=")
        user, colon, password = userpass.partition(":")
        if sep and colon and normalise_key(key) == want:
            return Credentials(user, password)
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    config_dir = env.get("DOCKER_CONFIG")
    files.append(Path(config_dir) / "config.json" if config_dir else Path.home() / ".docker" / "config.json")
    for path in files:
        found = _from_config_file(path, host, want)
        if found is not None:
            return found
    return None


def _from_config_file(path: Path, host: str, want: str) -> Credentials | None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    helpers = config.get("credHelpers") or {}
    for key, helper in helpers.items():
        if normalise_key(key) == want:
            return _from_helper(str(helper), host)
    for key, entry in (config.get("auths") or {}).items():
        if normalise_key(key) != want or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            return Credentials(user, password)
        if entry.get("username") and entry.get("password"):
            return Credentials(str(entry["username"]), str(entry["password"]))
    if config.get("credsStore"):
        return _from_helper(str(config["credsStore"]), host)
    return None


def _from_helper(helper: str, host: str) -> Credentials | None:
    """Ask `docker-credential-<helper> get`, as docker does (Docker Desktop, pass, secretservice)."""
    exe = shutil.which(f"docker-credential-{helper}")
    if exe is None:
        return None
    server = HUB_AUTH_KEY if normalise_key(host) == "docker.io" else host
    try:
        proc = subprocess.run([exe, "get"], input=server, capture_output=True, text=True, timeout=30)
        reply = json.loads(proc.stdout) if proc.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if not isinstance(reply, dict) or not reply.get("Secret"):
        return None
    if reply.get("Username") == "<token>":
        return None  # an OAuth identity token: not supported; the anonymous flow is tried instead
    return Credentials(str(reply.get("Username", "")), str(reply["Secret"]))


def login_hint(host: str) -> str:
    """The fix for a registry that refused: how to log in so airgap finds the credentials."""
    login = "docker login" if normalise_key(host) == "docker.io" else f"docker login {host}"
    return (
        f"If it needs a login, run `{login}` on this PC (airgap reads ~/.docker/config.json and its "
        f"credential helpers) or set {ENV_AUTH}='{host}=USER:PASSWORD'; credentials are never written "
        "to the bundle. Otherwise check the image name."
    )
