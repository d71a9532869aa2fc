"""`cai train pm`, `cai train ppo` and `cai eval policy`: thin calls into `cai.train` / stages.

torch/transformers/TRL are imported inside the commands. Training commands run unchanged under
`accelerate launch` (only the main process prints). `register_train` adds the two training
commands to the existing `train` group; `register` adds the `eval` group. ``python -m
cai.cli_rl …`` runs these commands on their own (same functions, same options).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cai.cli_common import (
    BaseUrlOpt,
    ConcurrencyOpt,
    DeviceOpt,
    DtypeOpt,
    KeyEnvOpt,
    LimitOpt,
)
from cai.errors import fail

OutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Folder for the trained model (new or empty).")
]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak learning rate (linear decay).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for data order, init and sampling.")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace a model already in --out.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or log chatter.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
ReportToOpt = Annotated[
    str,
    typer.Option(
        "--report-to", help="Also log to: none, tensorboard, trackio, wandb (metrics.jsonl always)."
    ),
]

# train pm
DataOpt = Annotated[
    list[str],
    typer.Option(
        "--data",
        "-d",
        help="Label run folder (`cai label --out`), saved dataset or preference "
        "JSONL (TRL format with p_chosen). Repeat to combine.",
    ),
]
PMModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Base model; use the policy (SL-CAI model) so the PM shares its tokenizer.",
    ),
]
HumanOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--human", help="Human preference pairs (TRL or HH-RLHF), mixed in as hard labels (p = 1)."
    ),
]
EvalFilesOpt = Annotated[
    list[str] | None,
    typer.Option("--eval", help="Held-out pairs (human files accepted): accuracy before/after."),
]
LabelsOpt = Annotated[
    str,
    typer.Option(
        "--labels", help="soft: cross-entropy on p_chosen; hard: TRL's -logsigmoid(r_c - r_r)."
    ),
]
EpochsOpt = Annotated[
    float, typer.Option("--epochs", help="Passes over the data (ignored with --max-steps).")
]
PairsBatchOpt = Annotated[int, typer.Option("--batch-size", help="Pairs per device per step.")]
AccumOpt = Annotated[int, typer.Option("--grad-accum", help="Gradient accumulation steps.")]
MaxLenOpt = Annotated[
    int,
    typer.Option("--max-length", help="Tokens per side; longer pairs are dropped (and counted)."),
]
MaxStepsOpt = Annotated[
    int, typer.Option("--max-steps", help="Stop after N optimiser steps (-1: use --epochs).")
]

# train ppo
PolicyOpt = Annotated[
    str,
    typer.Option(
        "--policy", help="Policy to optimise (the SL-CAI model): embedded, a model folder, hub id."
    ),
]
PMOpt = Annotated[
    str,
    typer.Option(
        "--pm",
        help="Preference model folder (`cai train pm --out`); shares the policy's tokenizer.",
    ),
]
TrainPromptsOpt = Annotated[
    str,
    typer.Option(
        "--prompts",
        "-p",
        help="Training prompts: a file, datasets folder or shipped set (red-team, helpful).",
    ),
]
AlgorithmOpt = Annotated[
    str,
    typer.Option(
        "--algorithm", help="ppo (TRL experimental PPO), rloo or grpo (TRL's maintained trainers)."
    ),
]
KlOpt = Annotated[
    float,
    typer.Option(
        "--kl-coef", help="λ in r = r_PM − λ·KL(policy ‖ reference) (beta for RLOO/GRPO)."
    ),
]
EpisodesOpt = Annotated[
    int, typer.Option("--total-episodes", help="Completions sampled over the whole run.")
]
RolloutBatchOpt = Annotated[
    int, typer.Option("--batch-size", help="Rollouts per update per device.")
]
MiniBatchOpt = Annotated[
    int, typer.Option("--mini-batch", help="PPO: rows per optimiser step (divides --batch-size).")
]
PPOEpochsOpt = Annotated[
    int, typer.Option("--ppo-epochs", help="PPO: passes over each rollout batch.")
]
GenerationsOpt = Annotated[
    int, typer.Option("--num-generations", help="RLOO/GRPO: completions per prompt (group size).")
]
ResponseLenOpt = Annotated[int, typer.Option("--response-length", help="Max new tokens per reply.")]
TemperatureOpt = Annotated[
    float, typer.Option("--temperature", help="Sampling temperature of the rollouts (> 0).")
]
EosPenaltyOpt = Annotated[
    float,
    typer.Option(
        "--missing-eos-penalty",
        help="Subtracted from the PM score of replies cut off before EOS (0: none).",
    ),
]
PromptLenOpt = Annotated[
    int, typer.Option("--max-prompt-length", help="Prompts longer than this (tokens) are skipped.")
]

# eval policy
EvalPolicyOpt = Annotated[
    str, typer.Option("--policy", help="Model spec of the policy to evaluate.")
]
EvalPromptsOpt = Annotated[
    str,
    typer.Option(
        "--prompts", "-p", help="Held-out prompts (file, datasets folder or shipped set)."
    ),
]
JudgeOpt = Annotated[
    str,
    typer.Option(
        "--judge", "-j", help="Judge model spec for the win rates (used with --baseline)."
    ),
]
BaselineOpt = Annotated[
    str | None, typer.Option("--baseline", help="Model to compare against (e.g. the SL-CAI model).")
]
EvalPMOpt = Annotated[
    str | None,
    typer.Option("--pm", help="Preference model folder: mean PM reward of each model's answers."),
]
ConstitutionOpt = Annotated[
    str, typer.Option("--constitution", "-c", help="Comparison principles for the win rates.")
]
PrinciplesOpt = Annotated[
    str,
    typer.Option(
        "--principles", help="Per comparison: all (default), one, or k sampled principles."
    ),
]
KOpt = Annotated[int, typer.Option("--k", help="Principles per comparison with --principles k.")]
OrdersOpt = Annotated[
    str, typer.Option("--orders", help="both (default): ask in both orders and average; one.")
]
NewTokensOpt = Annotated[int, typer.Option("--max-new-tokens", help="Answer length.")]
GenBatchOpt = Annotated[
    int, typer.Option("--batch-size", help="Prompts per generation call, pairs per judge call.")
]
EvalOutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="Folder for summary.json and samples.jsonl.")
]
ShowOpt = Annotated[int, typer.Option("--show", help="Samples to print.")]
AnswerTempOpt = Annotated[
    float, typer.Option("--temperature", help="Answer sampling temperature (0: greedy).")
]


def _echo_summary(summary: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    from cai.train.common import is_main_process

    if not is_main_process():
        return
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        for line in lines:
            typer.echo(line)


def _f(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def pm(
    data: DataOpt,
    out: OutOpt,
    model: PMModelOpt = "embedded",
    human: HumanOpt = None,
    eval_: EvalFilesOpt = None,
    labels: LabelsOpt = "soft",
    epochs: EpochsOpt = 1.0,
    lr: LrOpt = 1e-5,
    batch_size: PairsBatchOpt = 4,
    grad_accum: AccumOpt = 1,
    max_length: MaxLenOpt = 512,
    max_steps: MaxStepsOpt = -1,
    seed: SeedOpt = 0,
    report_to: ReportToOpt = "none",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a preference model on AI labels (TRL RewardTrainer), optionally with human pairs."""
    from cai.train.pm import train_pm

    s = train_pm(
        data,
        model,
        str(out),
        human=human,
        eval_files=eval_,
        labels=labels,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_length=max_length,
        max_steps=max_steps,
        seed=seed,
        quiet=quiet,
        overwrite=overwrite,
        report_to=report_to,
    )
    rows = s["rows"]
    lines = [
        f"trained {s['steps']} steps on {rows['train']} pairs ({rows['ai']} AI, "
        f"{rows['human']} human; {labels} labels) → {s['out']}",
        f"train loss {_f(s['train_loss_first'])} → {_f(s['train_loss_last'])}",
    ]
    if rows["eval"]:
        lines.append(
            f"held-out accuracy {_f(s['eval_accuracy_before'])} → "
            f"{_f(s['eval_accuracy_after'])} on {rows['eval']} pairs"
        )
    if rows["eval_overlap_with_train"]:
        lines.append(
            f"warning: {rows['eval_overlap_with_train']} --eval pairs are also "
            "training pairs; that accuracy is not held-out"
        )
    if rows["dropped_too_long"]:
        lines.append(f"dropped {rows['dropped_too_long']} pairs longer than --max-length")
    _echo_summary(s, as_json, lines)


def ppo(
    policy: PolicyOpt,
    pm_: PMOpt,
    prompts: TrainPromptsOpt,
    out: OutOpt,
    algorithm: AlgorithmOpt = "ppo",
    kl_coef: KlOpt = 0.05,
    total_episodes: EpisodesOpt = 64,
    batch_size: RolloutBatchOpt = 8,
    mini_batch: MiniBatchOpt = 4,
    ppo_epochs: PPOEpochsOpt = 4,
    num_generations: GenerationsOpt = 4,
    response_length: ResponseLenOpt = 64,
    temperature: TemperatureOpt = 0.7,
    missing_eos_penalty: EosPenaltyOpt = 1.0,
    max_prompt_length: PromptLenOpt = 256,
    limit: LimitOpt = None,
    lr: LrOpt = 3e-6,
    seed: SeedOpt = 0,
    report_to: ReportToOpt = "none",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """RL against the PM: TRL's PPO with r = r_PM − λ·KL (or RLOO / GRPO)."""
    from cai.train.rl import train_rl

    s = train_rl(
        policy,
        pm_,
        prompts,
        str(out),
        algorithm=algorithm,
        kl_coef=kl_coef,
        total_episodes=total_episodes,
        batch_size=batch_size,
        mini_batch=mini_batch,
        response_length=response_length,
        lr=lr,
        seed=seed,
        missing_eos_penalty=missing_eos_penalty or None,
        ppo_epochs=ppo_epochs,
        num_generations=num_generations,
        temperature=temperature,
        max_prompt_length=max_prompt_length,
        limit=limit,
        quiet=quiet,
        overwrite=overwrite,
        report_to=report_to,
    )
    lines = [
        f"{algorithm}: {s['updates']} updates → {s['out']}",
        f"PM reward {_f(s['reward_first'])} → {_f(s['reward_last'])}; KL ({s['kl_unit']}) "
        f"{_f(s['kl_last'])}; entropy {_f(s['entropy_last'])}",
    ]
    if s["params_changed"] is False:
        lines.append("warning: no parameter changed (learning rate 0?)")
    _echo_summary(s, as_json, lines)


def eval_policy(
    policy: EvalPolicyOpt,
    prompts: EvalPromptsOpt,
    judge: JudgeOpt = "embedded",
    baseline: BaselineOpt = None,
    pm_: EvalPMOpt = None,
    constitution: ConstitutionOpt = "harmless",
    principles: PrinciplesOpt = "all",
    k: KOpt = 4,
    orders: OrdersOpt = "both",
    limit: LimitOpt = None,
    max_new_tokens: NewTokensOpt = 128,
    temperature: AnswerTempOpt = 0.7,
    seed: SeedOpt = 0,
    batch_size: GenBatchOpt = 16,
    out: EvalOutOpt = None,
    show: ShowOpt = 5,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    concurrency: ConcurrencyOpt = 8,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a policy: PM reward, judge win rates (harmless, helpful), refusal rate, samples."""
    from cai.cli_common import open_backend
    from cai.constitution import load_constitution
    from cai.models.base import GenerationParams
    from cai.sources import load_prompts
    from cai.stages.evaluate import (
        EvalSettings,
        evaluate_policy,
        format_policy_report,
        write_policy_eval,
    )
    from cai.stages.label import JudgeSettings, check_judge_settings

    js = JudgeSettings(principles=principles, k=k, orders=orders)
    check_judge_settings(js)
    if max_new_tokens < 1:
        raise fail("--max-new-tokens", None, "", "must be at least 1")
    c = load_constitution(constitution)
    items = load_prompts(prompts, limit)
    settings = EvalSettings(
        params=GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=1.0),
        judge=js,
        seed=seed,
        batch_size=batch_size,
    )
    scorer = None
    if pm_ is not None:
        from cai.train.common import quiet_libraries
        from cai.train.rl_common import PMScorer

        with quiet_libraries(quiet):
            scorer = PMScorer.load(pm_)
    opened: dict[str, Any] = {}

    def backend(spec: str) -> Any:  # one backend per distinct spec: a shared model loads once
        if spec not in opened:
            opened[spec] = open_backend(spec, base_url, api_key_env, dtype, device, concurrency, quiet=quiet)
        return opened[spec]

    try:
        pol = backend(policy)
        base = backend(baseline) if baseline is not None else None
        jud = backend(judge) if baseline is not None else None
        summary, samples = evaluate_policy(
            pol, items, c, baseline=base, judge=jud, scorer=scorer, settings=settings, quiet=quiet
        )
    finally:
        for b in opened.values():
            b.close()
    summary["prompts"] = prompts
    summary["pm"] = pm_
    if out is not None:
        write_policy_eval(out, summary, samples)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        typer.echo(format_policy_report(summary, samples, show=show))
        if out is not None:
            typer.echo(f"wrote {out / 'summary.json'} and {out / 'samples.jsonl'}")


def register_train(train_app: typer.Typer) -> None:
    """Add `pm` and `ppo` to the existing `train` group (built in `cai.cli_train`)."""
    train_app.command("pm")(pm)
    train_app.command("ppo")(ppo)


def register(app: typer.Typer) -> None:
    """Add the `eval` group with `policy`."""
    eval_app = typer.Typer(no_args_is_help=True, help="Evaluate trained models.")
    eval_app.command("policy")(eval_policy)
    app.add_typer(eval_app, name="eval")


def main(argv: list[str] | None = None) -> None:
    """``python -m cai.cli_rl train pm|ppo …`` / ``eval policy …`` without the full `cai` app."""
    import sys

    from cai.errors import CaiError

    app = typer.Typer(
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        help="cai PM / RL / policy evaluation.",
    )
    train_app = typer.Typer(no_args_is_help=True, help="Train models with TRL.")
    register_train(train_app)
    app.add_typer(train_app, name="train")
    register(app)
    try:
        app(args=argv, prog_name="cai", standalone_mode=True)
    except CaiError as e:
        for p in e.problems:
            print(str(p), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
