"""Exports of the SL-CAI stage: TRL SFT `messages` plus the public CAI dataset's columns."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from cai.io.atomic import save_dataset_atomic, write_json_atomic, write_jsonl_atomic
from cai.io.store import Store

# Flags that keep a revision out of the SFT export ("unchanged" alone is fine: a good first
# answer may need no change).
EXCLUDING_FLAGS = {"empty", "too-short", "repetitive", "echoes-request", "format-leak"}


def sft_row(r: dict[str, Any]) -> dict[str, Any]:
    prompt = r["prompt"]
    last = r["rounds"][-1] if r["rounds"] else {}
    final = {"role": "assistant", "content": r["final_revision"]}
    initial = {"role": "assistant", "content": r["initial_response"]}
    return {
        "id": r["id"],
        "prompt_id": r["prompt_id"],
        "init_prompt": prompt[-1]["content"],
        "init_response": r["initial_response"],
        "critic_prompt": last.get("critique_request", ""),
        "critic_response": last.get("critique", ""),
        "revision_prompt": last.get("revision_request", ""),
        "revision_response": last.get("revision", ""),
        "prompt": prompt[-1]["content"],
        "messages": [*prompt, final],
        "chosen": [*prompt, final],
        "rejected": [*prompt, initial],
        "principles": [x["principle"] for x in r["rounds"]],
        "fingerprint": r["provenance"]["fingerprint"],
    }


def usable(r: dict[str, Any]) -> bool:
    return (
        r.get("error") is None
        and bool(r.get("final_revision"))
        and bool(r.get("rounds"))
        and not (set(r["rounds"][-1]["flags"]) & EXCLUDING_FLAGS)
    )


def export_critique(store: Store, out: str | Path) -> dict[str, Any]:
    out = Path(out)
    records = sorted(store.records, key=lambda r: r["order"])
    rows = [sft_row(r) for r in records if usable(r)]
    write_jsonl_atomic(out / "sft.jsonl", rows)
    if rows:
        save_dataset_atomic(out / "dataset", rows)
    flags = Counter(f for r in records for x in r["rounds"] for f in x["flags"])
    per_principle = Counter(x["principle"] for r in records for x in r["rounds"])
    revised = sum(1 for r in records if r.get("final_revision") and r["final_revision"] != r["initial_response"])
    return {
        "stage": "critique",
        "records": len(records),
        "exported": len(rows),
        "errors": sum(1 for r in records if r.get("error")),
        "first_error": next((r["error"] for r in records if r.get("error")), None),
        "retried": sum(1 for r in records if r.get("retried")),
        "duplicates_dropped": store.duplicates,
        "excluded_flagged": sum(1 for r in records if r.get("error") is None and not usable(r)),
        "changed_by_revision": revised,
        "flags": dict(sorted(flags.items())),
        "per_principle": dict(sorted(per_principle.items())),
    }


def write_summary(out: str | Path, summary: dict[str, Any]) -> None:
    write_json_atomic(Path(out) / "summary.json", summary)
