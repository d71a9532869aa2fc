"""Commands of the RLAIF label stage: `label` and `judge-eval`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cai.cli_common import (
    BaseUrlOpt,
    ConcurrencyOpt,
    DeviceOpt,
    DtypeOpt,
    KeyEnvOpt,
    LimitOpt,
    QuietOpt,
    SeedOpt,
    ShardOpt,
    open_backend,
)
from cai.errors import fail

if TYPE_CHECKING:
    from cai.stages.label import JudgeSettings

ConstitutionOpt = Annotated[
    str, typer.Option("--constitution", "-c", help="A path or a shipped name.")
]
JudgeOpt = Annotated[
    str,
    typer.Option(
        "--judge", "-j", help="Judge model spec: embedded, a local path, openai:<model>, fake."
    ),
]
PrinciplesOpt = Annotated[
    str,
    typer.Option(
        "--principles",
        help="one: one sampled per pair (CAI paper); k: mean over --k sampled; all: mean over all.",
    ),
]
KOpt = Annotated[int, typer.Option("--k", help="Principles per pair with --principles k.")]
OrdersOpt = Annotated[
    str,
    typer.Option(
        "--orders",
        help="both: ask with (A,B) and (B,A) and average; one: a seeded coin picks the order.",
    ),
]
CotOpt = Annotated[
    bool, typer.Option("--cot", help="The judge reasons first; P(A) is read after its reasoning.")
]
ClampOpt = Annotated[
    str | None,
    typer.Option(
        "--clamp",
        help="lo,hi bounds for each question's P(first); default 0.4,0.6 with --cot, none without.",
    ),
]
FewshotOpt = Annotated[
    bool,
    typer.Option("--fewshot/--no-fewshot", help="Show the constitution's comparison exemplars."),
]
CotTokensOpt = Annotated[
    int, typer.Option("--cot-max-new-tokens", help="Length limit of the judge's reasoning.")
]


def parse_clamp(text: str | None, cot: bool) -> tuple[float, float] | None:
    if text is None:
        return (0.4, 0.6) if cot else None
    if text.strip().lower() == "none":
        return None
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise fail(
            "--clamp", None, "clamp", f"expected lo,hi such as 0.4,0.6 or none, got {text!r}"
        ) from None
    return lo, hi


def _judge_settings(
    principles: str,
    k: int,
    orders: str,
    cot: bool,
    clamp: str | None,
    fewshot: bool,
    cot_max_new_tokens: int,
) -> JudgeSettings:
    from cai.models.base import GenerationParams
    from cai.stages.label import JudgeSettings, check_judge_settings

    s = JudgeSettings(
        principles=principles,
        k=k,
        orders=orders,
        cot=cot,
        clamp=parse_clamp(clamp, cot),
        fewshot=fewshot,
        cot_params=GenerationParams(max_new_tokens=cot_max_new_tokens, temperature=0.0, top_p=1.0),
    )
    check_judge_settings(s)
    return s


def label(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run folder; rerunning the same command resumes it.")
    ],
    judge: JudgeOpt = "embedded",
    prompts: Annotated[
        str | None, typer.Option("--prompts", "-p", help="Prompts to sample response pairs for.")
    ] = None,
    policy: Annotated[
        str | None, typer.Option("--policy", help="Model spec that samples the responses.")
    ] = None,
    pairs: Annotated[
        str | None,
        typer.Option("--pairs", help="Label these pairs instead of sampling (JSONL/TRL/HH-RLHF)."),
    ] = None,
    constitution: ConstitutionOpt = "harmless",
    responses_per_prompt: Annotated[
        int, typer.Option("--responses-per-prompt", help="K responses per prompt.")
    ] = 2,
    pairing: Annotated[
        str,
        typer.Option(
            "--pairing", help="all: every pair of the K responses; consecutive: (1,2), (3,4)…"
        ),
    ] = "all",
    principles: PrinciplesOpt = "one",
    k: KOpt = 4,
    orders: OrdersOpt = "both",
    cot: CotOpt = False,
    clamp: ClampOpt = None,
    fewshot: FewshotOpt = True,
    cot_max_new_tokens: CotTokensOpt = 128,
    max_failures: Annotated[
        float,
        typer.Option(
            "--max-failures",
            help="Fail (exit 2) when more than this share of questions gives no probabilities.",
        ),
    ] = 0.2,
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
    shard: ShardOpt = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Prompts (or pairs) per work unit.")
    ] = 8,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Policy response length.")
    ] = 160,
    temperature: Annotated[
        float, typer.Option("--temperature", help="Policy sampling temperature.")
    ] = 0.8,
    top_p: Annotated[float, typer.Option("--top-p")] = 0.95,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    concurrency: ConcurrencyOpt = 8,
    quiet: QuietOpt = False,
) -> None:
    """Label response pairs with a judge's soft, position-debiased preferences (RLAIF)."""
    from cai.constitution import load_constitution
    from cai.models.base import GenerationParams
    from cai.records import parse_shard
    from cai.sources import load_prompts
    from cai.stages.label import LabelSettings, run_label
    from cai.stages.pairs import load_pairs

    if (pairs is None) == (prompts is None):
        raise fail("--pairs", None, "pairs", "give either --prompts (with --policy) or --pairs")
    if prompts is not None and policy is None:
        raise fail(
            "--policy", None, "policy", "--prompts needs a --policy model to sample responses"
        )
    if pairs is not None and policy is not None:
        raise fail("--policy", None, "policy", "--pairs are labelled as given; drop --policy")
    if responses_per_prompt < 2:
        raise fail(
            "--responses-per-prompt", None, "responses_per_prompt", "need at least 2 responses"
        )
    if pairing not in ("all", "consecutive"):
        raise fail("--pairing", None, "pairing", "expected all or consecutive")
    js = _judge_settings(principles, k, orders, cot, clamp, fewshot, cot_max_new_tokens)
    c = load_constitution(constitution)
    settings = LabelSettings(
        judge=js,
        responses_per_prompt=responses_per_prompt,
        pairing=pairing,
        seed=seed,
        batch_size=batch_size,
        shard=parse_shard(shard),
        max_failures=max_failures,
        params=GenerationParams(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p
        ),
    )
    items = load_prompts(prompts, limit) if prompts is not None else None
    given = load_pairs(pairs, limit) if pairs is not None else None
    judge_b = open_backend(judge, base_url, api_key_env, dtype, device, concurrency, quiet=quiet)
    # One model serves both roles when they are the same spec: it is loaded once.
    policy_b = (
        None
        if policy is None
        else (
            judge_b
            if policy == judge
            else open_backend(policy, base_url, api_key_env, dtype, device, concurrency, quiet=quiet)
        )
    )
    try:
        summary = run_label(
            c, judge_b, out, settings, prompts=items, policy=policy_b, pairs=given, quiet=quiet
        )
    finally:
        judge_b.close()
        if policy_b is not None and policy_b is not judge_b:
            policy_b.close()
    t, pos = summary["throughput"], summary["position_bias"]
    typer.echo(
        f"{summary['records']} pairs ({summary['exported']} exported, "
        f"{summary['unlabelled']} unlabelled, {summary['errors']} errors, "
        f"{summary['identical']} identical) in {out}; "
        f"order consistency {summary['order_consistency']}, option mass {summary['option_mass']}, "
        f"P(first) {pos['p_first_mean']}; {t['labels_s']} labels/s"
    )


def judge_eval(
    judge: JudgeOpt = "embedded",
    pairs: Annotated[
        str,
        typer.Option(
            "--pairs", help="Human-labelled pairs: TRL preference JSONL, HH-RLHF, or judge-dev."
        ),
    ] = "judge-dev",
    constitution: ConstitutionOpt = "harmless",
    principles: PrinciplesOpt = "one",
    k: KOpt = 4,
    orders: OrdersOpt = "both",
    cot: CotOpt = False,
    clamp: ClampOpt = None,
    fewshot: FewshotOpt = True,
    cot_max_new_tokens: CotTokensOpt = 128,
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per backend call.")] = 16,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for summary.json and judgements.jsonl."),
    ] = None,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    concurrency: ConcurrencyOpt = 8,
    quiet: QuietOpt = False,
) -> None:
    """Measure a judge against human-labelled pairs: agreement, position bias, calibration."""
    from cai.constitution import load_constitution
    from cai.stages.judge_eval import evaluate_judge, format_report, print_warnings, write_eval
    from cai.stages.pairs import load_pairs

    js = _judge_settings(principles, k, orders, cot, clamp, fewshot, cot_max_new_tokens)
    c = load_constitution(constitution)
    items = load_pairs(pairs, limit)
    if not any(p.human for p in items):
        raise fail(pairs, None, "chosen", "judge-eval needs human-labelled pairs (chosen/rejected)")
    backend = open_backend(judge, base_url, api_key_env, dtype, device, concurrency, quiet=quiet)
    try:
        summary, judged = evaluate_judge(
            c, backend, items, js, seed=seed, batch_size=batch_size, quiet=quiet
        )
    finally:
        backend.close()
    typer.echo(format_report(summary))
    if out is not None:
        write_eval(out, summary, judged)
        typer.echo(f"wrote {out / 'summary.json'}")
    print_warnings(summary["warnings"])


def register(app: typer.Typer) -> None:
    app.command()(label)
    app.command("judge-eval")(judge_eval)
