"""Commands of the SL-CAI data stage: `critique`, `try`, `merge`; and `demo-pairs` (a PM's data
from the constitution's demonstrations)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cai.cli.options import ConstitutionOpt, ModelOpt, QuietOpt, ShardOpt, check_out, settings_command
from cai.models.settings import DEFAULT_MODEL, Backends, BackendSettings
from cai.paths import DEFAULT_CONSTITUTION
from cai.stages.settings import CritiqueSettings, DemoPairsSettings, Seed, Window

PromptsOpt = Annotated[
    str,
    typer.Option("--prompts", "-p", help="JSONL/CSV/TXT file, datasets folder, or a shipped set (red-team, helpful)."),
]
RunOutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run folder; rerunning the same command resumes it.")]


@settings_command(settings=CritiqueSettings, window=Window, run=Seed, backend=BackendSettings)
def critique(
    prompts: PromptsOpt,
    out: RunOutOpt,
    settings: CritiqueSettings,
    window: Window,
    run: Seed,
    backend: BackendSettings,
    constitution: ConstitutionOpt = DEFAULT_CONSTITUTION,
    model: ModelOpt = DEFAULT_MODEL,
    shard: ShardOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Generate SL-CAI data: answer, then critique and revise against sampled principles (or, with
    --mode distill, answer once under the principles and export the answer to the bare prompt)."""
    from cai.constitution.load import load_constitution
    from cai.io.sources import load_prompts
    from cai.io.store import parse_shard
    from cai.stages.critique import run_critique

    check_out(out, inputs={"--prompts": prompts})
    c = load_constitution(constitution)
    items = window.apply(load_prompts(prompts))
    with Backends(backend, quiet=quiet) as backends:
        summary = run_critique(
            c, items, backends(model), out, settings, seed=run.seed, shard=parse_shard(shard), quiet=quiet
        )
    t = summary["throughput"]
    copies = [f"{summary['exemplar_copy']} exemplar"] + (
        [f"{summary['critique_copy']} critique"] if summary["critique_copy"] is not None else []
    )
    typer.echo(
        f"{summary['records']} records ({summary['exported']} exported, {summary['excluded_flagged']} flagged, "
        f"{summary['errors']} errors) in {out}; {t['prompts_s']} prompts/s, {t['tok_s']} tok/s"
        + f"; copies: {', '.join(copies)}, {summary['excluded_copies']} rows excluded"
        + f"; boilerplate: {summary['boilerplate']}, {summary['excluded_boilerplate']} rows excluded"
        + f"; {summary['demonstrations']} demonstrations added"
        + ("; distill mode: no cai.jsonl (no rejected answer)" if summary["mode"] == "distill" else "")
        + (f"; {summary['retried']} retried" if t["retried"] else "")
        + (f"; {summary['duplicates_dropped']} duplicate lines dropped" if summary["duplicates_dropped"] else "")
    )


@settings_command(
    settings=CritiqueSettings,
    run=Seed,
    backend=BackendSettings,
    exclude=frozenset(
        {"batch_size", "retry_failed", "mode", "demonstrations", "demonstration_answers"}
    ),  # `try` shows revise rounds
)
def try_principle(
    prompt: Annotated[str, typer.Option("--prompt", help="One user prompt.")],
    settings: CritiqueSettings,
    run: Seed,
    backend: BackendSettings,
    constitution: ConstitutionOpt = DEFAULT_CONSTITUTION,
    principle: Annotated[
        list[str] | None, typer.Option("--principle", help="Principle id; repeat for several rounds.")
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
) -> None:
    """One critique→revision run of the stage on one prompt, printed round by round."""
    from cai.constitution.load import load_constitution
    from cai.errors import option_error
    from cai.io.sources import PromptItem
    from cai.stages.critique import CritiqueBatch, copy_check

    c = load_constitution(constitution)
    chosen = [c.critique_principle(p) for p in principle] if principle else None
    rounds = len(chosen) if chosen else settings.rounds or c.spec.critique.rounds
    batch = CritiqueBatch(
        c,
        [PromptItem("try", [{"role": "user", "content": prompt}])],
        rounds,
        run.seed,
        [chosen] if chosen else None,
        copy_check(c, settings),
    )
    with Backends(backend) as backends:
        batch.run(backends(model), settings.params, rounds, run.seed)
    typer.secho("[initial answer]", bold=True)
    typer.echo(batch.initial[0])
    for r, done in enumerate(batch.rounds[0], 1):
        typer.secho(f"\n[round {r}: {done['principle']}] critique", bold=True)
        typer.echo(done["critique"])
        flags = f"  flags: {', '.join(done['flags'])}" if done["flags"] else ""
        typer.secho(f"[round {r}: {done['principle']}] revision{flags}", bold=True)
        typer.echo(done["revision"])
    if batch.errors[0]:
        raise option_error("--model", f"generation failed: {batch.errors[0]}", value=model)


def merge(
    dirs: Annotated[list[Path], typer.Argument(help="Shard folders of one run.")],
    out: Annotated[Path, typer.Option("--out", "-o")],
) -> None:
    """Merge `--shard` folders into one, ordered as an unsharded run, and re-export."""
    from cai.io.merge import merge_stores

    check_out(out)
    n, store = merge_stores(dirs, out)
    with store:
        if store.manifest.get("stage") == "critique":
            from cai.io.atomic import write_text_atomic
            from cai.stages.critique_export import DEMONSTRATIONS_FILE, export_critique, write_summary

            if (dirs[0] / DEMONSTRATIONS_FILE).is_file():  # every shard chose the same ones
                write_text_atomic(out / DEMONSTRATIONS_FILE, (dirs[0] / DEMONSTRATIONS_FILE).read_text("utf-8"))

            write_summary(out, export_critique(store, out))
        elif store.manifest.get("stage") == "label":
            from cai.stages.label_export import export_labels

            export_labels(store, out)
    typer.echo(f"merged {n} records into {out}")


@settings_command(settings=DemoPairsSettings, run=Seed, backend=BackendSettings)
def demo_pairs(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the pairs (new or empty).")],
    settings: DemoPairsSettings,
    run: Seed,
    backend: BackendSettings,
    policy: Annotated[
        str,
        typer.Option("--policy", help="The policy whose own replies lose to the demonstrations (the SL-CAI model)."),
    ] = DEFAULT_MODEL,
    constitution: ConstitutionOpt = DEFAULT_CONSTITUTION,
    quiet: QuietOpt = False,
) -> None:
    """Preference pairs from the constitution's demonstrations: each demonstration's reply over the
    policy's own reply to its prompt. Train the demo-pm reward on them: cai train pm --data OUT."""
    from cai.constitution.load import load_constitution
    from cai.stages.demo_pairs import build_demo_pairs

    check_out(out)
    c = load_constitution(constitution)
    with Backends(backend, quiet=quiet) as backends:
        summary = build_demo_pairs(c, backends(policy, "--policy"), out, settings, seed=run.seed)
    skipped = summary["skipped"]
    typer.echo(
        f"{summary['pairs']} pairs ({summary['declines']} declines, {summary['answers']} answers) from "
        f"{summary['demonstrations']} demonstrations in {out}; skipped: {skipped['failed']} failed, "
        f"{skipped['empty']} empty, {skipped['same_as_demonstration']} same as the demonstration"
    )


def register(app: typer.Typer) -> None:
    app.command()(critique)
    app.command("try")(try_principle)
    app.command()(merge)
    app.command("demo-pairs")(demo_pairs)
