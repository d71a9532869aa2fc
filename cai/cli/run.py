"""`cai run RECIPE` and `cai report RUN_DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cai.cli.options import ThreadsOpt, VerboseOpt, apply_verbose, check_out, use_threads
from cai.errors import fail

STATE_FILES = ("stage.json", "run.json")


def run(
    ctx: typer.Context,
    recipe: Annotated[str, typer.Argument(help="Recipe file (or a shipped recipe's name, e.g. quickstart).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default: runs/<recipe name>).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a recipe field: stages.critique.limit=8.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; log only to the run folder.")] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not write report.html at the end.")] = False,
    verbose: VerboseOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """Run a recipe: every stage in order, skipping finished ones, resuming an interrupted one."""
    apply_verbose(ctx, verbose)
    use_threads(threads)
    from cai.run.pipeline import run_recipe
    from cai.run.recipe import load_checked_recipe

    r, base = load_checked_recipe(recipe, set_ or [])
    folder = out or Path("runs") / r.name
    check_out(folder)
    check_run_state(folder, r.enabled())
    run_recipe(r, base, folder, quiet=quiet)
    if not no_report:
        from cai.run.report import write_report

        path = write_report(folder)
        typer.echo(f"report: {path}")
    typer.echo(f"run finished: {folder}")


def check_run_state(folder: Path, stages: list[str]) -> None:
    """Read every state file a resumed run (or a report) relies on before anything is written:
    a broken `stage.json` or `run.json` is one line naming it, not a traceback half-way; and
    refuse a link anywhere in a stage's folder before the run writes its recipe or log."""
    from cai.io.readers import read_json_file
    from cai.paths import refuse_links_under

    if not folder.is_dir():
        return
    for stage in stages:
        if (folder / stage).exists() or (folder / stage).is_symlink():
            refuse_links_under(folder / stage, "--out")
        for name in STATE_FILES:
            path = folder / stage / name
            if path.exists():
                read_json_file(path, kind=f"{stage} {name}")


def check_run_folder(run_dir: Path) -> None:
    """A folder `cai run` wrote: it exists, has its recipe.json, and its state files read."""
    from cai.io.readers import read_json_file

    if not run_dir.exists():
        raise fail(str(run_dir), None, "", "no such folder")
    if not run_dir.is_dir() or not (run_dir / "recipe.json").is_file():
        raise fail(str(run_dir), None, "", "not a run folder (no recipe.json; give a folder written by `cai run`)")
    read_json_file(run_dir / "recipe.json", kind="run's recipe")
    if (run_dir / "run_summary.json").exists():
        read_json_file(run_dir / "run_summary.json", kind="run summary")
    check_run_state(run_dir, sorted(p.parent.name for p in run_dir.glob("*/stage.json")))


def report(run_dir: Annotated[Path, typer.Argument(help="A run folder written by `cai run`.")]) -> None:
    """Write RUN_DIR/report.html: a self-contained report with the run's plots and samples."""
    from cai.run.report import write_report

    check_run_folder(run_dir)
    typer.echo(str(write_report(run_dir)))


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(report)
