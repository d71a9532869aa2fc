"""Does a short PPO run raise the PM reward on held-out prompts, with the KL kept bounded?

    .venv/bin/python benchmarks/ppo_reward.py [--pm-steps 16] [--episodes 64] [--threads 1]

1. PM: the embedded model with a fresh head, trained (`cai.train.pm.train_pm`) on the human
   pairs of data/judge_dev.jsonl (every 5th pair held out for its accuracy).
2. Held-out prompts: the last `--eval-prompts` red-team prompts; PPO trains on the others.
3. Before: the SL model (here the embedded model itself) samples `--samples` replies per
   held-out prompt (temperature as in PPO); the PM scores them where PPO reads its reward.
4. PPO (`cai.train.rl.train_rl`), then the same sampling (same seeds) from the trained policy,
   plus an independent KL(policy ‖ reference) estimate on those samples (k1, summed over each
   reply's tokens, logits at the sampling temperature — the quantity TRL's PPO penalises).

PPO needs TRL <= 1.12 (`pip install 'cai[ppo]'`, the README's PPO stack); `--algorithm rloo|grpo`
runs the same measurement with TRL's maintained trainers on any TRL.

Prints the figures and writes benchmarks/results/ppo_reward.json. Not a test: whatever the
numbers are, they are reported as they came out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import finish, machine

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sample_and_score(
    model: Any,
    ref: Any,
    tok: Any,
    scorer: Any,
    prompts: list[Any],
    n: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
) -> dict[str, Any]:
    """`n` sampled replies per prompt: PM score (PPO's reading), finish rate, KL to `ref`."""
    import torch

    from cai.stages.evaluate import is_refusal
    from cai.train.rl_common import encode_prompt

    eos = tok.eos_token_id
    scores, finished, kls, refusals, examples = [], [], [], [], []
    for i, item in enumerate(prompts):
        ids = encode_prompt(tok, item.messages)
        x = torch.tensor([ids])
        torch.manual_seed(seed + i)
        with torch.no_grad():
            out = model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                num_return_sequences=n,
                eos_token_id=eos,
                pad_token_id=tok.pad_token_id,
            )
        for row in out[:, len(ids) :].tolist():
            reply = row[: row.index(eos) + 1] if eos in row else row
            seq = ids + reply
            scores.append(scorer.score_ids([seq])[0])
            finished.append(bool(reply) and reply[-1] == eos)
            text = tok.decode(reply, skip_special_tokens=True)
            refusals.append(is_refusal(text))
            if ref is not None:
                kls.append(_kl(model, ref, seq, len(ids), temperature))
            if len(examples) < 2 * n:
                examples.append({"prompt": item.text, "reply": text, "pm": round(scores[-1], 3)})
    mean = sum(scores) / len(scores)
    var = sum((s - mean) ** 2 for s in scores) / max(1, len(scores) - 1)
    return {
        "n": len(scores),
        "pm_mean": round(mean, 4),
        "pm_stderr": round((var / len(scores)) ** 0.5, 4),
        "finished_rate": round(sum(finished) / len(finished), 4),
        "refusal_rate": round(sum(refusals) / len(refusals), 4),
        "kl_mean": round(sum(kls) / len(kls), 4) if kls else None,
        "per_prompt": [sum(scores[k : k + n]) / n for k in range(0, len(scores), n)],
        "examples": examples,
    }


def paired_gain(before: list[float], after: list[float]) -> tuple[float, float]:
    """Mean and standard error of the per-prompt gain (after − before, same prompts): the
    prompt-to-prompt spread, which dominates each mean's own error, cancels out."""
    diffs = [a - b for a, b in zip(after, before, strict=True)]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / max(1, len(diffs) - 1)
    return mean, (var / len(diffs)) ** 0.5


def _kl(model: Any, ref: Any, seq: list[int], start: int, temperature: float) -> float:
    import torch

    x = torch.tensor([seq])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=x).logits[0, start - 1 : -1] / temperature, -1)
        lq = torch.log_softmax(ref(input_ids=x).logits[0, start - 1 : -1] / temperature, -1)
    tgt = x[0, start:]
    return float((lp.gather(1, tgt[:, None]) - lq.gather(1, tgt[:, None])).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pm-steps", type=int, default=16)
    ap.add_argument("--pm-lr", type=float, default=3e-5)
    ap.add_argument("--algorithm", choices=["ppo", "rloo", "grpo"], default="ppo")
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--mini-batch", type=int, default=4)
    ap.add_argument("--ppo-epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--kl-coef", type=float, default=0.05)
    ap.add_argument("--response-length", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--eval-prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="keep the PM and policy here")
    ap.add_argument(
        "--pm",
        type=Path,
        default=None,
        help="reuse this PM folder (from an earlier run) instead of training one",
    )
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from cai.io.pairs import load_pairs
    from cai.io.sources import load_prompts
    from cai.models.spec import resolve_model_path
    from cai.train.common import load_tokenizer
    from cai.train.pm import train_pm
    from cai.train.rl import train_rl
    from cai.train.rl_common import PMScorer, use_distinct_pad
    from cai.train.settings import PmSettings, RlSettings

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="ppo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    base = resolve_model_path("embedded", quiet=True)

    pairs = load_pairs(str(REPO / "data" / "judge_dev.jsonl"))
    rows = [
        {
            "prompt": p.prompt,
            "chosen": [{"role": "assistant", "content": p.a}],
            "rejected": [{"role": "assistant", "content": p.b}],
        }
        for p in pairs
    ]
    train_pairs = _write(work / "pm_train.jsonl", [r for i, r in enumerate(rows) if i % 5])
    held_pairs = _write(work / "pm_held.jsonl", [r for i, r in enumerate(rows) if not i % 5])
    t_pm = time.perf_counter()
    pm_dir = args.pm or work / "pm"
    if args.pm is None:
        pm = train_pm(
            [str(train_pairs)],
            "embedded",
            str(pm_dir),
            PmSettings(eval=[str(held_pairs)], lr=args.pm_lr, batch_size=8, max_steps=args.pm_steps, max_length=256),
            seed=args.seed,
            quiet=True,
            overwrite=True,
        )
    else:  # the summary it was trained with
        pm = json.loads((pm_dir / "cai_train.json").read_text())["summary"]
    pm_seconds = time.perf_counter() - t_pm
    print(
        f"PM: {pm['steps']} steps in {pm_seconds:.0f}s; held-out accuracy "
        f"{pm['eval_accuracy_before']} -> {pm['eval_accuracy_after']} "
        f"({pm['rows']['eval']} pairs)"
    )

    prompts = load_prompts("red-team")
    held, train = prompts[-args.eval_prompts :], prompts[: -args.eval_prompts]
    train_file = _write(work / "ppo_prompts.jsonl", [{"id": it.id, "prompt": it.messages} for it in train])
    tok = load_tokenizer(base, padding_side="left")
    use_distinct_pad(tok)
    scorer = PMScorer.load(str(pm_dir))
    sl = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    sample = dict(
        n=args.samples,
        max_new_tokens=args.response_length,
        temperature=args.temperature,
        seed=args.seed,
    )
    before = sample_and_score(sl, None, tok, scorer, held, **sample)
    print(f"before: PM {before['pm_mean']} ± {before['pm_stderr']} on {before['n']} replies")

    t_ppo = time.perf_counter()
    ppo = train_rl(
        "embedded",
        str(pm_dir),
        str(train_file),
        str(work / "ppo"),
        RlSettings(
            algorithm=args.algorithm,
            total_episodes=args.episodes,
            batch_size=args.batch_size,
            mini_batch=args.mini_batch,
            ppo_epochs=args.ppo_epochs,
            lr=args.lr,
            kl_coef=args.kl_coef,
            response_length=args.response_length,
            temperature=args.temperature,
        ),
        seed=args.seed,
        quiet=True,
        overwrite=True,
    )
    ppo_seconds = time.perf_counter() - t_ppo
    policy = AutoModelForCausalLM.from_pretrained(work / "ppo", dtype=torch.float32).eval()
    after = sample_and_score(policy, sl, tok, scorer, held, **sample)
    print(
        f"PPO: {ppo['updates']} updates in {ppo_seconds:.0f}s; training reward "
        f"{ppo['reward_first']:.3f} -> {ppo['reward_last']:.3f}, KL {ppo['kl_last']:.3f}"
    )
    print(
        f"after: PM {after['pm_mean']} ± {after['pm_stderr']}; KL(policy‖SL) on held-out "
        f"replies {after['kl_mean']} nats/reply"
    )
    metrics = [json.loads(line) for line in (work / "ppo" / "metrics.jsonl").read_text().splitlines()]
    result = {
        "pm": {
            "path": str(pm_dir),
            "reused": args.pm is not None,
            "steps": pm["steps"],
            "seconds": round(pm_seconds, 1),
            "train_pairs": pm["rows"]["train"],
            "held_out_pairs": pm["rows"]["eval"],
            "accuracy_before": pm["eval_accuracy_before"],
            "accuracy_after": pm["eval_accuracy_after"],
        },
        "ppo": {
            "algorithm": args.algorithm,
            "updates": ppo["updates"],
            "seconds": round(ppo_seconds, 1),
            "episodes": args.episodes,
            "batch_size": args.batch_size,
            "mini_batch": args.mini_batch,
            "ppo_epochs": args.ppo_epochs,
            "lr": args.lr,
            "kl_coef": args.kl_coef,
            "response_length": args.response_length,
            "reward_per_update": [round(m["reward"], 4) for m in metrics if "reward" in m],
            "kl_per_update": [round(m["kl"], 4) for m in metrics if "kl" in m],
            "final_kl": ppo["kl_last"],
        },
        "held_out": {
            "prompts": len(held),
            "samples_per_prompt": args.samples,
            "reward_before": before["pm_mean"],
            "reward_after": after["pm_mean"],
            "reward_delta": round(after["pm_mean"] - before["pm_mean"], 4),
            "reward_delta_paired_stderr": round(paired_gain(before["per_prompt"], after["per_prompt"])[1], 4),
            "stderr_before": before["pm_stderr"],
            "stderr_after": after["pm_stderr"],
            "finished_before": before["finished_rate"],
            "finished_after": after["finished_rate"],
            "refusal_before": before["refusal_rate"],
            "refusal_after": after["refusal_rate"],
            "kl_after": after["kl_mean"],
        },
        "examples": {"before": before["examples"][:3], "after": after["examples"][:3]},
        "machine": machine(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    finish("ppo_reward", result)


if __name__ == "__main__":
    main()
