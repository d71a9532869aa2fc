"""Preference methods side by side on the embedded model: speed, and agreement with people.

1. **Speed** (one run, the same pairs for every method): labels/s of ``mc`` and
   ``mc-calibrated`` (both orders) and ``contrast``, each over 16 comparison principles of the
   library (every pair asks all 16), on test-split pairs of judge-dev;
   ``rlcd`` (the policy answers each prompt under the positive and the negative prompt) and
   ``revision`` (pairs read from a critique folder, no model call).
2. **Conversation length**: seconds per label with the pairs' own conversations and with the
   same pairs after a fixed ~300-token earlier exchange, for contrast with prefix sharing on
   and off and for mc. With sharing, contrast prefills each conversation once for all its
   principles, sides and replies, so a longer conversation costs little per label.
3. **Agreement** (``--agreement``): `judge-eval --compare` on the dev and the test split
   (principles: one sampled per pair, the CAI paper's setting and the quickstart's).

    python benchmarks/label_methods.py [--pairs 6] [--agreement]

Prints tables and a final JSON line; writes benchmarks/results/label_methods.json.
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

from benchmarks._common import REPO, finish, machine
from cai.constitution.load import load_constitution
from cai.io.pairs import Pair, load_pairs
from cai.io.sources import load_prompts
from cai.models.base import GenerationParams
from cai.models.spec import load_backend
from cai.stages.judge_eval import MEASURED, compare_methods, format_comparison, select_split
from cai.stages.judging import judge_pairs
from cai.stages.label import revision_pairs
from cai.stages.messages import rlcd_messages
from cai.stages.settings import JudgeSettings

# An earlier, harmless exchange put before each pair's conversation for the long-conversation
# rows (about 300 tokens).
HISTORY = [
    {
        "role": "user",
        "content": "I'm planning a week of dinners for a family of four on a budget. We like pasta, "
        "rice dishes and soups, one of the kids won't eat mushrooms, and I'd like at least two "
        "vegetarian nights. Could you sketch a plan with a shopping list grouped by aisle, and say "
        "which meals can be cooked ahead on Sunday and frozen?",
    },
    {
        "role": "assistant",
        "content": "Here is a plan. Monday: tomato and lentil soup with bread. Tuesday: chicken and "
        "vegetable fried rice. Wednesday: pasta with a spinach and ricotta sauce (vegetarian). "
        "Thursday: beef and bean chilli with rice. Friday: homemade pizza. Saturday: chickpea and "
        "sweet potato curry (vegetarian). Sunday: roast chicken with potatoes and carrots. Cook the "
        "soup, chilli and curry on Sunday and freeze them in portions. Shopping list: produce "
        "(onions, garlic, carrots, spinach, sweet potatoes, peppers), dry goods (lentils, rice, "
        "pasta, chickpeas, flour), tins (tomatoes, beans, coconut milk), dairy (ricotta, cheese), "
        "and meat (a whole chicken, minced beef, chicken thighs).",
    },
]


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


PRINCIPLES = 16  # the figure: a full comparison library's worth of questions per pair


def library_pool(c: Any) -> list[Any]:
    """The first `PRINCIPLES` comparison principles of the constitution's libraries, selected or not."""
    from cai.constitution.load import load_library

    ids = [
        p.id
        for path in c.spec.libraries
        if getattr(lib := load_library(Path(path)), "kind", None) == "comparison-principles"
        for p in lib.principles
    ]
    return [c.comparison_principle(i) for i in ids[:PRINCIPLES]]


def speed_rows(c: Any, judge: Any, pairs: list[Pair]) -> list[dict[str, Any]]:
    rows = []
    pool = library_pool(c)
    for method in ("mc", "mc-calibrated", "contrast"):
        s = JudgeSettings(method=method, principles="all")
        seconds, results = _timed(lambda s=s: judge_pairs(c, judge, pairs, s, seed=0, pool_for=lambda _p: pool))
        principle_labels = sum(len(r["principles"]) for r in results)
        rows.append(
            {
                "method": method,
                "orders": "both" if method != "contrast" else "-",
                "pairs": len(pairs),
                "principles_per_pair": principle_labels // len(pairs),
                "seconds": round(seconds, 2),
                "labels_s": round(len(pairs) / seconds, 3),
                "principle_labels_s": round(principle_labels / seconds, 2),
            }
        )
    return rows


def rlcd_row(c: Any, policy: Any, n: int) -> dict[str, Any]:
    items = load_prompts("red-team")[:n]
    params = GenerationParams(max_new_tokens=64, temperature=0.8, top_p=0.95, n=1, seed=0)
    convs = [rlcd_messages(c, it.messages, side) for it in items for side in ("positive", "negative")]
    seconds, _ = _timed(lambda: policy.generate(convs, params))
    return {
        "method": "rlcd",
        "pairs": n,
        "seconds": round(seconds, 2),
        "labels_s": round(n / seconds, 3),
        "note": "2 answers of <= 64 tokens per prompt, no judge",
    }


def revision_row() -> dict[str, Any]:
    from cai.cli.app import main

    with tempfile.TemporaryDirectory() as tmp:
        crit = Path(tmp) / "crit"
        try:
            main(
                ["critique", "--prompts", "red-team", "--limit", "32", "--model", "fake", "--out", str(crit), "--quiet"]
            )
        except SystemExit as e:
            if e.code:
                raise
        seconds, pairs = _timed(lambda: revision_pairs(crit))
    return {
        "method": "revision",
        "pairs": len(pairs),
        "seconds": round(seconds, 4),
        "labels_s": round(len(pairs) / seconds, 1),
        "note": "read from a critique folder, no model call",
    }


def length_rows(c: Any, judge: Any, pairs: list[Pair]) -> list[dict[str, Any]]:
    pool = library_pool(c)
    long = [Pair(p.id, [*HISTORY, *p.prompt], p.a, p.b, p.human, p.aspect, p.split) for p in pairs]
    rows = []
    for name, method, share in (
        ("contrast, prefix sharing", "contrast", True),
        ("contrast, no sharing", "contrast", False),
        ("mc, prefix sharing", "mc", True),
    ):
        judge.prefix_sharing = share
        s = JudgeSettings(method=method, principles="all")
        row: dict[str, Any] = {"config": name}
        for label, ps in (("short", pairs), ("long", long)):
            seconds, _ = _timed(lambda ps=ps, s=s: judge_pairs(c, judge, ps, s, seed=0, pool_for=lambda _p: pool))
            row[f"{label}_s_per_label"] = round(seconds / len(ps), 3)
        row["long_over_short"] = round(row["long_s_per_label"] / row["short_s_per_label"], 2)
        rows.append(row)
    judge.prefix_sharing = True
    conv_tokens = [len(judge.encode(p.prompt)) for p in pairs]
    long_tokens = [len(judge.encode(p.prompt)) for p in long]
    rows.append(
        {
            "config": "conversation tokens (mean)",
            "short": sum(conv_tokens) / len(pairs),
            "long": sum(long_tokens) / len(long),
        }
    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=6, help="test-split pairs timed per method")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--agreement", action="store_true", help="also run judge-eval --compare on dev and test")
    args = ap.parse_args()

    c = load_constitution("harmless")
    judge = load_backend("embedded", dtype=args.dtype)
    test = select_split(load_pairs("judge-dev"), "test", "judge-dev")
    pairs = [p for p in test if p.aspect == "harmless"][: args.pairs]
    result: dict[str, Any] = {
        "judge": judge.describe(),
        "machine": machine(),
        "principles": len(library_pool(c)),
    }
    result["speed"] = [*speed_rows(c, judge, pairs), rlcd_row(c, judge, args.pairs), revision_row()]
    print(f"{'method':<15}{'pairs':>6}{'seconds':>9}{'labels/s':>10}{'principle-labels/s':>20}")
    for r in result["speed"]:
        print(
            f"{r['method']:<15}{r['pairs']:>6}{r['seconds']:>9}{r['labels_s']:>10}"
            f"{r.get('principle_labels_s', '-'):>20}"
        )
    result["conversation_length"] = length_rows(c, judge, pairs[: max(2, args.pairs // 2)])
    for r in result["conversation_length"]:
        print(r)
    shipped = REPO / "data" / MEASURED
    if args.agreement:
        result["agreement"] = {}
        for split in ("dev", "test"):
            chosen = select_split(load_pairs("judge-dev"), split, "judge-dev")
            t0 = time.perf_counter()
            cmp = compare_methods(c, judge, chosen, JudgeSettings(), seed=0, quiet=True)
            cmp.pop("summaries")
            cmp["seconds"] = round(time.perf_counter() - t0, 1)
            result["agreement"][split] = cmp
            print(f"\n[{split}]\n" + format_comparison(cmp))
    elif shipped.is_file():
        # The full comparison takes over an hour here; quote the shipped measurement, saying so.
        result["agreement"] = {
            "test": json.loads(shipped.read_text()),
            "source": "data/method_agreement.json (cai judge-eval --judge embedded --split test --compare), not rerun",
        }
    finish("label_methods", result)


if __name__ == "__main__":
    main()
