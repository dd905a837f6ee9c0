"""Errors that reach the user as one paragraph and an exit code, never a traceback."""

from __future__ import annotations

# Exit codes are part of the CLI contract (README, --help): scripts branch on them.
EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UPSTREAM = 3
EXIT_INTERRUPTED = 130


class AirgapError(Exception):
    """A failure the user can act on. `message` says what happened, `hint` what to do."""

    exit_code = EXIT_CHECK_FAILED

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
