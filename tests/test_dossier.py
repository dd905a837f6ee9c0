"""`airgap dossier` on bundles made of real parts: .debs built with dpkg-deb (with a copyright file), wheels
(zip archives with their dist-info METADATA), an OCI image from busybox-static plus a layer holding a dpkg
status database, copyright files and a Python dist-info (and a whiteout in a third layer), a model with its
card, and NVIDIA-named runfiles. The SBOMs are re-validated here with their own libraries."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from airgap.artifact_meta import DebMeta, ImageMeta, ModelFileMeta, WheelMeta
from airgap.bundle import finalize
from airgap.dossier.licences import NVIDIA_CUDA, NVIDIA_DRIVER
from airgap.lock import Lock, LockedArtifact, UpstreamDigest
from airgap.sums import parse_sums
from airgap.units import now_utc
from tests.apt_repo import Pkg, build_deb
from tests.conftest import Upstream, payload, run_airgap, sha
from tests.registry_fixtures import busybox_layer, tar_layer

pytest.importorskip("cyclonedx")
pytest.importorskip("spdx_tools")

needs_tools = pytest.mark.skipif(
    not (shutil.which("dpkg-deb") and shutil.which("busybox")), reason="needs dpkg-deb and busybox-static"
)
pytestmark = needs_tools

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
SITE = "usr/lib/python3/dist-packages"

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: {name}

Files: *
Copyright: 2024 Example
License: {licence}

Files: debian/*
Copyright: 2024 Debian
License: GPL-2+
"""

# os.system, spelt the way `pickle` writes a global at protocol 0: GLOBAL 'os system', then REDUCE.
EVIL_PICKLE = b"cos\nsystem\n(S'echo owned'\ntR."


def wheel(project: str, version: str, headers: str) -> bytes:
    """A real (pure-Python) wheel: a module, its dist-info METADATA, WHEEL and RECORD."""
    buf = io.BytesIO()
    di = f"{project}-{version}.dist-info"
    members = {
        f"{project}/__init__.py": f"__version__ = {version!r}\n",
        f"{di}/METADATA": f"Metadata-Version: 2.4\nName: {project}\nVersion: {version}\n{headers}\n",
        f"{di}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{di}/RECORD": "",
    }
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in members.items():
            # A fixed date: the same wheel is the same bytes in two bundles (the diff must see it unchanged).
            z.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), text)
    return buf.getvalue()


def safetensors(n_tensors: int = 1) -> bytes:
    header = {f"w{i}": {"dtype": "F32", "shape": [2], "data_offsets": [8 * i, 8 * i + 8]} for i in range(n_tensors)}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(8 * n_tensors)


DPKG_STATUS = b"""Package: libfoo1
Status: install ok installed
Architecture: amd64
Source: foo
Version: 1.0-1
Description: foo library

Package: zlib1g
Status: install ok installed
Architecture: amd64
Source: zlib
Version: 1:1.2.13.dfsg-1
Description: compression library

Package: removed-pkg
Status: deinstall ok config-files
Architecture: amd64
Version: 0.1
Description: only its configuration is left
"""


def app_layers() -> list[bytes]:
    """busybox, then the packages' layer, then a layer whose whiteout removes one dist-info."""
    return [
        busybox_layer(),
        tar_layer(
            {
                "etc/os-release": b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
                "var/lib/dpkg/status": DPKG_STATUS,
                "usr/share/doc/libfoo1/copyright": DEP5.format(name="foo", licence="BSD-3-Clause").encode(),
                "usr/share/doc/zlib1g/copyright": b"This is zlib's copyright, in prose.\n",
                f"{SITE}/urllib3-1.26.5.dist-info/METADATA": b"Metadata-Version: 2.1\nName: urllib3\nVersion: "
                b"1.26.5\nLicense: MIT\n",
                f"{SITE}/gone-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: gone\nVersion: 1.0\n",
            }
        ),
        tar_layer({f"{SITE}/.wh.gone-1.0.dist-info": b""}),
    ]


_DEBS: dict[tuple[str, str, str], tuple[str, bytes]] = {}


class BundleMaker:
    """Writes a finished bundle (lock, README, SHA256SUMS through airgap.bundle.finalize) from real parts."""

    def __init__(self, root: Path, work: Path) -> None:
        self.root = root
        self.work = work
        self.arts: list[LockedArtifact] = []
        self.manifest: dict[str, Any] = {}

    def put(
        self, layer_dir: str, name: str, data: bytes, url: str, meta: dict[str, Any] | None = None, digest: bool = True
    ) -> None:
        rel = f"layers/{layer_dir}/{name}"
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        self.arts.append(
            LockedArtifact(
                layer=layer_dir.split("-", 1)[1],
                name=name,
                path=rel,
                size=len(data),
                sha256=sha(data),
                url=url,
                upstream_digest=UpstreamDigest(algorithm="sha256", value=sha(data), source=url + ".sha256")
                if digest
                else None,
                upstream_digest_note="" if digest else "no digest published",
                meta=meta or {},
            )
        )

    def deb(self, name: str, version: str, licence: str) -> None:
        key = (name, version, licence)
        if key not in _DEBS:  # built once: dpkg-deb stamps build times, and two bundles must share the bytes
            out = self.work / "debs"
            out.mkdir(parents=True, exist_ok=True)
            files = {f"usr/share/doc/{name}/copyright": DEP5.format(name=name, licence=licence)}
            path = build_deb(Pkg(name, version, files=files), out)
            _DEBS[key] = (path.name, path.read_bytes())
        file_name, data = _DEBS[key]
        meta = DebMeta(package=name, version=version, architecture="amd64").to_meta()
        self.put("01-prereqs", file_name, data, f"https://deb.debian.org/debian/pool/main/{file_name}", meta)

    def wheel(self, project: str, version: str, headers: str) -> None:
        name = f"{project}-{version}-py3-none-any.whl"
        meta = WheelMeta(project=project, version=version).to_meta()
        self.put("08-python", name, wheel(project, version, headers), f"https://files.pythonhosted.org/{name}", meta)

    def image(self, ref: str, layers: list[bytes], labels: dict[str, str] | None = None) -> None:
        blobs = [gzip.compress(t, mtime=0) for t in layers]
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": ["/bin/sh"], "Labels": labels or {}},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(t) for t in layers]},
            },
            sort_keys=True,
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + sha(config), "size": len(config)},
                "layers": [{"mediaType": LAYER_GZIP, "digest": "sha256:" + sha(b), "size": len(b)} for b in blobs],
            },
            sort_keys=True,
        ).encode()
        have = {a.path for a in self.arts}
        base = f"https://{ref.split('/', 1)[0]}/v2/{ref.split('/', 1)[1].split(':')[0]}"
        for b in blobs:
            if f"layers/07-images/blobs/sha256/{sha(b)}" not in have:
                self.put("07-images", f"blobs/sha256/{sha(b)}", b, f"{base}/blobs/sha256:{sha(b)}", {"role": "layer"})
        self.put(
            "07-images", f"blobs/sha256/{sha(config)}", config, f"{base}/blobs/sha256:{sha(config)}", {"role": "config"}
        )
        meta = ImageMeta(
            ref=ref,
            refs=[ref],
            tags=[ref],
            manifest_digest="sha256:" + sha(manifest),
            config_digest="sha256:" + sha(config),
            platform="linux/amd64",
            media_type=OCI_MANIFEST,
            layers=len(blobs),
            size=len(manifest) + len(config) + sum(len(b) for b in blobs),
            source="registry",
        ).to_meta()
        self.put(
            "07-images", f"blobs/sha256/{sha(manifest)}", manifest, f"{base}/manifests/{ref.rsplit(':', 1)[1]}", meta
        )

    def model(self, repo: str, files: dict[str, bytes], allow_pickle: bool = False) -> None:
        self.manifest.setdefault("models", []).append({"repo": repo, "allow_pickle": allow_pickle})
        commit = "a" * 40
        for path, data in files.items():
            meta = ModelFileMeta(repo=repo, revision="main", commit=commit, path_in_repo=path).to_meta()
            url = f"https://huggingface.co/{repo}/resolve/{commit}/{path}"
            self.put("09-models", f"{repo.replace('/', '--')}/{path}", data, url, meta)

    def finish(self, name: str = "stack") -> Path:
        lock = Lock(
            name=name,
            target={"os": "debian-12", "arch": "amd64", "python": "3.11"},
            created=now_utc(),
            manifest=self.manifest,
            artifacts=self.arts,
        )
        finalize(self.root, lock)
        return self.root


MODEL_CARD = b"---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# tiny\n"


def stack(
    tmp: Path, name: str = "b", requests_version: str = "2.31.0", second_image: bool = False, pickle: bool = True
) -> Path:
    m = BundleMaker(tmp / name, tmp / f"work-{name}")
    m.put(
        "02-driver",
        "NVIDIA-Linux-x86_64-550.90.07.run",
        b"#!/bin/sh\necho driver\n",
        "https://us.download.nvidia.com/NVIDIA-Linux-x86_64-550.90.07.run",
    )
    m.put(
        "03-cuda",
        "cuda_12.4.0_550.54.14_linux.run",
        b"#!/bin/sh\necho cuda\n",
        "https://developer.download.nvidia.com/cuda_12.4.0_550.54.14_linux.run",
    )
    m.put("10-files", "check.sh", b"#!/bin/sh\ntrue\n", "https://example.com/check.sh", digest=False)
    m.deb("libhello1", "1.2-3", "MIT")
    m.wheel("requests", requests_version, "License-Expression: Apache-2.0")
    m.wheel("tinylib", "1.0", "Classifier: License :: OSI Approved :: MIT License")
    m.image("registry.example.com/acme/app:1", app_layers(), {"org.opencontainers.image.licenses": "Apache-2.0"})
    if second_image:
        m.image("registry.example.com/acme/tool:2", [busybox_layer(), tar_layer({"etc/motd": b"tool\n"})])
    files = {"README.md": MODEL_CARD, "LICENSE": b"Apache License 2.0\n", "model.safetensors": safetensors(2)}
    if pickle:
        files["extra.bin"] = EVIL_PICKLE
    m.model("acme/tiny", files, allow_pickle=pickle)
    return m.finish(name)


def dossier_of(bundle: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((bundle / "dossier/dossier.json").read_text())
    return data


def run_ok(*args: str) -> subprocess.CompletedProcess[str]:
    r = run_airgap(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


# --- the dossier of a whole stack ------------------------------------------------------------------------


def test_every_artifact_and_every_package_in_the_image_is_listed_with_its_licence(tmp_path: Path) -> None:
    bundle = stack(tmp_path)
    lock = Lock.read(bundle)
    run_ok("dossier", str(bundle), "-o", str(tmp_path / "review"))
    d = dossier_of(bundle)

    assert [a["path"] for a in d["artifacts"]] == [a.path for a in lock.artifacts]
    by_name = {a["name"]: a for a in d["artifacts"]}
    lic = {name: a["licence"]["value"] for name, a in by_name.items() if a["kind"] != "image-blob"}
    assert lic == {
        "NVIDIA-Linux-x86_64-550.90.07.run": NVIDIA_DRIVER,
        "cuda_12.4.0_550.54.14_linux.run": NVIDIA_CUDA,
        "check.sh": "unknown",
        "libhello1": "MIT",
        "requests": "Apache-2.0",
        "tinylib": "MIT",
        "registry.example.com/acme/app:1": "Apache-2.0",  # its org.opencontainers.image.licenses label
        "acme/tiny/README.md": "apache-2.0",
        "acme/tiny/LICENSE": "apache-2.0",
        "acme/tiny/model.safetensors": "apache-2.0",
        "acme/tiny/extra.bin": "apache-2.0",
    }
    assert by_name["requests"]["licence"]["source"] == "wheel METADATA License-Expression"
    assert by_name["tinylib"]["licence"]["source"] == "wheel METADATA classifier"
    assert by_name["libhello1"]["licence"]["source"] == "/usr/share/doc/libhello1/copyright in the .deb"
    assert "LICENSE" in by_name["acme/tiny/README.md"]["licence"]["source"]
    req = by_name["requests"]
    assert req["version"] == "2.31.0" and req["purl"] == "pkg:pypi/requests@2.31.0"
    assert req["url"] == "https://files.pythonhosted.org/requests-2.31.0-py3-none-any.whl"
    assert req["upstream_digest"]["value"] == req["sha256"]
    assert by_name["libhello1"]["purl"] == "pkg:deb/debian/libhello1@1.2-3?arch=amd64"
    assert by_name["acme/tiny/model.safetensors"]["purl"] == f"pkg:huggingface/acme/tiny@{'a' * 40}#model.safetensors"
    assert by_name["check.sh"]["upstream_digest"] is None

    (img,) = d["images"]
    assert img["ref"] == "registry.example.com/acme/app:1"
    assert img["licence"] == {"value": "Apache-2.0", "source": "image label org.opencontainers.image.licenses"}
    assert img["os"] == {"id": "debian", "version": "12"}
    pkgs = {(p["kind"], p["name"]): (p["version"], p["licence"]["value"]) for p in img["packages"]}
    # removed-pkg is not installed (config files only); gone-1.0 was whited out by the third layer.
    assert pkgs == {
        ("deb", "libfoo1"): ("1.0-1", "BSD-3-Clause"),
        ("deb", "zlib1g"): ("1:1.2.13.dfsg-1", "see copyright file (not machine-readable)"),
        ("pypi", "urllib3"): ("1.26.5", "MIT"),
    }

    # The pickle is listed with the globals it imports; the safetensors header parses.
    code = {c["path"].rsplit("/", 1)[1]: c for c in d["code_files"]}
    assert code["extra.bin"]["globals"] == ["os.system"] and code["extra.bin"]["dangerous"] == ["os.system"]
    assert code["extra.bin"]["allowed"] is True
    assert code["model.safetensors"]["parsed"] is True and code["model.safetensors"]["tensors"] == 2

    # No advisory export: every kind says "not checked".
    assert d["vulnerabilities"]["export"] is None
    assert set(d["vulnerabilities"]["not_checked"]) == {"PyPI", "Debian"}
    for why in d["vulnerabilities"]["not_checked"].values():
        assert "not checked" in why

    # Copied for the reviewer too.
    assert sorted(p.name for p in (tmp_path / "review").iterdir()) == sorted(
        ["dossier.html", "dossier.json", "sbom.cdx.json", "sbom.spdx.json"]
    )


def test_the_sboms_validate_with_their_own_libraries_and_cover_the_image_contents(tmp_path: Path) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    bundle = stack(tmp_path)
    run_ok("dossier", str(bundle))
    cdx_text = (bundle / "dossier/sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(cdx_text) is None
    cdx = json.loads(cdx_text)
    lock = Lock.read(bundle)
    assert {c["bom-ref"] for c in cdx["components"]} == {a.path for a in lock.artifacts}
    app = next(c for c in cdx["components"] if c["name"] == "registry.example.com/acme/app:1")
    assert app["type"] == "container"
    inner = {c["purl"] for c in app["components"]}
    assert inner == {
        "pkg:deb/debian/libfoo1@1.0-1?arch=amd64&distro=debian-12",
        "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12",
        "pkg:pypi/urllib3@1.26.5",
    }
    wheel_c = next(c for c in cdx["components"] if c["name"] == "requests")
    assert wheel_c["purl"] == "pkg:pypi/requests@2.31.0"
    assert wheel_c["hashes"] == [{"alg": "SHA-256", "content": sha((bundle / wheel_c["bom-ref"]).read_bytes())}]

    doc = parse_file(str(bundle / "dossier/sbom.spdx.json"))
    assert validate_full_spdx_document(doc) == []
    names = {p.name for p in doc.packages}
    assert {"requests", "libhello1", "libfoo1", "zlib1g", "urllib3", "acme/tiny/model.safetensors"} <= names
    declared = {p.name: str(p.license_declared) for p in doc.packages}
    assert declared["requests"] == "Apache-2.0" and declared["libfoo1"] == "BSD-3-Clause"
    assert declared["check.sh"] == "NOASSERTION"


def test_the_page_is_self_contained_and_says_what_to_look_at(tmp_path: Path) -> None:
    bundle = stack(tmp_path)
    run_ok("dossier", str(bundle))
    page = (bundle / "dossier/dossier.html").read_text()
    low = page.lower()
    for external in ("<script", "<link", "src=", "@import", "url(", "<img", "<iframe"):
        assert external not in low, external
    assert "<style>" in page and "@media print" in page
    for text in (
        "requests",
        "libfoo1",
        "urllib3",
        "os.system",
        "NVIDIA CUDA Toolkit End User License Agreement",
        "not checked",
    ):
        assert text in page, text


def test_the_dossier_is_listed_in_sha256sums_and_verify_passes(tmp_path: Path) -> None:
    bundle = stack(tmp_path)
    run_ok("dossier", str(bundle))
    listed = (bundle / "SHA256SUMS").read_text()
    for name in ("dossier.html", "dossier.json", "sbom.cdx.json", "sbom.spdx.json"):
        assert f"  dossier/{name}\n" in listed
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle).returncode == 0
    run_ok("verify", str(bundle))
    # Made again (the second time replaces the first; nothing stale is left listed).
    run_ok("dossier", str(bundle))
    run_ok("verify", str(bundle))


def test_files_stored_in_parts_are_read_through_their_parts(tmp_path: Path) -> None:
    m = BundleMaker(tmp_path / "b", tmp_path / "work")
    # A wheel larger than the part size (incompressible payload), and the busybox layer (about 1 MB gzip'd).
    big = wheel("bigwheel", "3.0", "License-Expression: BSD-2-Clause")
    buf = io.BytesIO(big)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr(zipfile.ZipInfo("bigwheel/blob.bin", date_time=(2024, 1, 1, 0, 0, 0)), payload(1_500_000, 7))
    m.put(
        "08-python",
        "bigwheel-3.0-py3-none-any.whl",
        buf.getvalue(),
        "https://files.pythonhosted.org/b.whl",
        WheelMeta(project="bigwheel", version="3.0").to_meta(),
    )
    m.image("registry.example.com/acme/app:1", app_layers())
    bundle = m.finish()
    run_ok("split", str(bundle), "--max-file-size", "1M")
    lock = Lock.read(bundle)
    assert sum(1 for a in lock.artifacts if a.parts) == 2
    run_ok("dossier", str(bundle))
    run_ok("verify", str(bundle))
    d = dossier_of(bundle)
    wheel_rec = next(a for a in d["artifacts"] if a["name"] == "bigwheel")
    assert wheel_rec["licence"]["value"] == "BSD-2-Clause"
    assert {p["name"] for p in d["images"][0]["packages"]} == {"libfoo1", "zlib1g", "urllib3"}


def test_a_tampered_bundle_gets_no_dossier(tmp_path: Path) -> None:
    bundle = stack(tmp_path)
    whl = next((bundle / "layers/08-python").glob("requests-*.whl"))
    data = bytearray(whl.read_bytes())
    data[10] ^= 1
    whl.write_bytes(bytes(data))
    sums_before = (bundle / "SHA256SUMS").read_bytes()
    r = run_airgap("dossier", str(bundle))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "fails verification" in r.stderr and whl.name in r.stderr
    assert "Traceback" not in r.stderr
    assert not (bundle / "dossier").exists()
    assert (bundle / "SHA256SUMS").read_bytes() == sums_before


def test_a_signed_bundle_is_signed_again_over_the_dossier(tmp_path: Path) -> None:
    bundle = stack(tmp_path)
    run_ok("keygen", "-o", str(tmp_path / "site"))
    run_ok("sign", str(bundle), "--key", str(tmp_path / "site.key"))
    run_ok("verify", str(bundle), "--key", str(tmp_path / "site.pub"))

    # Without the key: the old signature (over the old SHA256SUMS) is removed, and that is said.
    r = run_ok("dossier", str(bundle))
    assert "SHA256SUMS.sig removed" in r.stderr + r.stdout
    assert not (bundle / "SHA256SUMS.sig").exists()

    r = run_ok("dossier", str(bundle), "--sign-key", str(tmp_path / "site.key"))
    assert "signed again" in r.stderr + r.stdout
    run_ok("verify", str(bundle), "--key", str(tmp_path / "site.pub"))
    assert "dossier/dossier.html" in (bundle / "SHA256SUMS").read_text()
    # The signature covers the dossier: altering it fails verification with the key.
    page = bundle / "dossier/dossier.html"
    page.write_text(page.read_text().replace("requests", "requestz"))
    assert run_airgap("verify", str(bundle), "--key", str(tmp_path / "site.pub")).returncode != 0


def test_a_trusted_key_makes_a_valid_signature_mandatory_for_the_dossier(tmp_path: Path) -> None:
    """As for verify and install: with a trusted key, an unsigned (or otherwise signed) bundle gets no
    dossier, however intact its files."""
    bundle = stack(tmp_path)
    run_ok("keygen", "-o", str(tmp_path / "site"))
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(tmp_path / "site.pub", keys / "site.pub")
    r = run_airgap("dossier", str(bundle), "--trusted-keys", str(keys))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "signature" in r.stderr and not (bundle / "dossier").exists()
    run_ok("sign", str(bundle), "--key", str(tmp_path / "site.key"))
    r = run_ok("dossier", str(bundle), "--trusted-keys", str(keys), "--sign-key", str(tmp_path / "site.key"))
    assert (bundle / "dossier/dossier.json").is_file()
    run_ok("verify", str(bundle), "--trusted-keys", str(keys))


# --- the difference since the last approved bundle -----------------------------------------------------


def test_one_changed_wheel_and_one_new_image_are_exactly_the_diff(tmp_path: Path) -> None:
    old = stack(tmp_path, "old")
    run_ok("dossier", str(old))  # the approved bundle carries its own dossier
    new = stack(tmp_path, "new", requests_version="2.32.0", second_image=True)
    run_ok("dossier", str(new), "--against", str(old))
    df = dossier_of(new)["diff"]
    assert [(a["name"], a["old_version"], a["version"]) for a in df["artifacts_changed"]] == [
        ("requests", "2.31.0", "2.32.0")
    ]
    assert df["artifacts_added"] == [] and df["artifacts_removed"] == []
    assert [i["ref"] for i in df["images_added"]] == ["registry.example.com/acme/tool:2"]
    assert df["images_removed"] == [] and df["images_changed"] == []
    assert df["new_licences"] == [] and df["new_advisories"] == []
    assert "requests" in (new / "dossier/dossier.html").read_text().split("Changes since")[1].split("<h2>")[0]

    # The same answer from the old bundle's lock alone (no dossier, no files read).
    run_ok("dossier", str(new), "--against", str(old / "airgap.lock.json"))
    df2 = dossier_of(new)["diff"]
    assert [a["name"] for a in df2["artifacts_changed"]] == ["requests"]
    assert [i["ref"] for i in df2["images_added"]] == ["registry.example.com/acme/tool:2"]


def test_against_something_that_is_not_a_bundle_is_refused_plainly(tmp_path: Path) -> None:
    bundle = stack(tmp_path)
    r = run_airgap("dossier", str(bundle), "--against", str(tmp_path))
    assert r.returncode == 2 and "--against" in r.stderr and "Traceback" not in r.stderr


# --- known vulnerabilities -----------------------------------------------------------------------------


def advisory(id_: str, ecosystem: str, name: str, modified: str, **affected: Any) -> dict[str, Any]:
    return {
        "schema_version": "1.6.0",
        "id": id_,
        "modified": modified,
        "summary": f"test advisory {id_}",
        "aliases": [f"CVE-2099-{id_[-1]}"],
        "affected": [{"package": {"ecosystem": ecosystem, "name": name}, **affected}],
    }


def osv_export(root: Path) -> Path:
    root.mkdir()
    docs = [
        # Matches: requests 2.31.0 < 2.32.0 (a wheel in the bundle).
        advisory(
            "PYSEC-2099-1",
            "PyPI",
            "Requests",
            "2024-05-01T00:00:00Z",
            ranges=[{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.32.0"}]}],
        ),
        # Matches: libfoo1 1.0-1 in the image, named by its source package as Debian's advisories do.
        advisory("DEBIAN-2099-2", "Debian:12", "foo", "2024-06-02T00:00:00Z", versions=["1.0-1"]),
        # Do not match: fixed before the bundle's versions, another distribution, another package.
        advisory(
            "PYSEC-2099-3",
            "PyPI",
            "requests",
            "2024-01-01T00:00:00Z",
            ranges=[{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0"}]}],
        ),
        advisory(
            "DEBIAN-2099-4",
            "Debian:12",
            "zlib",
            "2024-01-01T00:00:00Z",
            ranges=[{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:1.2.12"}]}],
        ),
        advisory("UBUNTU-2099-5", "Ubuntu:22.04:LTS", "foo", "2024-01-01T00:00:00Z", versions=["1.0-1"]),
        advisory("PYSEC-2099-6", "PyPI", "numpy", "2024-01-01T00:00:00Z", versions=["1.0"]),
    ]
    for doc in docs:
        (root / f"{doc['id']}.json").write_text(json.dumps(doc))
    return root


def test_an_osv_export_yields_exactly_the_two_advisories_that_apply(tmp_path: Path) -> None:
    bundle = stack(tmp_path)
    export = osv_export(tmp_path / "osv")
    run_ok("dossier", str(bundle), "--osv", str(export))
    v = dossier_of(bundle)["vulnerabilities"]
    found = {(f["id"], f["package"], f["version"], f["where"]) for f in v["findings"]}
    assert found == {
        ("PYSEC-2099-1", "requests", "2.31.0", "layers/08-python/requests-2.31.0-py3-none-any.whl"),
        ("DEBIAN-2099-2", "libfoo1", "1.0-1", "image registry.example.com/acme/app:1"),
    }
    assert v["export"]["newest_modified"] == "2024-06-02T00:00:00Z"
    assert v["export"]["advisories"] == 6
    assert v["checked"] == {"PyPI": 3, "Debian": 3} and v["not_checked"] == {}
    page = (bundle / "dossier/dossier.html").read_text()
    assert "PYSEC-2099-1" in page and "DEBIAN-2099-2" in page and "2024-06-02" in page

    # The same export as a zip (OSV's all.zip form) gives the same answer.
    shutil.make_archive(str(tmp_path / "all"), "zip", export)
    run_ok("dossier", str(bundle), "--osv", str(tmp_path / "all.zip"))
    assert {f["id"] for f in dossier_of(bundle)["vulnerabilities"]["findings"]} == {"PYSEC-2099-1", "DEBIAN-2099-2"}


def test_an_export_without_debian_data_says_debs_were_not_checked(tmp_path: Path) -> None:
    bundle = stack(tmp_path)
    export = tmp_path / "pypi-only"
    export.mkdir()
    doc = advisory("PYSEC-2099-1", "PyPI", "requests", "2024-05-01T00:00:00Z", versions=["2.31.0"])
    (export / "a.json").write_text(json.dumps(doc))
    run_ok("dossier", str(bundle), "--osv", str(export))
    v = dossier_of(bundle)["vulnerabilities"]
    assert v["checked"] == {"PyPI": 3}
    assert "not checked" in v["not_checked"]["Debian"]


def test_a_new_advisory_since_the_approved_bundle_is_shown_in_the_diff(tmp_path: Path) -> None:
    old = stack(tmp_path, "old", requests_version="2.32.0")
    new = stack(tmp_path, "new", requests_version="2.31.0")  # a downgrade into the vulnerable range
    export = osv_export(tmp_path / "osv")
    run_ok("dossier", str(new), "--against", str(old), "--osv", str(export))
    df = dossier_of(new)["diff"]
    assert [f["id"] for f in df["new_advisories"]] == ["PYSEC-2099-1"]  # DEBIAN-2099-2 was there before


def test_a_grype_result_is_folded_in(tmp_path: Path) -> None:
    bundle = stack(tmp_path)
    result = {
        "matches": [
            {
                "vulnerability": {"id": "CVE-2099-7", "severity": "High", "fix": {"versions": ["2.32.0"]}},
                "artifact": {"name": "requests", "version": "2.31.0", "purl": "pkg:pypi/requests@2.31.0"},
            }
        ],
        "descriptor": {"name": "grype", "version": "0.80.0", "db": {"built": "2024-07-01T00:00:00Z"}},
    }
    (tmp_path / "grype.json").write_text(json.dumps(result))
    run_ok("dossier", str(bundle), "--scanner-result", str(tmp_path / "grype.json"))
    sc = dossier_of(bundle)["scanner"]
    assert sc["tool"] == "grype" and sc["db_built"] == "2024-07-01T00:00:00Z"
    assert [(m["id"], m["package"]) for m in sc["matches"]] == [("CVE-2099-7", "requests")]
    assert "CVE-2099-7" in (bundle / "dossier/dossier.html").read_text()
    (tmp_path / "bad.json").write_text("{}")
    r = run_airgap("dossier", str(bundle), "--scanner-result", str(tmp_path / "bad.json"))
    assert r.returncode == 2 and "Grype" in r.stderr


# --- the HTML in a real browser ------------------------------------------------------------------------


def test_the_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian package `chromium`)")
    bundle = stack(tmp_path)
    run_ok("dossier", str(bundle))
    page = bundle / "dossier/dossier.html"
    shot = tmp_path / "dossier.png"
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + str(tmp_path / "profile")]
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1400,2000", page.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert "Dossier of bundle b" in dom and "libfoo1" in dom and "os.system" in dom


@pytest.mark.parametrize("compression", ["xz", "zstd"])
def test_a_deb_compressed_with_xz_is_read_and_zstd_is_said_not_read(tmp_path: Path, compression: str) -> None:
    work = tmp_path / "pkg"
    (work / "DEBIAN").mkdir(parents=True)
    (work / "DEBIAN/control").write_text(
        "Package: zz\nVersion: 1\nArchitecture: all\nMaintainer: t <t@airgap.invalid>\nDescription: t\n"
    )
    (work / "usr/share/doc/zz").mkdir(parents=True)
    (work / "usr/share/doc/zz/copyright").write_text(DEP5.format(name="zz", licence="ISC"))
    deb = tmp_path / "zz_1_all.deb"
    r = subprocess.run(
        ["dpkg-deb", "--root-owner-group", f"-Z{compression}", "-b", str(work), str(deb)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"this dpkg-deb cannot write {compression}")
    m = BundleMaker(tmp_path / "b", tmp_path / "w")
    m.put(
        "01-prereqs",
        deb.name,
        deb.read_bytes(),
        "https://deb.debian.org/zz_1_all.deb",
        DebMeta(package="zz", version="1").to_meta(),
    )
    run_ok("dossier", str(m.finish()))
    (rec,) = dossier_of(tmp_path / "b")["artifacts"]
    if compression == "xz":
        assert rec["licence"]["value"] == "ISC"
    else:
        assert rec["licence"]["value"] == "unknown" and "zstd" in rec["licence"]["source"]
        assert "not read" in rec["licence"]["source"]


def test_a_bundle_being_written_by_another_command_is_refused(tmp_path: Path) -> None:
    from airgap.journal import DirectoryLock

    bundle = stack(tmp_path, pickle=False)
    with DirectoryLock(bundle, "split"):
        r = run_airgap("dossier", str(bundle))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "lock" in r.stderr and "Traceback" not in r.stderr
    assert not (bundle / "dossier").exists()
    run_ok("dossier", str(bundle))


def test_split_keeps_the_dossier_and_a_new_collect_removes_it(upstream: Upstream, tmp_path: Path) -> None:
    """The dossier describes the artifacts: `split` (which changes only how they are stored) keeps it listed;
    a new collect changes the bundle, so it removes the stale dossier, says so, and the bundle verifies."""
    manifest = upstream.manifest(tmp_path)
    bundle = tmp_path / "bundle"
    assert run_airgap("collect", str(manifest), "-o", str(bundle)).returncode == 0
    run_ok("dossier", str(bundle))
    listed = set(parse_sums((bundle / "SHA256SUMS").read_text()))
    assert {"dossier/dossier.html", "dossier/dossier.json"} <= listed

    run_ok("split", str(bundle), "--max-file-size", "1MiB")
    after = parse_sums((bundle / "SHA256SUMS").read_text())
    assert {"dossier/dossier.html", "dossier/dossier.json"} <= set(after)
    assert any(p.endswith(".001") for p in after)
    run_ok("verify", str(bundle))

    again = run_airgap("collect", str(manifest), "-o", str(bundle))
    assert again.returncode == 0, again.stderr
    assert "dossier/dossier.html" in again.stdout + again.stderr and "airgap dossier" in again.stdout + again.stderr
    assert not (bundle / "dossier").exists()
    assert not any(p.startswith("dossier/") for p in parse_sums((bundle / "SHA256SUMS").read_text()))
    run_ok("verify", str(bundle))


def test_collect_dossier_writes_it_before_signing(upstream: Upstream, tmp_path: Path) -> None:
    """`collect --dossier --sign`: the dossier is in the bundle, listed in SHA256SUMS, and the signature made
    after it covers it."""
    run_ok("keygen", "-o", str(tmp_path / "site"))
    key = tmp_path / "site.key"
    bundle = tmp_path / "bundle"
    r = run_airgap("collect", str(upstream.manifest(tmp_path)), "-o", str(bundle), "--dossier", "--sign", str(key))
    assert r.returncode == 0, r.stdout + r.stderr
    assert {"dossier/dossier.html", "dossier/dossier.json"} <= set(parse_sums((bundle / "SHA256SUMS").read_text()))
    run_ok("verify", str(bundle), "--key", str(key.with_suffix(".pub")))
