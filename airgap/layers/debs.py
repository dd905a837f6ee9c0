"""Layers made of Debian packages: the `AptLayer` base that prereqs, cudnn and container_toolkit share.

Collect side: the closure of the layer's packages against the target release's signed indexes
(airgap/sources/apt), each `.deb` an artifact checked against its `Packages` SHA256. Install side: dpkg, in
dependency order, skipping what dpkg already has at that version, after checking that every dependency is
on the server or in the bundle (so an incomplete closure is refused before anything changes, naming what is
missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from debian.debian_support import version_compare

from airgap.artifact_meta import DebMeta, read_meta
from airgap.artifacts import Artifact
from airgap.errors import BadInputError, InstallError, RunResult
from airgap.host import Host
from airgap.install_context import InstallContext
from airgap.layers.base import Layer, ResolveContext
from airgap.manifest import AptSpec, Manifest
from airgap.sources.apt import (
    DEFAULT_KEYRINGS,
    AptError,
    AptIndex,
    AptRepo,
    Request,
    Resolution,
    Resolver,
    builtin_repos,
    group_text,
    load_index,
    parse_provides,
    parse_relations,
    satisfies,
    server_packages,
)
from airgap.target import DISTROS, distro_of

if TYPE_CHECKING:
    from airgap.sources.apt.control import Relation

DPKG_LOG = "/var/log/dpkg.log"
ADMINDIR = "/var/lib/dpkg"


# --- collect --------------------------------------------------------------------------------------------


def repos_for(manifest: Manifest, extra: tuple[str, ...]) -> list[AptRepo]:
    """The distribution's repositories, the built-in ones this layer needs (`extra`), and the manifest's
    `apt.repos` (one with a built-in name replaces it)."""
    spec = manifest.apt or AptSpec()
    here = manifest.source.parent
    builtins = builtin_repos(manifest.target.os, manifest.target.arch)
    family = manifest.target.os.split("-", 1)[0]
    wanted = [n for n in (family, f"{family}-security", *extra) if n in builtins]
    user = {r.name: r for r in spec.repos}
    if distro_of(manifest.target.os) is None and not spec.repos:
        raise manifest.error(
            ("target", "os"),
            f"airgap knows the apt repositories of {', '.join(DISTROS)}, not "
            f"{manifest.target.os}; list the release's repositories in `apt.repos`",
        )
    repos: list[AptRepo] = []
    for name in [*wanted, *(n for n in user if n not in wanted)]:
        r = user.get(name)
        if r is not None:
            keyring_name = builtins[name][0].keyring_name if name in builtins else name
            found = [AptRepo(name, r.url, s, tuple(r.components), keyring_name=keyring_name) for s in r.suites]
        else:
            found = builtins[name]
        for repo in found:
            repos.append(_with_keyring(repo, spec, here, r.keyring if r is not None else None))
    return repos


def _with_keyring(repo: AptRepo, spec: AptSpec, here: Path, own: str | None) -> AptRepo:
    named = own or spec.keyrings.get(repo.name) or spec.keyrings.get(repo.keyring_name)
    keyring: Path | None
    if named:
        path = Path(named).expanduser()
        keyring = path if path.is_absolute() else here / path
    else:
        default = DEFAULT_KEYRINGS.get(repo.keyring_name)
        keyring = Path(default) if default else None
    return AptRepo(repo.name, repo.url, repo.suite, repo.components, keyring, repo.keyring_name)


def status_file(manifest: Manifest, ctx: ResolveContext) -> Path | None:
    """--target-status (the run's) wins over the manifest's apt.target_status (relative to the manifest)."""
    if ctx.target_status is not None:
        return ctx.target_status
    spec = manifest.apt
    if spec is None or spec.target_status is None:
        return None
    path = Path(spec.target_status).expanduser()
    return path if path.is_absolute() else manifest.source.parent / path


class AptLayer(Layer):
    """A layer made of Debian packages from signed repositories."""

    installable = True
    preflight = frozenset({"disk"})
    extra_repos: ClassVar[tuple[str, ...]] = ()  # built-in repositories besides the distribution's

    def requests(self, manifest: Manifest) -> list[Request]:
        raise NotImplementedError

    def plan(self, manifest: Manifest) -> list[Artifact]:
        """Offline (`plan --no-head`): which packages, not yet which files."""
        return [
            Artifact(
                self.name,
                f"{req} (resolved at collect)",
                [],
                (self.section,),
                no_digest_reason="known once resolved: each .deb is checked against the SHA256 of its "
                "entry in the signed repository index",
                meta={"unresolved": "the closure is resolved against the repositories at collect time"},
            )
            for req in self.requests(manifest)
        ]

    def resolve(self, manifest: Manifest, ctx: ResolveContext) -> list[Artifact]:
        source = ctx.source
        if source is None:
            return self.plan(manifest)
        requests = self.requests(manifest)
        index = load_index(repos_for(manifest, self.extra_repos), manifest.target.arch, source, memo=ctx.memo)
        self.check_index(manifest, index)
        server = server_packages(index, status_file(manifest, ctx))
        return self.artifacts(Resolver(index, server).resolve(requests))

    def check_index(self, manifest: Manifest, index: AptIndex) -> None:
        """A layer's chance to explain a missing package better than the resolver can."""

    def artifacts(self, res: Resolution) -> list[Artifact]:
        arts = []
        for i, cand in enumerate(res.packages):
            if cand.file_name in ("", ".", "..") or "/" in cand.file_name:
                raise AptError(f"{cand}: unusable file name {cand.filename!r} in {cand.index_url}.")
            arts.append(
                Artifact(
                    self.name,
                    cand.file_name,
                    [cand.url],
                    (self.section,),
                    upstream=cand.digest(),
                    size=cand.size,
                    meta=DebMeta(
                        package=cand.name,
                        version=cand.version,
                        architecture=cand.arch,
                        depends=cand.para.get("Depends", ""),
                        pre_depends=cand.para.get("Pre-Depends", ""),
                        provides=cand.para.get("Provides", ""),
                        order=i,
                        needed_by=res.needed_by[cand.name],
                        repo=cand.repo.label,
                        server=res.server,
                    ).to_meta(),
                )
            )
        return arts

    # --- install ----------------------------------------------------------------------------------------

    def installed(self, ctx: InstallContext) -> str | None:
        debs = bundled_debs(ctx, self.name, staged=False)
        if not debs:
            return "the bundle holds no packages for this layer"
        have = dpkg_installed(ctx.host)
        if not any(_needed(d, have) for d in debs):
            return f"all {len(debs)} packages already installed at the bundle's versions (or newer)"
        return None

    def install(self, ctx: InstallContext) -> str:
        return install_debs(ctx, self.name)


# --- install --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deb:
    package: str
    version: str
    arch: str
    path: Path
    depends: str
    pre_depends: str
    provides: str
    order: int


@dataclass(frozen=True)
class Have:
    version: str
    provides: tuple[tuple[str, str | None], ...] = ()


_NONE = Have("")


def _needed(deb: Deb, have: dict[str, Have]) -> bool:
    """Not installed, or older than the bundle's. Never downgrade: a newer version (the server was updated
    since the collect) stays, and the dependency check below judges the rest against it."""
    got = have.get(deb.package)
    return got is None or version_compare(got.version, deb.version) < 0


def bundled_debs(ctx: InstallContext, layer: str, *, staged: bool = True) -> list[Deb]:
    """The layer's packages; with `staged`, each `path` is a private copy hashed on the way (what dpkg is
    given), else the bundle's path, for questions that read no package bytes."""
    debs = []
    for art in ctx.entries(layer):
        path = ctx.staged(art) if staged else ctx.bundle / art.path
        try:
            m = read_meta(DebMeta, art.meta, art.path)
        except BadInputError as exc:
            raise InstallError(exc.message, exc.hint) from None
        debs.append(Deb(m.package, m.version, m.architecture, path, m.depends, m.pre_depends, m.provides, m.order))
    return sorted(debs, key=lambda d: d.order)


def _rooted(host: Host) -> bool:
    return str(host.root) != "/"


def dpkg_root_args(host: Host) -> list[str]:
    """dpkg acting on a tree other than / (a staging root, the tests): its database and files under the
    root, maintainer scripts run without chroot (the root has no shell of its own) with DPKG_ROOT set."""
    if not _rooted(host):
        return []
    return [f"--root={host.root}", f"--admindir={host.path(ADMINDIR)}", "--force-script-chrootless", "--force-not-root"]


def dpkg_installed(host: Host) -> dict[str, Have]:
    """Packages dpkg has installed (status `ii`), with what they provide."""
    query = host.which("dpkg-query")
    if query is None or (_rooted(host) and not host.exists(f"{ADMINDIR}/status")):
        return {}
    fmt = "${Package}\t${Version}\t${db:Status-Abbrev}\t${Provides}\n"
    res = host.run([query, *dpkg_root_args(host)[:2], "-W", f"-f={fmt}"], check=False, changes=False, timeout=120)
    out: dict[str, Have] = {}
    for line in res.output.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[2].startswith("ii"):
            out[parts[0]] = Have(parts[1], parse_provides(parts[3]))
    return out


def missing_dependencies(todo: list[Deb], bundle: list[Deb], have: dict[str, Have]) -> list[str]:
    """Dependencies of `todo` that neither the server (`have`) nor the bundle satisfies."""
    after: dict[str, Have] = dict(have)
    for d in bundle:
        if _needed(d, have):
            after[d.package] = Have(d.version, parse_provides(d.provides))
    provided: dict[str, list[str | None]] = {}
    for pkg in after.values():
        for name, ver in pkg.provides:
            provided.setdefault(name, []).append(ver)
    out = []
    for d in todo:
        for text in (d.pre_depends, d.depends):
            for group in parse_relations(text):
                if not any(_have_satisfies(after, provided, rel) for rel in group):
                    out.append(f"{d.package} {d.version} needs {group_text(group)}")
    return out


def _have_satisfies(after: dict[str, Have], provided: dict[str, list[str | None]], rel: Relation) -> bool:
    ver = rel.get("version")
    pkg = after.get(rel["name"])
    if pkg is not None and satisfies(pkg.version, ver):
        return True
    return any(ver is None or (p is not None and satisfies(p, ver)) for p in provided.get(rel["name"], []))


def batches(todo: list[Deb]) -> list[list[Deb]]:
    """One dpkg call per batch: dpkg -i configures packages only at the end of a call, and a package whose
    Pre-Depends is unpacked in the same call is refused, so a pre-dependency ends the batch before it."""
    out: list[list[Deb]] = [[]]
    for d in todo:
        names = {b.package for b in out[-1]}
        pre = {rel["name"] for g in parse_relations(d.pre_depends) for rel in g}
        if pre & names:
            out.append([])
        out[-1].append(d)
    return [b for b in out if b]


def install_debs(ctx: InstallContext, layer: str) -> str:
    host = ctx.host
    debs = bundled_debs(ctx, layer)
    if not debs:
        return "no packages in the bundle for this layer"
    dpkg = host.which("dpkg")
    if dpkg is None:
        raise InstallError(
            "dpkg is not on this server, and these are Debian packages.",
            f"The apt layers are for Debian and Ubuntu servers; leave them out with --skip {layer}.",
        )
    if _rooted(host) and not host.exists(f"{ADMINDIR}/status"):
        # A fresh staging root: give dpkg an empty database to work in.
        for d in ("info", "updates", "triggers"):
            host.makedirs(f"{ADMINDIR}/{d}")
        host.write_file(f"{ADMINDIR}/status", "")
    have = dpkg_installed(host)
    todo = [d for d in debs if _needed(d, have)]
    present = len(debs) - len(todo)
    if not todo:
        return f"all {len(debs)} packages already installed"
    missing = missing_dependencies(todo, debs, have)
    if missing:
        server = next((str(a.meta.get("server", "")) for a in ctx.lock.artifacts if a.layer == layer), "")
        raise InstallError(
            "the bundle's packages need packages this server does not have, and the bundle does not bring "
            "them; nothing was installed:\n"
            + "\n".join(f"  - {m}" for m in missing)
            + (f"\n(the bundle was resolved assuming {server})" if server else ""),
            "Install the named packages first, or copy this server's /var/lib/dpkg/status to the connected PC "
            "and collect again with --target-status FILE (docs/packages.md) so the bundle brings them.",
        )
    argv = [dpkg, *dpkg_root_args(host), "--force-confdef", "--force-confold"]
    if _rooted(host):
        host.makedirs("/var/log")
        argv.append(f"--log={host.path(DPKG_LOG)}")
    env = {"DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"}
    for batch in batches(todo):
        res = host.run([*argv, "-i", *(str(d.path) for d in batch)], check=False, env=env, timeout=3600)
        if res.returncode != 0:
            raise InstallError(
                f"dpkg failed (exit {res.returncode}) installing "
                f"{', '.join(d.package for d in batch)}{_dpkg_problem(res)}.",
                "See the output above and the install log; `dpkg --audit` lists half-installed "
                "packages, and running the same command again retries them.",
                res,
            )
    if host.dry_run:
        return f"{len(todo)} packages would be installed ({present} already present)"
    after = dpkg_installed(host)
    wrong = [
        f"{d.package} ({after.get(d.package, _NONE).version or 'not installed'}, expected {d.version})"
        for d in todo
        if _needed(d, after)
    ]
    if wrong:
        raise InstallError(
            f"dpkg finished, but these packages are not installed as expected: {', '.join(wrong)}.",
            "See the install log; `dpkg --audit` tells what is half-installed.",
        )
    names = ", ".join(d.package for d in todo[:6]) + (", ..." if len(todo) > 6 else "")
    return f"{len(todo)} packages installed ({names}); {present} already present"


def _dpkg_problem(res: RunResult) -> str:
    """The line of dpkg's output that names the problem (a dependency it could not find), if any."""
    for line in res.output.splitlines():
        text = line.strip()
        if "depends on" in text or "pre-depends on" in text or "is not installed" in text:
            return f": {text}"
    return ""
