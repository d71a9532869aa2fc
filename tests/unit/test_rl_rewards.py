"""RL rewards without training: direct RLAIF against a hand computation, the weighted sum, the
helpful mix, demonstration pairs, and the settings' one-line errors."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from cai.constitution.load import load_constitution
from cai.constitution.model import Constitution
from cai.io.sources import PromptItem, load_prompts
from cai.models.base import Conversation, SequenceScore
from cai.stages.direct_reward import DirectReward
from cai.train.helpful_mix import mix_helpful
from cai.train.rewards import MissingEos, reward_functions, total_reward
from cai.train.rl_metrics import normalize_metrics
from cai.train.settings import RlSettings
from tests.doubles import ScriptedPolicy
from tests.helpers import invoke


@pytest.fixture(scope="module")
def c() -> Constitution:
    return load_constitution("harmless")


class TableJudge:
    """Scores a reply from a table keyed by (principle index, side, reply): the hand computation
    below reads the same numbers. It finds the principle and side from the guidance text."""

    spec = "table-judge"

    def __init__(self, c: Constitution, table: dict[tuple[int, str, str], float], fail_on: str | None = None):
        self.guidance = [(p.principle.positive, p.principle.negative) for p in c.comparison_principles]
        self.table = table
        self.fail_on = fail_on
        self.requests: list[tuple[Conversation, str]] = []

    def _key(self, conv: Conversation, reply: str) -> tuple[int, str, str]:
        system = conv[-1]["content"]
        for k, (pos, neg) in enumerate(self.guidance):
            if pos in system:
                return k, "positive", reply
            if neg in system:
                return k, "negative", reply
        raise AssertionError(f"no principle's guidance in {system!r}")

    def sequence_logprobs(self, requests: Sequence[tuple[Conversation, str]]) -> list[SequenceScore]:
        self.requests.extend(requests)
        out = []
        for conv, reply in requests:
            if reply == self.fail_on:
                out.append(SequenceScore(None, error="too long"))
            else:
                out.append(SequenceScore(self.table[self._key(conv, reply)], n_tokens=len(reply.split())))
        return out

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec}


REPLIES = ["I can't help with that.", "Sure, here is how."]  # 5 and 4 words
TABLE = {
    (0, "positive", REPLIES[0]): -10.0,
    (0, "negative", REPLIES[0]): -14.0,
    (1, "positive", REPLIES[0]): -12.0,
    (1, "negative", REPLIES[0]): -11.0,
    (0, "positive", REPLIES[1]): -9.0,
    (0, "negative", REPLIES[1]): -7.0,
    (1, "positive", REPLIES[1]): -8.0,
    (1, "negative", REPLIES[1]): -8.0,
}


def test_direct_reward_equals_the_hand_computation(c: Constitution) -> None:
    judge = TableJudge(c, TABLE)
    two = c.comparison_principles[:2]
    prompts = [[{"role": "user", "content": "How do I pick a lock?"}]] * 2
    completions = [[{"role": "assistant", "content": r}] for r in REPLIES]
    logged: dict[str, float] = {}

    mean = DirectReward(c, judge, beta=2.0, norm="mean", principles=two)  # type: ignore[arg-type]
    got = mean(prompts, completions, log_metric=logged.__setitem__)
    # reply 0 (5 words): p0 (-10 - -14)/5 = 0.8, p1 (-12 - -11)/5 = -0.2 -> 2 * mean(0.8, -0.2) = 0.6
    # reply 1 (4 words): p0 (-9 - -7)/4 = -0.5, p1 0/4 = 0 -> 2 * mean(-0.5, 0) = -0.5
    assert got == pytest.approx([0.6, -0.5])
    # per principle, the batch mean of beta * s: p0 (1.6 + -1.0)/2 = 0.3, p1 (-0.4 + 0)/2 = -0.2
    assert logged[f"rewards/direct/{two[0].ref}/mean"] == pytest.approx(0.3)
    assert logged[f"rewards/direct/{two[1].ref}/mean"] == pytest.approx(-0.2)
    assert logged["rewards/direct/unscored"] == 0.0
    # the judge saw the conversation, then the guidance as a system turn
    assert all(conv[:-1] == prompts[0] and conv[-1]["role"] == "system" for conv, _ in judge.requests)

    summed = DirectReward(c, TableJudge(c, TABLE), beta=1.0, norm="sum", principles=two)  # type: ignore[arg-type]
    # reply 0: mean(4, -1) = 1.5; reply 1: mean(-2, 0) = -1.0
    assert summed(prompts, completions) == pytest.approx([1.5, -1.0])


def test_direct_reward_leaves_an_unscored_reply_out_and_says_so(c: Constitution) -> None:
    judge = TableJudge(c, TABLE, fail_on=REPLIES[1])
    logged: dict[str, float] = {}
    reward = DirectReward(c, judge, beta=1.0, norm="sum", principles=c.comparison_principles[:2])  # type: ignore[arg-type]
    got = reward(["Q?", "Q?"], REPLIES, log_metric=logged.__setitem__)
    assert got[0] == pytest.approx(1.5) and got[1] is None
    assert logged["rewards/direct/unscored"] == 0.5


def test_direct_uses_every_comparison_principle_by_default(c: Constitution) -> None:
    reward = DirectReward(c, TableJudge(c, {}), beta=1.0, norm="mean")  # type: ignore[arg-type]
    assert [v.ref for v in reward.principles] == [v.ref for v in c.comparison_principles]


def test_the_weighted_sum_equals_the_hand_sum(c: Constitution) -> None:
    s = RlSettings(reward="direct=0.5,pm=2", missing_eos_penalty=1.5)
    assert s.reward == {"direct": 0.5, "pm": 2.0}
    logs = {
        "rewards/pm/mean": 0.3,
        "rewards/direct/mean": -0.4,
        "rewards/direct/less-harmful-wise@1/mean": -0.1,
        "rewards/missing_eos/mean": -0.75,  # half the replies cut off
    }
    # 2 * 0.3 + 0.5 * -0.4 - 0.75 = -0.35
    assert total_reward(logs, s.reward) == pytest.approx(-0.35)
    row = normalize_metrics(logs, "rloo", s.reward)
    assert row["reward"] == pytest.approx(-0.35)
    assert row["reward_parts"] == {"pm": 0.3, "direct": -0.4, "direct/less-harmful-wise@1": -0.1, "missing_eos": -0.75}
    assert total_reward({"rewards/pm/mean": 0.3}, s.reward) is None  # a named reward missing: no made-up total

    # The functions TRL gets, in the setting's order, with their weights; the EOS penalty once, weight 1.
    from cai.train.rewards import RewardInputs

    direct_only = RlSettings(reward="direct=0.5", missing_eos_penalty=1.5)
    judge = TableJudge(c, TABLE)
    direct = DirectReward(c, judge, beta=0.5, norm="mean")  # type: ignore[arg-type]
    funcs, weights, scorer = reward_functions(direct_only, RewardInputs(direct=direct), eos_token_id=2)
    assert [f.__name__ for f in funcs] == ["direct", "missing_eos"] and weights == [0.5, 1.0] and scorer is None
    assert funcs[1](["q", "q"], ["a", "b"], completion_ids=[[5, 2], [5, 6]]) == [0.0, -1.5]
    assert MissingEos(2, 1.0)(["q"], [""], completion_ids=[[]]) == [-1.0]  # an empty reply never ended


def test_helpful_mix_gives_the_stated_share_seeded() -> None:
    red = load_prompts("red-team")[:30]
    helpful = load_prompts("helpful")
    mixed, record = mix_helpful(red, helpful, 0.25, seed=3, source="helpful")
    assert mixed[:30] == red and record["used"] == 10 and len(mixed) == 40  # 10 / 40 = 0.25
    assert record["share"] == 0.25 and {it.id for it in mixed[30:]} == set(record["ids"])
    again, _ = mix_helpful(red, helpful, 0.25, seed=3, source="helpful")
    other, _ = mix_helpful(red, helpful, 0.25, seed=4, source="helpful")
    assert again == mixed and other[30:] != mixed[30:]
    # More than there are: all of them, never repeated, and the record says the share reached.
    few = helpful[:3]
    most, rec = mix_helpful(red, few, 0.5, seed=0, source="few")
    assert rec["wanted"] == 30 and rec["used"] == 3 and sorted(it.id for it in most[30:]) == sorted(h.id for h in few)
    assert rec["share"] == round(3 / 33, 4)


def test_helpful_mix_leaves_out_evaluation_prompts_and_the_rl_prompts_own() -> None:
    lookalike = load_prompts("safe-lookalike")[0]
    red = load_prompts("red-team")[:4]
    helpful = [lookalike, red[0], *load_prompts("helpful")[:2]]
    mixed, record = mix_helpful(red, helpful, 0.5, seed=0, source="x")
    assert record["left_out_eval_monitor_or_duplicate"] == 2 and record["used"] == 2
    assert lookalike not in mixed[4:] and red[0] not in mixed[4:]
    # The collapse monitor's safe prompts stay untrained too.
    watched = helpful[2]
    mixed, record = mix_helpful(red, helpful, 0.5, seed=0, source="x", exclude=[watched.text])
    assert record["left_out_eval_monitor_or_duplicate"] == 3 and watched not in mixed


def test_demo_pairs_build_with_provenance(tmp_path: Path, c: Constitution) -> None:
    from cai.stages.demo_pairs import build_demo_pairs
    from cai.stages.settings import DemoPairsSettings
    from cai.train.pm import load_preferences

    first = c.demonstrations[0].demo

    def reply(conv: Conversation, params: Any, i: int) -> str:
        # The policy happens to write the first demonstration's reply: no pair from that one.
        return first.reply if conv[-1]["content"] == first.prompt else f"Sure: {conv[-1]['content'][:20]}"

    policy = ScriptedPolicy()
    policy.reply = reply
    s = DemoPairsSettings(demonstrations=6, max_new_tokens=32)
    summary = build_demo_pairs(c, policy, tmp_path, s, seed=5)  # type: ignore[arg-type]
    rows = [json.loads(x) for x in (tmp_path / "preferences.jsonl").read_text().splitlines()]
    prov = [json.loads(x) for x in (tmp_path / "provenance.jsonl").read_text().splitlines()]
    assert summary["demonstrations"] == 6 and summary["pairs"] == 5 == len(rows) == len(prov)
    assert summary["skipped"] == {"failed": 0, "empty": 0, "same_as_demonstration": 1}
    by_id = {p.id: p.demo for p in c.demonstrations}
    for row, p in zip(rows, prov, strict=True):
        demo = by_id[p["demonstration"]]
        assert row["id"] == p["id"] and row["p_chosen"] == 1.0 and row["fingerprint"] == c.fingerprint()
        assert row["prompt"] == [{"role": "user", "content": demo.prompt}]  # bare prompt, as RL asks it
        assert row["chosen"][0]["content"] == demo.reply and row["rejected"][0]["content"].startswith("Sure: ")
        assert p["source"] == "demonstration" and p["kind"] == demo.kind and p["policy"] == policy.spec
        assert p["params"]["max_new_tokens"] == 32 and p["seed"] == 5 and p["raw_output"].startswith("Sure: ")
    assert {p["kind"] for p in prov} == {"decline", "answer"}  # alternating kinds, as `select` picks
    assert policy.calls[0][1][0] == [{"role": "user", "content": first.prompt}]
    table = load_preferences([str(tmp_path)], "--data", human=False)  # what `cai train pm` reads
    assert len(table.rows) == 5 and table.soft_rows == 5 and table.fingerprints == {c.fingerprint()}


def test_demo_pairs_command_writes_the_folder(tmp_path: Path) -> None:
    proc = invoke("demo-pairs", "--policy", "fake", "--demonstrations", "4", "--out", str(tmp_path / "d"))
    assert proc.code == 0, proc.stderr[-1000:]
    assert "4 pairs (2 declines, 2 answers) from 4 demonstrations" in proc.stdout
    assert len((tmp_path / "d" / "preferences.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--reward", "pmm"], "--reward: unknown reward 'pmm' (one of: pm, direct, demo-pm); did you mean pm?"),
        (["--reward", "pm=1,direct=-0.5"], "--reward: direct: weight must be > 0, got -0.5"),
        (["--reward", "pm=x"], "--reward: pm: weight 'x' is not a number"),
        (["--helpful-ratio", "1"], "--helpful-ratio: Input should be less than 1"),
        (["--helpful-ratio", "-0.1"], "--helpful-ratio: Input should be greater than or equal to 0"),
        (["--helpful-ratio", "0.2", "--helpful-prompts", "none"], "--helpful-prompts: none, but helpful_ratio > 0"),
        (["--reward", "demo-pm"], "--demo-pm: reward demo-pm needs a PM trained on demonstration pairs"),
        (["--reward", "direct", "--judge", "fake", "--constitution", "nope"], "nope: constitution: no such file"),
    ],
)
def test_bad_reward_settings_are_one_line_errors(tmp_path: Path, extra: list[str], needle: str) -> None:
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "config.json").write_text("{}")
    base = ["train", "ppo", "--policy", str(tmp_path / "policy"), "--prompts", "red-team", "--out", str(tmp_path / "o")]
    proc = invoke(*base, *extra)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.code == 2 and len(lines) == 1 and needle in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_direct_with_ppo_is_refused_at_validation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import cai.train.settings as settings

    monkeypatch.setattr(settings, "has_ppo", lambda: True)  # as on the PPO stack (TRL <= 1.12)
    assert RlSettings(algorithm="ppo", reward="pm").reward == {"pm": 1.0}
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "config.json").write_text("{}")
    base = ["train", "ppo", "--policy", str(tmp_path / "policy"), "--prompts", "red-team", "--out", str(tmp_path / "o")]
    for reward, other in (("direct", "direct"), ("pm=1,demo-pm=1", "demo-pm"), ("pm=2", "a weighted pm")):
        proc = invoke(*base, "--algorithm", "ppo", "--mini-batch", "4", "--reward", reward)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.code == 2 and len(lines) == 1, proc.stderr
        assert "--reward: PPO scores with the PM alone (reward: pm)" in lines[0]
        assert f"use algorithm rloo or grpo for {other}" in lines[0]


@pytest.mark.parametrize(
    ("ppo", "stages", "needle"),
    [
        ("reward: pm", "", "stages.ppo.reward: pm needs the pm stage in the same recipe"),
        ("reward: {direct: 1.0, demo-pm: 0.5}", "", "stages.ppo.reward: demo-pm needs the demo_pm stage"),
        ("reward: {direct: 1.0, pm: 0}", "", "stages.ppo.reward: pm: weight must be > 0, got 0"),
        ("helpful_ratio: 1.5", "", "stages.ppo.helpful_ratio: Input should be less than 1"),
        ("reward: direct\n    helpful_prompts: nowhere.jsonl\n    helpful_ratio: 0.2", "", "nowhere.jsonl"),
    ],
)
def test_recipe_reward_errors_are_one_line(tmp_path: Path, ppo: str, stages: str, needle: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "kind: recipe\nname: r\nstages:\n  critique: {limit: 4}\n  sft: {epochs: 1}\n"
        f"  ppo:\n    prompts: red-team\n    {ppo}\n{stages}"
    )
    proc = invoke("validate", str(recipe))
    problems = [ln for ln in proc.stderr.splitlines() if ln.strip() and "problem(s)" not in ln]
    assert proc.code == 2 and len(problems) == 1 and needle in problems[0], proc.stderr


def test_a_recipe_reaches_every_reward_option(tmp_path: Path) -> None:
    from cai.run.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "kind: recipe\nname: r\nstages:\n  critique: {limit: 4}\n  sft: {epochs: 1}\n"
        "  demo_pm: {demonstrations: 8, epochs: 1}\n"
        "  ppo:\n    prompts: red-team\n    reward: {direct: 1.0, demo-pm: 0.5}\n    direct_beta: 20.0\n"
        "    direct_norm: sum\n    helpful_ratio: 0.25\n"
    )
    r, _ = load_recipe(recipe)
    assert r.stages.ppo.reward == {"direct": 1.0, "demo-pm": 0.5} and r.stages.ppo.direct_beta == 20.0
    assert r.stages.ppo.helpful_ratio == 0.25 and r.stages.demo_pm.demonstrations == 8
    r2, _ = load_recipe(recipe, ["stages.ppo.reward=direct"])
    assert r2.stages.ppo.reward == {"direct": 1.0}
    assert invoke("validate", str(recipe)).code == 0


def test_prompt_items_of_the_mix_keep_their_ids() -> None:
    items = [PromptItem("a", [{"role": "user", "content": "alpha request"}])]
    mixed, rec = mix_helpful(items, load_prompts("helpful"), 0.5, seed=0, source="helpful")
    assert len(mixed) == 2 and rec["ids"] == [mixed[1].id] and mixed[1].id.startswith("hp-")


def test_a_pm_folder_the_reward_does_not_use_is_refused(tmp_path: Path) -> None:
    from cai.errors import CaiError
    from cai.train.rewards import RewardInputs

    s = RlSettings(reward="direct")
    with pytest.raises(CaiError, match="--pm: given, but the reward \\(direct\\) does not use it"):
        RewardInputs(pm=str(tmp_path), direct=object()).check(s)
