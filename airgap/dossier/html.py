"""The reviewer's page: one HTML file that needs nothing else (inline CSS, no script, no web font, no
image, nothing fetched), that reads top-down in the order a reviewer decides (what to look at first, what
changed, then the whole list), and that prints to PDF legibly (tables repeat their headers, rows do not
split, links are written out)."""

from __future__ import annotations

from html import escape
from typing import Any

from airgap.units import human_size

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em;color:#111}
h1{font-size:1.6em;margin:0 0 .2em}h2{font-size:1.25em;border-bottom:2px solid #333;margin-top:1.6em}
h3{font-size:1.05em;margin:1.2em 0 .3em}
table{border-collapse:collapse;width:100%;margin:.5em 0}td{overflow-wrap:anywhere}
th,td{border:1px solid #bbb;padding:3px 6px;
vertical-align:top;text-align:left}th{background:#eee}thead{display:table-header-group}tr{page-break-inside:avoid}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;word-break:break-all}
.warn{background:#fff3cd;border:1px solid #e0b000;padding:.5em 1em}.bad{background:#fde2e2;border:1px solid #c00;
padding:.5em 1em}.ok{background:#e6f4e6;border:1px solid #393;padding:.5em 1em}.muted{color:#666}
.unknown{color:#a00;font-style:italic}td:first-child{white-space:nowrap}ul{margin:.3em 0}
@media print{body{margin:0;font-size:10pt}h2{page-break-after:avoid}a{color:#000;text-decoration:none}}
"""


def _e(v: object) -> str:
    return escape(str(v), quote=True)


def _lic(lic: dict[str, str]) -> str:
    value = lic.get("value", "unknown")
    cls = ' class="unknown"' if value == "unknown" else ""
    return f'<span{cls}>{_e(value)}</span><br><span class="muted">{_e(lic.get("source", ""))}</span>'


def _table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return '<p class="muted">none</p>'
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def render(d: dict[str, Any]) -> str:
    out: list[str] = []
    add = out.append
    add(f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Dossier: {_e(d['bundle'])}</title>")
    add(f"<style>{CSS}</style></head><body>")
    add(f"<h1>Dossier of bundle {_e(d['bundle'])}</h1>")
    add(
        f'<p class="muted">Collected {_e(d.get("created", ""))} by airgap {_e(d.get("airgap_version", ""))}; '
        f"dossier made {_e(d.get('generated', ''))}. Lock sha256 <code>{_e(d.get('lock_sha256', ''))}</code>.</p>"
    )
    v = d.get("verified") or {}
    sig = (v.get("signature") or {}).get("detail", "")
    add(
        f'<p class="ok">Verified before this dossier was made: {_e(v.get("files", "?"))} files re-hashed against '
        f"SHA256SUMS, no problem found. Signature: {_e(sig or 'none')}.</p>"
    )
    arts = d["artifacts"]
    shown = [a for a in arts if a["kind"] != "image-blob"]
    images = d.get("images", [])
    code = d.get("code_files", [])
    vul = d.get("vulnerabilities", {})
    findings = vul.get("findings", [])

    # --- first: what needs a decision -------------------------------------------------------------------
    add("<h2>Review first</h2><ul>")
    pickles = [c for c in code if c["kind"] == "pickle"]
    for c in pickles:
        danger = c.get("dangerous") or []
        cls = "bad" if danger or not c.get("parsed") else "warn"
        add(
            f'<li class="{cls}">Model file <code>{_e(c["path"])}</code> is a pickle: it can run code when loaded. '
            f"Allowed by the manifest: {'yes' if c['allowed'] else 'NO'}. It imports: "
            f"{_e(', '.join(c['globals']) or 'no global')}"
            + (f"; <b>runs commands or code: {_e(', '.join(danger))}</b>" if danger else "")
            + (f"; scan incomplete: {_e(c['error'])}" if c.get("error") else "")
            + "</li>"
        )
    bad_st = [c for c in code if c["kind"] == "safetensors" and not c.get("parsed")]
    for c in bad_st:
        add(
            f'<li class="bad">safetensors file <code>{_e(c["path"])}</code>: '
            f"header does not parse: {_e(c['error'])}</li>"
        )
    if findings:
        add(f'<li class="bad">{len(findings)} known vulnerabilit{"y" if len(findings) == 1 else "ies"} (below).</li>')
    unknown = [a for a in shown if a["licence"]["value"] == "unknown"]
    if unknown:
        add(f'<li class="warn">{len(unknown)} artifact(s) with an unknown licence.</li>')
    inner_unknown = sum(1 for i in images for p in i["packages"] if p["licence"]["value"] == "unknown")
    if inner_unknown:
        add(f'<li class="warn">{inner_unknown} package(s) inside images with an unknown licence.</li>')
    for k, why in (vul.get("not_checked") or {}).items():
        add(f'<li class="warn">{_e(k)}: {_e(why)}</li>')
    if not (pickles or bad_st or findings or unknown or inner_unknown or vul.get("not_checked")):
        add("<li>nothing flagged</li>")
    add("</ul>")

    if (df := d.get("diff")) is not None:
        add(_diff(df))

    # --- vulnerabilities --------------------------------------------------------------------------------
    add("<h2>Known vulnerabilities</h2>")
    exp = vul.get("export")
    if exp:
        add(
            f"<p>Matched against the OSV export <code>{_e(exp['source'])}</code>: {exp['advisories']} advisories "
            f"({_e(', '.join(exp['ecosystems']))}), newest modified {_e(exp['newest_modified'] or 'unknown')}, "
            f"files dated up to {_e(exp['newest_file_time'] or 'unknown')}. Checked: "
            f"{_e(', '.join(f'{k}: {n} package(s)' for k, n in vul.get('checked', {}).items()) or 'nothing')}.</p>"
        )
    else:
        add("<p class='warn'>Not checked: no advisory export was given (<code>--osv</code>).</p>")
    add(
        _table(
            ["advisory", "package", "version", "where", "fixed in", "summary"],
            [
                [
                    _e(f["id"])
                    + (f"<br><span class=muted>{_e(', '.join(f['aliases']))}</span>" if f["aliases"] else ""),
                    _e(f["package"]),
                    _e(f["version"]),
                    f"<code>{_e(f['where'])}</code>",
                    _e(", ".join(f["fixed"])),
                    _e(f["summary"]),
                ]
                for f in findings
            ],
        )
    )
    if sc := d.get("scanner"):
        add(
            f"<h3>Site scanner: {_e(sc['tool'])} {_e(sc['version'])} "
            f"(database built {_e(sc['db_built'] or 'unknown')})</h3>"
        )
        add(
            _table(
                ["id", "severity", "package", "version", "fixed in"],
                [
                    [_e(m["id"]), _e(m["severity"]), _e(m["package"]), _e(m["version"]), _e(", ".join(m["fixed"]))]
                    for m in sc["matches"]
                ],
            )
        )

    # --- the whole list ---------------------------------------------------------------------------------
    add(f"<h2>Artifacts ({len(shown)}, plus {len(arts) - len(shown)} image blobs)</h2>")
    rows = []
    for a in shown:
        ud = a.get("upstream_digest")
        checked = (
            f"checked against {_e(ud['algorithm'])} <code>{_e(ud['value'])}</code> published at "
            f"<code>{_e(ud['source'])}</code>"
            if ud
            else f"<span class=unknown>no publisher digest</span> ({_e(a['upstream_digest_note'])})"
        )
        version = f" <span class=mono>{_e(a['version'])}</span>" if a["version"] else ""
        rows.append(
            [
                _e(a["layer"]),
                f"<b>{_e(a['name'])}</b>{version}<br><code>{_e(a['path'])}</code>",
                _e(human_size(a["size"])),
                f"from <code>{_e(a['url'] or 'written by airgap')}</code><br>sha256 <code>{_e(a['sha256'])}</code>"
                f"<br>{checked}",
                _lic(a["licence"]),
            ]
        )
    add(_table(["layer", "name, version, path", "size", "source, sha256, publisher digest", "licence"], rows))

    for img in images:
        add(f"<h2>Inside image {_e(img['ref'])}</h2>")
        osd = img.get("os") or {}
        add(
            f"<p>Manifest <code>{_e(img['manifest_digest'])}</code>, platform {_e(img['platform'])}, "
            f"OS {_e((osd.get('id') or 'unknown') + ' ' + (osd.get('version') or ''))}. "
            f"Image licence: {_lic(img['licence'])}</p>"
        )
        for n in img.get("notes", []):
            add(f"<p class=warn>{_e(n)}</p>")
        add(
            _table(
                ["kind", "package", "version", "arch", "licence", "read from"],
                [
                    [
                        _e(p["kind"]),
                        _e(p["name"]),
                        f"<span class=mono>{_e(p['version'])}</span>",
                        _e(p["arch"]),
                        _lic(p["licence"]),
                        f"<code>{_e(p['where'])}</code>",
                    ]
                    for p in img["packages"]
                ],
            )
        )

    add("<h2>Model files that can run code</h2>")
    add(
        _table(
            ["file", "kind", "allowed", "result"],
            [
                [
                    f"<code>{_e(c['path'])}</code>",
                    _e(c["kind"]),
                    "yes" if c["allowed"] else "NO",
                    _e(
                        ("imports: " + (", ".join(c["globals"]) or "nothing"))
                        if c["kind"] == "pickle"
                        else f"{c['tensors']} tensors, header parses"
                        if c.get("parsed")
                        else c["error"]
                    ),
                ]
                for c in code
            ],
        )
    )
    s = d.get("sboms") or {}
    add(
        f"<h2>SBOMs</h2><p>CycloneDX: <code>{_e(s.get('cyclonedx', ''))}</code>; "
        f"SPDX: <code>{_e(s.get('spdx', ''))}</code> "
        "(both validated by their libraries when written; both listed in SHA256SUMS).</p>"
    )
    add("</body></html>\n")
    return "".join(out)


def _diff(df: dict[str, Any]) -> str:
    parts = [f"<h2>Changes since {_e(df['against'])} ({_e(df.get('against_created', ''))})</h2>"]
    rows = []
    for a in df["artifacts_added"]:
        rows.append(["added", _e(a["layer"]), _e(a["name"]), "", _e(a["version"])])
    for a in df["artifacts_removed"]:
        rows.append(["removed", _e(a["layer"]), _e(a["name"]), _e(a["version"]), ""])
    for a in df["artifacts_changed"]:
        rows.append(["changed", _e(a["layer"]), _e(a["name"]), _e(a["old_version"]), _e(a["version"])])
    for i in df["images_added"]:
        rows.append(["added", "images", _e(i["ref"]), "", f"{_e(i['manifest_digest'])} ({i['packages']} packages)"])
    for i in df["images_removed"]:
        rows.append(["removed", "images", _e(i["ref"]), _e(i["manifest_digest"]), ""])
    for i in df["images_changed"]:
        what = "; ".join(
            x
            for x in (
                "added: " + ", ".join(i["packages_added"]) if i["packages_added"] else "",
                "removed: " + ", ".join(i["packages_removed"]) if i["packages_removed"] else "",
                "changed: " + ", ".join(i["packages_changed"]) if i["packages_changed"] else "",
            )
            if x
        )
        rows.append(
            ["changed", "images", _e(i["ref"]), _e(i["old_manifest_digest"]), _e(f"{i['manifest_digest']} {what}")]
        )
    parts.append(_table(["change", "layer", "name", "was", "now"], rows))
    if df["new_licences"]:
        parts.append(f"<p class=warn>New licences: {_e(', '.join(df['new_licences']))}</p>")
    if df["new_advisories"]:
        parts.append(
            "<p class=bad>New advisories: "
            + _e(", ".join(f"{f['id']} ({f['package']})" for f in df["new_advisories"]))
            + "</p>"
        )
    return "".join(parts)
