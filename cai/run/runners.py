"""What each built-in stage does inside `cai run`: its recipe section in, its summary out.

A runner takes the run's context, the stage's recipe section and the stage's folder, calls the
stage's own code (the same that its command runs) and returns the stage's summary. The stage
registry (`cai.run.registry`) says which runner belongs to which stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cai.constitution.model import Constitution
from cai.errors import option_error
from cai.io.store import content_hash
from cai.run.context import RunContext, settings_of
from cai.stages.settings import CritiqueSettings, EvalSettings, LabelSettings, Window
from cai.train.settings import DpoSettings, PmSettings, RlSettings, SftSettings


def critique_stage(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    from cai.stages.critique import run_critique

    with ctx.backends() as backends:
        backend = backends(
            cfg.model or ctx.recipe.models.policy, "models.policy" if cfg.model is None else "stages.critique.model"
        )
        settings = settings_of(cfg, CritiqueSettings)
        return run_critique(ctx.constitution, ctx.prompts(cfg), backend, out, settings, seed=ctx.seed, quiet=ctx.quiet)


def sft_stage(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    from cai.train.sft import train_sft

    settings = settings_of(cfg, SftSettings).model_copy(update={"helpful": [ctx.local(h) for h in cfg.helpful]})
    return train_sft(
        [str(ctx.dirs["critique"])],
        ctx.recipe.models.policy,
        str(out / "model"),
        settings,
        seed=ctx.seed,
        quiet=ctx.quiet,
        overwrite=True,
    )


def label_stage(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    from cai.stages.label import label_pairs, label_prompts, revision_pairs

    settings = settings_of(cfg, LabelSettings)
    with ctx.backends() as backends:
        judge = backends(ctx.recipe.models.judge, "models.judge") if settings.needs_judge else None
        if settings.method == "revision":  # the SL-CAI stage's own pairs: revision over first answer
            if "critique" not in ctx.dirs:
                raise option_error("stages.label.method", "revision needs the recipe's critique stage")
            pairs = settings_of(cfg, Window).apply(revision_pairs(ctx.dirs["critique"]))
            return label_pairs(ctx.constitution, judge, pairs, out, settings, seed=ctx.seed, quiet=ctx.quiet)
        policy = backends(ctx.policy_spec(), "models.policy")
        return label_prompts(
            ctx.constitution, judge, policy, ctx.prompts(cfg), out, settings, seed=ctx.seed, quiet=ctx.quiet
        )


def _preference_stage(ctx: RunContext, cfg: Any, out: Path, kind: str, data: Path | None = None) -> dict[str, Any]:
    """pm or dpo: trained from the SL-CAI policy on the label run's pairs (or `data`), with the
    section's human and held-out pairs, relative to the recipe. The PM starts from the policy so
    that it shares the policy's tokenizer (TRL's PPO feeds the policy's token ids to the reward
    and value models); DPO uses it as its reference too. A PM is scored on the refusal-vs-answer
    yardstick after training."""
    from cai.models.spec import resolve_model_path

    extra: dict[str, Any] = {}
    if kind == "pm":
        from cai.stages.decision import pm_check
        from cai.train.pm import train_pm as train

        extra["decision"] = pm_check
    else:
        from cai.train.dpo import train_dpo as train
    base = resolve_model_path(ctx.policy_spec(), quiet=ctx.quiet)
    local = {"human": [ctx.local(h) for h in cfg.human], "eval": [ctx.local(e) for e in cfg.eval]}
    settings = settings_of(cfg, PmSettings if kind == "pm" else DpoSettings).model_copy(update=local)
    source = data if data is not None else ctx.dirs["label"]
    return train(
        [str(source)], base, str(out / "model"), settings, seed=ctx.seed, quiet=ctx.quiet, overwrite=True, **extra
    )


def pm_stage(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    return _preference_stage(ctx, cfg, out, "pm")


def dpo_stage(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    """DPO in place of pm + ppo: the SL-CAI policy (also the reference) on the label run's pairs."""
    return _preference_stage(ctx, cfg, out, "dpo")


def demo_pm_stage(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    """The demo-pm reward's PM: the SL-CAI policy answers the demonstrations' prompts (pairs in
    ``pairs/``), then a PM is trained from the policy on those pairs (as the pm stage does)."""
    from cai.stages.demo_pairs import build_demo_pairs
    from cai.stages.settings import DemoPairsSettings

    with ctx.backends() as backends:
        policy = backends(ctx.policy_spec(), "models.policy")
        build_demo_pairs(ctx.constitution, policy, out / "pairs", settings_of(cfg, DemoPairsSettings), seed=ctx.seed)
    return _preference_stage(ctx, cfg, out, "pm", data=out / "pairs")


def ppo_stage(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    """RL from the SL-CAI policy with the rewards the section names: the pm and demo_pm stages'
    PMs, and the recipe's judge for direct."""
    from cai.models.spec import resolve_model_path
    from cai.stages.direct_reward import DirectReward
    from cai.stages.refusal import is_refusal
    from cai.train.rl import train_rl

    policy = resolve_model_path(ctx.policy_spec(), quiet=ctx.quiet)
    settings = settings_of(cfg, RlSettings)
    settings = settings.model_copy(
        update={
            "helpful_prompts": ctx.local(settings.helpful_prompts),
            "monitor_safe": [ctx.local(r) for r in settings.monitor_safe],
        }
    )
    with ctx.backends() as backends:
        direct = settings.needs_judge
        return train_rl(
            policy,
            str(ctx.model_dir("pm")) if "pm" in settings.reward else None,
            ctx.prompts(cfg),
            str(out / "model"),
            settings,
            seed=ctx.seed,
            source=cfg.prompts,
            quiet=ctx.quiet,
            overwrite=True,
            demo_pm=str(ctx.model_dir("demo_pm")) if "demo-pm" in settings.reward else None,
            direct=DirectReward.build(ctx.constitution, backends(ctx.recipe.models.judge, "models.judge"), settings)
            if direct
            else None,
            log=lambda line: ctx.log(f"ppo: {line}"),  # the collapse monitor's checks and warnings
            refusal=is_refusal,
        )


def eval_stage(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    """The final policy against the model it started from, on prompts no stage trained on."""
    from cai.stages.evaluate import evaluate_specs, write_policy_eval
    from cai.stages.harmless import load_lookalike, load_plain

    m = ctx.recipe.models
    s = settings_of(cfg, EvalSettings)
    prompts = ctx.prompts(cfg)
    safe = (
        load_lookalike(ctx.local(s.lookalike), s.lookalike_per_category, "stages.eval.lookalike")
        if s.lookalike is not None
        else None
    )
    plain = (
        load_plain(
            ctx.local(s.plain_prompts),
            ctx.local(s.plain_lookalike),
            s.plain,
            ("stages.eval.plain_prompts", "stages.eval.plain_lookalike"),
        )
        if s.plain
        else None
    )
    with ctx.backends() as backends:
        summary, samples, safe_samples, plain_samples = evaluate_specs(
            backends,
            ctx.final_policy_spec(),
            prompts,
            ctx.constitution,
            s,
            baseline=m.policy,
            others=ctx.earlier_policies() if cfg.pareto else None,
            judge=m.judge,
            pm=str(ctx.model_dir("pm")) if "pm" in ctx.dirs else None,
            safe=safe,
            plain=plain,
            prompts_ref=cfg.prompts,
            seed=ctx.seed,
            quiet=ctx.quiet,
            named_by=("models.policy", "models.policy", "models.judge"),
            others_named_by="stages.eval.pareto",
        )
    write_policy_eval(out, summary, samples, safe_samples, plain_samples)
    return summary


def critique_key_extra(section: Any, c: Constitution) -> str | None:
    """Inputs of the critique stage that the constitution's fingerprint leaves out: distill mode's
    guidance template is found by name, not through the constitution's `templates:`, so editing it
    must still rerun the stage."""
    if getattr(section, "mode", None) == "distill":
        from cai.stages.messages import distill_guidance

        return content_hash(distill_guidance(c))
    return None


def critique_check(section: Any, c: Constitution) -> None:
    """Before the run folder exists: every critique and revision prompt renders."""
    from cai.stages.preflight import check_critique

    check_critique(c, section.mode)


def label_check(section: Any, c: Constitution) -> None:
    """Before the run folder exists: every question the judge will be asked renders."""
    from cai.stages.preflight import check_judge

    settings = settings_of(section, LabelSettings)
    if settings.needs_judge:
        check_judge(c, settings.judge)


def eval_check(section: Any, c: Constitution) -> None:
    """Before the run folder exists: with win rates on, the judge's questions render."""
    from cai.stages.preflight import check_judge

    settings = settings_of(section, EvalSettings)
    if settings.win_rates:
        check_judge(c, settings.judge)
