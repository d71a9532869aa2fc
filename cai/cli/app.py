"""The `cai` command line: each command is a thin call into the library.

Commands live in one module per group (`cai.cli.constitution`, `data`, `label`, `train`,
`evaluate`, `run`); heavy imports (torch, TRL) happen inside the commands, so `cai --help` is fast.
User errors (`CaiError`) print one line per problem and exit 2; nothing else is caught, so a
bug still shows its traceback.
"""

from __future__ import annotations

import sys

import typer

from cai.errors import CaiError


def build_app() -> typer.Typer:
    """A fresh app with every command; built on call so importing this module changes nothing."""
    from cai.cli import constitution, data, evaluate, label, run, train

    app = typer.Typer(
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        help="Constitutional AI and RLAIF: constitutions as data, critiques, AI labels, PM and RL.",
    )
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
