"""One progress display for a whole collection or verification.

On a terminal it is a rich bar (bytes, rate, ETA, the files in flight). Piped or in CI it degrades to a
plain line every few seconds, so logs stay readable and a stalled transfer is still visible.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from airgap.units import human_size

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID


class Progress:
    """Thread-safe byte counter with a display. Use as a context manager."""

    def __init__(
        self,
        label: str,
        total: int | None,
        mode: str = "auto",
        interval: float | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "rich" if self.stream.isatty() else "lines"
        self.mode = mode
        # AIRGAP_PROGRESS_INTERVAL: seconds between plain progress lines (CI logs want fewer, tests more).
        self.interval = interval or float(os.environ.get("AIRGAP_PROGRESS_INTERVAL", "5"))
        self.done = 0
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rich: RichProgress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Progress:
        self._start = time.monotonic()
        if self.mode == "rich":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._rich.start()
            self._task = self._rich.add_task(self.label, total=self.total)
        elif self.mode == "lines":
            self._thread = threading.Thread(target=self._lines, name="progress", daemon=True)
            self._thread.start()
        return self

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
        if self._rich is not None and self._task is not None:
            self._rich.update(self._task, advance=n)

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._rich is not None and self._task is not None:
            self._rich.update(self._task, total=total)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._rich is not None:
            self._rich.stop()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        rate = self.done / elapsed
        text = f"{self.label}: {human_size(self.done)}"
        if self.total:
            pct = 100 * self.done / self.total
            text += f" of {human_size(self.total)} ({pct:.0f}%)"
            if rate > 0:
                eta = (self.total - self.done) / rate
                text += f", ETA {int(eta // 60)}m{int(eta % 60):02d}s"
        return text + f", {human_size(rate)}/s"

    def _lines(self) -> None:
        while not self._stop.wait(self.interval):
            print(self.line(), file=self.stream, flush=True)
