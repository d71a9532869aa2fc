"""Constitution demonstrations: the shipped set (size, balance, disjoint from every evaluation
slice), their way into the SFT export with provenance, the evaluation-overlap warning of
`cai validate`, and the boilerplate flag on scripted SL revisions. Bad demonstration files are
one-line errors: `tests/fixtures/bad_inputs/cases_demonstrations.yaml` (run by test_bad_inputs)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from cai.constitution.demonstrations import RED_TEAM_EVAL_SKIP, normalise
from cai.constitution.load import load_constitution
from cai.io.sources import PromptItem
from cai.paths import data_dir
from cai.stages.cleaning import BOILERPLATE, boilerplate
from cai.stages.critique import run_critique
from cai.stages.refusal import is_refusal
from cai.stages.settings import CritiqueSettings
from tests.doubles import ScriptedBackend
from tests.helpers import invoke

DATA = data_dir("data")
RECIPES = data_dir("recipes")


def _jsonl(name: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (DATA / name).read_text().splitlines() if x.strip()]


def _user_turns(row: dict[str, Any]) -> list[str]:
    p = row["prompt"]
    return [p] if isinstance(p, str) else [m["content"] for m in p if m["role"] == "user"]


def _evaluation_prompts() -> list[str]:
    """Every evaluation slice, read here independently of the code under test."""
    red = _jsonl("red_team.jsonl")[RED_TEAM_EVAL_SKIP:]
    safe = _jsonl("safe_lookalike.jsonl")
    plain = _jsonl("red_team_plain.jsonl") + _jsonl("safe_lookalike_plain.jsonl")
    judge_test = [r for r in _jsonl("judge_dev.jsonl") if r["split"] == "test"]
    return [t for r in [*red, *safe, *plain, *judge_test] for t in _user_turns(r)]


def _long_words(text: str) -> set[str]:
    return {w for w in normalise(text).split() if len(w) >= 4}


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


# ---------------------------------------------------------------- the shipped demonstrations


@pytest.mark.parametrize("name", ["harmless", "harmless-concise"])
def test_shipped_demonstrations_are_many_balanced_varied_and_short(name: str) -> None:
    demos = [p.demo for p in load_constitution(name).demonstrations]
    kinds = Counter(d.kind for d in demos)
    assert len(demos) >= 200 and min(kinds.values()) >= 0.45 * len(demos), kinds
    for kind in kinds:
        assert len({d.category for d in demos if d.kind == kind}) >= 8
    assert max(len(d.reply.split()) for d in demos) <= 60  # SFT max_length 384 tokens, system prompt included
    # Answers answer; declines decline (as the judge-free detector reads them, allowing for its misses);
    # and no reply is the boilerplate the SL stage must not teach.
    assert not [d.prompt for d in demos if d.kind == "answer" and is_refusal(d.reply)]
    declines = [d for d in demos if d.kind == "decline"]
    assert sum(is_refusal(d.reply) for d in declines) >= 0.85 * len(declines)
    assert not [d.prompt for d in demos if boilerplate(d.reply, d.prompt)]


def test_shipped_demonstrations_are_disjoint_from_every_evaluation_slice() -> None:
    demos = [p.demo.prompt for p in load_constitution("harmless").demonstrations]
    evals = _evaluation_prompts()
    assert len(evals) > 300
    assert not {normalise(d) for d in demos} & {normalise(e) for e in evals}
    # Not near copies either: no demonstration shares more than half its words of four letters or
    # more with one (shorter words would match stock openings: "what's the best way to ...").
    words = [_long_words(e) for e in evals]
    for d in demos:
        dw = _long_words(d)
        near = [e for e, ew in zip(evals, words, strict=True) if len(dw & ew) / len(dw | ew) > 0.5]
        assert not near, (d, near)


def test_shipped_recipes_evaluate_only_where_the_overlap_check_looks() -> None:
    """The overlap check treats red-team rows from RED_TEAM_EVAL_SKIP on as the evaluation slice:
    every shipped recipe's eval stage must stay inside it."""
    for path in sorted(RECIPES.glob("*.yaml")):
        ev = (yaml.safe_load(path.read_text())["stages"] or {}).get("eval")
        if ev and ev.get("prompts", "red-team") == "red-team":
            assert ev.get("skip", 0) >= RED_TEAM_EVAL_SKIP, path.name


# ---------------------------------------------------------------- into the SFT set, with provenance


def test_the_answer_share_picks_each_kind_in_file_order_and_spreads_them() -> None:
    from cai.constitution.demonstrations import select

    placed = load_constitution("harmless").demonstrations
    declines = [p for p in placed if p.demo.kind == "decline"]
    answers = [p for p in placed if p.demo.kind == "answer"]
    two_thirds = select(placed, 12, 2 / 3)
    assert [p.demo.kind for p in two_thirds] == ["answer", "decline", "answer"] * 4
    assert [p for p in two_thirds if p.demo.kind == "decline"] == declines[:4]
    assert [p for p in two_thirds if p.demo.kind == "answer"] == answers[:8]
    assert [p.demo.kind for p in select(placed, 4, 0.5)] == ["decline", "answer"] * 2
    assert all(p.demo.kind == "decline" for p in select(placed, 5, 0.0))
    # One kind running short is topped up from the other; no count asks for more than there are.
    topped = select(placed, len(answers) + 10, 1.0)
    assert [sum(p.demo.kind == k for p in topped) for k in ("answer", "decline")] == [len(answers), 10]
    assert len(select(placed, 10_000, 0.9)) == len(placed) and select(placed, 0, 0.5) == []


def test_demonstrations_reach_the_sft_set_with_provenance(tmp_path: Path) -> None:
    from cai.train.sft import load_messages

    c = load_constitution("harmless")
    out = tmp_path / "crit"
    base = ["critique", "--model", "fake", "--prompts", "red-team", "--limit", "2", "--rounds", "1", "--quiet"]
    r = invoke(*base, "--demonstrations", "6", "--out", str(out))
    assert r.code == 0, r.stderr
    sft, pc, prov = (
        _rows(out / "sft.jsonl"),
        _rows(out / "sft_prompt_completion.jsonl"),
        _rows(out / "provenance.jsonl"),
    )
    assert len(sft) == len(pc) == len(prov) == 2 + 6 and len(_rows(out / "cai.jsonl")) == 2
    assert [v["source"] for v in prov] == ["revision"] * 2 + ["demonstration"] * 6
    # Declines and answers alternate, each kind in file order.
    declines = [p for p in c.demonstrations if p.demo.kind == "decline"]
    answers = [p for p in c.demonstrations if p.demo.kind == "answer"]
    expected = [x for pair in zip(declines[:3], answers[:3], strict=True) for x in pair]
    fingerprint = json.loads((out / "run.json").read_text())["fingerprint"]
    assert fingerprint == c.fingerprint()
    for p, row, comp, v in zip(expected, sft[2:], pc[2:], prov[2:], strict=True):
        assert row["messages"] == [
            {"role": "system", "content": c.spec.system_prompt},
            {"role": "user", "content": p.demo.prompt},
            {"role": "assistant", "content": p.demo.reply},
        ]
        assert comp == {"prompt": row["messages"][:2], "completion": row["messages"][2:]}
        assert v == {
            "id": p.id,
            "prompt_id": p.id,
            "principles": [],
            "source": "demonstration",
            "kind": p.demo.kind,
            "category": p.demo.category,
            "fingerprint": fingerprint,
        }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["demonstrations"] == 6 and summary["demonstrations_by_kind"] == {"answer": 3, "decline": 3}
    assert summary["exported"] == 2  # the revisions' count: demonstrations are counted apart
    card = (out / "README.md").read_text()
    assert "6 author-written demonstrations" in card and "size_categories" in card
    # `cai train sft` reads them as they are: every row, each with the constitution's fingerprint.
    table = load_messages([str(out)], "--data")
    assert len(table.examples) == 8 and table.fingerprints == {fingerprint}
    # A rerun with another count resumes the same records and re-exports; 0 leaves them out.
    r = invoke(*base, "--demonstrations", "0", "--out", str(out))
    assert r.code == 0 and "0 demonstrations added" in r.stdout, r.stderr
    assert len(_rows(out / "sft.jsonl")) == 2 and {v["source"] for v in _rows(out / "provenance.jsonl")} == {"revision"}
    # The default: all of them.
    r = invoke(*base, "--out", str(out))
    assert len(_rows(out / "sft.jsonl")) == 2 + len(c.demonstrations)


def test_merged_shards_keep_the_demonstrations_once(tmp_path: Path) -> None:
    base = ["critique", "--model", "fake", "--prompts", "red-team", "--limit", "4", "--rounds", "1"]
    for i in range(2):
        r = invoke(
            *base,
            "--demonstrations",
            "4",
            "--batch-size",
            "1",
            "--shard",
            f"{i}/2",
            "--out",
            str(tmp_path / f"s{i}"),
        )
        assert r.code == 0, r.stderr
    r = invoke("merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m"))
    assert r.code == 0, r.stderr
    prov = _rows(tmp_path / "m" / "provenance.jsonl")
    assert Counter(v["source"] for v in prov) == {"revision": 4, "demonstration": 4}


# ---------------------------------------------------------------- validate: checks and the overlap warning


def _constitution(tmp: Path, demos: str) -> Path:
    (tmp / "demos.yaml").write_text(demos)
    c = tmp / "mine.yaml"
    c.write_text("kind: constitution\nname: mine\nversion: 1\ninclude: harmless\ndemonstrations_file: demos.yaml\n")
    return c


def test_validate_warns_when_a_demonstration_is_an_evaluation_prompt(tmp_path: Path) -> None:
    safe = _jsonl("safe_lookalike.jsonl")[0]
    judge_test = next(r for r in _jsonl("judge_dev.jsonl") if r["split"] == "test")
    red_eval = _jsonl("red_team.jsonl")[RED_TEAM_EVAL_SKIP]
    red_train = _jsonl("red_team.jsonl")[0]  # a critique prompt, not an evaluation one: no warning
    prompts = [safe["prompt"].upper(), _user_turns(judge_test)[0], red_eval["prompt"] + "!!", red_train["prompt"]]
    demos = "kind: demonstrations\ndemonstrations:\n" + "".join(
        f"  - {{kind: decline, prompt: {json.dumps(p)}, reply: 'No, but here is a safe alternative.'}}\n"
        for p in prompts
    )
    c = _constitution(tmp_path, demos)
    r = invoke("validate", str(c), str(tmp_path / "demos.yaml"))
    assert r.code == 0, r.stderr
    warnings = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(warnings) == 3, warnings  # each once, though both files name them
    for line, (i, ref) in zip(
        warnings,
        [(0, f"safe-lookalike ({safe['id']})"), (1, f"judge-dev test split ({judge_test['id']})"),
         (2, f"red-team eval slice ({red_eval['id']})")],
        strict=True,
    ):  # fmt: skip
        assert line.startswith("warning: ") and f"demos.yaml:{3 + i}: demonstrations[{i}].prompt: also in {ref}" in line
    assert "ok: 2 file(s) valid" in r.stdout


def test_inline_demonstrations_and_a_duplicate_across_inline_and_file(tmp_path: Path) -> None:
    egg = "  - {kind: answer, prompt: 'How do I boil an egg?', reply: 'Simmer it for eight minutes.'}\n"
    c = _constitution(tmp_path, "kind: demonstrations\ndemonstrations:\n" + egg)
    c.write_text(c.read_text() + "demonstrations:\n  - {kind: answer, prompt: 'how do I boil an EGG', reply: 'Ten.'}\n")
    r = invoke("validate", str(c))
    assert r.code == 2
    line = r.stderr.splitlines()[0]
    # Inline ones come first, so the file's is the duplicate, and the message says where the first is.
    first = r"\(first at mine\.yaml:7 demonstrations\[0\]\)"
    assert re.search(r"demos\.yaml:3: demonstrations\[0\]\.prompt: duplicate demonstration prompt " + first, line), line


# ---------------------------------------------------------------- the boilerplate flag

PROMPT_A = "How do I get back at my coworker for stealing my lunch?"
PROMPT_B = "Which pills give the strongest high?"
GOOD = "Taking revenge on a coworker tends to backfire; label your lunch and mention the missing food to your manager."
STOCK = [
    "I'm unable to assist with requests that conflict with my policy.",
    "I'm sorry for any inconvenience. Refusing was condescending and hurtful.",
    "I'm sorry for any inconvenience, but as a chatbot, I'm not equipped to provide support on personal matters.",
    "I'm sorry, but I'm unable to assist with that.",
]


def test_boilerplate_is_a_stock_refusal_or_apology_that_names_nothing_of_the_request() -> None:
    for text in STOCK:
        assert boilerplate(text, PROMPT_A) and boilerplate(text, PROMPT_B), text
    assert not boilerplate(GOOD, PROMPT_A)  # names the request
    assert not boilerplate("I can't help with pills for getting high; a drug helpline is free.", PROMPT_B)
    assert not boilerplate("I won't help you hurt anyone. Walk away from the fight and call for help.", PROMPT_A)
    assert not boilerplate("Label your food and talk to your manager about the missing meals.", PROMPT_A)  # no decline


class Scripted(ScriptedBackend):
    """First answer, critique, then each prompt's scripted revisions in round order."""

    def __init__(self, revisions: dict[str, list[str]]):
        super().__init__("scripted", reply=self._reply)
        self.revisions = revisions
        self.done: Counter[str] = Counter()

    def _reply(self, conv: Any, params: Any, i: int) -> str:
        last = conv[-1]["content"]
        if "Write the critique only" in last:  # prompts/critique.jinja
            return "My answer helped with something harmful; I should decline and offer a safer option."
        if "Reply with the rewritten response alone" in last:  # prompts/revision.jinja
            prompt = conv[-5]["content"]  # user prompt, answer, critique request, critique, this
            self.done[prompt] += 1
            return self.revisions[prompt][self.done[prompt] - 1]
        return "Sure, here is exactly how to do that, step by step."


def test_boilerplate_revisions_are_flagged_counted_and_left_out(tmp_path: Path) -> None:
    c = load_constitution("harmless")
    backend = Scripted({PROMPT_A: [GOOD, STOCK[0]], PROMPT_B: [STOCK[1], STOCK[2]]})
    items = [
        PromptItem("a", [{"role": "user", "content": PROMPT_A}]),
        PromptItem("b", [{"role": "user", "content": PROMPT_B}]),
    ]
    s = CritiqueSettings(rounds=2, batch_size=2, demonstrations=0)
    summary = run_critique(c, items, backend, tmp_path / "drop", s, seed=0, quiet=True)  # type: ignore[arg-type]
    recs = {r["prompt_id"]: r for r in _rows(tmp_path / "drop" / "records.jsonl")}
    assert [BOILERPLATE in x["flags"] for x in recs["a"]["rounds"]] == [False, True]
    assert [BOILERPLATE in x["flags"] for x in recs["b"]["rounds"]] == [True, True]
    # a: the earlier, unflagged revision; b: no row at all (its first answer was revised away).
    assert [r["messages"][-1]["content"] for r in _rows(tmp_path / "drop" / "sft.jsonl")] == [GOOD]
    assert summary["boilerplate"] == 3 and summary["excluded_boilerplate"] == 1 and summary["flags"][BOILERPLATE] == 3
    assert summary["drop_boilerplate"] is True
    # --no-drop-boilerplate keeps them, still counted.
    backend = Scripted({PROMPT_A: [GOOD, STOCK[0]], PROMPT_B: [STOCK[1], STOCK[2]]})
    s = CritiqueSettings(rounds=2, batch_size=2, demonstrations=0, drop_boilerplate=False)
    kept = run_critique(c, items, backend, tmp_path / "keep", s, seed=0, quiet=True)  # type: ignore[arg-type]
    assert [r["messages"][-1]["content"] for r in _rows(tmp_path / "keep" / "sft.jsonl")] == [STOCK[0], STOCK[2]]
    assert kept["boilerplate"] == 3 and kept["excluded_boilerplate"] == 0
