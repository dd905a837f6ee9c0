"""Licences from their real sources: what the publisher wrote, where they wrote it. Nothing is guessed:
a licence not found is "unknown", and the dossier says where it looked."""

from __future__ import annotations

import email.parser
import re
from dataclasses import dataclass

UNKNOWN = "unknown"

# Trove classifiers for the licences most wheels use, as SPDX identifiers; others are shown as written.
_CLASSIFIERS = {
    "MIT License": "MIT",
    "Apache Software License": "Apache-2.0",
    "BSD License": "BSD-3-Clause",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "Python Software Foundation License": "PSF-2.0",
    "ISC License (ISCL)": "ISC",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "GNU General Public License v2 (GPLv2)": "GPL-2.0-only",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
    "GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.1-or-later",
    "The Unlicense (Unlicense)": "Unlicense",
}

# NVIDIA's installers are not open source: they ship under these agreements, named as NVIDIA names them.
NVIDIA_DRIVER = "NVIDIA Software License Agreement (proprietary; accepted by installing the driver)"
NVIDIA_CUDA = "NVIDIA CUDA Toolkit End User License Agreement (CUDA EULA)"
NVIDIA_CUDNN = "NVIDIA cuDNN Software License Agreement"


@dataclass
class Licence:
    value: str  # an SPDX expression where the source gives one, else the source's own words, else "unknown"
    source: str  # where it was read ("wheel METADATA License-Expression", "usr/share/doc/x/copyright", ...)

    def to_dict(self) -> dict[str, str]:
        return {"value": self.value, "source": self.source}


def unknown(why: str) -> Licence:
    return Licence(UNKNOWN, why)


def from_wheel_metadata(text: str) -> Licence:
    msg = email.parser.Parser().parsestr(text, headersonly=True)
    if expr := (msg.get("License-Expression") or "").strip():
        return Licence(expr, "wheel METADATA License-Expression")
    classifiers = [c.split("::")[-1].strip() for c in msg.get_all("Classifier") or [] if c.startswith("License ::")]
    classifiers = [c for c in classifiers if c not in ("OSI Approved", "Other/Proprietary License")] or classifiers
    declared = (msg.get("License") or "").strip()
    # A License field is meant to be a short name, but many projects paste the whole text into it.
    if declared and "\n" not in declared and len(declared) <= 80 and declared.upper() not in ("UNKNOWN", "NONE"):
        return Licence(declared, "wheel METADATA License")
    if classifiers:
        ids = [_CLASSIFIERS.get(c, c) for c in classifiers]
        return Licence(" OR ".join(dict.fromkeys(ids)), "wheel METADATA classifier")
    if declared and declared.upper() not in ("UNKNOWN", "NONE"):
        return Licence(declared.splitlines()[0].strip()[:80], "wheel METADATA License (first line of a longer text)")
    return unknown("the wheel's METADATA names no licence")


def from_debian_copyright(text: str, where: str) -> Licence:
    """A Debian `copyright` file: machine-readable (DEP-5) files give the `License:` of their `Files: *`
    paragraph (all distinct ones when there is none); others are named as not machine-readable."""
    if not text.startswith("Format:"):
        return Licence("see copyright file (not machine-readable)", where)
    licences: list[str] = []
    main = ""
    for para in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", para, re.M))
        lic = fields.get("License", "").strip()
        if not lic or "Files" not in fields:
            continue
        if fields["Files"].strip() == "*" and not main:
            main = lic
        licences.append(lic)
    if main:
        return Licence(main, where)
    if licences:
        return Licence(" AND ".join(dict.fromkeys(licences)), where)
    return Licence("see copyright file (no License field)", where)


def from_model_card(readme: str) -> str | None:
    """The `license` (or `license_name` for `other`) of a model card's YAML front matter."""
    if not readme.startswith("---"):
        return None
    end = readme.find("\n---", 3)
    if end < 0:
        return None
    import yaml

    try:
        meta = yaml.safe_load(readme[3:end])
    except yaml.YAMLError:
        return None
    if not isinstance(meta, dict):
        return None
    lic = meta.get("license")
    if isinstance(lic, list):
        lic = " OR ".join(str(x) for x in lic)
    if lic == "other" and meta.get("license_name"):
        lic = f"other: {meta['license_name']}"
    return str(lic) if lic else None


def for_runfile(layer: str) -> Licence | None:
    if layer == "driver":
        return Licence(NVIDIA_DRIVER, "NVIDIA driver installer (.run)")
    if layer == "cuda":
        return Licence(NVIDIA_CUDA, "CUDA installer (.run)")
    if layer == "cudnn":
        return Licence(NVIDIA_CUDNN, "cuDNN archive")
    return None
