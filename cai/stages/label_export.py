"""Exports and analytics of AI preference labels (shared by `cai label` and `cai judge-eval`).

Export rows (``preferences.jsonl`` and the saved dataset ``dataset/``) are TRL conversational
preferences with an explicit prompt, so `RewardTrainer` and `DPOTrainer` take them as written:

* ``prompt`` (messages), ``chosen`` and ``rejected`` (one assistant message each) — TRL's
  columns: RewardTrainer's ``-logsigmoid(r_c - r_r)`` and DPOTrainer's sigmoid DPO loss read
  exactly these;
* ``p_chosen`` — the judge's soft label for the chosen reply, always > 0.5. TRL ignores it;
  cai's PM (``cai train pm``, `cai.train.pm_loss`) trains on it with a soft cross-entropy;
* ``p_chosen_logit = ln(p_chosen / (1 - p_chosen))`` (p clipped to [1e-6, 1 - 1e-6]), the
  Bradley–Terry reward gap that would give ``p_chosen``. It is deliberately *not* called
  ``margin``: RewardTrainer reads a ``margin`` column as ``-logsigmoid(r_c - r_r - margin)``,
  a different loss, and would switch to it silently. Rename the column to ``margin`` to ask
  for that loss on purpose.

Nothing else is in those files (TRL passes extra columns to its data collators, and some names
change its behaviour); each row's provenance — ``id``, ``prompt_id``, the principles that
decided it, the constitution fingerprint — is the same line of ``provenance.jsonl``.
``README.md`` is the dataset card (Hugging Face YAML front matter).

Pairs without a preference are not exported: generation errors, identical replies, no
probabilities, and ties — labels with |p - 0.5| < `LABEL_TIE_TOL` (1e-4), e.g. a judge that
always answers "A", asked in both orders — a tie has no chosen side, and exporting one would
teach the PM an arbitrary direction. They stay in ``records.jsonl`` and ``summary.json``
counts them (``labels.ties``).

The analytics take "judged items": dicts with ``principles`` (each with ``principle``, ``p_a``,
``consistent`` and per-order answers with ``p_first``/``p_a``/``mass``/``path``), ``p_a`` and,
when a person labelled the pair, ``human`` (always "a": the human-preferred reply).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cai.cards import label_dataset_card, write_card
from cai.io.atomic import save_dataset_atomic, write_jsonl_atomic
from cai.io.outputs import write_output
from cai.io.pairs import PairUnit
from cai.io.readers import PROVENANCE_FILE
from cai.io.store import Store
from cai.outputs import LabelSummary, Provenance
from cai.stages.label_math import LABEL_TIE_TOL, decision, is_tie, label_decision
from cai.stats import mean, share

Item = dict[str, Any]


def logit_of(p_chosen: float) -> float:
    """``p_chosen_logit``: the reward gap a Bradley–Terry model needs to give ``p_chosen``."""
    p = min(max(p_chosen, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def questions(items: Iterable[Item]) -> list[dict[str, Any]]:
    return [a for it in items for x in it["principles"] for a in x["orders"]]


def human_credit(p_a: float | None) -> float:
    """1 when the judge prefers the human's choice, 0.5 for a tie, 0 otherwise."""
    d = decision(p_a)
    return 0.5 if d is None else float(d == "a")


def position_stats(items: Sequence[Item]) -> dict[str, Any]:
    """How much of the judge's behaviour its answer *position* explains.

    ``explained_by_position``: share of answered questions whose pick equals the judge's most
    common position (1.0 for a judge that always says "A"; about 0.5 for one that ignores
    position). ``same_position_rate``: with both orders, the share of principles where the judge
    picked the same position twice, i.e. changed its mind about the replies when they swapped.
    """
    answered = [a for a in questions(items) if a["p_first"] is not None]
    picks = Counter(decision(a["p_first"]) for a in answered)  # "a" here means the first position
    first, second = picks["a"], picks["b"]
    both = [
        x["orders"]
        for it in items
        for x in it["principles"]
        if len(x["orders"]) == 2 and all(a["p_first"] is not None for a in x["orders"])
    ]
    same = sum(
        1
        for o in both
        if decision(o[0]["p_first"]) is not None and decision(o[0]["p_first"]) == decision(o[1]["p_first"])
    )
    return {
        "p_first_mean": mean(a["p_first"] for a in answered),
        "first_rate": share(first, len(answered)),
        "explained_by_position": share(max(first, second), len(answered)),
        "same_position_rate": share(same, len(both)),
        "questions": len(answered),
    }


def order_consistency(items: Sequence[Item]) -> float | None:
    flags = [x["consistent"] for it in items for x in it["principles"] if x["consistent"] is not None]
    return share(sum(flags), len(flags))


def principle_analytics(items: Sequence[Item]) -> dict[str, Any]:
    """Which principles decide labels, which disagree with each other, which flip with order."""
    per: dict[str, list[tuple[Item, dict[str, Any]]]] = defaultdict(list)
    for it in items:
        for x in it["principles"]:
            per[x["principle"]].append((it, x))
    out: dict[str, Any] = {}
    for ref, rows in sorted(per.items()):
        ok = [(it, x) for it, x in rows if x["p_a"] is not None]
        cons = [x["consistent"] for _, x in ok if x["consistent"] is not None]
        ens = [(it, x) for it, x in ok if decision(it["p_a"]) is not None]
        human = [x for it, x in ok if it.get("human")]
        answered = [a for _, x in rows for a in x["orders"] if a["p_first"] is not None]
        out[ref] = {
            "n": len(rows),
            "failed": len(rows) - len(ok),
            "agrees_with_label": share(sum(decision(x["p_a"]) == decision(it["p_a"]) for it, x in ens), len(ens)),
            "strength": mean(abs(2 * x["p_a"] - 1) for _, x in ok),
            "flip_rate": share(sum(1 for c in cons if not c), len(cons)),
            "p_first_mean": mean(a["p_first"] for a in answered),
            "option_mass": mean(a["mass"] for a in answered),
            "human_agreement": mean(human_credit(x["p_a"]) for x in human),
        }
    return out


def principle_disagreement(items: Sequence[Item]) -> dict[str, Any]:
    """For each two principles asked about the same pairs: how often they pick different replies."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for it in items:
        picks = {x["principle"]: decision(x["p_a"]) for x in it["principles"] if x["p_a"] is not None}
        for p, q in itertools.combinations(sorted(picks), 2):
            if picks[p] is not None and picks[q] is not None:
                counts[(p, q)][0] += 1
                counts[(p, q)][1] += picks[p] != picks[q]
    rows = [{"principles": [p, q], "n": n, "disagreement": round(d / n, 4)} for (p, q), (n, d) in counts.items()]
    return {"pairs": sorted(rows, key=lambda r: (-r["disagreement"], -r["n"], r["principles"]))}


def reliability(items: Sequence[Item], bins: int = 5) -> tuple[list[dict[str, Any]], float | None]:
    """Calibration of the judge's confidence max(p, 1-p) against agreement with the human."""
    scored = [
        (max(it["p_a"], 1 - it["p_a"]), human_credit(it["p_a"]))
        for it in items
        if it.get("human") and it["p_a"] is not None
    ]
    table = []
    ece = 0.0
    for b in range(bins):
        lo, hi = 0.5 + 0.5 * b / bins, 0.5 + 0.5 * (b + 1) / bins
        inside = [(c, y) for c, y in scored if lo <= c < hi or (b == bins - 1 and c == hi)]
        conf, acc = mean(c for c, _ in inside), mean(y for _, y in inside)
        table.append(
            {
                "lo": round(lo, 3),
                "hi": round(hi, 3),
                "n": len(inside),
                "confidence": conf,
                "accuracy": acc,
            }
        )
        if inside:
            ece += len(inside) / len(scored) * abs((acc or 0.0) - (conf or 0.0))
    return table, (round(ece, 4) if scored else None)


def failure_stats(items: Sequence[Item]) -> dict[str, Any]:
    qs = questions(items)
    failed = [a for a in qs if a["p_a"] is None]  # p_a: also set by methods without positions
    return {
        "questions": len(qs),
        "failed_questions": len(failed),
        "question_rate": round(len(failed) / len(qs), 4) if qs else 0.0,
        "examples": [{"principle": a["principle"], "error": a["error"], "raw": a["raw"]} for a in failed[:3]],
    }


def judge_stats(items: Sequence[Item]) -> dict[str, Any]:
    """The figures both commands report about how the judge behaved."""
    qs = [a for a in questions(items) if a["p_a"] is not None]
    return {
        "order_consistency": order_consistency(items),
        "option_mass": mean(a["mass"] for a in qs if a.get("mass") is not None),
        "paths": dict(sorted(Counter(a["path"] for a in qs).items())),
        "position_bias": position_stats(items),
        "per_principle": principle_analytics(items),
        "principle_disagreement": principle_disagreement(items),
        "failures": failure_stats(items),
    }


def label_record(u: PairUnit, j: dict[str, Any] | None, flags: list[str], provenance: dict[str, Any]) -> dict[str, Any]:
    """The stage's record for one pair: the unit, the judge's answers (None: not judged)."""
    p_a = j["p_a"] if j else None
    chosen = label_decision(p_a)  # None for a tie: no side is preferred
    return {
        "id": u.id,
        "order": u.order,
        "prompt_id": u.prompt_id,
        "pair_id": u.pair.id,
        "prompt": u.pair.prompt,
        "responses": u.responses,
        "response_a": u.pair.a,
        "response_b": u.pair.b,
        "human": u.pair.human,
        "aspect": u.pair.aspect,
        "principles": j["principles"] if j else [],
        "p_a": p_a,
        "chosen": chosen,
        "p_chosen": None if p_a is None else max(p_a, 1.0 - p_a),
        "parse_error": j["parse_error"] if j else None,
        "error": u.error,
        "flags": flags,
        "provenance": provenance,
    }


def preference_row(r: dict[str, Any]) -> dict[str, Any]:
    a = {"role": "assistant", "content": r["response_a"]}
    b = {"role": "assistant", "content": r["response_b"]}
    chosen, rejected = (a, b) if r["chosen"] == "a" else (b, a)
    return {
        "prompt": r["prompt"],
        "chosen": [chosen],
        "rejected": [rejected],
        "p_chosen": r["p_chosen"],
        "p_chosen_logit": logit_of(r["p_chosen"]),
    }


def provenance_row(r: dict[str, Any]) -> dict[str, Any]:
    """Where one exported row came from (the same line number in ``provenance.jsonl``)."""
    return {
        "id": r["id"],
        "prompt_id": r["prompt_id"],
        "principles": [x["principle"] for x in r["principles"] if x["p_a"] is not None],
        "fingerprint": r["provenance"]["fingerprint"],
    }


def exported(r: dict[str, Any]) -> bool:
    """A record with a preferred side (older records may hold a near-tie as chosen)."""
    return r["chosen"] is not None and not is_tie(r["p_chosen"])


def label_distribution(records: Sequence[dict[str, Any]], bins: int = 5) -> dict[str, Any]:
    ps = [r["p_chosen"] for r in records if r["p_chosen"] is not None]
    hist = [0] * bins
    for p in ps:
        hist[min(int((p - 0.5) / 0.5 * bins), bins - 1)] += 1
    return {
        "n": len(ps),
        "p_chosen_mean": mean(ps),
        "ties": sum(1 for r in records if r["p_chosen"] is not None and not exported(r)),
        "tie_tolerance": LABEL_TIE_TOL,
        "chose_a": sum(1 for r in records if r["chosen"] == "a" and exported(r)),
        "chose_b": sum(1 for r in records if r["chosen"] == "b" and exported(r)),
        "histogram": [
            {
                "lo": round(0.5 + 0.5 * i / bins, 2),
                "hi": round(0.5 + 0.5 * (i + 1) / bins, 2),
                "n": n,
            }
            for i, n in enumerate(hist)
        ],
    }


def method_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Which method made the labels; for pairs by construction rescored by another method, how
    often the rescoring picks the constructed side (``rescore_agreement``)."""
    prov = records[0]["provenance"] if records else {}
    agree = [r["construction_agrees"] for r in records if r.get("construction_agrees") is not None]
    return {
        "method": prov.get("method", "mc"),
        "rescore": prov.get("rescore"),
        "rescore_agreement": share(sum(agree), len(agree)) if agree else None,
    }


def export_labels(store: Store, out: str | Path, throughput: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write preferences.jsonl, dataset/, provenance.jsonl, summary.json and the dataset card."""
    out = Path(out)
    records = sorted(store.records, key=lambda r: r["order"])
    kept = [r for r in records if exported(r)]
    rows = [preference_row(r) for r in kept]
    write_jsonl_atomic(out / "preferences.jsonl", rows)
    write_jsonl_atomic(out / PROVENANCE_FILE, [provenance_row(r) for r in kept])
    if rows:
        save_dataset_atomic(out / "dataset", rows)
    judged = [r for r in records if r["principles"]]
    human = [r for r in judged if r.get("human") and r["p_a"] is not None]
    summary = {
        "stage": "label",
        "records": len(records),
        "exported": len(rows),
        "errors": sum(1 for r in records if r.get("error")),
        "retried": sum(1 for r in records if r.get("retried")),
        "duplicates_dropped": store.duplicates,
        "identical": sum(1 for r in records if "identical" in r.get("flags", [])),
        "unlabelled": sum(1 for r in judged if r["p_a"] is None),
        "labels": label_distribution(records),
        "human_agreement": mean(human_credit(r["p_a"]) for r in human),
        **method_summary(records),
        **judge_stats(judged),
    }
    if throughput is not None:
        summary["throughput"] = throughput
    typed = write_output(LabelSummary, out / "summary.json", summary)
    write_card(out, label_dataset_card(Provenance.model_validate(kept[0]["provenance"]) if kept else None, typed))
    return summary
