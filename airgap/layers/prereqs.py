"""The `prereqs` layer: the Debian packages the NVIDIA driver build needs on the server (a compiler, dkms,
the headers of the server's kernel), plus any `apt.packages` the manifest lists. Collected and installed as
every apt layer is (airgap/layers/debs.py).
"""

from __future__ import annotations

from airgap.layers.debs import AptLayer
from airgap.manifest import Manifest
from airgap.sources.apt import AptIndex, Request

DRIVER_BUILD = ("build-essential", "gcc-12", "dkms")


class PrereqsLayer(AptLayer):
    """build-essential, gcc-12 (Ubuntu 22.04's HWE kernels are built with it), dkms, and the headers of the
    server's kernel: what `NVIDIA-Linux-*.run --dkms` needs to build its module. Asked for with
    `apt: {prereqs: true}`, plus any `apt.packages`."""

    name = "prereqs"
    section = "apt"
    # apt-get orders Pre-Depends; one `dpkg -i` call refuses a package whose pre-dependency is only unpacked
    by_hand_dir = "apt-get install ./{dir}/*.deb"

    def wanted(self, manifest: Manifest) -> bool:
        return manifest.apt is not None and (manifest.apt.prereqs or bool(manifest.apt.packages))

    def requests(self, manifest: Manifest) -> list[Request]:
        spec = manifest.apt
        assert spec is not None
        out = []
        if spec.prereqs:
            if not manifest.target.kernel:
                raise manifest.error(
                    ("target", "kernel"),
                    "apt.prereqs brings the headers of the server's kernel, "
                    "so the kernel must be known; add `kernel:` with what `uname -r` prints on "
                    "the server, e.g. 5.15.0-122-generic",
                )
            where = f"{manifest.location(('apt', 'prereqs'))} apt.prereqs"
            out += [Request(p, why=where) for p in DRIVER_BUILD]
            out.append(
                Request(
                    f"linux-headers-{manifest.target.kernel}",
                    why=f"{manifest.location(('target', 'kernel'))} target.kernel",
                )
            )
        for i, text in enumerate(spec.packages):
            out.append(Request.parse(text, why=f"{manifest.location(('apt', 'packages', i))} apt.packages[{i}]"))
        return out

    def check_index(self, manifest: Manifest, index: AptIndex) -> None:
        kernel = manifest.target.kernel
        if not (manifest.apt and manifest.apt.prereqs and kernel) or index.versions(f"linux-headers-{kernel}"):
            return
        flavour = kernel.split("-")[-1]
        others = sorted(
            (
                n
                for n in index.by_name
                if n.startswith("linux-headers-")
                and n.endswith(f"-{flavour}")
                and n[len("linux-headers-") :][:1].isdigit()
            ),
            key=lambda n: [int(x) if x.isdigit() else 0 for x in n.replace("-", ".").split(".")],
        )
        newest = f"; the newest there is {others[-1]}" if others else ""
        raise manifest.error(
            ("target", "kernel"),
            f"linux-headers-{kernel} is not in the repositories' indexes{newest}. Ubuntu keeps only the newest "
            "kernel ABI in its index: update the server's kernel with the bundle (add linux-image-... to "
            "apt.packages and set target.kernel to it), or point `apt.repos` at a snapshot mirror that has it",
        )
