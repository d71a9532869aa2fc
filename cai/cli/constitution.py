"""Commands that inspect data without running a model: `validate`, `render`, `constitution show|diff`,
`models`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cai.cli.options import die
from cai.errors import CaiError, option_error
from cai.paths import DEFAULT_CONSTITUTION

ConstitutionOpt = Annotated[str, typer.Option("--constitution", "-c", help="Constitution: a path or a shipped name.")]
TemplatesOpt = Annotated[
    list[Path] | None, typer.Option("--templates", help="Extra template folder (overrides shipped).")
]


def validate(paths: Annotated[list[Path], typer.Argument(help="Files or folders to check.")]) -> None:
    """Check principle libraries, constitutions, demonstrations, recipes and templates; exit 2 on
    any problem. Warnings (a demonstration prompt that is also an evaluation prompt) go to stderr
    and leave the exit code 0."""
    from cai.constitution.validate import validate_paths
    from cai.errors import Problem

    warnings: list[Problem] = []
    n, problems = validate_paths(paths, extra_kinds=_extra_kinds(), warnings=warnings)
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    for p in problems:
        typer.echo(str(p), err=True)
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {n} file(s)", err=True)
        raise typer.Exit(2)
    typer.echo(f"ok: {n} file(s) valid")


def _extra_kinds() -> dict[str, Any]:
    from cai.run.recipe import validate_recipe_file

    return {"recipe": validate_recipe_file}


def render(
    template: Annotated[
        str, typer.Argument(help="critique, revision, comparison, comparison_cot, or any template name.")
    ],
    constitution: ConstitutionOpt = DEFAULT_CONSTITUTION,
    principle: Annotated[str | None, typer.Option(help="Principle id (default: the first selected).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="key=value for template variables.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the messages as JSON.")] = False,
    no_fewshot: Annotated[bool, typer.Option("--no-fewshot", help="Leave out few-shot exemplars.")] = False,
    templates: TemplatesOpt = None,
) -> None:
    """Print exactly the messages a model receives for one step of the pipeline."""
    from cai.stages.preview import preview_messages

    try:
        sets = {}
        for item in set_ or []:
            if "=" not in item:
                raise option_error("--set", "expected key=value", value=item)
            k, v = item.split("=", 1)
            sets[k.strip()] = v
        messages = preview_messages(
            template, constitution, principle, sets, not no_fewshot, [str(t) for t in templates or []]
        )
    except CaiError as e:
        die(e)
    if as_json:
        typer.echo(json.dumps(messages, indent=2, ensure_ascii=False))
        return
    for m in messages:
        typer.echo(f"── {m['role']} " + "─" * max(0, 60 - len(m["role"])))
        typer.echo(m["content"])
    typer.echo("─" * 64)


def constitution_show(
    constitution: Annotated[str, typer.Argument(help="Path or shipped name.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The resolved constitution after includes, with its fingerprint."""
    import yaml

    from cai.constitution.load import load_constitution

    try:
        c = load_constitution(constitution)
    except CaiError as e:
        die(e)
    doc = {"fingerprint": c.fingerprint(), "chain": c.chain, "template_hashes": c.template_hashes(), **c.resolved()}
    if as_json:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        typer.echo(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100))


def constitution_diff(a: str, b: str) -> None:
    """Principles added, removed and changed between two constitutions; warns (on stderr) about a
    principle whose text changed without a version bump."""
    from cai.constitution.diff import diff_constitutions
    from cai.constitution.load import load_constitution

    try:
        lines = diff_constitutions(load_constitution(a), load_constitution(b))
    except CaiError as e:
        die(e)
    for line in lines:
        typer.echo(line, err=line.startswith("warning:"))


def models(
    under: Annotated[
        list[Path] | None,
        typer.Option("--under", help="Also list the models trained into folders under DIR (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """List the models cai can use here and where they live; with --under, the trained ones too
    (kind, base model, date; the spec column is what --model/--policy/--pm take)."""
    from cai.models.spec import list_models, list_trained

    rows = list_models() + [row for root in under or [] for row in list_trained(root)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for m in rows:
        typer.echo("  ".join(f"{k}={v}" for k, v in m.items()))


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(render)
    app.command()(models)
    group = typer.Typer(no_args_is_help=True, help="Inspect constitutions.")
    group.command("show")(constitution_show)
    group.command("diff")(constitution_diff)
    app.add_typer(group, name="constitution")
