"""`cai run RECIPE` and `cai report RUN_DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def run(
    recipe: Annotated[str, typer.Argument(help="Recipe file (or a shipped recipe's name, e.g. quickstart).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default: runs/<recipe name>).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a recipe field: stages.critique.limit=8.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; log only to the run folder.")] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not write report.html at the end.")] = False,
) -> None:
    """Run a recipe: every stage in order, skipping finished ones, resuming an interrupted one."""
    from cai.run.pipeline import run_recipe
    from cai.run.recipe import load_recipe

    r, base = load_recipe(recipe, set_ or [])
    folder = out or Path("runs") / r.name
    run_recipe(r, base, folder, quiet=quiet)
    if not no_report:
        from cai.run.report import write_report

        path = write_report(folder)
        typer.echo(f"report: {path}")
    typer.echo(f"run finished: {folder}")


def report(run_dir: Annotated[Path, typer.Argument(help="A run folder written by `cai run`.")]) -> None:
    """Write RUN_DIR/report.html: a self-contained report with the run's plots and samples."""
    from cai.run.report import write_report

    typer.echo(str(write_report(run_dir)))


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(report)
