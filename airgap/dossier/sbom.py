"""The materials list in the two standard SBOM formats, each validated by its own library before it is
written: CycloneDX 1.6 JSON (cyclonedx-python-lib, its JSON schema validator) and SPDX 2.3 JSON
(spdx-tools, its document validator). Every artifact is a component/package; every package found inside
an image is a component nested in (CycloneDX) / contained by (SPDX) that image.

These libraries are an optional extra (`pip install airgap[dossier]`): they are not needed on the server,
and airgap's own wheels travel in every bundle."""

from __future__ import annotations

import io
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airgap import __version__
from airgap.errors import AirgapError, BadInputError

if TYPE_CHECKING:
    from airgap.dossier.image_packages import ImageContents, ImagePackage
    from airgap.dossier.inventory import Inventory
    from airgap.dossier.licences import Licence


class SbomInvalid(AirgapError):
    """An SBOM airgap built does not validate: a bug, never the user's input."""

    exit_code = 70


def missing_libraries() -> BadInputError:
    return BadInputError(
        "the dossier's SBOMs need cyclonedx-python-lib (with its JSON validation) and spdx-tools, which are not "
        "installed here.",
        "On the connected PC: pip install 'airgap[dossier]' (or pip install spdx-tools "
        "'cyclonedx-python-lib[json-validation]'), then run `airgap dossier` again.",
    )


def require_libraries() -> None:
    """Refuse before any work when the optional libraries are missing. Every import of them in airgap sits in
    a try/except ImportError: they are not in the wheels tool/ carries for the server."""
    try:
        import cyclonedx.validation.json  # noqa: F401
        import jsonschema  # noqa: F401
        import license_expression  # noqa: F401
        import packageurl  # noqa: F401
        import spdx_tools  # noqa: F401
    except ImportError:
        raise missing_libraries() from None


def _image_pkg_purl(img: ImageContents, p: ImagePackage) -> str:
    from airgap.dossier.inventory import purl_for
    from airgap.dossier.osv import normalise_pypi

    if p.kind == "pypi":
        return purl_for("pypi", name=normalise_pypi(p.name), version=p.version or None)
    q: dict[str, str] = {}
    if p.arch:
        q["arch"] = p.arch
    if img.os_id and img.os_version:
        q["distro"] = f"{img.os_id}-{img.os_version}"
    return purl_for(
        "deb", namespace=img.os_id or "debian", name=p.name, version=p.version or None, qualifiers=q or None
    )


# --- CycloneDX ------------------------------------------------------------------------------------------


def _cdx_licences(lic: Licence) -> list[Any]:
    try:
        from cyclonedx.factory.license import LicenseFactory
    except ImportError:
        raise missing_libraries() from None

    if lic.value == "unknown":
        return []
    return [LicenseFactory().make_from_string(lic.value)]


def cyclonedx_json(name: str, inv: Inventory, created: datetime) -> str:
    try:
        from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, Property, XsUri
        from cyclonedx.model.bom import Bom
        from cyclonedx.model.component import Component, ComponentType
        from cyclonedx.output.json import JsonV1Dot6
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
        from packageurl import PackageURL
    except ImportError:
        raise missing_libraries() from None

    bom = Bom()
    bom.metadata.timestamp = created
    root = bom.metadata.component = Component(name=name, type=ComponentType.APPLICATION, bom_ref="bundle")
    images = {img.path: img for img in inv.images}
    kinds = {
        "wheel": ComponentType.LIBRARY,
        "deb": ComponentType.LIBRARY,
        "model-file": ComponentType.MACHINE_LEARNING_MODEL,
        "image": ComponentType.CONTAINER,
        "runfile": ComponentType.APPLICATION,
    }
    for rec in inv.records:
        refs = []
        if rec.url.startswith(("http://", "https://")):
            refs.append(ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(rec.url)))
        props = [Property(name="airgap:layer", value=rec.layer), Property(name="airgap:path", value=rec.path)]
        if rec.upstream_digest:
            d = rec.upstream_digest
            props.append(
                Property(name="airgap:upstream-digest", value=f"{d['algorithm']}:{d['value']} from {d['source']}")
            )
        props.append(Property(name="airgap:licence-source", value=rec.licence.source))
        nested = []
        if (img := images.get(rec.path)) is not None:
            for i, p in enumerate(img.packages):
                nested.append(
                    Component(
                        name=p.name,
                        version=p.version or None,
                        type=ComponentType.LIBRARY,
                        bom_ref=f"{rec.path}#pkg{i}",
                        purl=PackageURL.from_string(_image_pkg_purl(img, p)),
                        licenses=_cdx_licences(p.licence),
                        properties=[Property(name="airgap:found-in", value=p.where)],
                    )
                )
        component = Component(
            name=rec.name,
            version=rec.version or None,
            type=kinds.get(rec.kind, ComponentType.FILE),
            bom_ref=rec.path,
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=rec.sha256)],
            purl=PackageURL.from_string(rec.purl) if rec.purl else None,
            licenses=_cdx_licences(rec.licence),
            external_references=refs,
            properties=props,
            components=nested,
        )
        bom.components.add(component)
        bom.register_dependency(root, [component])
    text = str(JsonV1Dot6(bom).output_as_string(indent=2))
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if errors:
        raise SbomInvalid(f"the CycloneDX SBOM does not validate against its schema: {errors}", "Report this bug.")
    return text


# --- SPDX -----------------------------------------------------------------------------------------------


def _spdx_licence(lic: Licence) -> tuple[Any, str | None]:
    """(declared licence, comment): an SPDX expression when every identifier in it is SPDX's, else
    NOASSERTION with the source's own words in the comment (SPDX refuses free text there)."""
    try:
        from license_expression import get_spdx_licensing
        from spdx_tools.spdx.model import SpdxNoAssertion
    except ImportError:
        raise missing_libraries() from None

    if lic.value == "unknown":
        return SpdxNoAssertion(), f"unknown ({lic.source})"
    licensing = get_spdx_licensing()
    try:
        info = licensing.validate(lic.value, strict=True)
        if not info.errors and info.normalized_expression:
            return licensing.parse(info.normalized_expression), f"from {lic.source}"
    except Exception:  # the library raises assorted errors on free text; all mean "not SPDX"
        pass
    return SpdxNoAssertion(), f"declared as '{lic.value}' ({lic.source}); not an SPDX expression"


def spdx_json(name: str, inv: Inventory, created: datetime, namespace: str) -> str:
    try:
        from spdx_tools.spdx.model import (
            Actor,
            ActorType,
            Checksum,
            ChecksumAlgorithm,
            CreationInfo,
            Document,
            ExternalPackageRef,
            ExternalPackageRefCategory,
            Package,
            Relationship,
            RelationshipType,
            SpdxNoAssertion,
        )
        from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
        from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream
    except ImportError:
        raise missing_libraries() from None

    info = CreationInfo(
        spdx_version="SPDX-2.3",
        spdx_id="SPDXRef-DOCUMENT",
        name=f"airgap bundle {name}",
        document_namespace=namespace,
        creators=[Actor(ActorType.TOOL, f"airgap-{__version__}")],
        created=created.replace(microsecond=0),
    )
    doc = Document(info)
    used: set[str] = set()

    def ident(text: str) -> str:
        base = "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-")[:100]
        out, n = base, 1
        while out in used:
            n += 1
            out = f"{base}-{n}"
        used.add(out)
        return out

    def package(
        pname: str, version: str, url: str, purl: str, lic: Licence, sha256: str = "", comment: str = ""
    ) -> Package:
        declared, lic_comment = _spdx_licence(lic)
        pkg = Package(
            spdx_id=ident(pname + ("-" + version if version else "")),
            name=pname,
            download_location=url if url.startswith(("http://", "https://")) else SpdxNoAssertion(),
            version=version or None,
            files_analyzed=False,
            checksums=[Checksum(ChecksumAlgorithm.SHA256, sha256)] if sha256 else [],
            license_concluded=SpdxNoAssertion(),
            license_declared=declared,
            license_comment=lic_comment,
            copyright_text=SpdxNoAssertion(),
            comment=comment or None,
            external_references=(
                [ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", purl)] if purl else []
            ),
        )
        doc.packages.append(pkg)
        return pkg

    images = {img.path: img for img in inv.images}
    for rec in inv.records:
        top = package(rec.name, rec.version, rec.url, rec.purl, rec.licence, rec.sha256, f"{rec.layer}: {rec.path}")
        doc.relationships.append(Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, top.spdx_id))
        if (img := images.get(rec.path)) is not None:
            for p in img.packages:
                inner = package(
                    p.name, p.version, "", _image_pkg_purl(img, p), p.licence, comment=f"in {img.ref}: {p.where}"
                )
                doc.relationships.append(Relationship(top.spdx_id, RelationshipType.CONTAINS, inner.spdx_id))
    errors = validate_full_spdx_document(doc)
    if errors:
        raise SbomInvalid(
            f"the SPDX SBOM does not validate ({len(errors)} problem(s)): {errors[0].validation_message}",
            "Report this bug.",
        )
    buf = io.StringIO()
    write_document_to_stream(doc, buf, validate=False)
    return buf.getvalue()


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)
