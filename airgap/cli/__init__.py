"""The `airgap` command line: one module per command, registered on one click group here.

A command parses its options, calls the core, and renders what comes back through the `Application`
(application.py) it receives; it never imports another command's module. Every failure leaves a command
as an exception and becomes a message and an exit code in one place, `Application.fail`, called by
`main()`. The codes themselves live in airgap/errors.py.

A command's module is imported only when that command runs (or its --help is asked for): `airgap verify`
on a few thousand small files is over in the time it takes to import collect's HTTP, YAML and model code,
so that code is not imported for it. `airgap --help` lists the commands from `COMMANDS` below.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from typing import NoReturn

import click

from airgap import __version__
from airgap.cli.application import Application, exit_codes_help
from airgap.cli.options import add_verbosity_options
from airgap.errors import EXIT_MEANINGS, EXIT_OK

# name -> (module under airgap.cli, its first help line): what `airgap --help` lists without importing the
# module. Each module holds one command of the same name; tests/test_startup.py checks the two agree.
COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("plan", "Show what `collect` would fetch, without downloading, and whether the stack fits together."),
    "collect": ("collect", "Download everything MANIFEST names into a bundle directory."),
    "verify": ("verify", "Re-hash every file of BUNDLE and name each one that is not as collected."),
    "demo": ("demo", "Run the whole trip on this machine, with no internet and no GPU."),
    "doctor": (
        "doctor",
        "Check this server is ready to serve models: a readiness checklist, one line per check.",
    ),
    "install": ("install", "Install BUNDLE on this server, layer by layer, without touching the network."),
    "smoke": ("smoke", "GPU smoke test: is this server ready to serve models?"),
    "keygen": ("keygen", "Make an Ed25519 key pair for signing bundles: NAME.key (secret, mode 0600) and NAME.pub."),
    "sign": ("sign", "Sign BUNDLE's SHA256SUMS (which covers the lock and every file) with a secret key."),
    "split": (
        "split",
        "Store every file of BUNDLE larger than --max-file-size as numbered parts (NAME.001, NAME.002, ...).",
    ),
    "fleet": ("fleet", "Install one bundle on many servers with Ansible: canary first, reboots included, one report."),
    "dossier": (
        "dossier",
        "Write BUNDLE's dossier: what is in it, from where, under which licence, with which known vulnerabilities.",
    ),
    "serve": ("serve", "Serve BUNDLE to the closed network: a Python index, a Hugging Face endpoint and its files."),
    "export": (
        "export",
        "Write BUNDLE's Python index, Hugging Face endpoint and files as a static tree for a web server.",
    ),
    "push": ("push", "Push every image of BUNDLE into the OCI registry --registry, by digest, then tag it."),
    "upload": (
        "upload",
        "Upload BUNDLE's wheels to a Python index the site already runs (devpi, Nexus, Artifactory, pypiserver).",
    ),
}

MAIN_HELP = f"""Carry a GPU/LLM serving stack across an air gap, and be sure it arrived intact.

\b
On the connected PC:
  airgap plan manifest.yaml              what would be fetched, from where, how big
  airgap collect manifest.yaml -o B/     download, check, write a bundle in B/
After the transfer (USB drive, DVD, share):
  airgap verify /media/B                 name every missing, truncated, altered file
On the isolated server:
  sudo sh /media/B/install.sh            set airgap up from the bundle, then install it
  sudo airgap install /media/B           every layer in order, resumable; --dry-run first
  airgap smoke / airgap doctor           GPU smoke test / readiness checks with fixes
Try it with no internet and no GPU:
  airgap demo

Example manifests are in the project's manifests/ directory.

{exit_codes_help(*EXIT_MEANINGS)}
"""


class LazyCommands(MutableMapping[str, click.Command]):
    """The group's commands by name, each imported on first use. Only names are needed to parse a command
    line, suggest a misspelt command or list `--help`, so those never import anything."""

    def __init__(self, table: dict[str, tuple[str, str]]) -> None:
        self._modules = {name: module for name, (module, _) in table.items()}
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        command = self._loaded.get(name)
        if command is None:
            module = importlib.import_module(f"airgap.cli.{self._modules[name]}")  # KeyError: no such command
            # -v/-q are read after the command name too (`airgap verify B -q`), by the same options everywhere.
            command = self._loaded[name] = add_verbosity_options(getattr(module, name))
        return command

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._modules.pop(name, None)
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._modules, *self._loaded]))

    def __len__(self) -> int:
        return len(self._modules.keys() | self._loaded.keys())

    def __contains__(self, name: object) -> bool:
        return name in self._modules or name in self._loaded


class LazyGroup(click.Group):
    """A group whose commands are imported when one runs; `--help` lists them from `COMMANDS`."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            if name in COMMANDS:
                # A stand-in with the same first line: click shortens it exactly as it would the command's.
                rows.append((name, click.Command(name, help=COMMANDS[name][1])))
            elif (command := self.get_command(ctx, name)) is not None and not command.hidden:
                rows.append((name, command))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)  # as click.Group lays it out
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in rows])


@click.group(
    cls=LazyGroup,
    commands=LazyCommands(COMMANDS),
    help=MAIN_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="airgap")
@click.option("-v", "--verbose", is_flag=True, help="Say more (debug lines on stderr, tracebacks on internal errors).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and warnings.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    # main() passes its Application in; invoked some other way (click's test runner), the group makes one.
    app = ctx.ensure_object(Application)
    app.verbose = verbose
    app.quiet = quiet


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The `airgap` console script and `python -m airgap`: run one command and exit with its code."""
    args = list(sys.argv[1:] if argv is None else argv)
    # --json known before parsing, so that a usage error (an unknown option) is answered in JSON too.
    app = Application(json_mode="--json" in args[: args.index("--")] if "--" in args else "--json" in args)
    try:
        rv = cli.main(args=args, standalone_mode=False, obj=app)
    except (Exception, KeyboardInterrupt) as exc:
        sys.exit(app.fail(exc))
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)
