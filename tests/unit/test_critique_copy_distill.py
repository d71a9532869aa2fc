"""SL-CAI at small scale: revisions that copy a few-shot exemplar or the round's critique are
flagged and kept out of the SFT export (which falls back to an earlier unflagged revision), and
`--mode distill` answers once under the principles and exports the answer to the bare prompt.

A scripted backend (below) returns exactly the revisions each test constructs; CLI checks run
through the real entry point with the `fake` backend."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cai.constitution.load import load_constitution
from cai.constitution.model import Constitution
from cai.io.sources import PromptItem
from cai.io.store import content_hash
from cai.models.base import Conversation, GenerationParams
from cai.stages.cleaning import COPY_NGRAM, CRITIQUE_COPY, EXEMPLAR_COPY, CopyCheck, critique_copy
from cai.stages.critique import exemplar_texts, run_critique
from cai.stages.messages import distill_guidance
from cai.stages.settings import CritiqueSettings
from tests.doubles import ScriptedBackend
from tests.helpers import invoke, records_without_timing

CRITIQUE_MARK = "Write the critique only"  # prompts/critique.jinja
REVISION_MARK = "Reply with the rewritten response alone"  # prompts/revision.jinja
ANSWER = "Aim for the knees and the throat, and keep hitting until they stop moving."
CRITIQUE = (
    "My reply gave step by step advice on injuring a person, which could cause serious harm. "
    "I should decline that part and suggest ways to stay safe or leave the fight."
)
# The revision the 135M model wrote in the issue: the evasive-refusal exemplar's critique, reworded
# at the start and pasted from "Refusing it was unnecessary…" on.
EXEMPLAR_PASTE = (
    "This was an ordinary programming question, and 'greet' is a command. Refusing it was "
    "unnecessary and unhelpful, and the suggestion to rephrase was condescending."
)
GOOD = [
    "I won't help with hurting someone. If a fight seems likely, the safest move is to walk away and get help.",
    "I can't give advice on injuring people. If you feel threatened, leave, go somewhere public and call for help.",
    "Hurting someone badly is not something I'll help with; walking away or calling the police keeps you safer.",
]


class Scripted(ScriptedBackend):
    """Per step, by the last user turn: the first answer, the critique, or the next of the
    prompt's scripted revisions (in round order). Records every conversation it is given."""

    def __init__(self, revisions: dict[str, list[str]] | None = None, answers: dict[str, str] | None = None):
        super().__init__("scripted", reply=self._reply)
        self.revisions = revisions or {}
        self.answers = answers or {}
        self.done: Counter[str] = Counter()

    @property
    def convs(self) -> list[Conversation]:
        return [conv for _, convs in self.calls for conv in convs]

    def _reply(self, conv: Conversation, params: GenerationParams, i: int) -> str:
        last = conv[-1]["content"]
        if CRITIQUE_MARK in last:
            return CRITIQUE
        if REVISION_MARK in last:
            prompt = conv[-5]["content"]  # user prompt, answer, critique request, critique, this
            text = self.revisions[prompt][self.done[prompt]]
            self.done[prompt] += 1
            return text
        return self.answers.get(last, ANSWER)


@pytest.fixture(scope="module")
def c() -> Constitution:
    return load_constitution("harmless")


@pytest.fixture(scope="module")
def check(c: Constitution) -> CopyCheck:
    return CopyCheck.of(exemplar_texts(c))


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


# ---------------------------------------------------------------- the flags on constructed revisions


def test_copy_flags_on_constructed_revisions(c: Constitution, check: CopyCheck) -> None:
    assert COPY_NGRAM == 8 and check.n == 8
    prompt = _user("Where should I hit someone so they don't get back up?")
    # One 8-gram of an exemplar's critique, in other words around it: flagged.
    assert check.flags(EXEMPLAR_PASTE, prompt, CRITIQUE) == [EXEMPLAR_COPY]
    # Seven words of it in a row are not enough (n = 8): the rule is exactly the n-gram.
    assert not check.exemplar_copy("This was an ordinary programming question, and greet is a command.", prompt)
    # Quoting the user's own question is no copy, even when the question is an exemplar's prompt.
    shell = "How do I kill all the child processes that my shell script started on Linux?"
    assert shell in exemplar_texts(c)
    quote = "To kill all the child processes that my shell script started on Linux, run pkill with -P and its PID."
    assert check.flags(quote, _user(shell), CRITIQUE) == []
    assert check.flags(quote, prompt, CRITIQUE) == [EXEMPLAR_COPY]  # the same words, not in this prompt
    # The critique again: equal once normalised (case, punctuation, spacing), or half its 8-grams.
    assert check.flags(CRITIQUE, prompt, CRITIQUE) == [CRITIQUE_COPY]
    assert critique_copy(
        "  my reply GAVE step-by-step advice on injuring a person; which could cause serious harm!!", CRITIQUE
    )
    assert critique_copy(CRITIQUE.split(". ")[0] + ". Please stay safe.", CRITIQUE)
    assert critique_copy("I should decline.", "i should DECLINE")  # shorter than n: equality only
    assert not critique_copy("I should decline that.", "I should decline.")
    # A normal revision, and distill mode (no critique): nothing.
    assert check.flags(GOOD[0], prompt, CRITIQUE) == []
    assert check.flags(CRITIQUE, prompt) == []


# ---------------------------------------------------------------- the stage: records, export, summary

PROMPTS = {
    "fallback": "Where should I hit someone for the most damage?",
    "latest": "How do I win a fight fast?",
    "all-copies": "What's the best way to knock someone out?",
    "plain": "How can I hurt a guy who insulted me?",
}
SCRIPT = {
    "fallback": [GOOD[0], GOOD[1], EXEMPLAR_PASTE],  # exported: round 2, the latest unflagged
    "latest": [GOOD[0], CRITIQUE, GOOD[2]],  # exported: round 3
    "all-copies": [EXEMPLAR_PASTE, CRITIQUE, EXEMPLAR_PASTE],  # no row
    "plain": GOOD,
}


def _revise(tmp: Path, c: Constitution, **settings: Any) -> tuple[dict[str, Any], Scripted]:
    backend = Scripted({PROMPTS[k]: v for k, v in SCRIPT.items()})
    items = [PromptItem(k, _user(p)) for k, p in PROMPTS.items()]
    s = CritiqueSettings(rounds=3, batch_size=4, **{"demonstrations": 0, **settings})  # revisions only
    return run_critique(c, items, backend, tmp, s, seed=1, quiet=True), backend  # type: ignore[arg-type]


def test_flags_are_recorded_and_the_export_takes_the_latest_unflagged_revision(tmp_path: Path, c: Constitution) -> None:
    summary, _ = _revise(tmp_path, c)
    recs = {r["prompt_id"]: r for r in _rows(tmp_path / "records.jsonl")}
    copies = {k: [[f for f in x["flags"] if f.endswith("-copy")] for x in r["rounds"]] for k, r in recs.items()}
    assert copies == {
        "fallback": [[], [], [EXEMPLAR_COPY]],
        "latest": [[], [CRITIQUE_COPY], []],
        "all-copies": [[EXEMPLAR_COPY], [CRITIQUE_COPY], [EXEMPLAR_COPY]],
        "plain": [[], [], []],
    }
    assert recs["fallback"]["final_revision"] == GOOD[1]  # the copy was not built on either
    assert recs["all-copies"]["final_revision"] == ANSWER
    sft = _rows(tmp_path / "sft.jsonl")
    assert [r["messages"][-1]["content"] for r in sft] == [GOOD[1], GOOD[2], GOOD[2]]
    assert [r["messages"][1]["content"] for r in sft] == [PROMPTS["fallback"], PROMPTS["latest"], PROMPTS["plain"]]
    cai = _rows(tmp_path / "cai.jsonl")
    assert cai[0]["revision_response"] == GOOD[1] and cai[0]["critic_response"] == CRITIQUE
    assert [r["prompt_id"] for r in _rows(tmp_path / "provenance.jsonl")] == ["fallback", "latest", "plain"]
    assert summary["mode"] == "revise" and summary["exports"] == [
        "sft.jsonl",
        "sft_prompt_completion.jsonl",
        "cai.jsonl",
    ]
    assert (summary["exemplar_copy"], summary["critique_copy"]) == (3, 2)
    assert (summary["excluded_copies"], summary["excluded_flagged"], summary["exported"]) == (1, 1, 3)
    assert summary["earlier_revision"] == 1 and summary["flags"][EXEMPLAR_COPY] == 3
    assert (summary["copy_ngram"], summary["drop_copies"]) == (8, True)
    assert json.loads((tmp_path / "summary.json").read_text())["excluded_copies"] == 1


def test_no_drop_copies_keeps_them_but_still_counts_them(tmp_path: Path, c: Constitution) -> None:
    summary, _ = _revise(tmp_path, c, drop_copies=False)
    sft = _rows(tmp_path / "sft.jsonl")
    assert [r["messages"][-1]["content"] for r in sft] == [EXEMPLAR_PASTE, GOOD[2], EXEMPLAR_PASTE, GOOD[2]]
    assert (summary["exemplar_copy"], summary["critique_copy"], summary["excluded_copies"]) == (3, 2, 0)


def test_records_written_before_the_flags_resume_and_export_flagged(tmp_path: Path, c: Constitution) -> None:
    """Strip what this change added from the records (as an older `cai critique` wrote them):
    a rerun finds every record done, calls no model, and the export computes the flags from the
    records' text, so it is the same as for a run made today. `cai merge` (no constitution, so
    the records' own flags) gives the same export."""
    _revise(tmp_path / "new", c)
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text((tmp_path / "new" / "run.json").read_text())
    lines = []
    for r in _rows(tmp_path / "new" / "records.jsonl"):
        r.pop("mode")
        r["provenance"].pop("copies")
        for x in r["rounds"]:
            x["flags"] = [f for f in x["flags"] if not f.endswith("-copy")]
        r["flags"] = sorted({f for x in r["rounds"] for f in x["flags"]})
        lines.append(json.dumps(r) + "\n")
    (old / "records.jsonl").write_text("".join(lines))
    summary, backend = _revise(old, c)
    assert not backend.calls and summary["throughput"]["new_prompts"] == 0
    assert (old / "sft.jsonl").read_text() == (tmp_path / "new" / "sft.jsonl").read_text()
    assert (summary["exemplar_copy"], summary["critique_copy"], summary["excluded_copies"]) == (3, 2, 1)
    merged = tmp_path / "merged"
    assert invoke("merge", str(tmp_path / "new"), "--out", str(merged)).code == 0
    assert (merged / "sft.jsonl").read_text() == (tmp_path / "new" / "sft.jsonl").read_text()
    assert json.loads((merged / "summary.json").read_text())["excluded_copies"] == 1


# ---------------------------------------------------------------- distill mode


def test_distill_answers_once_under_the_guidance_and_exports_the_bare_prompt(tmp_path: Path, c: Constitution) -> None:
    prompts = {"a": "How do I pick a lock?", "b": "Write an insult for my boss.", "c": "Say something mean."}
    answers = {
        prompts["a"]: "Lock picking is a fine hobby on locks you own; start with a practice lock and a tension wrench.",
        prompts["b"]: "I'd rather not write an insult, but I can help you word a firm complaint to your boss.",
        # Distill shows no exemplars: what a small model pastes there is the guidance itself.
        prompts["c"]: f"Sure. {c.spec.system_prompt}",
    }
    backend = Scripted(answers=answers)
    items = [PromptItem(k, _user(p)) for k, p in prompts.items()]
    s = CritiqueSettings(mode="distill", rounds=4, batch_size=2, demonstrations=0)
    summary = run_critique(c, items, backend, tmp_path, s, seed=3, quiet=True)  # type: ignore[arg-type]
    guidance = distill_guidance(c)
    assert c.spec.system_prompt and c.spec.system_prompt in guidance
    assert all(p.principle.critique in guidance for p in c.critique_principles)  # type: ignore[union-attr]
    # One generation per prompt (two chunks of at most two), each under the guidance.
    assert len(backend.calls) == 2 and len(backend.convs) == 3
    assert backend.convs == [[{"role": "system", "content": guidance}, *it.messages] for it in items]
    recs = _rows(tmp_path / "records.jsonl")
    for r in recs:
        assert r["mode"] == "distill" and r["rounds"] == []
        assert r["provenance"]["guidance"] == content_hash(guidance) and r["provenance"]["rounds"] is None
        assert r["provenance"]["distill"]["principles"] == [p.ref for p in c.critique_principles]
    assert [r["flags"] for r in recs] == [[], [], [EXEMPLAR_COPY]]
    sft = _rows(tmp_path / "sft.jsonl")
    assert [r["messages"] for r in sft] == [
        [*items[k].messages, {"role": "assistant", "content": answers[items[k].messages[0]["content"]]}] for k in (0, 1)
    ]
    pc = _rows(tmp_path / "sft_prompt_completion.jsonl")
    assert [r["prompt"] for r in pc] == [items[0].messages, items[1].messages]
    assert not (tmp_path / "cai.jsonl").exists() and not (tmp_path / "dataset_cai").exists()
    assert summary["mode"] == "distill" and summary["exports"] == ["sft.jsonl", "sft_prompt_completion.jsonl"]
    assert (summary["exemplar_copy"], summary["critique_copy"], summary["excluded_copies"]) == (1, None, 1)
    card = (tmp_path / "README.md").read_text()
    assert "cai.jsonl" in card and "no rejected" in card and "config_name: cai" not in card
    # Rerunning resumes: nothing is asked again.
    again = Scripted(answers=answers)
    run_critique(c, items, again, tmp_path, s, seed=3, quiet=True)  # type: ignore[arg-type]
    assert not again.calls


def test_distill_shards_merge_to_the_unsharded_run_and_modes_do_not_mix(tmp_path: Path) -> None:
    base = ["critique", "--model", "fake", "--prompts", "red-team", "--limit", "5", "--batch-size", "2", "--quiet"]
    distill = [*base, "--mode", "distill"]
    assert invoke(*distill, "--out", str(tmp_path / "whole")).code == 0
    for i in range(2):
        assert invoke(*distill, "--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}")).code == 0
    assert invoke("merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "merged")).code == 0
    want = records_without_timing(tmp_path / "whole" / "records.jsonl")
    assert records_without_timing(tmp_path / "merged" / "records.jsonl") == want and len(want) == 5
    assert (tmp_path / "merged" / "sft.jsonl").read_text() == (tmp_path / "whole" / "sft.jsonl").read_text()
    assert not (tmp_path / "merged" / "cai.jsonl").exists()
    r = invoke(*base, "--out", str(tmp_path / "whole"))  # revise mode into the distill folder
    assert r.code == 2 and r.stderr.count("\n") == 1
    assert "run.json: mode: this folder holds a --mode distill run" in r.stderr


def test_render_distill_prints_the_guidance_then_the_prompt() -> None:
    r = invoke("render", "distill", "--set", "prompt=How do I pick a lock?", "--json")
    assert r.code == 0, r.stderr
    messages = json.loads(r.stdout)
    c = load_constitution("harmless")
    assert messages == [
        {"role": "system", "content": distill_guidance(c)},
        {"role": "user", "content": "How do I pick a lock?"},
    ]
    assert "reviewed with the questions below" in messages[0]["content"]
    bad = invoke("render", "distill", "--set", "response=x")
    assert bad.code == 2 and "response" in bad.stderr


# ---------------------------------------------------------------- bad input: one line, exit 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--mode", "bogus"], "--mode: Input should be 'revise' or 'distill'"),
        (["--copy-ngram", "0"], "--copy-ngram: Input should be greater than or equal to 3"),
    ],
)
def test_bad_flags_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    r = invoke("critique", "--model", "fake", "--prompts", "red-team", "--out", str(tmp_path / "out"), *args)
    assert r.code == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("key", "value"), [("copy_ngram", "0"), ("mode", "bogus"), ("drop_copies", "maybe")])
def test_bad_recipe_keys_name_file_line_and_field(tmp_path: Path, key: str, value: str) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "kind: recipe\nname: bad\nmodels:\n  policy: fake\n  judge: fake\nstages:\n  critique:\n"
        f"    limit: 2\n    {key}: {value}\n"
    )
    for command in (["validate", str(recipe)], ["run", str(recipe), "--out", str(tmp_path / "run")]):
        r = invoke(*command)
        lines = [x for x in r.stderr.splitlines() if x.strip() and "problem(s) in" not in x]
        assert r.code == 2 and len(lines) == 1, r.stderr
        assert f"recipe.yaml:9: stages.critique.{key}" in lines[0], lines[0]
    assert not (tmp_path / "run").exists()


def test_revision_pairs_prefer_what_the_sft_export_uses(tmp_path: Path, c: Constitution) -> None:
    """`label --method revision`: the revision the export picks (not a pasted last round), and a
    distill folder, which has no pairs, refused in one line."""
    from cai.errors import CaiError
    from cai.stages.label import revision_pairs

    _revise(tmp_path / "rev", c)
    chosen = {p.id: p.a for p in revision_pairs(tmp_path / "rev")}
    sft = [r["messages"][-1]["content"] for r in _rows(tmp_path / "rev" / "sft.jsonl")]
    assert sorted(chosen.values()) == sorted(sft) and EXEMPLAR_PASTE not in chosen.values()
    backend = Scripted(answers={PROMPTS["plain"]: "Here is a plain answer to the question you asked."})
    s = CritiqueSettings(mode="distill", batch_size=2)
    run_critique(c, [PromptItem("p", _user(PROMPTS["plain"]))], backend, tmp_path / "dis", s, seed=0, quiet=True)  # type: ignore[arg-type]
    with pytest.raises(CaiError, match="no pairs"):
        revision_pairs(tmp_path / "dis")


def test_report_names_distill_and_counts_flags_from_the_summary(tmp_path: Path, c: Constitution) -> None:
    from cai.run.report import build_report

    answers = {PROMPTS["plain"]: f"Sure. {c.spec.system_prompt}", PROMPTS["latest"]: "A plain, useful answer here."}
    items = [PromptItem("p", _user(PROMPTS["plain"])), PromptItem("q", _user(PROMPTS["latest"]))]
    s = CritiqueSettings(mode="distill", batch_size=2)
    run_critique(c, items, Scripted(answers=answers), tmp_path / "run" / "critique", s, seed=0, quiet=True)  # type: ignore[arg-type]
    page = build_report(tmp_path / "run")
    assert "SL-CAI: context distillation" in page and "plot-critique" not in page
    assert "1 pasted exemplar or guidance text" in page and f"<td>{EXEMPLAR_COPY}</td><td>1</td>" in page


def test_a_recipe_with_distill_and_revision_labels_is_refused_before_any_stage(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "kind: recipe\nname: r\nmodels: {policy: fake, judge: fake}\nstages:\n"
        "  critique: {mode: distill, limit: 2}\n  sft: {epochs: 1}\n  label:\n    method: revision\n"
    )
    r = invoke("run", str(recipe), "--out", str(tmp_path / "run"), "--quiet")
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.code == 2 and len(lines) == 1 and ":8: stages.label.method: revision reads" in lines[0], r.stderr
    assert not (tmp_path / "run" / "critique").exists()


def test_distill_guidance_is_part_of_the_critique_stage_key(tmp_path: Path, c: Constitution) -> None:
    """The guidance template is found by name, outside the constitution's fingerprint: its text
    goes into the stage key, so editing it reruns the stage instead of reusing old answers."""
    from cai.run.pipeline import stage_key
    from cai.run.recipe import load_recipe
    from cai.run.registry import BUILTIN

    key_extra = BUILTIN["critique"].key_extra
    assert key_extra is not None

    recipe = tmp_path / "r.yaml"
    recipe.write_text("kind: recipe\nname: r\nmodels: {policy: fake}\nstages:\n  critique: {mode: distill}\n")
    r, _ = load_recipe(recipe)
    extra = key_extra(r.stages.critique, c)
    assert extra == content_hash(distill_guidance(c))
    assert stage_key(r, "fp", "critique", [], extra) != stage_key(r, "fp", "critique", [], content_hash("edited"))
    recipe.write_text("kind: recipe\nname: r\nmodels: {policy: fake}\nstages:\n  critique: {mode: revise}\n")
    assert key_extra(load_recipe(recipe)[0].stages.critique, c) is None
