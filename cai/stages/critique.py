"""SL-CAI data: initial answer, then rounds of critique → revision under sampled principles
(``mode: revise``), or one answer under the principles as guidance (``mode: distill``).

Each chunk of prompts is one batch at every step (answer, critique r, revision r), so the model
is never called one prompt at a time. Records are appended per chunk; see `records.Store` for
why a kill at any instant loses and repeats nothing.

Distill mode is context distillation: the policy answers once under a system turn holding the
constitution's system prompt and critique principles (`DISTILL_TEMPLATE`), and the export trains
on that answer to the bare prompt, so the trained model behaves so without being told. The
template is looked up by name in the constitution's template folders (its own ``distill.jinja``
overrides the shipped one) rather than being a role under ``templates:``: a new role would change
every constitution's fingerprint, and with it the ids of every revise run already on disk. Its
rendered text is hashed into distill records' ids instead.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cai import __version__
from cai.constitution.model import Constitution, Versioned
from cai.errors import fail
from cai.io.readers import read_json_file
from cai.io.sources import PromptItem
from cai.io.store import Store, content_hash, derive_seed
from cai.models.base import Backend, Conversation, Generation, GenerationParams
from cai.progress import StepProgress
from cai.stages.chunks import pending_chunks, shard_size
from cai.stages.cleaning import CopyCheck, clean_revision, quality_flags
from cai.stages.critique_export import excludes, export_critique, write_demonstrations, write_summary
from cai.stages.messages import (
    DISTILL_TEMPLATE,
    critique_fewshot,
    critique_messages,
    distill_guidance,
    distill_messages,
    prompt_messages,
    revision_messages,
)
from cai.stages.settings import CritiqueSettings, Shard


def exemplar_texts(c: Constitution) -> list[str]:
    """Every exemplar string the critique and revision prompts can show (`critique_fewshot`):
    prompts, first answers, critiques and revisions."""
    n = c.spec.critique.few_shot
    shown = c.critique_exemplars if n is None else c.critique_exemplars[:n]
    texts = [t for ex in shown for t in (ex.prompt, ex.response)]
    return texts + [t for ex in shown for r in ex.rounds for t in (r.critique, r.revision)]


def copy_check(c: Constitution, s: CritiqueSettings) -> CopyCheck:
    """What an answer must not paste: the few-shot exemplars the revise prompts show, or in
    distill mode (no exemplars shown) the guidance text itself, echoed back instead of answering."""
    texts = [distill_guidance(c)] if s.mode == "distill" else exemplar_texts(c)
    return CopyCheck.of(texts, s.copy_ngram, s.drop_copies, s.drop_boilerplate)


def manifest(
    c: Constitution,
    backend: Backend,
    prompts: list[PromptItem],
    s: CritiqueSettings,
    seed: int,
    shard: Shard,
    guidance: str | None = None,
) -> dict[str, Any]:
    """The run's settings. Revise mode's keys are the ones folders made before `mode` existed
    hold, so those resume; distill adds its own (and has no rounds)."""
    distill = {"rounds": None, "mode": "distill", "guidance": content_hash(guidance)} if guidance is not None else {}
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
        **distill,
    }


def check_mode(out: str | Path, mode: str) -> None:
    """A folder holds one mode's run; say so by name (the manifests' other keys differ too, but
    naming `rounds` would not tell anyone what is wrong)."""
    path = Path(out) / "run.json"
    if not path.is_file():
        return
    held = read_json_file(path, kind="run manifest").get("mode", "revise")
    if held != mode:
        raise fail(
            str(path), None, "mode", f"this folder holds a --mode {held} run; use another --out for --mode {mode}"
        )


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
        check: CopyCheck | None = None,
    ):
        """`principles` per prompt and round; sampled from the constitution when not given
        (`cai try --principle` gives them). `check`: the copy flags' settings (default ones
        when not given)."""
        self.c = c
        self.check = check or CopyCheck.of(exemplar_texts(c))
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
            flags += self.check.flags(cleaned, self.items[i].messages, crit_text[i])
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
            # The next round starts from the latest revision the export could use: a pasted
            # exemplar or critique is no answer to critique.
            if not excludes(flags, self.check.drop, self.check.drop_boilerplate):
                self.latest[i] = cleaned

    def records(
        self, ids: list[str], orders: list[int], chunk: int, provenance: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [
            _record(ids[k], orders[k], chunk, "revise", it, provenance, self.errors[k])
            | {
                "initial_response": self.initial[k],
                "rounds": self.rounds[k],
                "final_revision": self.latest[k] if self.errors[k] is None else None,
                "flags": sorted({f for r in self.rounds[k] for f in r["flags"]}),
            }
            for k, it in enumerate(self.items)
        ]


def _record(
    rid: str, order: int, chunk: int, mode: str, it: PromptItem, provenance: dict[str, Any], error: str | None
) -> dict[str, Any]:
    """The fields every critique record has, in either mode."""
    return {
        "id": rid,
        "order": order,
        "chunk": chunk,
        "mode": mode,
        "prompt_id": it.id,
        "prompt": it.messages,
        "error": error,
        "provenance": provenance,
    }


class DistillBatch:
    """One batch of prompts in distill mode: one answer each under the guidance, no rounds."""

    def __init__(self, items: list[PromptItem], guidance: str, check: CopyCheck):
        self.items, self.guidance, self.check = items, guidance, check
        self.raw: list[str] = [""] * len(items)
        self.answers: list[str] = [""] * len(items)
        self.flags: list[list[str]] = [[] for _ in items]
        self.errors: list[str | None] = [None] * len(items)
        self.tokens = 0

    def run(self, backend: Backend, params: GenerationParams, chunk_seed: int, on_step: Any = None) -> None:
        convs = [distill_messages(self.guidance, it.messages) for it in self.items]
        gens = backend.generate(convs, replace(params, n=1, seed=derive_seed(chunk_seed, "distill")))
        for k, g in enumerate(gens):
            self.tokens += g.n_tokens
            if g.error is not None or not g.texts:
                self.errors[k] = f"distill: {g.error or 'no text returned'}"
                continue
            # The answer is an SFT target as a revision is: the same cleaning and flags (no
            # critique to copy, and no earlier answer to compare with).
            self.raw[k] = g.texts[0]
            self.answers[k] = clean_revision(self.raw[k])
            self.flags[k] = quality_flags(self.answers[k]) + self.check.flags(self.answers[k], self.items[k].messages)
        if on_step:
            on_step(sum(g.n_tokens for g in gens))

    def records(
        self, ids: list[str], orders: list[int], chunk: int, provenance: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [
            _record(ids[k], orders[k], chunk, "distill", it, provenance, self.errors[k])
            | {
                "response_raw": self.raw[k],
                "initial_response": self.answers[k],  # the only answer: the SFT target
                "rounds": [],
                "final_revision": self.answers[k] if self.errors[k] is None else None,
                "flags": self.flags[k],
            }
            for k, it in enumerate(self.items)
        ]


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
    from cai.stages.preflight import check_critique

    check_critique(c, settings.mode)  # every prompt renders, before the folder exists
    guidance = distill_guidance(c) if settings.mode == "distill" else None
    check_mode(out, settings.mode)
    with Store(out, manifest(c, backend, prompts, settings, seed, shard, guidance), lock=True) as store:
        return _run(c, prompts, backend, store, out, settings, seed, shard, quiet, guidance)


def failed(record: dict[str, Any] | None) -> bool:
    """A record whose generation failed: `--retry-failed` redoes it on the next run."""
    return record is not None and record.get("error") is not None


def _provenance(
    c: Constitution, backend: Backend, settings: CritiqueSettings, seed: int, check: CopyCheck, guidance: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the records' ids hash, what every record carries besides)."""
    fixed: dict[str, Any] = {
        "constitution": c.name,
        "fingerprint": c.fingerprint(),
        "templates": c.template_hashes(),
        "model": backend.spec,
        "params": settings.params.as_record(),
        "seed": seed,
        "rounds": settings.rounds or c.spec.critique.rounds,
    }
    # What the records' ids hash: revise mode's exactly as before the mode existed, so that
    # folders written then resume; distill's answers depend on the guidance text, not on rounds.
    if guidance is not None:
        fixed |= {"rounds": None, "mode": "distill", "guidance": content_hash(guidance)}
    provenance = {
        **fixed,
        "model_info": backend.describe(),
        "cai_version": __version__,
        # How this run flagged copies (what `cai merge`, which has no constitution, goes by).
        "copies": {"ngram": check.n, "drop": check.drop, "boilerplate": check.drop_boilerplate},
    }
    if guidance is not None:
        provenance["distill"] = {
            "template": c.renderer.info(DISTILL_TEMPLATE).sha256,
            "principles": [p.ref for p in c.critique_principles],
        }
    else:
        provenance["fewshot"] = {"n_turns": len(critique_fewshot(c)), "system_prompt": c.spec.system_prompt}
    return fixed, provenance


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
    guidance: str | None,
) -> dict[str, Any]:
    rounds = settings.rounds or c.spec.critique.rounds
    check = copy_check(c, settings)
    fixed, provenance = _provenance(c, backend, settings, seed, check, guidance)
    total = shard_size(len(prompts), settings.batch_size, shard)
    steps_per_chunk = 1 if guidance is not None else 1 + 2 * rounds
    new_prompts = 0

    def ids_of(ci: int, chunk: Sequence[PromptItem]) -> list[str]:
        return [content_hash("critique", fixed, it.id, it.messages) for it in chunk]

    with StepProgress("critique", total * steps_per_chunk, quiet) as prog:
        retry = failed if settings.retry_failed else None
        for p in pending_chunks(prompts, settings.batch_size, shard, store, ids_of, retry):
            prog.advance(items=(len(p.items) - len(p.todo)) * steps_per_chunk)
            if not p.todo:
                continue
            todo = p.positions  # one unit per prompt: a unit's position is its prompt's
            items = [p.items[k] for k in todo]
            t0 = time.perf_counter()
            chunk_seed = derive_seed(seed, "chunk", p.index)

            def step(tok: int, n: int = len(items)) -> None:
                prog.advance(items=n, tokens=tok)

            batch: CritiqueBatch | DistillBatch
            if guidance is not None:
                batch = DistillBatch(items, guidance, check)
                batch.run(backend, settings.params, chunk_seed, on_step=step)
            else:
                batch = CritiqueBatch(c, items, rounds, seed, check=check)
                batch.run(backend, settings.params, rounds, chunk_seed, on_step=step)
            timing = {"chunk_seconds": round(time.perf_counter() - t0, 3), "chunk_tokens": batch.tokens}
            extra = {**provenance, "timing": {**timing, "chunk_size": len(items)}}
            store.append(batch.records(p.todo, [p.offset + k for k in todo], p.index, extra), retry=p.retry)
            new_prompts += len(items)
    write_demonstrations(out, c, settings.demonstrations, guidance is not None, settings.demonstration_answers)
    return _finish(store, out, new_prompts, prog, check)


def _finish(store: Store, out: str | Path, new_prompts: int, prog: StepProgress, check: CopyCheck) -> dict[str, Any]:
    """Export, add this run's throughput, and write the summary."""
    summary = export_critique(store, out, check)
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
    what = "answers" if summary.get("mode") == "distill" else "revisions"
    hint = "; --no-drop-copies keeps the copy-flagged ones" if summary.get("excluded_copies") else ""
    raise fail(
        path, None, "flags", f"all {n} records' {what} were flagged ({summary['flags']}); nothing exported{hint}"
    )
