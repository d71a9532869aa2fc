"""`cai train sft|pm|dpo|ppo`: training commands, each a thin call into `cai.train`.

Every setting comes from `cai.train.settings` (the recipe's sections are the same models).
torch/transformers/TRL are imported inside the commands, so `cai --help` stays fast. Every
command also runs under `accelerate launch` (e.g. ``accelerate launch --config_file
accelerate/ddp.yaml -m cai.cli train sft …``); only the main process prints the summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cai.cli.options import ConstitutionOpt, check_out, settings_command
from cai.models.settings import DEFAULT_MODEL, BackendSettings
from cai.paths import DEFAULT_CONSTITUTION
from cai.stages.settings import Seed, Window
from cai.train.settings import DpoSettings, PmSettings, RlSettings, SftSettings

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for the trained model (new or empty).")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace a model already in --out (its folder is emptied first).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or log chatter.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


def _f(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _echo_summary(summary: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    from cai.train.common import is_main_process

    if not is_main_process():
        return
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    for line in lines:
        typer.echo(line, err=line.startswith("warning:"))


@settings_command(settings=SftSettings, run=Seed)
def sft(
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            "-d",
            help="SL-CAI output folder (its dataset/ or sft.jsonl), a saved dataset, or a JSONL file of "
            "`messages` rows. Repeat to combine.",
        ),
    ],
    out: OutOpt,
    settings: SftSettings,
    run: Seed,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Base model: embedded, a model folder or hub id.")
    ] = DEFAULT_MODEL,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Supervised fine-tuning on SL-CAI revisions (TRL SFTTrainer); loss on the answers only."""
    from cai.train.sft import train_sft

    check_out(out, inputs={"--data": data})
    s = train_sft(data, model, str(out), settings, seed=run.seed, quiet=quiet, overwrite=overwrite)
    rows, steps = s["rows"], s["steps"]
    lines = [
        f"trained {steps} step{'s' * (steps != 1)} on {rows['train']} rows ({rows['helpful']} helpful) → {s['out']}",
        f"train loss {_f(s['train_loss_first'])} → {_f(s['train_loss_last'])}",
    ]
    if s["eval_loss_before"] is not None:
        lines.append(
            f"eval loss {_f(s['eval_loss_before'])} → {_f(s['eval_loss_after'])} on {rows['eval']} held-out rows"
        )
    if rows["skipped_empty_answer"]:
        lines.append(f"skipped {rows['skipped_empty_answer']} rows with an empty answer")
    if rows["dropped_too_long"]:
        lines.append(f"dropped {rows['dropped_too_long']} rows whose prompt exceeds --max-length")
    if s["params_changed"] is False:
        lines.append("warning: no parameter changed (learning rate 0 or no trainable tokens?)")
    _echo_summary(s, as_json, lines)


@settings_command(settings=PmSettings, run=Seed)
def pm(
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            "-d",
            help="Label run folder (`cai label --out`), saved dataset or preference JSONL (TRL format with "
            "p_chosen). Repeat to combine.",
        ),
    ],
    out: OutOpt,
    settings: PmSettings,
    run: Seed,
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="Base model; use the policy (SL-CAI model) so the PM shares its tokenizer."),
    ] = DEFAULT_MODEL,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a preference model on AI labels (TRL RewardTrainer), optionally with human pairs."""
    from cai.stages.decision import pm_check
    from cai.train.pm import train_pm

    check_out(out, inputs={"--data": data})
    s = train_pm(data, model, str(out), settings, seed=run.seed, quiet=quiet, overwrite=overwrite, decision=pm_check)
    rows = s["rows"]
    lines = [
        f"trained {s['steps']} steps on {rows['train']} pairs ({rows['ai']} AI, "
        f"{rows['human']} human; {settings.labels} labels) → {s['out']}",
        f"train loss {_f(s['train_loss_first'])} → {_f(s['train_loss_last'])}",
    ]
    if rows["eval"]:
        lines.append(
            f"held-out accuracy {_f(s['eval_accuracy_before'])} → {_f(s['eval_accuracy_after'])} "
            f"on {rows['eval']} pairs"
        )
    if rows["eval_overlap_with_train"]:
        lines.append(
            f"warning: {rows['eval_overlap_with_train']} --eval pairs are also training pairs; "
            "that accuracy is not held-out"
        )
    if rows["dropped_too_long"]:
        lines.append(f"dropped {rows['dropped_too_long']} pairs longer than --max-length")
    _echo_summary(s, as_json, lines)


def _lora_line(settings: Any) -> list[str]:
    if not settings.lora:
        return []
    saved = "merged into the base" if settings.lora_merge else "adapter only (load it with peft)"
    return [f"LoRA r={settings.lora_r}: {saved}"]


@settings_command(settings=DpoSettings, run=Seed)
def dpo(
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            "-d",
            help="Label run folder (`cai label --out`), saved dataset or preference JSONL (TRL format with "
            "p_chosen). Repeat to combine.",
        ),
    ],
    out: OutOpt,
    settings: DpoSettings,
    run: Seed,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Policy to train (the SL-CAI model); also the DPO reference.")
    ] = DEFAULT_MODEL,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """DPO on AI labels (TRL DPOTrainer) in place of pm + ppo; soft labels by default."""
    from cai.train.dpo import train_dpo

    check_out(out, inputs={"--data": data})
    s = train_dpo(data, model, str(out), settings, seed=run.seed, quiet=quiet, overwrite=overwrite)
    rows = s["rows"]
    lines = [
        f"trained {s['steps']} steps on {rows['train']} pairs ({rows['ai']} AI, "
        f"{rows['human']} human; {settings.labels} labels, beta {settings.beta}) → {s['out']}",
        f"train loss {_f(s['train_loss_first'])} → {_f(s['train_loss_last'])}; "
        f"reward accuracy {_f(s['train_reward_accuracy_last'])}",
        *_lora_line(settings),
    ]
    if rows["eval"]:
        lines.append(
            f"held-out reward accuracy {_f(s['eval_accuracy'])}, margin {_f(s['eval_reward_margin'])} "
            f"on {rows['eval']} pairs"
        )
    if rows["eval_overlap_with_train"]:
        lines.append(
            f"warning: {rows['eval_overlap_with_train']} --eval pairs are also training pairs; "
            "that accuracy is not held-out"
        )
    if rows["dropped_prompt_too_long"]:
        lines.append(f"dropped {rows['dropped_prompt_too_long']} pairs whose prompt exceeds --max-length")
    if rows["truncated"]:
        lines.append(f"cut {rows['truncated']} pairs' answers at --max-length")
    if s["params_changed"] is False:
        lines.append("warning: no parameter changed (learning rate 0?)")
    _echo_summary(s, as_json, lines)


# `cai train ppo`'s reward inputs: which one is needed follows from --reward.
RlPmOpt = Annotated[
    str | None,
    typer.Option(
        "--pm", help="Preference model folder (`cai train pm --out`) for reward pm; shares the policy's tokenizer."
    ),
]
DemoPmOpt = Annotated[
    str | None,
    typer.Option(
        "--demo-pm",
        help="For reward demo-pm: a PM trained on demonstration pairs (`cai demo-pairs`, then `cai train pm`).",
    ),
]
DirectJudgeOpt = Annotated[
    str, typer.Option("--judge", "-j", help="For reward direct: the judge that scores replies (model spec).")
]


@settings_command(settings=RlSettings, window=Window, run=Seed, backend=BackendSettings)
def ppo(
    policy: Annotated[
        str, typer.Option("--policy", help="Policy to optimise (the SL-CAI model): embedded, a model folder, hub id.")
    ],
    prompts: Annotated[
        str,
        typer.Option(
            "--prompts", "-p", help="Training prompts: a file, datasets folder or shipped set (red-team, helpful)."
        ),
    ],
    out: OutOpt,
    settings: RlSettings,
    window: Window,
    run: Seed,
    backend: BackendSettings,
    pm_: RlPmOpt = None,
    demo_pm: DemoPmOpt = None,
    judge: DirectJudgeOpt = DEFAULT_MODEL,
    constitution: ConstitutionOpt = DEFAULT_CONSTITUTION,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """RL with a KL penalty to the reference: TRL's RLOO (default), GRPO, or PPO (TRL <= 1.12), rewarded
    by the PM, the judge directly, a demonstration PM, or a weighted sum (--reward)."""
    from cai.io.sources import load_prompts
    from cai.models.settings import Backends
    from cai.stages.refusal import is_refusal
    from cai.train.rl import train_rl

    check_out(out, inputs={"--prompts": prompts, "--pm": pm_, "--demo-pm": demo_pm})
    items = window.apply(load_prompts(prompts))
    direct = settings.needs_judge
    if direct:
        from cai.constitution.load import load_constitution
        from cai.stages.direct_reward import DirectReward
    c = load_constitution(constitution) if direct else None
    with Backends(backend, quiet=quiet) as backends:
        s = train_rl(
            policy,
            pm_,
            items,
            str(out),
            settings,
            seed=run.seed,
            source=prompts,
            quiet=quiet,
            overwrite=overwrite,
            demo_pm=demo_pm,
            direct=DirectReward.build(c, backends(judge, "--judge"), settings) if c is not None else None,
            refusal=is_refusal,
        )
    _echo_summary(s, as_json, _rl_lines(s, settings))


def _rl_lines(s: dict[str, Any], settings: RlSettings) -> list[str]:
    """`cai train ppo`'s summary as a person reads it."""
    parts = ", ".join(f"{w:g} x {name}" for name, w in settings.reward.items())
    lines = [
        f"{settings.algorithm}: {s['updates']} updates → {s['out']}",
        f"reward ({parts}) {_f(s['reward_first'])} → {_f(s['reward_last'])}; KL ({s['kl_unit']}) "
        f"{_f(s['kl_last'])}; entropy {_f(s['entropy_last'])}",
    ]
    if settings.helpful_ratio > 0:
        p = s["prompts"]
        lines.append(f"helpful prompts mixed in: {p['helpful']} of {p['loaded']} ({_f(p['helpful_share'])})")
    if s["params_changed"] is False:
        lines.append("warning: no parameter changed (learning rate 0?)")
    monitor = s.get("monitor") or {}
    if monitor.get("warnings"):
        stopped = f"; stopped at update {monitor['stopped_at']}" if monitor.get("stopped_at") is not None else ""
        count = len(monitor["warnings"])
        lines.append(f"warning: the collapse monitor warned {count} times{stopped} (see cai_train.json)")
    return lines


def register(app: typer.Typer) -> None:
    """Add the `train` group: sft (SL-CAI), pm and ppo (RL-CAI), or dpo in place of pm + ppo."""
    train_app = typer.Typer(
        no_args_is_help=True, help="Train models with TRL: sft (SL-CAI), pm, ppo (RL-CAI), or dpo instead of pm+ppo."
    )
    train_app.command("sft")(sft)
    train_app.command("pm")(pm)
    train_app.command("dpo")(dpo)
    train_app.command("ppo")(ppo)
    app.add_typer(train_app, name="train")
