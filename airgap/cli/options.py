"""Options that `plan` and `collect` share, and what they turn into, so both commands read them alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
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
