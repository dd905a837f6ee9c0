"""The dossier of a bundle made by a real collect: wheels from PyPI and .debs from the signed test apt
repository. Every wheel's licence is read from its own METADATA as published (not from a stand-in), every
.deb's from its copyright file, and the SBOMs validate with their libraries (the dossier refuses to write
ones that do not)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airgap.collect import collect
from tests.conftest import run_airgap
from tests.test_apt import repos, source  # noqa: F401  (repos is a fixture)
from tests.test_pypi import HERE_PY

pytestmark = pytest.mark.network


def test_the_dossier_of_a_collected_bundle_names_each_published_licence(repos, tmp_path: Path) -> None:  # noqa: F811
    body = (
        "python:\n  requirements: [requests==2.32.3, urllib3==2.2.3, idna==3.10, certifi==2024.8.30, "
        "charset-normalizer==3.4.0]\n  index_urls: [https://pypi.org/simple]\n"
        "apt:\n  packages: [ag-tool]"
    )
    m = repos.manifest(tmp_path, body, python=HERE_PY)
    bundle = tmp_path / "bundle"
    collect(m, bundle, source(repos), progress_mode="off")
    r = run_airgap("dossier", str(bundle), "--trusted-keys", str(tmp_path / "none"), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    dossier = json.loads((bundle / "dossier/dossier.json").read_text())
    licences = {a["name"]: a["licence"]["value"] for a in dossier["artifacts"] if a["kind"] == "wheel"}
    # What these releases declare in their METADATA (License / License-Expression / classifiers).
    assert licences["requests"] == "Apache-2.0", licences
    assert licences["urllib3"] == "MIT", licences
    assert licences["certifi"].startswith("MPL-2.0") or "Mozilla Public License 2.0" in licences["certifi"], licences
    assert "BSD" in licences["idna"], licences
    assert licences["charset-normalizer"] == "MIT", licences
    debs = {a["name"]: a for a in dossier["artifacts"] if a["kind"] == "deb"}
    assert debs["ag-tool"]["licence"] == {
        "value": "GPL-2+",
        "source": "/usr/share/doc/ag-tool/copyright in the .deb",
    }, debs["ag-tool"]
    # One without a copyright file says so, rather than guessing.
    assert debs["ag-data"]["licence"]["value"] == "unknown", debs["ag-data"]
    cdx = json.loads((bundle / "dossier/sbom.cdx.json").read_text())
    purls = {c.get("purl", "") for c in cdx["components"]}
    assert "pkg:pypi/requests@2.32.3" in purls, sorted(purls)[:10]
    assert run_airgap("verify", str(bundle)).returncode == 0
