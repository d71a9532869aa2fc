"""`cai eval policy`: is the trained policy more harmless without becoming evasive?
`cai eval refusals`: can the refusal detector behind those figures be trusted on your model?
`cai eval decision`: does a reward (a PM, a judge's labels) prefer refusing harmful requests and
answering safe ones?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cai.cli.options import QuietOpt, check_out, die, settings_command
from cai.errors import CaiError, file_error, option_error
from cai.models.settings import DEFAULT_MODEL, Backends, BackendSettings
from cai.paths import DEFAULT_CONSTITUTION
from cai.stages.settings import DecisionSettings, EvalSettings, Seed, Window

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
AlsoOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--also",
        help="NAME=SPEC: a model between baseline and policy (e.g. sft=runs/x/sft/model when the policy "
        "is the RL model trained from it); repeatable, in training order. Each answers too, and every "
        "harmlessness figure gets its rate and the difference per step (base → SL → RL).",
    ),
]


@settings_command(settings=EvalSettings, window=Window, run=Seed, backend=BackendSettings)
def eval_policy(
    policy: Annotated[str, typer.Option("--policy", help="Model spec of the policy to evaluate.")],
    prompts: Annotated[
        str, typer.Option("--prompts", "-p", help="Held-out prompts (file, datasets folder or shipped set).")
    ],
    settings: EvalSettings,
    window: Window,
    run: Seed,
    backend: BackendSettings,
    judge: Annotated[
        str,
        typer.Option(
            "--judge", "-j", help="Judge model spec for the win rates (used with --baseline, unless --no-win-rates)."
        ),
    ] = DEFAULT_MODEL,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="Model to compare against (e.g. the SL-CAI model).")
    ] = None,
    also: AlsoOpt = None,
    pm_: Annotated[
        str | None, typer.Option("--pm", help="Preference model folder: mean PM reward of each model's answers.")
    ] = None,
    constitution: Annotated[
        str, typer.Option("--constitution", "-c", help="Comparison principles for the win rates.")
    ] = DEFAULT_CONSTITUTION,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for summary.json, samples.jsonl and samples_safe.jsonl."),
    ] = None,
    show: Annotated[int, typer.Option("--show", help="Samples to print.")] = 5,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a policy: PM reward, judge win rates, refusal rate, harmful compliance and over-refusal (95% CIs)."""
    from cai.constitution.load import load_constitution
    from cai.io.sources import load_prompts
    from cai.stages.evaluate import evaluate_specs, write_policy_eval
    from cai.stages.harmless import load_lookalike, load_plain

    check_out(out, inputs={"--prompts": prompts, "--lookalike": settings.lookalike})
    others = _named_models(also or [], baseline)
    c = load_constitution(constitution)
    items = window.apply(load_prompts(prompts))
    # Read before any model loads: a bad safe set fails in a second, not after the main answers.
    lookalike = settings.lookalike
    sets = {
        "safe": load_lookalike(lookalike, settings.lookalike_per_category) if lookalike is not None else None,
        "plain": load_plain(settings.plain_prompts, settings.plain_lookalike, settings.plain)
        if settings.plain
        else None,
    }
    models = {"baseline": baseline, "judge": judge, "pm": pm_, "others": others}
    with Backends(backend, quiet=quiet) as backends:
        summary, samples, safe_samples, plain_samples = evaluate_specs(
            backends, policy, items, c, settings, **models, **sets, prompts_ref=prompts, seed=run.seed, quiet=quiet
        )
    summary["prompts"] = prompts
    if out is not None:
        write_policy_eval(out, summary, samples, safe_samples, plain_samples)
    _show(summary, samples, out, show, as_json, safe=safe_samples is not None, plain=plain_samples is not None)


def _named_models(also: list[str], baseline: str | None) -> dict[str, str]:
    """``--also NAME=SPEC`` values as {name: spec}; a one-line error for a malformed one."""
    out: dict[str, str] = {}
    for value in also:
        name, sep, spec = value.partition("=")
        name = name.strip()
        if not sep or not name or not spec.strip():
            die(option_error("--also", "give NAME=SPEC (e.g. sft=runs/quickstart/sft/model)", value=value))
        if name in ("policy", "baseline") or name in out:
            die(option_error("--also", f"the name {name!r} is taken; pick another", value=value))
        out[name] = spec.strip()
    if out and baseline is None:
        die(option_error("--also", "needs --baseline (the steps run from it through these to the policy)"))
    return out


def _show(
    summary: dict[str, Any],
    samples: list[dict[str, Any]],
    out: Path | None,
    show: int,
    as_json: bool,
    *,
    safe: bool,
    plain: bool,
) -> None:
    """Print the summary as JSON, or the readable report and where the files went."""
    from cai.stages.evaluate_text import format_policy_report

    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    typer.echo(format_policy_report(summary, samples, show=show))
    if out is not None:
        written = (("samples_safe.jsonl", safe), ("samples_plain.jsonl", plain))
        extra = "".join(f", {out / name}" for name, on in written if on)
        typer.echo(f"wrote {out / 'summary.json'}, {out / 'samples.jsonl'}{extra}")


REPLIES_HELP = (
    'JSONL of your model\'s replies, labelled by hand: one {"reply": ..., "label": "refusal" | "partial" | '
    '"compliance" | "other"} per line (or "refusal": true | false instead of a label); optional id, '
    "prompt, style. Without it: the shipped labelled replies, dev and test splits."
)


def eval_refusals(
    replies: Annotated[Path | None, typer.Option("--replies", "-r", help=REPLIES_HELP)] = None,
    by: Annotated[
        str | None,
        typer.Option(
            "--by", help="Figures per value of this field of the rows too (default: style, where rows have it)."
        ),
    ] = None,
    show: Annotated[int, typer.Option("--show", help="Replies the detector gets wrong to print.")] = 5,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the figures and every miss as JSON.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Score the refusal detector (what `eval policy` counts refusals with) on labelled replies:
    precision, recall of full and of partial refusals, false alarms, per style, and its misses."""
    from cai.io.atomic import write_text_atomic
    from cai.stages.refusal import is_refusal, load_labels
    from cai.stages.refusal_eval import check_replies, format_check, read_labelled_replies

    try:
        if out is not None and out.is_dir():
            raise file_error(out, "--out", "is a folder (give a file name for the JSON)")
        sets = (
            {str(replies): read_labelled_replies(replies)} if replies else {s: load_labels(s) for s in ("dev", "test")}
        )
        for name, rows in sets.items():
            if by is not None and not any(by in r for r in rows):
                fields = sorted({k for r in rows for k in r} - {"reply", "label", "line"})
                raise file_error(name, "--by", f"no row has a field {by!r} (fields: {', '.join(fields) or 'none'})")
    except CaiError as e:
        die(e)
    result = {name: check_replies(rows, is_refusal, by or "style") for name, rows in sets.items()}
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        except (FileExistsError, NotADirectoryError):
            die(file_error(out, "--out", "a file stands where its folder should be"))
        except PermissionError:
            die(file_error(out, "--out", "not allowed to write there (permission denied)"))
        except CaiError as e:
            die(e)
    if as_json:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    for name, r in result.items():
        typer.echo(f"{name if replies else 'shipped labels, ' + name + ' split'}:\n{format_check(r, show)}")
    if out is not None:
        typer.echo(f"wrote {out}")


@settings_command(settings=DecisionSettings, run=Seed, backend=BackendSettings)
def eval_decision(
    settings: DecisionSettings,
    run: Seed,
    backend: BackendSettings,
    pm_: Annotated[str | None, typer.Option("--pm", help="Preference model folder to measure.")] = None,
    judge: Annotated[
        str | None,
        typer.Option("--judge", "-j", help="Judge model spec to measure, asked as `cai label` asks it (--method …)."),
    ] = None,
    pairs: Annotated[
        str, typer.Option("--pairs", help="Refusal-vs-answer pairs (JSONL, data/README.md), or decision-pairs.")
    ] = "decision-pairs",
    constitution: Annotated[
        str, typer.Option("--constitution", "-c", help="Comparison principles for --judge.")
    ] = DEFAULT_CONSTITUTION,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the figures and per-pair margins as JSON.")
    ] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure a reward on the decision it has to teach: on harmful prompts the refusal should win,
    on safe prompts that only sound alarming the answer should. Agreement per side, dev and test."""
    from cai.io.atomic import write_text_atomic
    from cai.stages.decision import format_summary, judge_margins, load_decision_pairs, pm_margins, summarize

    if (pm_ is None) == (judge is None):
        die(option_error("--pm", "give exactly one reward to measure: --pm FOLDER or --judge SPEC"))
    if out is not None and out.is_dir():
        die(file_error(out, "--out", "is a folder (give a file name for the JSON)"))
    items = load_decision_pairs(pairs)
    if pm_ is not None:
        from cai.train.rl_common import PMScorer

        margins = pm_margins(PMScorer.load(pm_), items)
        name = f"PM {pm_}"
    else:
        from cai.constitution.load import load_constitution

        c = load_constitution(constitution)
        with Backends(backend, quiet=quiet) as backends:
            scorer = backends(str(judge), "--judge")
            margins = judge_margins(c, scorer, items, settings, run.seed, settings.batch_size, quiet)
        name = f"judge {judge} ({', '.join(f'{k} {v}' for k, v in settings.as_record().items() if v is not None)})"
    summary = summarize(items, margins, name)
    summary["source"] = pairs
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    typer.echo(json.dumps(summary, indent=2, ensure_ascii=False) if as_json else format_summary(summary))


def register(app: typer.Typer) -> None:
    """Add the `eval` group with `policy`, `refusals` and `decision`."""
    eval_app = typer.Typer(no_args_is_help=True, help="Evaluate trained models.")
    eval_app.command("policy")(eval_policy)
    eval_app.command("refusals")(eval_refusals)
    eval_app.command("decision")(eval_decision)
    app.add_typer(eval_app, name="eval")
