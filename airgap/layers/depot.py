"""`depot:`: point each host's clients at the closed network's depot (docs/depot.md).

A site with several servers feeds one depot from the bundle (`airgap export` + nginx, or `airgap serve`;
`airgap push` for the registry) and makes every server use it. This layer, last in install order, writes
the client settings on each host, and nothing else:

- apt: `/etc/apt/keyrings/airgap-depot.gpg` (the depot repository's public key, carried in the bundle)
  and `/etc/apt/sources.list.d/airgap-depot.sources` with `Signed-By:` that key; never `[trusted=yes]`.
- pip: `/etc/pip.conf` with `index-url = <depot>/simple/` (left alone, and said, when the file is not
  airgap's).
- Docker: `registry-mirrors` (and `insecure-registries` for a plain-HTTP registry) merged into
  `/etc/docker/daemon.json`, the site CA as `/etc/docker/certs.d/<registry>/ca.crt`.
- The serving stack: `HF_ENDPOINT` (and `PIP_INDEX_URL`) in `/etc/airgap/depot.env` (an env file for
  `docker run --env-file` and systemd's `EnvironmentFile=`) and `/etc/profile.d/airgap-depot.sh`.
- The site CA, when given, as `/usr/local/share/ca-certificates/airgap-depot.crt`, named in pip.conf.

The key and the CA are files next to the manifest, carried in the bundle as artifacts: install reads them
through the lock's digest like any other file. Nothing is fetched from the depot (a key fetched over the
network would vouch for nothing).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from airgap.artifacts import Artifact, Digest
from airgap.bundle_layout import LAYERS_DIR, layer_dir
from airgap.digests import sha256_bytes
from airgap.errors import InstallError
from airgap.install_context import InstallContext
from airgap.layers.base import ResolveContext
from airgap.layers.debs import AptLayer
from airgap.lock import LockedArtifact
from airgap.manifest import DepotSpec, Manifest
from airgap.sources.apt import Request

APT_KEY = "/etc/apt/keyrings/airgap-depot.gpg"
APT_SOURCES = "/etc/apt/sources.list.d/airgap-depot.sources"
PIP_CONF = "/etc/pip.conf"
DAEMON_JSON = "/etc/docker/daemon.json"
ENV_FILE = "/etc/airgap/depot.env"
PROFILE = "/etc/profile.d/airgap-depot.sh"
CA_CERT = "/usr/local/share/ca-certificates/airgap-depot.crt"
# The first line of every file this layer writes whole: a file without it is the site's, and left alone.
MARK = "# Written by airgap install (depot:); airgap replaces this file. docs/depot.md"
KEY_NAME = "airgap-depot.gpg"
CA_NAME = "airgap-depot-ca.crt"


class DepotLayer(AptLayer):
    """The client settings for every host, and the depot host's own packages (`depot.server_packages`,
    nginx by default) with their dependencies, resolved like any apt layer's but installed only by hand on
    the depot host: a web server on every GPU server is not what a site asks for."""

    name = "depot"
    section = "depot"
    preflight = frozenset()

    def by_hand(self, artifacts: list[LockedArtifact]) -> list[str]:
        lines = [
            "each server: airgap install BUNDLE (or install.sh) writes the depot's client settings (docs/depot.md)"
        ]
        if any(a.name.endswith(".deb") for a in artifacts):
            lines.append(f"the depot host only: apt-get install ./{LAYERS_DIR}/{layer_dir(self.name)}/*.deb")
        return lines

    def requests(self, manifest: Manifest) -> list[Request]:
        spec = manifest.depot
        assert spec is not None
        return [
            Request.parse(text, why=f"{manifest.location(('depot', 'server_packages', i))} depot.server_packages[{i}]")
            for i, text in enumerate(spec.server_packages)
        ]

    def plan(self, manifest: Manifest) -> list[Artifact]:
        return (super().plan(manifest) if self.requests(manifest) else []) + self._carried(manifest)

    def resolve(self, manifest: Manifest, ctx: ResolveContext) -> list[Artifact]:
        packages = super().resolve(manifest, ctx) if self.requests(manifest) else []
        return packages + self._carried(manifest)

    def _carried(self, manifest: Manifest) -> list[Artifact]:
        """The apt key and the site CA, read from beside the manifest."""
        spec = manifest.depot
        assert spec is not None
        out = []
        for field, name in (("apt_key", KEY_NAME), ("ca_file", CA_NAME)):
            given = getattr(spec, field)
            if given is None:
                continue
            path = Path(given) if Path(given).is_absolute() else manifest.source.parent / given
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise manifest.error(
                    ("depot", field),
                    f"cannot read {path} ({exc.strerror}); give the file's path, relative to the manifest",
                ) from None
            out.append(
                Artifact(
                    self.name,
                    name,
                    [],
                    ("depot", field),
                    content=data,
                    pinned=Digest("sha256", sha256_bytes(data), "manifest"),
                )
            )
        return out

    def installed(self, ctx: InstallContext) -> str | None:
        want = _files(ctx)
        if all(ctx.host.read_text(path) == text for path, text in want.items()) and _daemon_ok(ctx):
            return f"the clients already use the depot at {_spec(ctx).url}"
        return None

    def install(self, ctx: InstallContext) -> str:
        spec = _spec(ctx)
        host = ctx.host
        done: list[str] = []
        for art in ctx.entries(self.name):
            if art.name not in (KEY_NAME, CA_NAME):
                continue  # the depot host's own packages: installed by hand there, never on every server
            dest = APT_KEY if art.name == KEY_NAME else CA_CERT
            host.copy_stream(partial(ctx.open_artifact, art), dest, sha256=art.sha256, what=art.path, mode=0o644)
            done.append(dest)
        left: list[str] = []
        for path, text in _files(ctx).items():
            current = host.read_text(path)
            if current is not None and current != text and not current.startswith(MARK):
                left.append(path)  # the site's own file: not overwritten
                continue
            host.write_file(path, text, mode=0o644)
            done.append(path)
        if spec.registry:
            _merge_daemon_json(ctx, spec)
            done.append(DAEMON_JSON)
            if (ca := _ca(ctx)) is not None:
                certs = f"/etc/docker/certs.d/{spec.registry}/ca.crt"
                host.copy_stream(partial(ctx.open_artifact, ca), certs, sha256=ca.sha256, what=ca.path)
        summary = f"clients pointed at {spec.url}: {', '.join(done)}"
        if left:
            summary += f"; left the site's own {', '.join(left)} as they are (set the depot there by hand)"
        return summary


def _spec(ctx: InstallContext) -> DepotSpec:
    spec = ctx.manifest.depot
    if spec is None:
        raise InstallError(
            "the bundle's manifest has no depot: section.", "Collect the bundle with one (docs/depot.md)."
        )
    return spec


def _ca(ctx: InstallContext) -> LockedArtifact | None:
    return next((a for a in ctx.entries("depot") if a.name == CA_NAME), None)


def _files(ctx: InstallContext) -> dict[str, str]:
    """The files this layer writes whole, with their text."""
    spec = _spec(ctx)
    has_key = any(a.name == KEY_NAME for a in ctx.entries("depot"))
    has_ca = _ca(ctx) is not None
    out: dict[str, str] = {}
    if has_key:
        out[APT_SOURCES] = (
            f"{MARK}\nTypes: deb\nURIs: {spec.url}/apt\nSuites: airgap\nComponents: main\nSigned-By: {APT_KEY}\n"
        )
    pip = f"{MARK}\n[global]\nindex-url = {spec.url}/simple/\n"
    if has_ca:
        pip += f"cert = {CA_CERT}\n"
    out[PIP_CONF] = pip
    env = {"HF_ENDPOINT": spec.url, "PIP_INDEX_URL": f"{spec.url}/simple/"}
    if has_ca:
        env["REQUESTS_CA_BUNDLE"] = CA_CERT  # huggingface_hub and pip's requests trust the site CA
    out[ENV_FILE] = MARK + "\n" + "".join(f"{k}={v}\n" for k, v in env.items())
    out[PROFILE] = MARK + "\n" + "".join(f"export {k}={v}\n" for k, v in env.items())
    return out


def _daemon_ok(ctx: InstallContext) -> bool:
    spec = _spec(ctx)
    if not spec.registry:
        return True
    try:
        conf = json.loads(ctx.host.read_text(DAEMON_JSON, "{}") or "{}")
    except ValueError:
        return False
    return isinstance(conf, dict) and _mirror(ctx, spec) in (conf.get("registry-mirrors") or [])


def _mirror(ctx: InstallContext, spec: DepotSpec) -> str:
    scheme = "https" if _ca(ctx) is not None or spec.url.startswith("https://") else "http"
    return f"{scheme}://{spec.registry}"


def _merge_daemon_json(ctx: InstallContext, spec: DepotSpec) -> None:
    """The registry as Docker Hub's mirror (and, over plain HTTP, an insecure registry), merged into
    whatever daemon.json holds (the nvidia runtime, the site's own settings)."""
    text = ctx.host.read_text(DAEMON_JSON, "{}") or "{}"
    try:
        conf = json.loads(text)
    except ValueError:
        raise InstallError(
            f"{DAEMON_JSON} is not valid JSON, so the depot's registry cannot be added to it.",
            "Fix the file (python3 -m json.tool shows where), then run the same command again.",
        ) from None
    if not isinstance(conf, dict):
        raise InstallError(f"{DAEMON_JSON} is not a JSON object.", "Fix the file, then run the same command again.")
    mirror = _mirror(ctx, spec)
    mirrors = [m for m in conf.get("registry-mirrors") or [] if m != mirror]
    conf["registry-mirrors"] = [mirror, *mirrors]
    if mirror.startswith("http://"):
        insecure = conf.get("insecure-registries") or []
        if spec.registry not in insecure:
            conf["insecure-registries"] = [*insecure, spec.registry]
    ctx.host.write_file(DAEMON_JSON, json.dumps(conf, indent=2) + "\n", mode=0o644)
