"""A simple repository API (PEP 503 HTML, PEP 691 JSON) of the bundle's wheels, for `pip install --index-url`.

    /simple/                       every project, one link each
    /simple/<project>/             the project's wheels, each with `#sha256=` (HTML) or "hashes" (JSON)
    /simple/<project>/<wheel>      the wheel itself

The project's page and its wheels share a directory, so every link is relative and the same tree works
served (`airgap serve`), exported to any web server (`airgap export`), or read from disk (`file://`).
Which form is sent is content negotiation (PEP 691): pip asks for `application/vnd.pypi.simple.v1+json`
first; a browser, or a client asking for nothing in particular, gets HTML. The wheels are the python
layer's and airgap's own (tool/), so hosts can install airgap from the depot too.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field

from airgap.depot.content import Blob, Doc, tool_artifacts
from airgap.lock import Lock, LockedArtifact

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
_WHEEL_RE = re.compile(r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._]*[A-Za-z0-9])?)-[^-/]+(?:-[^-/]+){2,3}\.whl$")


def canonical(name: str) -> str:
    """PEP 503's normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class PyIndex:
    projects: dict[str, dict[str, Blob]] = field(default_factory=dict)  # project -> wheel file name -> blob

    @classmethod
    def of(cls, lock: Lock) -> PyIndex:
        index = cls()
        arts: list[LockedArtifact] = [
            a for a in lock.artifacts if a.layer == "python" and a.name.endswith(".whl") and not a.in_base
        ]
        for art in [*arts, *tool_artifacts(lock)]:
            m = _WHEEL_RE.match(art.name)
            if m is None:
                continue  # not a wheel's file name: pip would not take it either
            wheels = index.projects.setdefault(canonical(m["name"]), {})
            wheels.setdefault(art.name, Blob(art, "application/octet-stream"))
        index.projects = {p: dict(sorted(w.items())) for p, w in sorted(index.projects.items())}
        return index

    @property
    def wheels(self) -> int:
        return sum(len(w) for w in self.projects.values())

    # --- pages ----------------------------------------------------------------------------------------

    def root_html(self) -> bytes:
        links = "".join(f'<a href="{html.escape(p)}/">{html.escape(p)}</a><br>\n' for p in self.projects)
        return _page("Simple index", links)

    def root_json(self) -> bytes:
        data = {"meta": {"api-version": "1.0"}, "projects": [{"name": p} for p in self.projects]}
        return (json.dumps(data, indent=1) + "\n").encode()

    def project_html(self, project: str) -> bytes:
        links = "".join(
            f'<a href="{html.escape(name)}#sha256={blob.art.sha256}">{html.escape(name)}</a><br>\n'
            for name, blob in self.projects[project].items()
        )
        return _page(f"Links for {project}", links)

    def project_json(self, project: str) -> bytes:
        files = [
            {"filename": name, "url": name, "hashes": {"sha256": blob.art.sha256}, "size": blob.size}
            for name, blob in self.projects[project].items()
        ]
        data = {"meta": {"api-version": "1.0"}, "name": project, "files": files}
        return (json.dumps(data, indent=1) + "\n").encode()

    # --- serving --------------------------------------------------------------------------------------

    def answer(self, rest: list[str], accept: str) -> Doc | Blob | str | None:
        """The answer for /simple/<rest>: a document, a wheel, a path to redirect to (a project name not
        in its normal form, or a directory without its slash), or None (404)."""
        want_json = prefers_json(accept)
        if rest in ([], [""]):
            if not rest:
                return "/simple/"
            return self._doc(self.root_json() if want_json else self.root_html(), want_json)
        project = canonical(rest[0])
        if project not in self.projects:
            return None
        if project != rest[0] or len(rest) == 1:
            return "/simple/" + project + "/" + "/".join(rest[1:])
        if rest[1:] == [""]:
            return self._doc(self.project_json(project) if want_json else self.project_html(project), want_json)
        if len(rest) == 2:
            return self.projects[project].get(rest[1])
        return None

    @staticmethod
    def _doc(body: bytes, as_json: bool) -> Doc:
        return Doc(body, JSON_TYPE if as_json else "text/html; charset=utf-8", (("Vary", "Accept"),))


def prefers_json(accept: str) -> bool:
    """Whether an Accept header ranks PEP 691's JSON above HTML (q-values; equal ranks keep HTML, the
    answer every client understands)."""
    best = {"json": -1.0, "html": -1.0}
    for item in accept.split(","):
        media, *params = (s.strip() for s in item.split(";"))
        q = 1.0
        for p in params:
            k, _, v = p.partition("=")
            if k.strip() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        kind = {
            JSON_TYPE: "json",
            HTML_TYPE: "html",
            "text/html": "html",
            "*/*": "html",
        }.get(media.lower())
        if kind is not None:
            best[kind] = max(best[kind], q)
    return best["json"] > 0 and best["json"] > best["html"]


def _page(title: str, links: str) -> bytes:
    return (
        '<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
        f"<title>{html.escape(title)}</title></head>\n<body><h1>{html.escape(title)}</h1>\n{links}</body></html>\n"
    ).encode()
