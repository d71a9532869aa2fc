"""SL-CAI data: initial answer, then rounds of critique → revision under sampled principles.

Each chunk of prompts is one batch at every step (answer, critique r, revision r), so the model
is never called one prompt at a time. Records are appended per chunk; see `records.Store` for
why a kill at any instant loses and repeats nothing.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cai import __version__
from cai.cleaning import clean_revision, quality_flags
from cai.constitution import Constitution, Versioned
from cai.conversation import critique_fewshot, critique_messages, prompt_messages, revision_messages
from cai.models.base import Backend, Conversation, Generation, GenerationParams
from cai.progress import StepProgress
from cai.records import Store, content_hash, derive_seed
from cai.sources import PromptItem
from cai.stages.chunks import chunks_for_shard, shard_size
from cai.stages.critique_export import EXCLUDING_FLAGS


@dataclass(frozen=True)
class CritiqueSettings:
    rounds: int | None = None  # None: the constitution's
    seed: int = 0
    batch_size: int = 16
    shard: tuple[int, int] = (0, 1)
    params: GenerationParams = field(
        default_factory=lambda: GenerationParams(max_new_tokens=160, temperature=0.7, top_p=0.95)
    )


def manifest(c: Constitution, backend: Backend, prompts: list[PromptItem], s: CritiqueSettings) -> dict[str, Any]:
    return {
        "stage": "critique",
        "constitution": c.name,
        "fingerprint": c.fingerprint(),
        "model": backend.spec,
        "params": s.params.as_record(),
        "rounds": s.rounds or c.spec.critique.rounds,
        "seed": s.seed,
        "batch_size": s.batch_size,
        "prompts": content_hash([[p.id, p.messages] for p in prompts]),
        "n_prompts": len(prompts),
        "shard": f"{s.shard[0]}/{s.shard[1]}",
    }


def _live(messages: Conversation, n_fewshot: int, has_system: bool) -> Conversation:
    """The part of a step's messages after the system prompt and few-shot turns."""
    return messages[(1 if has_system else 0) + n_fewshot :]


class _Chunk:
    """The state of one batch of prompts as it goes through the rounds."""

    def __init__(self, c: Constitution, items: list[PromptItem], rounds: int, seed: int):
        self.c = c
        self.items = items
        self.principles: list[list[Versioned]] = [
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
            idx = self.active()
            if not idx:
                break
            crit_convs = [
                critique_messages(c, self.items[i].messages, self.latest[i], self.principles[i][r]) for i in idx
            ]
            crits = call(f"critique-{r}", idx, crit_convs)
            idx2 = [i for i in idx if self.errors[i] is None]
            crit_text = {i: g.texts[0].strip() for i, g in zip(idx, crits, strict=True) if self.errors[i] is None}
            rev_convs = [
                revision_messages(c, self.items[i].messages, self.latest[i], self.principles[i][r], crit_text[i])
                for i in idx2
            ]
            revs = call(f"revision-{r}", idx2, rev_convs)
            for i, conv_c, conv_r, g in zip(
                idx2, [crit_convs[idx.index(i)] for i in idx2], rev_convs, revs, strict=True
            ):
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
                        "critique_prompt": _live(conv_c, n_fewshot, has_system),
                        "revision_prompt": _live(conv_r, n_fewshot, has_system),
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
    quiet: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the SL-CAI data stage into `out`; returns the summary."""
    store = Store(out, manifest(c, backend, prompts, settings))
    rounds = settings.rounds or c.spec.critique.rounds
    fixed = {
        "constitution": c.name,
        "fingerprint": c.fingerprint(),
        "templates": c.template_hashes(),
        "model": backend.spec,
        "params": settings.params.as_record(),
        "seed": settings.seed,
        "rounds": rounds,
    }
    provenance_base = {
        **fixed,
        "model_info": backend.describe(),
        "cai_version": __version__,
        "fewshot": {"n_turns": len(critique_fewshot(c)), "system_prompt": c.spec.system_prompt},
    }
    total = shard_size(len(prompts), settings.batch_size, settings.shard)
    steps_per_chunk = 1 + 2 * rounds
    new_prompts = 0
    with StepProgress("critique", total * steps_per_chunk, quiet) as prog:
        for ci, offset, chunk in chunks_for_shard(prompts, settings.batch_size, settings.shard):
            ids = [content_hash("critique", fixed, it.id, it.messages) for it in chunk]
            if all(i in store for i in ids):
                prog.advance(items=len(chunk) * steps_per_chunk)
                continue
            t0 = time.perf_counter()
            state = _Chunk(c, list(chunk), rounds, settings.seed)
            state.run(
                backend,
                settings.params,
                rounds,
                derive_seed(settings.seed, "chunk", ci),
                on_step=lambda tok, n=len(chunk): prog.advance(items=n, tokens=tok),  # noqa: B008
            )
            seconds = time.perf_counter() - t0
            records = []
            for k, it in enumerate(chunk):
                rounds_k = state.rounds[k]
                final = state.latest[k] if state.errors[k] is None else None
                flags = sorted({f for r in rounds_k for f in r["flags"]}) if rounds_k else []
                records.append(
                    {
                        "id": ids[k],
                        "order": offset + k,
                        "chunk": ci,
                        "prompt_id": it.id,
                        "prompt": it.messages,
                        "initial_response": state.initial[k],
                        "rounds": rounds_k,
                        "final_revision": final,
                        "flags": flags,
                        "error": state.errors[k],
                        "provenance": {
                            **provenance_base,
                            "timing": {
                                "chunk_seconds": round(seconds, 3),
                                "chunk_tokens": state.tokens,
                                "chunk_size": len(chunk),
                            },
                        },
                    }
                )
            store.append(records)
            new_prompts += len(chunk)
    from cai.stages.critique_export import export_critique

    summary = export_critique(store, out)
    summary["throughput"] = {
        "new_prompts": new_prompts,
        "seconds": round(prog.elapsed, 2),
        "tokens": prog.tokens,
        "tok_s": round(prog.tokens / max(prog.elapsed, 1e-9), 1),
    }
    summary["throughput"]["prompts_s"] = round(new_prompts / max(prog.elapsed, 1e-9), 3)
    from cai.stages.critique_export import write_summary

    write_summary(out, summary)
    return summary
