"""Rendering for the CLI: rich on a terminal, plain aligned lines when piped, JSON for scripts.

The `airgap.cli` package writes to the terminal through an `Output`; the core returns reports and raises
errors, and speaks while it works only through what the CLI hands it (a `say`/`warn` callable, a stream).
"""

from __future__ import annotations

import json
import sys
from typing import Any


class Output:
    def __init__(self, json_mode: bool = False, quiet: bool = False, verbose: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.verbose = verbose
        self.tty = sys.stdout.isatty()
        self._console = None
        if self.tty and not json_mode:
            from rich.console import Console

            self._console = Console(highlight=False)

    def info(self, text: str) -> None:
        """A human line on stdout; silent with -q or --json (stdout is then the JSON alone)."""
        if self.quiet or self.json_mode:
            return
        if self._console is not None:
            self._console.print(text, markup=False)
        else:
            print(text, flush=True)

    def heading(self, text: str) -> None:
        if self.quiet or self.json_mode:
            return
        if self._console is not None:
            self._console.print(f"[bold]{_escape(text)}[/bold]")
        else:
            print(text, flush=True)

    def warn(self, text: str) -> None:
        # Warnings go to stderr so they survive -q and never corrupt --json on stdout.
        print(f"warning: {text}", file=sys.stderr, flush=True)

    def stderr(self, text: str) -> None:
        """A line on stderr as it is: a failure the user must see, kept with -q and --json."""
        print(text, file=sys.stderr, flush=True)

    def debug(self, text: str) -> None:
        if self.verbose:
            print(f"debug: {text}", file=sys.stderr, flush=True)

    def emit_json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, default=str))

    def table(self, headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> None:
        if self.quiet or self.json_mode:
            return
        right = right or set()
        if self._console is not None:
            from rich.table import Table

            table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
            for i, h in enumerate(headers):
                table.add_column(h, justify="right" if i in right else "left", overflow="fold")
            for row in rows:
                table.add_row(*row)
            self._console.print(table)
            return
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
        for row in [headers, *rows]:
            cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
            print("  ".join(cells).rstrip(), flush=True)


def _escape(text: str) -> str:
    return text.replace("[", r"\[")
