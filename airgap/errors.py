"""Every exit code of the `airgap` command and the errors that carry them.

A failure the user can act on is raised as an `AirgapError` subclass anywhere in the core; the CLI turns
it into one paragraph ("error: ...", "  fix: ...") and the class's exit code, never a traceback. The code
belongs to the class, not to an instance: nothing changes an error's code after it is raised, so the code
a script sees is decided where the error is defined, here. Anything else that escapes is a bug in airgap
and exits `EXIT_INTERNAL`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

# Exit codes are part of the CLI contract (README, --help): scripts branch on them.
EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UPSTREAM = 3
EXIT_REBOOT = 4
EXIT_INTERNAL = 70  # EX_SOFTWARE in sysexits.h: "an internal software error has been detected"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended

# What each code means, in the words --help and the README use; the CLI renders its tables from this.
EXIT_MEANINGS: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_CHECK_FAILED: "a check failed (a bad or missing file, a digest mismatch, a full disk)",
    EXIT_BAD_INPUT: "bad input (usage, manifest, not a bundle)",
    EXIT_UPSTREAM: "an upstream or network failure, after retries",
    EXIT_REBOOT: "a reboot is due (nouveau was blacklisted): reboot, then run the same command",
    EXIT_INTERNAL: "an internal error: a bug in airgap; run again with -v and report the traceback",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); run the same command again to resume",
    EXIT_TERMINATED: "stopped by SIGTERM or SIGHUP (kill, shutdown); run the same command again to resume",
}


class AirgapError(Exception):
    """A failure the user can act on. `message` says what happened, `hint` what to do."""

    exit_code: ClassVar[int] = EXIT_CHECK_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class BadInputError(AirgapError):
    """The user's input (manifest, arguments, bundle path) is wrong."""

    exit_code = EXIT_BAD_INPUT


class ManifestError(BadInputError):
    """One or more problems in a manifest, each already formatted as `file:line: path: what; fix`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class UpstreamError(AirgapError):
    """An upstream (HTTP server, mirror) failed or refused after retries."""

    exit_code = EXIT_UPSTREAM


class IntegrityError(AirgapError):
    """Bytes did not match the digest they must have."""

    exit_code = EXIT_CHECK_FAILED


class DiskFullError(AirgapError):
    """The destination ran out of space; nothing was marked complete."""

    exit_code = EXIT_CHECK_FAILED


class Interrupted(AirgapError):
    """The user stopped the command (Ctrl-C); what was finished is kept, and the same command resumes."""

    exit_code = EXIT_INTERRUPTED


class Terminated(Interrupted):
    """SIGTERM or SIGHUP stopped the command (a shutdown, `kill`, a closed terminal); as for Ctrl-C, what was
    finished is kept and the same command resumes. Its own code, as a shell reports a process SIGTERM ended."""

    exit_code = EXIT_TERMINATED


class InstallBusy(BadInputError):
    """Another `airgap install` holds the server's install lock (or left an installer running): nothing was
    done. Bad input in the sense that this command must not run now, not that anything is broken."""


class CombinedError(AirgapError):
    """Several failures reported as one paragraph; it exits with the gravest of their codes."""

    def __init__(self, message: str, errors: Sequence[AirgapError], hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.errors = list(errors)

    # Derived from the parts when read, so the code is still never assigned to an instance.
    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return max((e.exit_code for e in self.errors), default=EXIT_CHECK_FAILED)


# --- the install side ----------------------------------------------------------------------------------


@dataclass
class RunResult:
    """A command the install ran: what a failure shows (its last lines) and the log keeps."""

    argv: list[str]
    returncode: int
    output: str  # stdout and stderr together, as a person would have seen them
    seconds: float

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output.rstrip().splitlines()[-lines:])


class InstallError(AirgapError):
    """A layer failed. `result` is the command that failed, when one did: its last lines are shown."""

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, message: str, hint: str | None = None, result: RunResult | None = None) -> None:
        super().__init__(message, hint)
        self.result = result


class ChangedSinceVerify(InstallError):
    """Bytes read to be installed are not the ones the verified lock lists: the bundle was changed after it
    was verified (someone with write access to the drive or copy), or the medium returned other bytes on a
    second read. Nothing of that artifact was installed."""


class VerifyFailed(AirgapError):
    """`install` refused the bundle: it is not as collected."""

    exit_code = EXIT_CHECK_FAILED


class PreflightFailed(AirgapError):
    """`install` found the server not ready for the chosen layers; nothing was changed."""

    exit_code = EXIT_CHECK_FAILED


class RebootDue(AirgapError):
    """The machine must reboot before the install can go on."""

    exit_code = EXIT_REBOOT


class RebootRequired(RebootDue):
    """A layer did what it could and asks for the reboot (e.g. nouveau blacklisted); the install records it."""


class RebootPending(RebootDue):
    """A reboot asked for by an earlier run has not happened yet; nothing was installed."""
