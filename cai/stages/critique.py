"""SL-CAI data: initial answer, then rounds of critique → revision under sampled principles.

Each chunk of prompts is one batch at every step (answer, critique r, revision r), so the model
is never called one prompt at a time. Records are appended per chunk; see `records.Store` for
why a kill at any instant loses and repeats nothing.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from cai import __version__
from cai.constitution.model import Constitution, Versioned
from cai.errors import fail
from cai.io.sources import PromptItem
from cai.io.store import Store, content_hash, derive_seed
from cai.models.base import Backend, Conversation, Generation, GenerationParams
from cai.progress import StepProgress
from cai.stages.chunks import chunks_for_shard, shard_size
from cai.stages.cleaning import clean_revision, quality_flags
from cai.stages.critique_export import EXCLUDING_FLAGS, export_critique, write_summary
from cai.stages.settings import CritiqueSettings, Shard
from cai.templates.messages import critique_fewshot, critique_messages, prompt_messages, revision_messages


def manifest(
    c: Constitution, backend: Backend, prompts: list[PromptItem], s: CritiqueSettings, seed: int, shard: Shard
) -> dict[str, Any]:
    return {
        "stage": "critique",
        "constitution": c.name,
        "fingerprint": c.fingerprint(),
        "model": backend.spec,
        "params": s.params.as_record(),
        "rounds": s.rounds or c.spec.critique.rounds,
        "seed": seed,
        "batch_size": s.batch_size,
        "prompts": content_hash([[p.id, p.messages] for p in prompts]),
        "n_prompts": len(prompts),
        "shard": f"{shard[0]}/{shard[1]}",
    }


def _live(messages: Conversation, n_fewshot: int, has_system: bool) -> Conversation:
    """The part of a step's messages after the system prompt and few-shot turns."""
    return messages[(1 if has_system else 0) + n_fewshot :]


class CritiqueBatch:
    """The state of one batch of prompts as it goes through the rounds."""

    def __init__(
        self,
        c: Constitution,
        items: list[PromptItem],
        rounds: int,
        seed: int,
        principles: list[list[Versioned]] | None = None,
    ):
        """`principles` per prompt and round; sampled from the constitution when not given
        (`cai try --principle` gives them)."""
        self.c = c
        self.items = items
        self.principles: list[list[Versioned]] = principles or [
            c.sample_critique(random.Random(derive_seed(seed, it.id)), rounds) for it in items
        ]
        self.latest: list[str] = [""] * len(items)
        self.initial: list[str] = [""] * len(items)
        self.rounds: list[list[dict[str, Any]]] = [[] for _ in items]
        self.errors: list[str | None] = [None] * len(items)
        self.tokens = 0

    def active(self) -> list[int]:
        return [i for i, e in enumerate(self.errors) if e is None]

    def run(
        self, backend: Backend, params: GenerationParams, rounds: int, chunk_seed: int, on_step: Any = None
    ) -> None:
        c = self.c
        has_system = bool(c.spec.system_prompt)
        n_fewshot = len(critique_fewshot(c))

        def call(step: str, idx: list[int], convs: list[Conversation]) -> list[Generation]:
            gens = backend.generate(convs, replace(params, n=1, seed=derive_seed(chunk_seed, step)))
            for i, g in zip(idx, gens, strict=True):
                self.tokens += g.n_tokens
                if g.error is not None or not g.texts:
                    self.errors[i] = f"{step}: {g.error or 'no text returned'}"
            if on_step:
                on_step(sum(g.n_tokens for g in gens))
            return gens

        idx = self.active()
        gens = call("answer", idx, [prompt_messages(c, self.items[i].messages) for i in idx])
        for i, g in zip(idx, gens, strict=True):
            if self.errors[i] is None:
                self.initial[i] = self.latest[i] = g.texts[0].strip()
        for r in range(rounds):
            if not self.active():
                break
            self._round(r, call, lambda conv: _live(conv, n_fewshot, has_system))

    def _round(self, r: int, call: Any, live: Any) -> None:
        """Round `r` for every prompt still without an error: critique, then revise."""
        c, idx = self.c, self.active()
        crit_convs = [critique_messages(c, self.items[i].messages, self.latest[i], self.principles[i][r]) for i in idx]
        crits = call(f"critique-{r}", idx, crit_convs)
        idx2 = [i for i in idx if self.errors[i] is None]
        crit_text = {i: g.texts[0].strip() for i, g in zip(idx, crits, strict=True) if self.errors[i] is None}
        rev_convs = [
            revision_messages(c, self.items[i].messages, self.latest[i], self.principles[i][r], crit_text[i])
            for i in idx2
        ]
        revs = call(f"revision-{r}", idx2, rev_convs)
        for i, conv_c, conv_r, g in zip(idx2, [crit_convs[idx.index(i)] for i in idx2], rev_convs, revs, strict=True):
            if self.errors[i] is not None:
                continue
            raw = g.texts[0]
            cleaned = clean_revision(raw)
            p = self.principles[i][r]
            flags = quality_flags(cleaned, previous=self.latest[i], request=p.principle.revision)  # type: ignore[union-attr]
            self.rounds[i].append(
                {
                    "principle": p.ref,
                    "critique_request": conv_c[-1]["content"],
                    "critique": crit_text[i],
                    "revision_request": conv_r[-1]["content"],
                    "revision_raw": raw,
                    "revision": cleaned,
                    "flags": flags,
                    "critique_prompt": live(conv_c),
                    "revision_prompt": live(conv_r),
                }
            )
            # The next round starts from the latest usable revision.
            if not (set(flags) & EXCLUDING_FLAGS):
                self.latest[i] = cleaned


def run_critique(
    c: Constitution,
    prompts: list[PromptItem],
    backend: Backend,
    out: str | Path,
    settings: CritiqueSettings,
    *,
    seed: int = 0,
    shard: Shard = (0, 1),
    quiet: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the SL-CAI data stage into `out`; returns the summary."""
    with Store(out, manifest(c, backend, prompts, settings, seed, shard), lock=True) as store:
        return _run(c, prompts, backend, store, out, settings, seed, shard, quiet)


def failed(record: dict[str, Any] | None) -> bool:
    """A record whose generation failed: `--retry-failed` redoes it on the next run."""
    return record is not None and record.get("error") is not None


def _run(
    c: Constitution,
    prompts: list[PromptItem],
    backend: Backend,
    store: Store,
    out: str | Path,
    settings: CritiqueSettings,
    seed: int,
    shard: Shard,
    quiet: bool,
) -> dict[str, Any]:
    rounds = settings.rounds or c.spec.critique.rounds
    fixed = {
        "constitution": c.name,
        "fingerprint": c.fingerprint(),
        "templates": c.template_hashes(),
        "model": backend.spec,
        "params": settings.params.as_record(),
        "seed": seed,
        "rounds": rounds,
    }
    provenance = {
        **fixed,
        "model_info": backend.describe(),
        "cai_version": __version__,
        "fewshot": {"n_turns": len(critique_fewshot(c)), "system_prompt": c.spec.system_prompt},
    }
    total = shard_size(len(prompts), settings.batch_size, shard)
    steps_per_chunk = 1 + 2 * rounds
    new_prompts = 0
    with StepProgress("critique", total * steps_per_chunk, quiet) as prog:
        for ci, offset, chunk in chunks_for_shard(prompts, settings.batch_size, shard):
            ids = [content_hash("critique", fixed, it.id, it.messages) for it in chunk]
            todo = [k for k, i in enumerate(ids) if i not in store or (settings.retry_failed and failed(store.get(i)))]
            prog.advance(items=(len(chunk) - len(todo)) * steps_per_chunk)
            if not todo:
                continue
            items = [chunk[k] for k in todo]
            t0 = time.perf_counter()
            batch = CritiqueBatch(c, items, rounds, seed)
            batch.run(
                backend,
                settings.params,
                rounds,
                derive_seed(seed, "chunk", ci),
                on_step=lambda tok, n=len(items): prog.advance(items=n, tokens=tok),  # noqa: B008
            )
            timing = {"chunk_seconds": round(time.perf_counter() - t0, 3), "chunk_tokens": batch.tokens}
            redo = [ids[k] for k in todo]
            store.append(
                _records(
                    batch,
                    redo,
                    [offset + k for k in todo],
                    ci,
                    {**provenance, "timing": {**timing, "chunk_size": len(items)}},
                ),
                retry=[i for i in redo if i in store],
            )
            new_prompts += len(items)
    return _finish(store, out, new_prompts, prog)


def _records(
    batch: CritiqueBatch, ids: list[str], orders: list[int], chunk: int, provenance: dict[str, Any]
) -> list[dict[str, Any]]:
    records = []
    for k, it in enumerate(batch.items):
        rounds_k = batch.rounds[k]
        records.append(
            {
                "id": ids[k],
                "order": orders[k],
                "chunk": chunk,
                "prompt_id": it.id,
                "prompt": it.messages,
                "initial_response": batch.initial[k],
                "rounds": rounds_k,
                "final_revision": batch.latest[k] if batch.errors[k] is None else None,
                "flags": sorted({f for r in rounds_k for f in r["flags"]}) if rounds_k else [],
                "error": batch.errors[k],
                "provenance": provenance,
            }
        )
    return records


def _finish(store: Store, out: str | Path, new_prompts: int, prog: StepProgress) -> dict[str, Any]:
    """Export, add this run's throughput, and write the summary."""
    summary = export_critique(store, out)
    summary["throughput"] = {
        "new_prompts": new_prompts,
        "seconds": round(prog.elapsed, 2),
        "tokens": prog.tokens,
        "tok_s": round(prog.tokens / max(prog.elapsed, 1e-9), 1),
        "prompts_s": round(new_prompts / max(prog.elapsed, 1e-9), 3),
        "retried": store.retried,
    }
    write_summary(out, summary)
    check_usable(summary, out)
    return summary


def check_usable(summary: dict[str, Any], out: str | Path) -> None:
    """A run that produced records but nothing to train on is a failure (exit 2), not a result.
    Everything is written first, so the records can be inspected and a rerun retries them."""
    if summary["records"] == 0 or summary["exported"] > 0:
        return
    path = str(Path(out) / "records.jsonl")
    n, errors = summary["records"], summary["errors"]
    if errors:
        raise fail(
            path,
            None,
            "error",
            f"{errors} of {n} records failed and none could be exported (first error: {summary['first_error']}); "
            "rerun to retry them",
        )
    raise fail(path, None, "flags", f"all {n} revisions were flagged ({summary['flags']}); nothing exported")
