"""Exports of the SL-CAI stage, each in a format its consumer takes exactly as written.

TRL's SFTTrainer picks its data format from the column names it finds (a ``prompt`` column next
to ``messages`` sends it down the prompt-completion path, where it fails with
``KeyError: 'completion'``), so every TRL-facing file holds TRL's columns and nothing else:

* ``sft.jsonl`` / ``dataset/`` — conversational language modelling: ``messages`` only
  (the constitution's system prompt, the user's turns, the final revision). SFTTrainer trains
  on every token of it (or only the assistant's with ``assistant_only_loss``).
* ``sft_prompt_completion.jsonl`` / ``dataset_prompt_completion/`` — conversational
  prompt-completion: ``prompt`` (system + user messages) and ``completion`` (the final
  revision). SFTTrainer's ``completion_only_loss`` then trains on the answer alone.
* ``cai.jsonl`` / ``dataset_cai/`` — the public CAI dataset's columns (``init_prompt``,
  ``init_response``, ``critic_prompt``, ``critic_response``, ``revision_prompt``,
  ``revision_response``, ``prompt``, ``messages``, ``chosen``, ``rejected``) plus ``id``,
  ``prompt_id``, ``principles`` and ``fingerprint``: the whole story of each row, for people;
  not for a trainer as it is.
* ``provenance.jsonl`` — line i: ``id``, ``prompt_id``, ``principles``, ``fingerprint`` of row i
  of the SFT exports (cai's trainers read the fingerprint from here).
* ``README.md`` — the dataset card (Hugging Face YAML front matter, one config per format).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from cai.cards import critique_dataset_card, write_card
from cai.io.atomic import save_dataset_atomic, write_json_atomic, write_jsonl_atomic
from cai.io.readers import PROVENANCE_FILE
from cai.io.store import Store

# Flags that keep a revision out of the SFT export ("unchanged" alone is fine: a good first
# answer may need no change).
EXCLUDING_FLAGS = {"empty", "too-short", "repetitive", "echoes-request", "format-leak"}


# (file, saved dataset folder) of each export, by config name in the dataset card.
EXPORTS = {
    "messages": ("sft.jsonl", "dataset"),
    "prompt_completion": ("sft_prompt_completion.jsonl", "dataset_prompt_completion"),
    "cai": ("cai.jsonl", "dataset_cai"),
}


def policy_prompt(r: dict[str, Any]) -> list[dict[str, str]]:
    """What the policy saw before its first answer: the system prompt (kept in the record's
    provenance by `cai critique`), then the user's turns."""
    system = (r.get("provenance") or {}).get("fewshot", {}).get("system_prompt")
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": m["role"], "content": m["content"]} for m in r["prompt"]]


def messages_row(r: dict[str, Any]) -> dict[str, Any]:
    """TRL conversational language modelling."""
    return {"messages": [*policy_prompt(r), {"role": "assistant", "content": r["final_revision"]}]}


def prompt_completion_row(r: dict[str, Any]) -> dict[str, Any]:
    """TRL conversational prompt-completion."""
    return {"prompt": policy_prompt(r), "completion": [{"role": "assistant", "content": r["final_revision"]}]}


def provenance_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "prompt_id": r["prompt_id"],
        "principles": [x["principle"] for x in r["rounds"]],
        "fingerprint": r["provenance"]["fingerprint"],
    }


def cai_row(r: dict[str, Any]) -> dict[str, Any]:
    """The public CAI dataset's columns (HuggingFaceH4/cai-conversation-harmless) plus provenance."""
    prompt = r["prompt"]
    full = policy_prompt(r)
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
        "messages": [*full, final],
        "chosen": [*full, final],
        "rejected": [*full, initial],
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
    kept = [r for r in records if usable(r)]
    for name, make in (("messages", messages_row), ("prompt_completion", prompt_completion_row), ("cai", cai_row)):
        rows = [make(r) for r in kept]
        jsonl, folder = EXPORTS[name]
        write_jsonl_atomic(out / jsonl, rows)
        if rows:
            save_dataset_atomic(out / folder, rows)
    write_jsonl_atomic(out / PROVENANCE_FILE, [provenance_row(r) for r in kept])
    flags = Counter(f for r in records for x in r["rounds"] for f in x["flags"])
    per_principle = Counter(x["principle"] for r in records for x in r["rounds"])
    revised = sum(1 for r in records if r.get("final_revision") and r["final_revision"] != r["initial_response"])
    summary = {
        "stage": "critique",
        "records": len(records),
        "exported": len(kept),
        "errors": sum(1 for r in records if r.get("error")),
        "first_error": next((r["error"] for r in records if r.get("error")), None),
        "retried": sum(1 for r in records if r.get("retried")),
        "duplicates_dropped": store.duplicates,
        "excluded_flagged": sum(1 for r in records if r.get("error") is None and not usable(r)),
        "changed_by_revision": revised,
        "flags": dict(sorted(flags.items())),
        "per_principle": dict(sorted(per_principle.items())),
    }
    write_card(out, critique_dataset_card(kept[0]["provenance"] if kept else None, summary))
    return summary


def write_summary(out: str | Path, summary: dict[str, Any]) -> None:
    write_json_atomic(Path(out) / "summary.json", summary)
