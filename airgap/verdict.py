"""The one vocabulary every airgap check reports in: a `Check` (name, status, message, fix) and its `Status`.

Install's preflight, the GPU smoke test and `airgap doctor` return Checks; the compatibility rules return
`airgap.compat.rules.Finding`, a Check that also points at a manifest field. So the CLI prints, counts and
serialises every check one way. A Status is a `str` whose value is the word `--json` has always carried
("pass", "warn", "fail", "skip"), so reports serialise unchanged and compare equal to those words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum


class Status(str, Enum):
    PASS = "pass"
    WARN = "warn"  # worth a look; never stops anything
    FAIL = "fail"  # stops an install, fails smoke and doctor (exit 1)
    SKIP = "skip"  # could not be checked here (no GPU data, no venv, a --root tree)

    def __str__(self) -> str:
        # The word itself, also in f-strings and tables: Enum's default would print "Status.PASS".
        return self.value


@dataclass
class Check:
    name: str  # stable: layers name preflight checks, scripts select doctor checks by it
    status: Status
    message: str
    fix: str = ""  # what to do about it; empty when nothing needs doing

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status.value, "message": self.message, "fix": self.fix}


def all_passed(checks: Iterable[Check]) -> bool:
    """No check failed (warnings and skips do not count against it)."""
    return all(c.status is not Status.FAIL for c in checks)


def failed(checks: Iterable[Check]) -> list[Check]:
    return [c for c in checks if c.status is Status.FAIL]


def counts(checks: Iterable[Check]) -> dict[str, int]:
    """How many of each status, every status present (zero included), keyed by its word."""
    out = {s.value: 0 for s in Status}
    for c in checks:
        out[c.status.value] += 1
    return out
