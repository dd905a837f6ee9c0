"""What changed since the last approved bundle: the reviewer reads the difference, not the whole.

Both sides are dossiers (dicts of the dossier.json shape): the old bundle's own dossier/dossier.json when it
has one, else one built from its lock (and its files, when a bundle directory is given). Things are matched
by identity, not path: a wheel by project, a .deb by package, a model file by repo and path, an image by
reference; "changed" means the bytes differ (sha256), with the version change shown."""

from __future__ import annotations

from typing import Any


def _by_key(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    # Image blobs and the layout files are the images' parts: images are compared as images.
    return {f"{r['layer']}:{r['kind']}:{r['name']}": r for r in records if r["layer"] != "images"}


def _licences(d: dict[str, Any]) -> set[str]:
    out = {r["licence"]["value"] for r in d.get("artifacts", []) if r["kind"] != "image-blob"}
    for img in d.get("images", []):
        out.add(img["licence"]["value"])
        out |= {p["licence"]["value"] for p in img.get("packages", [])}
    return out


def _pkg_key(p: dict[str, Any]) -> str:
    return f"{p['kind']}:{p['name']}:{p.get('arch', '')}"


def diff(
    new: dict[str, Any], old: dict[str, Any], new_findings: list[dict[str, Any]], old_findings: list[dict[str, Any]]
) -> dict[str, Any]:
    a_new, a_old = _by_key(new.get("artifacts", [])), _by_key(old.get("artifacts", []))
    added = [_short(a_new[k]) for k in sorted(a_new.keys() - a_old.keys())]
    removed = [_short(a_old[k]) for k in sorted(a_old.keys() - a_new.keys())]
    changed = []
    for k in sorted(a_new.keys() & a_old.keys()):
        n, o = a_new[k], a_old[k]
        if n["sha256"] != o["sha256"]:
            changed.append({**_short(n), "old_version": o["version"], "old_sha256": o["sha256"], "old_path": o["path"]})
    i_new = {i["ref"]: i for i in new.get("images", [])}
    i_old = {i["ref"]: i for i in old.get("images", [])}
    images_added = [
        {"ref": r, "manifest_digest": i_new[r]["manifest_digest"], "packages": len(i_new[r]["packages"])}
        for r in sorted(i_new.keys() - i_old.keys())
    ]
    images_removed = [
        {"ref": r, "manifest_digest": i_old[r]["manifest_digest"]} for r in sorted(i_old.keys() - i_new.keys())
    ]
    images_changed = []
    for r in sorted(i_new.keys() & i_old.keys()):
        n, o = i_new[r], i_old[r]
        if n["manifest_digest"] == o["manifest_digest"]:
            continue
        if not o.get("packages_read", True):
            images_changed.append(
                {
                    "ref": r,
                    "old_manifest_digest": o["manifest_digest"],
                    "manifest_digest": n["manifest_digest"],
                    "packages_added": [],
                    "packages_removed": [],
                    "packages_changed": [],
                    "note": "the old image's packages are unknown (only its lock was given)",
                }
            )
            continue
        pn = {_pkg_key(p): p for p in n["packages"]}
        po = {_pkg_key(p): p for p in o["packages"]}
        images_changed.append(
            {
                "ref": r,
                "old_manifest_digest": o["manifest_digest"],
                "manifest_digest": n["manifest_digest"],
                "packages_added": [f"{pn[k]['name']} {pn[k]['version']}" for k in sorted(pn.keys() - po.keys())],
                "packages_removed": [f"{po[k]['name']} {po[k]['version']}" for k in sorted(po.keys() - pn.keys())],
                "packages_changed": [
                    f"{pn[k]['name']} {po[k]['version']} -> {pn[k]['version']}"
                    for k in sorted(pn.keys() & po.keys())
                    if pn[k]["version"] != po[k]["version"]
                ],
            }
        )
    old_ids = {_finding_key(f) for f in old_findings}
    return {
        "against": old.get("bundle", ""),
        "against_created": old.get("created", ""),
        "artifacts_added": added,
        "artifacts_removed": removed,
        "artifacts_changed": changed,
        "images_added": images_added,
        "images_removed": images_removed,
        "images_changed": images_changed,
        "new_licences": sorted(_licences(new) - _licences(old)),
        "new_advisories": [f for f in new_findings if _finding_key(f) not in old_ids],
    }


def _finding_key(f: dict[str, Any]) -> str:
    return f"{f['id']}|{f['package']}|{f['version']}"


def _short(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "layer": r["layer"],
        "kind": r["kind"],
        "name": r["name"],
        "version": r["version"],
        "path": r["path"],
        "sha256": r["sha256"],
    }


def is_empty(d: dict[str, Any]) -> bool:
    return not any(v for k, v in d.items() if k not in ("against", "against_created"))
