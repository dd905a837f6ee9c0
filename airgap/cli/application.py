"""The object every command gets: verbosity, output, and the one place a failure becomes an exit code.

`main()` creates one `Application` per run and hands it to click as the context object; the group callback
sets -v/-q on it and each command receives it with `click.pass_obj`. Whatever escapes a command, an
`AirgapError`, a click usage error, Ctrl-C or a bug, is rendered and mapped to its code by `fail`.
"""

from __future__ import annotations

import json

import click

from airgap.errors import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_MEANINGS,
    EXIT_OK,
    EXIT_UPSTREAM,
    AirgapError,
    ManifestError,
)
from airgap.redact import scrub, scrub_error
from airgap.ui import Output

# The codes any command can end with; a command that can end with another (install: 4) adds it.
COMMON_EXIT_CODES = (EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_UPSTREAM, EXIT_INTERNAL, EXIT_INTERRUPTED)


def exit_codes_help(*extra: int) -> str:
    """The "Exit codes:" block for a --help epilog, from errors.py's table; `\\b` keeps click from rewrapping."""
    codes = sorted({*COMMON_EXIT_CODES, *extra})
    width = max(len(str(c)) for c in codes)
    return "\n".join(["\b", "Exit codes:", *(f"  {c:<{width}} {EXIT_MEANINGS[c]}" for c in codes)])


class Application:
    """What the commands share for one run of `airgap`."""

    def __init__(self, verbose: bool = False, quiet: bool = False, json_mode: bool = False) -> None:
        self.verbose = verbose
        self.quiet = quiet
        # Set once a command asked for --json (or main() saw it before parsing): a failure then also prints
        # its JSON object on stdout, so a script reading stdout gets an answer either way.
        self.json_mode = json_mode

    def output(self, json_mode: bool = False) -> Output:
        self.json_mode = self.json_mode or json_mode
        return Output(json_mode=json_mode, quiet=self.quiet, verbose=self.verbose)

    def fail(self, exc: BaseException) -> int:
        """Say on stderr what went wrong and return the exit code for it; with --json, also print
        `{"ok": false, "error", "fix", "exit_code"}` on stdout."""
        if isinstance(exc, AirgapError):
            scrub_error(exc)  # the last line of defence: no URL leaves with its credentials
        code, error, fix = self._render(exc)
        if self.json_mode:
            data: dict[str, object] = {"ok": False, "error": error, "fix": fix, "exit_code": code}
            if isinstance(exc, ManifestError):
                data["problems"] = exc.problems
            print(json.dumps(data, indent=2), flush=True)
        return code

    def _render(self, exc: BaseException) -> tuple[int, str, str | None]:
        """Print the human paragraph on stderr; the exit code, the error and the fix, for --json."""
        out = Output(quiet=self.quiet, verbose=self.verbose)
        if isinstance(exc, click.exceptions.UsageError):
            exc.show()
            hint = f"see `{exc.ctx.command_path} --help`" if exc.ctx else "see `airgap --help`"
            return EXIT_BAD_INPUT, exc.format_message(), hint
        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code, exc.format_message(), None
        if isinstance(exc, (click.exceptions.Abort, KeyboardInterrupt)):
            out.stderr("interrupted; run the same command again to resume.")
            return EXIT_INTERRUPTED, "interrupted", "run the same command again to resume"
        if isinstance(exc, ManifestError):
            for problem in exc.problems:
                out.stderr(problem)
            summary = f"{len(exc.problems)} problem(s) in the manifest; nothing was downloaded."
            out.stderr(summary)
            return exc.exit_code, summary, "fix each problem listed in `problems`, then run the same command again"
        if isinstance(exc, AirgapError):
            out.stderr(f"error: {exc.message}")
            if exc.hint:
                out.stderr(f"  fix: {exc.hint}")
            return exc.exit_code, exc.message, exc.hint
        # Anything else is a bug: say so, apart from "a check failed", so that scripts and people can tell.
        if self.verbose:
            import traceback  # only for a bug, with -v: not on every command's start-up

            out.stderr(scrub("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))).rstrip())
        error = f"internal error: {type(exc).__name__}: {scrub(str(exc))}"
        fix = "This is a bug in airgap. Run again with -v for the traceback and report it."
        out.stderr(f"{error}\n  {fix}")
        return EXIT_INTERNAL, error, fix
