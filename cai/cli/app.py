"""The `cai` command line: each command is a thin call into the library.

Commands live in one module per group (`cai.cli.constitution`, `data`, `label`, `train`,
`evaluate`, `run`); heavy imports (torch, TRL) happen inside the commands, so `cai --help` is fast.
User errors (`CaiError`) print one line per problem and exit 2; nothing else is caught, so a
bug still shows its traceback. The root command mutes library chatter for whatever runs under it
(`cai.verbosity`) unless `cai --verbose` (or the command's own `--verbose`) asks for it.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cai.cli.options import LIBRARY_OUTPUT, VERBOSE_HELP
from cai.errors import CaiError


def _print_version(value: bool) -> None:
    if value:
        import cai

        typer.echo(f"cai {cai.__version__}")
        raise typer.Exit()


def _root(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", help=VERBOSE_HELP)] = False,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print cai's version and exit.")
    ] = False,
) -> None:
    """Mute library output for the whole command; the run's context restores it when it ends."""
    from cai.verbosity import LibraryOutput

    ctx.meta[LIBRARY_OUTPUT] = ctx.with_resource(LibraryOutput(verbose=verbose))


def build_app() -> typer.Typer:
    """A fresh app with every command; built on call so importing this module changes nothing."""
    from cai.cli import constitution, data, evaluate, label, run, train

    app = typer.Typer(
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        help="Constitutional AI and RLAIF: constitutions as data, critiques, AI labels, PM and RL.",
    )
    app.callback()(_root)
    for group in (constitution, data, label, train, evaluate, run):
        group.register(app)
    return app


def main(argv: list[str] | None = None) -> None:
    try:
        build_app()(args=argv, prog_name="cai", standalone_mode=True)
    except CaiError as e:  # raised outside a command's own handler
        for p in e.problems:
            print(str(p), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
