"""The bundle's plain files (the manifest's `files:` section) over HTTP, with a SHA256SUMS of them.

    /files/              a listing, one link per file
    /files/SHA256SUMS    `sha256  name` lines, for `sha256sum -c` after a download
    /files/<name>        the file

A host fetches what it needs (`curl -fO http://DEPOT/files/check.sh`) and checks it against the list:
`curl -fs http://DEPOT/files/SHA256SUMS | grep ' check.sh$' | sha256sum -c`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from urllib.parse import quote

from airgap.depot.content import Blob, Doc
from airgap.lock import Lock

SUMS = "SHA256SUMS"


@dataclass
class FileShelf:
    files: dict[str, Blob] = field(default_factory=dict)  # name under /files/ -> blob

    @classmethod
    def of(cls, lock: Lock) -> FileShelf:
        shelf = cls()
        for art in lock.artifacts:
            if art.layer == "files" and not art.in_base and art.name != SUMS:
                shelf.files.setdefault(art.name, Blob(art))
        shelf.files = dict(sorted(shelf.files.items()))
        return shelf

    def sums(self) -> bytes:
        return "".join(f"{b.art.sha256}  {name}\n" for name, b in self.files.items()).encode()

    def listing(self) -> bytes:
        links = f'<a href="{SUMS}">{SUMS}</a><br>\n' + "".join(
            f'<a href="{quote(n)}">{html.escape(n)}</a> {b.size} bytes<br>\n' for n, b in self.files.items()
        )
        return (
            f"<!DOCTYPE html>\n<html><head><title>files</title></head>\n<body><h1>files</h1>\n{links}</body></html>\n"
        ).encode()

    def answer(self, rest: list[str]) -> Doc | Blob | str | None:
        if not rest:
            return "/files/"
        if rest == [""]:
            return Doc(self.listing(), "text/html; charset=utf-8")
        if rest == [SUMS]:
            return Doc(self.sums(), "text/plain; charset=utf-8")
        if len(rest) == 1:
            return self.files.get(rest[0])
        return None


@dataclass
class BundleShelf:
    """The bundle's own artifacts and tool/ under /bundle/, by their paths in the bundle, for `airgap fleet
    install --from URL/bundle/`: each host fetches them there and checks them against the SHA256SUMS the
    control node sent it. SHA256SUMS, the lock and install.sh are not served here: they travel over SSH."""

    files: dict[str, Blob] = field(default_factory=dict)

    @classmethod
    def of(cls, lock: Lock) -> BundleShelf:
        from airgap.depot.content import tool_artifacts

        shelf = cls()
        for art in [*lock.artifacts, *tool_artifacts(lock)]:
            if not art.in_base:
                shelf.files.setdefault(art.path, Blob(art))
        return shelf

    def answer(self, rest: list[str]) -> Blob | str | None:
        if not rest:
            return "/bundle/"
        return self.files.get("/".join(rest))
