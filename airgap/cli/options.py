"""Options commands share, and what they turn into, so every command reads them alike."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from airgap.bundle_layout import TRUSTED_KEYS_DIR
from airgap.errors import BadInputError

if TYPE_CHECKING:
    from airgap.signing import PublicKey
    from airgap.sources.http import HttpSource

F = TypeVar("F", bound=Callable[..., Any])


def target_status_option(f: F) -> F:
    return click.option(
        "--target-status",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="A copy of the server's /var/lib/dpkg/status: Debian packages it already has are left out "
        "(docs/packages.md says how to bring that small file out).",
    )(f)


def skip_option(f: F) -> F:
    return click.option(
        "--skip",
        metavar="LAYER,..",
        help="Leave these layers out (comma-separated), e.g. --skip images,models.",
    )(f)


def allow_mismatch_option(f: F) -> F:
    return click.option(
        "--allow-mismatch",
        is_flag=True,
        help="Go ahead despite compatibility errors (driver too old for CUDA, torch for another CUDA, ...): "
        "they become warnings, and collect records them in the lock.",
    )(f)


def http_source(mirrors: dict[str, str], retries: int = 5, timeout: float = 30.0) -> HttpSource:
    from airgap.sources.http import HttpSource

    return HttpSource(mirrors=mirrors, retries=retries, timeout=timeout)


def _set_flag(attr: str) -> Callable[[click.Context, click.Parameter, bool], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        from airgap.cli.application import Application

        # Only a flag given turns it on: the group's own -v/-q (before the command name) already set it.
        if value:
            setattr(ctx.ensure_object(Application), attr, True)

    return callback


def verbosity_options(f: F) -> F:
    """-v/-q on a subcommand too, so `airgap verify B -q` works as `airgap -q verify B` does."""
    f = click.option(
        "-q", "--quiet", is_flag=True, expose_value=False, callback=_set_flag("quiet"), help="Only errors and warnings."
    )(f)
    return click.option(
        "-v",
        "--verbose",
        is_flag=True,
        expose_value=False,
        callback=_set_flag("verbose"),
        help="Say more (debug lines on stderr, tracebacks on internal errors).",
    )(f)


def add_verbosity_options(command: click.Command) -> click.Command:
    """`verbosity_options` for a command already built (each module's command, registered in __init__)."""
    names = {opt for p in command.params for opt in getattr(p, "opts", [])}
    if not names & {"-q", "-v", "--quiet", "--verbose"}:

        def holder() -> None:
            pass

        verbosity_options(holder)
        # click.option stores its parameters on the function in reverse order of the decorators.
        command.params.extend(reversed(getattr(holder, "__click_params__", [])))
    return command


def require_writable(path: Path, option: str, *, directory: bool) -> None:
    """Refuse, before any work, an output this user cannot write: the nearest existing directory at or above
    it (a `directory` itself; a file's parent, as files are written atomically beside their name) must be
    writable: not a read-only medium, not someone else's directory. Hours of downloading or hashing that end
    in "permission denied" are the waste this check prevents."""
    target = path if directory else path.parent
    probe = Path(os.path.abspath(target))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK):
        return
    why = "not a directory" if probe.exists() and not probe.is_dir() else "not writable by this user (or read-only)"
    raise BadInputError(
        f"{option} {path}: cannot write there: {probe} is {why}; nothing was done.",
        f"Give {option} a path on a writable disk (a directory you own), or fix that directory's permissions.",
    )


def refuse_manifest(path: Path, command: str) -> None:
    """`airgap verify manifest.yaml`: the first thing many try. Say what the command wants instead of
    "not a directory"."""
    if path.suffix.lower() in (".yaml", ".yml") and path.is_file():
        raise BadInputError(
            f"{path}: that is a manifest, not a bundle: {command} takes the bundle directory collect made.",
            f"airgap collect {path} -o DIR, then airgap {command} DIR.",
        )


def trust_options(f: F) -> F:
    """--key and --trusted-keys: the signature policy of every command that reads a bundle (verify, push,
    serve, export, upload, dossier); `trusted(...)` turns them into the keys. (install reads the keys under
    its --root instead.)"""
    f = click.option(
        "--trusted-keys",
        "trusted_dir",
        metavar="DIR",
        type=click.Path(path_type=Path),
        default=Path(TRUSTED_KEYS_DIR),
        show_default=True,
        help="Directory of trusted public keys (*.pub). When it holds one, unsigned or otherwise signed bundles "
        "are refused.",
    )(f)
    return click.option(
        "--key",
        type=click.Path(path_type=Path),
        help="Public key (.pub from `airgap keygen`) to trust besides --trusted-keys: the bundle must then carry "
        "a valid signature by a trusted key.",
    )(f)


def trusted(trusted_dir: Path, key: Path | None) -> list[PublicKey]:
    """The keys --trusted-keys and --key name (an unreadable key file is a BadInputError naming it)."""
    from airgap.custody import trusted_keys
    from airgap.signing import load_public

    return trusted_keys(trusted_dir, [load_public(key)] if key else [])
