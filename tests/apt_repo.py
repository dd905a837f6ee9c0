"""Real apt repositories for tests: .debs built with dpkg-deb, indexed with dpkg-scanpackages, a Release
with SHA256 lines, signed (InRelease, Release.gpg) with a throwaway gpg key."""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import lzma
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Pkg:
    name: str
    version: str
    arch: str = "amd64"
    depends: str = ""
    pre_depends: str = ""
    provides: str = ""
    conflicts: str = ""
    multi_arch: str = ""
    priority: str = "optional"
    files: dict[str, str] = field(default_factory=dict)  # path in the package -> text (a '#!' one is executable)
    preinst: str = ""
    postinst: str = ""

    @property
    def deb_name(self) -> str:
        return f"{self.name}_{self.version.split(':')[-1]}_{self.arch}.deb"


def build_deb(pkg: Pkg, out_dir: Path) -> Path:
    work = out_dir / f".build-{pkg.name}-{pkg.version}-{pkg.arch}"
    (work / "DEBIAN").mkdir(parents=True)
    control = [
        f"Package: {pkg.name}",
        f"Version: {pkg.version}",
        f"Architecture: {pkg.arch}",
        "Maintainer: airgap tests <tests@airgap.invalid>",
        f"Priority: {pkg.priority}",
        "Section: misc",
    ]
    for key, value in (
        ("Depends", pkg.depends),
        ("Pre-Depends", pkg.pre_depends),
        ("Provides", pkg.provides),
        ("Conflicts", pkg.conflicts),
        ("Multi-Arch", pkg.multi_arch),
    ):
        if value:
            control.append(f"{key}: {value}")
    control += [f"Description: test package {pkg.name}", " built by tests/apt_repo.py"]
    (work / "DEBIAN/control").write_text("\n".join(control) + "\n")
    for script, text in (("preinst", pkg.preinst), ("postinst", pkg.postinst)):
        if text:
            (work / "DEBIAN" / script).write_text("#!/bin/sh\nset -e\n" + text + "\n")
            (work / "DEBIAN" / script).chmod(0o755)
    files = dict(pkg.files) or {f"usr/share/doc/{pkg.name}/README": f"{pkg.name} {pkg.version}\n"}
    for rel, text in files.items():
        p = work / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(0o755 if text.startswith("#!") else 0o644)
    out = out_dir / pkg.deb_name
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", str(work), str(out)], check=True, capture_output=True
    )
    shutil.rmtree(work)
    return out


class GpgKey:
    """A throwaway signing key in its own GNUPGHOME; `close()` stops the gpg-agent it started."""

    def __init__(self, home: Path, uid: str = "airgap test repo <repo@airgap.invalid>") -> None:
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._gpg("--quick-gen-key", uid, "ed25519", "sign", "1y")
        self.keyring = home / "keyring.gpg"
        self.keyring.write_bytes(self._gpg("--export").stdout)
        self.armored = home / "keyring.asc"
        self.armored.write_bytes(self._gpg("--armor", "--export").stdout)

    def _gpg(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                "gpg",
                "--homedir",
                str(self.home),
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                *args,
            ],
            check=True,
            capture_output=True,
        )

    def clearsign(self, src: Path, dest: Path) -> None:
        self._gpg("--digest-algo", "SHA256", "--clearsign", "-o", str(dest), str(src))

    def detach_sign(self, src: Path, dest: Path) -> None:
        self._gpg("--digest-algo", "SHA256", "--detach-sign", "-o", str(dest), str(src))

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True)


def _compressed_indexes(directory: Path, packages: bytes) -> None:
    (directory / "Packages").write_bytes(packages)
    (directory / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
    (directory / "Packages.xz").write_bytes(lzma.compress(packages))


def _scan(cwd: Path, path: str, arch: str | None) -> bytes:
    argv = ["dpkg-scanpackages", "--multiversion"] + (["-a", arch] if arch else []) + [path, "/dev/null"]
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True).stdout


def write_release(dist: Path, fields: dict[str, str], key: GpgKey | None, inrelease: bool = True) -> Path:
    entries = []
    for p in sorted(dist.rglob("Packages*")):
        data = p.read_bytes()
        entries.append(f" {hashlib.sha256(data).hexdigest()} {len(data):>8} {p.relative_to(dist).as_posix()}")
    head = {"Origin": "airgap-tests", "Label": "airgap-tests", **fields, "Date": email.utils.formatdate(usegmt=True)}
    text = "".join(f"{k}: {v}\n" for k, v in head.items()) + "SHA256:\n" + "\n".join(entries) + "\n"
    release = dist / "Release"
    release.write_text(text)
    if key is not None:
        if inrelease:
            key.clearsign(release, dist / "InRelease")
        key.detach_sign(release, dist / "Release.gpg")
    return release


def dists_repo(
    root: Path,
    suite: str,
    components: dict[str, list[Pkg]],
    key: GpgKey | None,
    arch: str = "amd64",
    codename: str | None = None,
) -> None:
    """`deb URL SUITE COMPONENTS`: pool/<component>/*.deb and dists/<suite>/<component>/binary-<arch>/."""
    for comp, pkgs in components.items():
        pool = root / "pool" / comp
        pool.mkdir(parents=True, exist_ok=True)
        for pkg in pkgs:
            build_deb(pkg, pool)
        binary = root / "dists" / suite / comp / f"binary-{arch}"
        binary.mkdir(parents=True, exist_ok=True)
        # Scan only this suite's packages: the pool may be shared with other suites.
        names = {p.deb_name for p in pkgs}
        stage = root / f".scan-{suite}-{comp}"
        stage.mkdir()
        (stage / "pool" / comp).mkdir(parents=True)
        for n in names:
            (stage / "pool" / comp / n).symlink_to(pool / n)
        data = _scan(stage, f"pool/{comp}", arch)
        shutil.rmtree(stage)
        _compressed_indexes(binary, data)
    write_release(
        root / "dists" / suite,
        {"Suite": suite, "Codename": codename or suite, "Architectures": arch, "Components": " ".join(components)},
        key,
    )


def flat_repo(
    root: Path, pkgs: list[Pkg], key: GpgKey | None, inrelease: bool = True, fields: dict[str, str] | None = None
) -> None:
    """`deb URL /`: the .debs beside Packages and InRelease (`Filename: ./x.deb`), as NVIDIA publishes."""
    root.mkdir(parents=True, exist_ok=True)
    for pkg in pkgs:
        build_deb(pkg, root)
    _compressed_indexes(root, _scan(root, ".", None))
    write_release(root, {"Architectures": "amd64", **(fields or {})}, key, inrelease=inrelease)


def private_apt_root(root: Path, sources: str, status: str = "") -> list[str]:
    """A private apt configuration under `root` (no system state read or written) whose sources.list is
    `sources` and whose dpkg status is `status`; the apt-get options that point apt at it."""
    for d in (
        "etc/apt/sources.list.d",
        "etc/apt/preferences.d",
        "etc/apt/apt.conf.d",
        "etc/apt/keyrings",
        "etc/apt/trusted.gpg.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").write_text(status)
    (root / "etc/apt/sources.list").write_text(sources)
    return [
        f"-oDir={root}",
        f"-oDir::State::status={root}/var/lib/dpkg/status",
        f"-oDir::Etc::sourcelist={root}/etc/apt/sources.list",
        f"-oDir::Etc::sourceparts={root}/etc/apt/sources.list.d",
        f"-oDir::Etc::preferencesparts={root}/etc/apt/preferences.d",
        f"-oDir::Etc::parts={root}/etc/apt/apt.conf.d",
        f"-oDir::Etc::trustedparts={root}/etc/apt/trusted.gpg.d",
        "-oAPT::Architecture=amd64",
        "-oAPT::Architectures=amd64",
        "-oAcquire::Languages=none",
        "-oDebug::NoLocking=1",
        "-oAPT::Sandbox::User=root",
        "-oAPT::Install-Recommends=false",
    ]
