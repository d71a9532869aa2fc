"""`cai label`: the label stage. Pairs come from the policy's samples, from given files, from
the constitution's positive and negative prompts (rlcd) or from a critique run (revision); a
judge labels them through the judging core (`cai.stages.judging`), records are stored with their
provenance and resumable, and the export is written at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cai import __version__
from cai.constitution.model import Constitution, Versioned
from cai.errors import fail, file_error, option_error
from cai.io.pairs import (
    Pair,
    PairUnit,
    given_units,
    pairs_from_responses,
    sampled_units,
    unit_ids,
)
from cai.io.sources import PromptItem
from cai.io.store import Store, content_hash, derive_seed
from cai.label_methods import constructs_pairs
from cai.models.base import Backend, Generation
from cai.progress import StepProgress
from cai.stages.chunks import pending_chunks, shard_size
from cai.stages.judging import judge_pairs, option_priors
from cai.stages.label_export import export_labels, label_record
from cai.stages.label_math import decision
from cai.stages.messages import (
    comparison_fewshot,
    prompt_messages,
    rlcd_messages,
)
from cai.stages.settings import LabelSettings, Shard

# ------------------------------------------------------------------------------- the label stage


def _fixed(
    c: Constitution, judge: Backend | None, policy: Backend | None, s: LabelSettings, seed: int
) -> dict[str, Any]:
    """What determines a record's content, hashed into its id and checked by the manifest.
    ``judge`` is None for pairs by construction that nobody rescores."""
    return {
        "constitution": c.name,
        "fingerprint": c.fingerprint(),
        "judge": judge.spec if judge else None,
        "policy": policy.spec if policy else None,
        "method": s.method,
        "rescore": s.rescore,
        "judge_settings": s.judge.as_record(),
        "params": s.params.as_record() if policy else None,
        "seed": seed,
        "responses_per_prompt": s.responses_per_prompt if policy else None,
        "pairing": s.pairing if policy else None,
    }


def manifest(
    fixed: dict[str, Any], inputs: Sequence[PromptItem | Pair], s: LabelSettings, shard: Shard
) -> dict[str, Any]:
    keys = [[x.id, x.messages] if isinstance(x, PromptItem) else [x.id, x.prompt, x.a, x.b] for x in inputs]
    return {
        "stage": "label",
        **fixed,
        "batch_size": s.batch_size,
        "inputs": content_hash(keys),
        "n_inputs": len(inputs),
        "shard": f"{shard[0]}/{shard[1]}",
    }


def label_prompts(
    c: Constitution,
    judge: Backend | None,
    policy: Backend,
    prompts: Sequence[PromptItem],
    out: str | Path,
    settings: LabelSettings,
    *,
    seed: int = 0,
    shard: Shard = (0, 1),
    quiet: bool = False,
) -> dict[str, Any]:
    """RLAIF labels for responses the policy samples: K per prompt, paired by `settings.pairing`.

    Runs (or resumes) into `out`; returns the summary (also in summary.json). Raises `CaiError`
    after writing everything when more than `max_failures` of the judge's questions gave no
    probabilities: the records stay for inspection and a rerun resumes.
    """
    run = _LabelRun(c, judge, settings, seed, _fixed(c, judge, policy, settings, seed), policy)
    if settings.method == "revision":
        raise option_error("--method", "revision reads a critique folder: give --critique DIR, not prompts")
    if settings.method == "rlcd":
        if c.spec.rlcd is None:
            raise fail(str(c.path), None, "rlcd", "--method rlcd needs the constitution's rlcd: {positive, negative}")
        return run.execute(list(prompts), out, shard, quiet, lambda ci, o, ch: run.rlcd_units(ci, o, ch), RLCD_PAIR)
    per_prompt = pairs_from_responses(settings.responses_per_prompt, settings.pairing)

    def units(ci: int, offset: int, chunk: Sequence[Any]) -> list[PairUnit]:
        params = replace(settings.params, n=settings.responses_per_prompt, seed=derive_seed(seed, "chunk", ci))
        gens = policy.generate([prompt_messages(c, it.messages) for it in chunk], params)
        return sampled_units(chunk, offset, run.fixed, per_prompt, gens)

    return run.execute(list(prompts), out, shard, quiet, units, per_prompt)


def label_pairs(
    c: Constitution,
    judge: Backend | None,
    pairs: Sequence[Pair],
    out: str | Path,
    settings: LabelSettings,
    *,
    seed: int = 0,
    shard: Shard = (0, 1),
    quiet: bool = False,
) -> dict[str, Any]:
    """RLAIF labels for given pairs (`cai label --pairs`, and `--critique` for ``revision``, whose
    pairs come from `revision_pairs`); otherwise as `label_prompts`."""
    if settings.method == "rlcd":
        raise option_error("--method", "rlcd samples its own pairs: give prompts, not --pairs")
    run = _LabelRun(c, judge, settings, seed, _fixed(c, judge, None, settings, seed), None)

    def units(ci: int, offset: int, chunk: Sequence[Any]) -> list[PairUnit]:
        return given_units(chunk, offset, run.fixed)

    return run.execute(list(pairs), out, shard, quiet, units, None)


def failed(record: dict[str, Any] | None) -> bool:
    """A record whose generation or some judge question failed: `--retry-failed` redoes it."""
    if record is None:
        return False
    if record.get("error") is not None:
        return True
    return any(a.get("p_a") is None for x in record.get("principles", []) for a in x.get("orders", []))


RLCD_PAIR = [(0, 1)]  # response 0: under the positive prompt, 1: under the negative one


def constructed_result() -> dict[str, Any]:
    """The label of a pair by construction: response a (positive / revision) is preferred."""
    return {"principles": [], "p_a": 1.0, "parse_error": None}


def revision_pairs(critique_out: str | Path) -> list[Pair]:
    """A `cai critique` folder's pairs: the final revision (a) over the initial answer (b).

    Only records its SFT export would use (no error, not flagged out) whose revision changed
    the answer; the pair id is the critique record's id, so reruns find their work.
    """
    from cai.io.readers import iter_jsonl
    from cai.io.store import dedupe
    from cai.stages.critique_export import chosen, is_distill

    path = Path(critique_out) / "records.jsonl"
    if not path.is_file():
        raise file_error(str(critique_out), "--critique", "not a `cai critique` output folder (no records.jsonl)")
    records, _ = dedupe([r for _line, r in iter_jsonl(path, committed_only=True)])  # a retry replaces
    if records and all(is_distill(r) for r in records):
        raise file_error(
            str(critique_out), "--critique", "a `--mode distill` folder has one answer per prompt, no pairs"
        )
    pairs = []
    for r in sorted(records, key=lambda r: r.get("order", 0)):
        # The revision the SFT export uses (copy flags as recorded), not blindly the last round's.
        pick = None if is_distill(r) else chosen(r)
        if pick is not None and pick.text.strip() != r["initial_response"].strip():
            pairs.append(Pair(r["id"], r["prompt"], pick.text.strip(), r["initial_response"].strip()))
    if not pairs:
        raise file_error(str(path), "--critique", "no usable revisions that differ from the first answer")
    return pairs


@dataclass
class _Tally:
    new: int = 0
    judged: int = 0
    questions: int = 0
    gen_s: float = 0.0
    judge_s: float = 0.0

    def throughput(self, elapsed: float) -> dict[str, Any]:
        return {
            "new_pairs": self.new,
            "judged_pairs": self.judged,
            "questions": self.questions,
            "generate_seconds": round(self.gen_s, 2),
            "judge_seconds": round(self.judge_s, 2),
            "seconds": round(elapsed, 2),
            "labels_s": round(self.judged / self.judge_s, 3) if self.judge_s else None,
            "questions_s": round(self.questions / self.judge_s, 2) if self.judge_s else None,
            "pairs_s": round(self.new / elapsed, 3) if elapsed and self.new else None,
        }


@dataclass
class _LabelRun:
    """What every chunk of one label run shares; `execute` is the loop both entry points run."""

    c: Constitution
    judge: Backend | None
    settings: LabelSettings
    seed: int
    fixed: dict[str, Any]
    policy: Backend | None
    _priors: dict[str, dict[str, float]] | None = None

    def rlcd_units(self, ci: int, offset: int, chunk: Sequence[Any]) -> list[PairUnit]:
        """One answer per prompt under each of the constitution's ``rlcd`` prompts (a = positive)."""
        assert self.policy is not None
        params = replace(self.settings.params, n=1, seed=derive_seed(self.seed, "chunk", ci))
        convs = [rlcd_messages(self.c, it.messages, side) for it in chunk for side in ("positive", "negative")]
        gens = self.policy.generate(convs, params)
        merged = [
            Generation(
                texts=[*pos.texts[:1], *neg.texts[:1]],
                n_tokens=pos.n_tokens + neg.n_tokens,
                error=pos.error or neg.error,
            )
            for pos, neg in zip(gens[0::2], gens[1::2], strict=True)
        ]
        return sampled_units(chunk, offset, self.fixed, RLCD_PAIR, merged)

    def priors(self, pool: Sequence[Versioned]) -> dict[str, dict[str, float]] | None:
        """The judge's option prior per principle, asked once per run (mc-calibrated only)."""
        if self.settings.judge.method != "mc-calibrated":
            return None
        if self._priors is None and self.judge is not None:
            self._priors = option_priors(self.c, self.judge, pool, self.settings.judge)
        return self._priors

    def provenance(self) -> dict[str, Any]:
        s = self.settings
        return {
            **self.fixed,
            "templates": self.c.template_hashes(),
            "judge_info": self.judge.describe() if self.judge else None,
            "policy_info": self.policy.describe() if self.policy else None,
            "fewshot_turns": len(comparison_fewshot(self.c, s.cot)) if s.fewshot else 0,
            "cai_version": __version__,
        }

    def execute(
        self,
        inputs: list[Any],
        out: str | Path,
        shard: Shard,
        quiet: bool,
        make_units: Callable[[int, int, Sequence[Any]], list[PairUnit]],
        per_prompt: Any,
    ) -> dict[str, Any]:
        s = self.settings
        if self.judge is not None and s.needs_judge:
            from cai.stages.preflight import check_judge

            check_judge(self.c, s.judge)  # every question renders, before the folder exists
        if s.judge.method == "contrast" and self.judge is not None and s.needs_judge:
            from cai.stages.contrast import preflight

            preflight(self.c, self.judge, self.c.comparison_principles, s.judge)
        with Store(out, manifest(self.fixed, inputs, s, shard), lock=True) as store:
            provenance = self.provenance()
            tally = _Tally()
            with StepProgress("label", shard_size(len(inputs), s.batch_size, shard), quiet) as prog:

                def ids_of(_ci: int, chunk: Sequence[Any]) -> list[str]:
                    return unit_ids(chunk, self.fixed, per_prompt)

                retry = failed if s.retry_failed else None
                for p in pending_chunks(inputs, s.batch_size, shard, store, ids_of, retry):
                    if p.todo:
                        t0 = time.perf_counter()
                        todo = set(p.todo)
                        units = [u for u in make_units(p.index, p.offset, p.items) if u.id in todo]
                        gen_s = time.perf_counter() - t0
                        tally.gen_s += gen_s
                        timing = {"generate_seconds": round(gen_s, 3)}
                        store.append(
                            self._judged(units, p.index, {**provenance, "timing": timing}, tally), retry=p.retry
                        )
                    prog.advance(items=len(p.items))
            summary = export_labels(store, out, throughput={**tally.throughput(prog.elapsed), "retried": store.retried})
        self._check_failures(summary["failures"], out)
        if summary["records"] and summary["errors"] == summary["records"]:
            first = next((r["error"] for r in store.records if r.get("error")), None)
            raise fail(
                str(Path(out) / "records.jsonl"),
                None,
                "error",
                f"all {summary['records']} pairs failed (first error: {first}); nothing exported; rerun to retry them",
            )
        if summary["records"] and not summary["exported"]:
            self._nothing_usable(summary, out)
        return summary

    @staticmethod
    def _nothing_usable(summary: dict[str, Any], out: str | Path) -> None:
        """A run whose every pair was a tie, identical or failed exported no row: that is a stage
        that produced nothing usable (exit 2), not a success with an empty dataset."""
        ties, identical, errors = summary["labels"]["ties"], summary["identical"], summary["errors"]
        raise fail(
            str(Path(out) / "preferences.jsonl"),
            None,
            "",
            f"none of the {summary['records']} pairs has a preferred side ({ties} ties, {identical} identical "
            f"replies, {errors} failed): nothing to export; check the judge (cai judge-eval) or the clamp",
        )

    def _judged(
        self, units: list[PairUnit], ci: int, provenance: dict[str, Any], tally: _Tally
    ) -> list[dict[str, Any]]:
        """Judge a chunk's distinct pairs and make its records (identical pairs are recorded, not
        asked). `provenance["timing"]` arrives with the chunk's generation time."""
        t1 = time.perf_counter()
        todo = [u for u in units if u.error is None and u.pair.a != u.pair.b]
        s = self.settings
        constructed = constructs_pairs(s.method)
        if constructed and s.rescore is None:
            results = [constructed_result() for _ in todo]
        else:
            assert self.judge is not None, "a scoring method needs a judge"
            results = judge_pairs(
                self.c,
                self.judge,
                [u.pair for u in todo],
                s.judge,
                derive_seed(self.seed, "judge"),
                priors=self.priors(self.c.comparison_principles),
            )
        if constructed and s.rescore is not None:  # relabelled: record how often it agrees
            for r in results:
                d = decision(r["p_a"])  # None: no answer, or a tie, which neither agrees nor disagrees
                r["construction_agrees"] = None if d is None else d == "a"
        judge_s = time.perf_counter() - t1
        by_id = {u.id: r for u, r in zip(todo, results, strict=True)}
        timing = {
            "chunk": ci,
            "generate_seconds": provenance["timing"]["generate_seconds"],
            "judge_seconds": round(judge_s, 3),
            "chunk_pairs": len(units),
        }
        tally.new += len(units)
        tally.judged += len(todo)
        tally.questions += sum(len(x["orders"]) for r in results for x in r["principles"])
        tally.judge_s += judge_s
        flags = [[] if u.error or u.id in by_id else ["identical"] for u in units]
        records = [
            label_record(u, by_id.get(u.id), f, {**provenance, "timing": timing})
            for u, f in zip(units, flags, strict=True)
        ]
        for rec in records:
            j = by_id.get(rec["id"])
            if j is not None and "construction_agrees" in j:
                rec["construction_agrees"] = j["construction_agrees"]
        return records

    def _check_failures(self, fails: dict[str, Any], out: str | Path) -> None:
        limit = self.settings.max_failures
        if fails["question_rate"] > limit:
            raise fail(
                str(Path(out) / "records.jsonl"),
                None,
                "parse_error",
                f"{fails['failed_questions']} of {fails['questions']} judge questions "
                f"({fails['question_rate']:.0%}) gave no option probabilities, more than "
                f"--max-failures {limit:.0%}; raw outputs are in the records",
            )
