"""Arbitrary files the manifest lists by URL (test scripts, configs, extra installers)."""

from __future__ import annotations

from airgap.artifacts import Artifact, Digest
from airgap.bundle_layout import layer_dir
from airgap.install_context import InstallContext
from airgap.layers.base import Layer
from airgap.manifest import Manifest


class FilesLayer(Layer):
    name = "files"
    section = "files"
    by_hand_file = "cp {path} wherever you need it"
    installable = True

    def plan(self, manifest: Manifest) -> list[Artifact]:
        out = []
        for i, spec in enumerate(manifest.files):
            pinned = Digest("sha256", spec.sha256, "manifest") if spec.sha256 else None
            out.append(
                Artifact(
                    self.name,
                    spec.file_name,
                    [spec.url],
                    ("files", i, "url"),
                    pinned=pinned,
                    no_digest_reason="no sha256 pinned for this file; add `sha256:` to check it",
                )
            )
        return out

    def installed(self, ctx: InstallContext) -> str | None:
        # Nothing to put in place: these are the operator's own files (test scripts, configs).
        return f"nothing to install: the files stay in the bundle, in {layer_dir(self.name)}/"

    def install(self, ctx: InstallContext) -> str:
        return ""
