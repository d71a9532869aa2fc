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

The constitution's demonstrations (author-written prompt and ideal reply, chosen by
``CritiqueSettings.demonstrations``) are written by `cai critique` to ``demonstrations.jsonl`` in
the folder and follow the revisions in the SFT exports, so that `cai train sft` trains on both
without a change; their ``provenance.jsonl`` lines say ``source: demonstration`` (the revisions'
``source: revision``, or ``distill``). ``cai.jsonl`` has no row for them: there is no first answer
or critique. The export is a function of the folder alone, so `cai merge` keeps them too.

A row's target is its latest revision that no flag excludes (`chosen`): an earlier revision when
later ones are flagged, and no row when every one is. In distill mode (``--mode distill``) the
target is the one guided answer, the prompts hold the user's turns only (no system prompt: the
guidance is what distillation trains in), and ``cai.jsonl`` is not written (there is no first
answer to reject).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai.cards import critique_dataset_card, write_card
from cai.constitution.demonstrations import select
from cai.constitution.model import Constitution
from cai.io.atomic import save_dataset_atomic, write_jsonl_atomic
from cai.io.outputs import write_output
from cai.io.readers import PROVENANCE_FILE, iter_jsonl
from cai.io.store import Store
from cai.outputs import CritiqueSummary, Provenance
from cai.stages.cleaning import (
    BOILERPLATE,
    COPY_FLAGS,
    COPY_NGRAM,
    CRITIQUE_COPY,
    EXEMPLAR_COPY,
    RECOMPUTED_FLAGS,
    CopyCheck,
)

DEMONSTRATIONS_FILE = "demonstrations.jsonl"

# Flags that keep a revision out of the SFT export ("unchanged" alone is fine: a good first
# answer may need no change). The copy flags exclude too, unless --no-drop-copies, and the
# boilerplate flag unless --no-drop-boilerplate.
EXCLUDING_FLAGS = frozenset({"empty", "too-short", "repetitive", "echoes-request", "format-leak"})


def droppable(drop_copies: bool = True, drop_boilerplate: bool = True) -> frozenset[str]:
    copies = COPY_FLAGS if drop_copies else frozenset()
    return EXCLUDING_FLAGS | copies | ({BOILERPLATE} if drop_boilerplate else set())


def excludes(flags: Iterable[str], drop_copies: bool = True, drop_boilerplate: bool = True) -> bool:
    """Whether these flags keep an answer out of the SFT export (and from being the next round's base)."""
    return bool(set(flags) & droppable(drop_copies, drop_boilerplate))


def is_distill(r: dict[str, Any]) -> bool:
    return r.get("mode") == "distill"  # records written before modes existed are revise records


@dataclass(frozen=True)
class Candidate:
    """An answer a row could export: a round's revision (revise mode) or the guided answer (distill)."""

    text: str
    flags: list[str]
    round: dict[str, Any] | None = None


def candidates(r: dict[str, Any], check: CopyCheck | None = None) -> list[Candidate]:
    """A record's answers in order, with their flags.

    Given the run's `check` (`cai critique` always has one), the copy flags are computed afresh
    from the record's own text: records written before the copy flags existed, or under another
    --copy-ngram, are judged by the rule in force, and nothing needs migrating. Without one
    (`cai merge`, which has no constitution to take the exemplars from) the recorded flags stand.
    """

    def flags(recorded: list[str], text: str, critique: str | None) -> list[str]:
        if check is None:
            return list(recorded)
        return [f for f in recorded if f not in RECOMPUTED_FLAGS] + check.flags(text, r["prompt"], critique)

    if is_distill(r):
        return [Candidate(r["initial_response"], flags(r["flags"], r["initial_response"], None))]
    return [Candidate(x["revision"], flags(x["flags"], x["revision"], x["critique"]), x) for x in r["rounds"]]


def _drop(r: dict[str, Any], check: CopyCheck | None) -> frozenset[str]:
    """The flags that keep an answer out: the run's settings, else as the record says."""
    if check is not None:
        return droppable(check.drop, check.drop_boilerplate)
    copies = (r.get("provenance") or {}).get("copies", {})
    return droppable(bool(copies.get("drop", True)), bool(copies.get("boilerplate", True)))


def _pick(cands: list[Candidate], drop: frozenset[str]) -> Candidate | None:
    return next((x for x in reversed(cands) if x.text and not set(x.flags) & drop), None)


def chosen(r: dict[str, Any], check: CopyCheck | None = None) -> Candidate | None:
    """The answer a row exports: the latest one no flag excludes; None when every one is
    flagged (or the record failed)."""
    if r.get("error") is not None:
        return None
    return _pick(candidates(r, check), _drop(r, check))


# (file, saved dataset folder) of each export, by config name in the dataset card.
EXPORTS = {
    "messages": ("sft.jsonl", "dataset"),
    "prompt_completion": ("sft_prompt_completion.jsonl", "dataset_prompt_completion"),
    "cai": ("cai.jsonl", "dataset_cai"),
}


def policy_prompt(r: dict[str, Any]) -> list[dict[str, str]]:
    """What the policy saw before its first answer: the system prompt (kept in the record's
    provenance by `cai critique`), then the user's turns. In distill mode the user's turns only:
    the trained model is to answer so without the guidance."""
    system = None if is_distill(r) else (r.get("provenance") or {}).get("fewshot", {}).get("system_prompt")
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": m["role"], "content": m["content"]} for m in r["prompt"]]


def messages_row(r: dict[str, Any], pick: Candidate) -> dict[str, Any]:
    """TRL conversational language modelling."""
    return {"messages": [*policy_prompt(r), {"role": "assistant", "content": pick.text}]}


def prompt_completion_row(r: dict[str, Any], pick: Candidate) -> dict[str, Any]:
    """TRL conversational prompt-completion."""
    return {"prompt": policy_prompt(r), "completion": [{"role": "assistant", "content": pick.text}]}


def principle_refs(r: dict[str, Any]) -> list[str]:
    """The principles behind a row: its rounds' (revise) or all those in the guidance (distill)."""
    if is_distill(r):
        return list(r["provenance"].get("distill", {}).get("principles", []))
    return [x["principle"] for x in r["rounds"]]


def provenance_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "prompt_id": r["prompt_id"],
        "principles": principle_refs(r),
        "fingerprint": r["provenance"]["fingerprint"],
        "source": "distill" if is_distill(r) else "revision",
    }


def write_demonstrations(out: str | Path, c: Constitution, n: int | None, distill: bool, answers: float = 0.5) -> None:
    """Record which of the constitution's demonstrations this folder's export adds (`select`):
    with the system prompt the revisions' rows start with (none in distill mode, as its rows)."""
    system = None if distill else c.spec.system_prompt
    fp = c.fingerprint()
    rows = [
        {"id": p.id, "kind": p.demo.kind, "category": p.demo.category, "prompt": p.demo.prompt}
        | {"reply": p.demo.reply, "system": system, "fingerprint": fp}
        for p in select(c.demonstrations, n, answers)
    ]
    write_jsonl_atomic(Path(out) / DEMONSTRATIONS_FILE, rows)


def read_demonstrations(out: Path) -> list[dict[str, Any]]:
    """The demonstration rows `cai critique` chose for this folder (none without the file)."""
    path = out / DEMONSTRATIONS_FILE
    return [row for _, row in iter_jsonl(path)] if path.is_file() else []


def demonstration_rows(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One demonstration's row in each SFT export, and its provenance line."""
    head = [{"role": "system", "content": d["system"]}] if d.get("system") else []
    user = [*head, {"role": "user", "content": d["prompt"]}]
    reply = {"role": "assistant", "content": d["reply"]}
    keys = ("id", "kind", "category", "fingerprint")
    return {
        "messages": {"messages": [*user, reply]},
        "prompt_completion": {"prompt": user, "completion": [reply]},
        "provenance": {"prompt_id": d["id"], "principles": [], "source": "demonstration"} | {k: d[k] for k in keys},
    }


def cai_row(r: dict[str, Any], pick: Candidate) -> dict[str, Any]:
    """The public CAI dataset's columns (HuggingFaceH4/cai-conversation-harmless) plus provenance;
    the critique and revision columns are the exported revision's round."""
    prompt = r["prompt"]
    full = policy_prompt(r)
    last = pick.round or {}
    final = {"role": "assistant", "content": pick.text}
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


def usable(r: dict[str, Any], check: CopyCheck | None = None) -> bool:
    """Whether the SFT export has a row for this record."""
    return chosen(r, check) is not None


def export_critique(store: Store, out: str | Path, check: CopyCheck | None = None) -> dict[str, Any]:
    """Write the exports and return the summary; `check`: see `candidates`."""
    out = Path(out)
    records = sorted(store.records, key=lambda r: r["order"])
    cands = [candidates(r, check) for r in records]
    ok = [r.get("error") is None for r in records]
    picks = [_pick(cs, _drop(r, check)) if fine else None for r, cs, fine in zip(records, cands, ok, strict=True)]
    kept = [(r, p) for r, p in zip(records, picks, strict=True) if p is not None]
    distill = any(is_distill(r) for r in records)
    makers = {"messages": messages_row, "prompt_completion": prompt_completion_row}
    if not distill:
        makers["cai"] = cai_row  # its `rejected` is the first answer, which distill mode has not got
    demos = [demonstration_rows(d) for d in read_demonstrations(out)]
    for name, make in makers.items():
        rows = [make(r, p) for r, p in kept] + [d[name] for d in demos if name in d]
        jsonl, folder = EXPORTS[name]
        write_jsonl_atomic(out / jsonl, rows)
        if rows:
            save_dataset_atomic(out / folder, rows)
    write_jsonl_atomic(out / PROVENANCE_FILE, [provenance_row(r) for r, _ in kept] + [d["provenance"] for d in demos])
    per_principle = Counter(x["principle"] for r in records for x in r["rounds"])
    revised = sum(1 for r, p in kept if p.text != r["initial_response"])
    summary = {
        "stage": "critique",
        "mode": "distill" if distill else "revise",
        "records": len(records),
        "exported": len(kept),
        "errors": sum(1 for r in records if r.get("error")),
        "first_error": next((r["error"] for r in records if r.get("error")), None),
        "retried": sum(1 for r in records if r.get("retried")),
        "duplicates_dropped": store.duplicates,
        "excluded_flagged": sum(1 for p, fine in zip(picks, ok, strict=True) if fine and p is None),
        "changed_by_revision": None if distill else revised,
        "earlier_revision": sum(1 for cs, p in zip(cands, picks, strict=True) if p is not None and p is not cs[-1]),
        **_flag_figures(records, cands, picks, check, distill),
        "demonstrations": len(demos),
        "demonstrations_by_kind": dict(sorted(Counter(d["provenance"]["kind"] for d in demos).items())),
        "exports": [EXPORTS[name][0] for name in makers],
        "per_principle": dict(sorted(per_principle.items())),
    }
    typed = CritiqueSummary.model_validate(summary)
    write_card(out, critique_dataset_card(Provenance.model_validate(kept[0][0]["provenance"]) if kept else None, typed))
    return summary


def _flag_figures(
    records: list[dict[str, Any]],
    cands: list[list[Candidate]],
    picks: list[Candidate | None],
    check: CopyCheck | None,
    distill: bool,
) -> dict[str, Any]:
    """The summary's flag counts: answers flagged, and rows that the copy or the boilerplate flags
    alone keep out (usable if answers flagged so were kept)."""
    flags = Counter(f for cs in cands for x in cs for f in x.flags)

    def out_only_by(group: frozenset[str]) -> int:
        return sum(
            1
            for r, cs, p in zip(records, cands, picks, strict=True)
            if r.get("error") is None and p is None and _pick(cs, _drop(r, check) - group) is not None
        )

    first = records[0]["provenance"].get("copies", {}) if records else {}
    return {
        # Revisions (distill: answers) flagged as copies, and rows left out because of them.
        "exemplar_copy": flags[EXEMPLAR_COPY],
        "critique_copy": None if distill else flags[CRITIQUE_COPY],
        "excluded_copies": out_only_by(COPY_FLAGS),
        "copy_ngram": check.n if check is not None else first.get("ngram", COPY_NGRAM),
        "drop_copies": check.drop if check is not None else first.get("drop", True),
        # Refusals or apologies that name nothing of the request (`cleaning.boilerplate`).
        "boilerplate": flags[BOILERPLATE],
        "excluded_boilerplate": out_only_by(frozenset({BOILERPLATE})),
        "drop_boilerplate": check.drop_boilerplate if check is not None else first.get("boilerplate", True),
        "flags": dict(sorted(flags.items())),
    }


def write_summary(out: str | Path, summary: dict[str, Any]) -> None:
    write_output(CritiqueSummary, Path(out) / "summary.json", summary)
