"""The `cai` command line: each command is a thin call into the library.

Commands live in one module per group (`cai.cli.constitution`, `data`, `label`, `train`,
`evaluate`, `run`); heavy imports (torch, TRL) happen inside the commands, so `cai --help` is fast.
User errors (`CaiError`) print one line per problem and exit 2; nothing else is caught, so a
bug still shows its traceback. The root command mutes library chatter for whatever runs under it
(`cai.verbosity`) unless `cai --verbose` (or the command's own `--verbose`) asks for it.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

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


def _click_exceptions() -> Any:
    """Click's exception classes as the installed typer raises them: typer >= 0.25 carries its own
    copy of click (``typer._click``), older ones use click itself."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _command_path(app: typer.Typer, argv: list[str]) -> str:
    """``cai train sft`` for ``train sft --lora-r``: the leading words of argv that name commands."""
    cmd, words = typer.main.get_command(app), ["cai"]
    for token in argv:
        sub = getattr(cmd, "commands", {}).get(token)
        if sub is None:
            break
        cmd, words = sub, [*words, token]
    return " ".join(words)


def usage_line(e: Exception, command: str) -> str:
    """A usage error (unknown option or command, missing argument, a value of the wrong type) as
    one line, like every other error: ``cai: error: what; see cai CMD --help``."""
    click = _click_exceptions()
    ctx = e.ctx if isinstance(e, click.UsageError) else None
    if ctx is not None and ctx.command_path and len(ctx.command_path) > len(command):
        command = ctx.command_path
    message = e.format_message() if isinstance(e, click.ClickException) else str(e)
    message = " ".join(message.split()).rstrip(".") or "bad usage"
    return f"cai: error: {message}; see {command} --help"


def main(argv: list[str] | None = None) -> None:
    """What the console script (`console`) runs. Click runs in non-standalone mode so that its
    usage errors come back here as exceptions, to be printed as one line (click's own is a
    multi-line box)."""
    click = _click_exceptions()

    app, args = build_app(), sys.argv[1:] if argv is None else list(argv)
    for n, arg in enumerate(args, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8, decoded by Python as surrogates
            print(f"cai: error: argument {n} is not UTF-8 text; see {_command_path(app, args)} --help", file=sys.stderr)
            sys.exit(2)
    try:
        code = app(args=args, prog_name="cai", standalone_mode=False)
    except CaiError as e:  # raised outside a command's own handler
        for p in e.problems:
            print(str(p), file=sys.stderr)
        sys.exit(2)
    except click.NoArgsIsHelpError as e:  # `cai` or `cai train` alone: the help
        print(e.ctx.get_help(), file=sys.stderr)
        sys.exit(2)
    except click.ClickException as e:
        print(usage_line(e, _command_path(app, args)), file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("cai: aborted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


def console() -> None:
    """The console script (and ``python -m cai.cli``): `main` in the environment `cai` computes
    in. Kept apart from `main`, which tests call in-process, so that they do not change their own
    environment; nothing this module imports at its top loads torch (a test checks that)."""
    import os

    from cai.models.threads import cli_environment

    cli_environment(os.environ, sys.argv[1:])
    main()


if __name__ == "__main__":
    console()
