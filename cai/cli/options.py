"""Options shared by the commands, and how settings models become options.

`settings_command` is why a default or a help text exists once: a command names the settings
models it takes (`cai.stages.settings`, `cai.train.settings`, `cai.models.settings`), and every
field becomes an option ``--field-name`` with the field's default and description. pydantic then
checks the values, and a bad one exits 2 naming its flag.
"""

from __future__ import annotations

import inspect
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
from pydantic import BaseModel, ValidationError

from cai.errors import CaiError, Problem, file_error
from cai.models.threads import THREADS_HELP, THREADS_OPTION

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Model spec: embedded, a local path/hub id, or openai:<model>.")
]
ConstitutionOpt = Annotated[str, typer.Option("--constitution", "-c", help="Constitution: a path or a shipped name.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
ShardOpt = Annotated[str | None, typer.Option("--shard", help="i/N: process the i-th of N shards.")]
VERBOSE_HELP = "Show what the libraries print (logs, deprecation warnings, raw training metrics); muted by default."
VerboseOpt = Annotated[bool, typer.Option("--verbose", help=VERBOSE_HELP)]
# Text, not int: `cai.models.threads.parse_threads` checks it, so a bad value reads like every
# other option error (and like a bad CAI_THREADS) instead of click's own message.
ThreadsOpt = Annotated[str | None, typer.Option(THREADS_OPTION, metavar="N", help=THREADS_HELP, show_default=False)]
# Where the root command keeps its `cai.verbosity.LibraryOutput` (in click's per-run ctx.meta).
LIBRARY_OUTPUT = "cai.library_output"
_CONTEXT = "cai_context"  # the parameter `settings_command` adds to receive typer's context


def die(err: CaiError) -> NoReturn:
    """Print a user error one line per problem and exit 2 (for commands run by typer directly)."""
    for p in err.problems:
        typer.echo(str(p), err=True)
    raise typer.Exit(2)


def apply_verbose(ctx: typer.Context | None, verbose: bool) -> None:
    """A command's own ``--verbose``: end the muting the root command started (`cai.cli.app`).

    Library output is muted for every command from the start (before its options are even
    read), so a command-level flag can only turn it back on, never off."""
    output = ctx.meta.get(LIBRARY_OUTPUT) if verbose and ctx is not None else None
    if output is not None:
        output.unmute()


def use_threads(threads: str | None, shard: str | None = None) -> None:
    """Choose and apply the command's CPU threads (`cai.models.threads`): ``--threads``, else
    ``CAI_THREADS``, else cores // N under ``--shard i/N``, else torch's default. Called before
    any model loads, so the model's first forward already runs with them."""
    from cai.io.store import parse_shard
    from cai.models.threads import apply_threads, choose_threads, usable_cores

    apply_threads(choose_threads(threads, os.environ, parse_shard(shard), usable_cores()))


def check_out(
    path: Path | None, option: str = "--out", inputs: dict[str, str | list[str] | None] | None = None
) -> None:
    """Refuse an output folder that cannot be one before any work starts (and before anything
    is written): an existing file, a path under a file, a place this user cannot write, a
    folder holding symbolic links (cai writes only files it owns), or one that holds an input
    of the same command (`inputs`: option → the path it gave)."""
    from cai.paths import refuse_input_inside, refuse_symlink

    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise file_error(path, option, "exists and is not a folder")
    for name, given in (inputs or {}).items():
        for one in [given] if isinstance(given, str) else given or []:
            refuse_input_inside(one, path, name)
    if path.is_dir():
        for entry in sorted(path.iterdir()):
            refuse_symlink(entry, option)
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise file_error(path, option, f"cannot be made: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise file_error(path, option, f"cannot write in {ancestor} (permission denied)")


# ---------------------------------------------------------------------------- settings → options


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _cli_type(annotation: Any) -> Any:
    """What typer parses for a field: Literals as text (pydantic checks the choice), lists as a
    repeatable option, anything else typer cannot read as text for the field's own validator."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in (int, float, str, bool):
        return annotation
    if origin is Literal:
        return str
    if origin is list:
        return list[str] | None
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and rest[0] in (int, float, str):
            return rest[0] | None
    return str | None


def _help(field: Any) -> str:
    text = field.description or ""
    choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is Literal else ()
    if choices and not all(f"{c}:" in text for c in choices):
        text += f" One of: {', '.join(map(str, choices))}."
    return text


def _option(name: str, field: Any) -> inspect.Parameter:
    kind = _cli_type(field.annotation)
    decl = flag(name)
    if kind is bool and field.default is True:
        decl = f"{decl}/--no-{name.replace('_', '-')}"
    default = None if isinstance(field.default, list | dict) else field.default  # the model's own default
    option = typer.Option(decl, help=_help(field), show_default=default is not None)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])


def build_settings(model: type[BaseModel], values: dict[str, Any]) -> Any:
    """The settings model from option values; a bad value is a one-line error naming its flag."""
    # A list (or mapping) option not given arrives as None: leave it out so the field's own default applies.
    given = {
        k: v for k, v in values.items() if not (v is None and isinstance(model.model_fields[k].default, list | dict))
    }
    try:
        return model.model_validate(given)
    except ValidationError as err:
        raise CaiError([_problem(e, model) for e in err.errors()]) from None


def _problem(e: Any, model: type[BaseModel]) -> Problem:
    message = str(e["msg"]).removeprefix("Value error, ")
    field = str(e["loc"][0]) if e["loc"] else ""
    if not field and ": " in message and message.split(": ", 1)[0] in model.model_fields:
        field, message = message.split(": ", 1)  # a check across fields names the one to change
    return Problem(flag(field) if field else "options", None, "", message)


def settings_command(
    *, exclude: frozenset[str] = frozenset(), **models: type[BaseModel]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command whose parameters named in `models` take settings models: the command
    typer sees has one option per field instead, and receives the validated models. Fields in
    `exclude` mean nothing for this command (e.g. a batch size for one prompt): no option, and
    the model's default. Every such command also gets ``--verbose`` (`apply_verbose`) and
    ``--threads`` (`use_threads`, with the command's ``--shard`` if it has one), unless it takes a
    parameter of that name itself."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name not in models]
        fields = {
            name: (arg, field)
            for arg, m in models.items()
            for name, field in m.model_fields.items()
            if name not in exclude
        }
        taken = {p.name for p in own}
        clash = taken & set(fields) or len(fields) != sum(len(set(m.model_fields) - exclude) for m in models.values())
        if clash:
            raise TypeError(f"{fn.__name__}: option names used twice: {clash}")
        params = own + [_option(name, field) for name, (_, field) in fields.items()]
        own_verbose = "verbose" in taken
        if not own_verbose:
            option = typer.Option("--verbose", help=VERBOSE_HELP)
            keyword = inspect.Parameter.KEYWORD_ONLY
            params.append(inspect.Parameter("verbose", keyword, default=False, annotation=Annotated[bool, option]))
            params.append(inspect.Parameter(_CONTEXT, keyword, annotation=typer.Context))  # typer fills it in
        own_threads = "threads" in taken
        if not own_threads:
            params.append(
                inspect.Parameter("threads", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ThreadsOpt)
            )

        def command(**kwargs: Any) -> Any:
            if not own_verbose:
                apply_verbose(kwargs.pop(_CONTEXT, None), kwargs.pop("verbose", False))
            for arg, m in models.items():
                kwargs[arg] = build_settings(m, {k: kwargs.pop(k) for k in list(kwargs) if k in m.model_fields})
            if not own_threads:
                use_threads(kwargs.pop("threads"), kwargs.get("shard"))
            return fn(**kwargs)

        command.__name__, command.__doc__, command.__module__ = fn.__name__, fn.__doc__, fn.__module__
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.settings_models = models  # type: ignore[attr-defined]
        command.settings_excluded = exclude  # type: ignore[attr-defined]
        return command

    return decorate
