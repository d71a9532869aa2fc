"""Commands of the RLAIF label stage: `label` and `judge-eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cai.cli.options import ConstitutionOpt, QuietOpt, ShardOpt, check_out, settings_command
from cai.errors import fail, option_error
from cai.models.settings import DEFAULT_MODEL, Backends, BackendSettings
from cai.paths import DEFAULT_CONSTITUTION
from cai.stages.settings import JudgeEvalSettings, LabelSettings, Seed, Window

JudgeOpt = Annotated[
    str, typer.Option("--judge", "-j", help="Judge model spec: embedded, a local path, openai:<model>, fake.")
]


@settings_command(settings=LabelSettings, window=Window, run=Seed, backend=BackendSettings)
def label(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder; rerunning the same command resumes it.")],
    settings: LabelSettings,
    window: Window,
    run: Seed,
    backend: BackendSettings,
    judge: JudgeOpt = DEFAULT_MODEL,
    prompts: Annotated[
        str | None, typer.Option("--prompts", "-p", help="Prompts to sample response pairs for.")
    ] = None,
    policy: Annotated[str | None, typer.Option("--policy", help="Model spec that samples the responses.")] = None,
    pairs: Annotated[
        str | None, typer.Option("--pairs", help="Label these pairs instead of sampling (JSONL/TRL/HH-RLHF).")
    ] = None,
    critique: Annotated[
        str | None, typer.Option("--critique", help="--method revision: a `cai critique` output folder.")
    ] = None,
    constitution: ConstitutionOpt = DEFAULT_CONSTITUTION,
    shard: ShardOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Label response pairs with a judge's soft, position-debiased preferences (RLAIF)."""
    from cai.constitution.load import load_constitution
    from cai.io.pairs import load_pairs
    from cai.io.sources import load_prompts
    from cai.io.store import parse_shard
    from cai.stages.label import label_pairs, label_prompts, revision_pairs

    check_out(out, inputs={"--prompts": prompts, "--pairs": pairs, "--critique": critique})
    _check_inputs(settings, prompts, policy, pairs, critique)
    c = load_constitution(constitution)
    where = {"seed": run.seed, "shard": parse_shard(shard), "quiet": quiet}
    with Backends(backend, quiet=quiet) as backends:  # the same spec for both roles loads once
        scorer = backends(judge, "--judge") if settings.needs_judge else None
        if critique is not None:
            summary = label_pairs(c, scorer, window.apply(revision_pairs(critique)), out, settings, **where)
        elif policy is None:
            summary = label_pairs(c, scorer, window.apply(load_pairs(str(pairs))), out, settings, **where)
        else:
            items = window.apply(load_prompts(str(prompts)))
            summary = label_prompts(c, scorer, backends(policy, "--policy"), items, out, settings, **where)
    typer.echo(_label_line(summary, settings, out))


def _check_inputs(
    settings: LabelSettings, prompts: str | None, policy: str | None, pairs: str | None, critique: str | None
) -> None:
    """Exactly one source of pairs, with what it needs: --critique for revision, --prompts with
    --policy, or --pairs."""
    if settings.method == "revision":
        if critique is None or pairs is not None or prompts is not None or policy is not None:
            raise option_error("--critique", "--method revision reads only --critique DIR (a critique run)")
    elif critique is not None:
        raise option_error("--critique", "--critique is the input of --method revision only")
    elif (pairs is None) == (prompts is None):
        raise option_error("--pairs", "give either --prompts (with --policy) or --pairs")
    if prompts is not None and policy is None:
        raise option_error("--policy", "--prompts needs a --policy model to sample responses")
    if pairs is not None and policy is not None:
        raise option_error("--policy", "--pairs are labelled as given; drop --policy")


def _label_line(summary: dict[str, Any], settings: LabelSettings, out: Path) -> str:
    """The one line `cai label` prints when it is done."""
    t, pos = summary["throughput"], summary["position_bias"]
    judged = (
        f"; order consistency {summary['order_consistency']}, option mass {summary['option_mass']}, "
        f"P(first) {pos['p_first_mean']}"
        if settings.judge.method != "contrast" and settings.needs_judge
        else ""
    )
    rescored = (
        f"; {settings.rescore} agrees with the construction on {summary['rescore_agreement']}"
        if settings.rescore
        else ""
    )
    return (
        f"{summary['records']} pairs by {settings.method} ({summary['exported']} exported, "
        f"{summary['unlabelled']} unlabelled, {summary['errors']} errors, "
        f"{summary['identical']} identical) in {out}{judged}{rescored}"
        + (f"; {t['labels_s']} labels/s" if settings.needs_judge else "")
    )


@settings_command(settings=JudgeEvalSettings, window=Window, run=Seed, backend=BackendSettings)
def judge_eval(
    settings: JudgeEvalSettings,
    window: Window,
    run: Seed,
    backend: BackendSettings,
    judge: JudgeOpt = DEFAULT_MODEL,
    pairs: Annotated[
        str, typer.Option("--pairs", help="Human-labelled pairs: TRL preference JSONL, HH-RLHF, or judge-dev.")
    ] = "judge-dev",
    constitution: ConstitutionOpt = DEFAULT_CONSTITUTION,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for summary.json and judgements.jsonl.")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Measure a judge against human-labelled pairs: agreement, position bias, calibration."""
    from cai.constitution.load import load_constitution
    from cai.io.atomic import write_json_atomic
    from cai.io.pairs import load_pairs
    from cai.stages.judge_eval import (
        compare_methods,
        evaluate_judge,
        format_comparison,
        format_report,
        print_warnings,
        select_split,
        write_eval,
    )

    check_out(out)
    c = load_constitution(constitution)
    items = window.apply(select_split(load_pairs(pairs), settings.split, pairs))
    if not any(p.human for p in items):
        raise fail(pairs, None, "chosen", "judge-eval needs human-labelled pairs (chosen/rejected)")
    with Backends(backend, quiet=quiet) as backends:
        scorer = backends(judge, "--judge")
        how: dict[str, Any] = {"seed": run.seed, "batch_size": settings.batch_size, "quiet": quiet}
        if settings.compare:
            result = compare_methods(c, scorer, items, settings.judge, **how)
        else:
            summary, judged = evaluate_judge(c, scorer, items, settings.judge, **how)
    if settings.compare:
        result["split"] = settings.split
        typer.echo(format_comparison(result))
        if out is not None:
            write_eval(out, result, [])
            write_json_atomic(out / "summary.json", result)
            typer.echo(f"wrote {out / 'summary.json'}")
        return
    typer.echo(format_report(summary))
    if out is not None:
        write_eval(out, summary, judged)
        typer.echo(f"wrote {out / 'summary.json'}")
    print_warnings(summary["warnings"])


def register(app: typer.Typer) -> None:
    app.command()(label)
    app.command("judge-eval")(judge_eval)
