"""The collapse monitor inside TRL's own RLOO trainer, on a tiny model: it asks the real policy
its fixed prompts, its rows and warnings reach metrics.jsonl and cai_train.json, and its stop
really ends TRL's loop (the run saves the policy it had).

To make the run collapse on cue, the second test wraps the real generator: the policy answers
for real, and from the first update on its replies are replaced by one boilerplate refusal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.rl_helpers import QUESTIONS, SYSTEM, tiny_policy, untrained_pm, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.trl]

BOILERPLATE = "I'm sorry for any inconvenience, but as a chatbot, I'm not equipped to help with that."


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, embedded_model_dir: Path) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("monitor")
    policy = tiny_policy(root / "policy", embedded_model_dir)
    rows = [{"id": f"q{i}", "prompt": [SYSTEM, {"role": "user", "content": q}]} for i, q in enumerate(QUESTIONS[:4])]
    return policy, untrained_pm(policy, root / "pm"), write_jsonl(root / "prompts.jsonl", rows)


def _settings(**monitor: Any) -> Any:
    from cai.train.settings import RlSettings

    return RlSettings(
        algorithm="rloo",
        total_episodes=8,
        batch_size=2,
        num_generations=2,
        response_length=8,
        lr=1e-3,
        monitor_every=1,
        monitor_safe_per_set=2,
        monitor_red=2,
        monitor_max_new_tokens=6,
        **monitor,
    )


def _checks(out: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["monitor"] for r in rows if "monitor" in r]


def test_the_monitor_asks_the_policy_at_each_update(tmp_path: Path, setup: tuple[Path, Path, Path]) -> None:
    from cai.stages.refusal import is_refusal
    from cai.train.rl import train_rl

    policy, pm, prompts = setup
    lines: list[str] = []
    s = train_rl(
        str(policy),
        str(pm),
        str(prompts),
        str(tmp_path / "out"),
        _settings(),
        quiet=True,
        log=lines.append,
        refusal=is_refusal,
    )
    assert s["updates"] == 4 and s["params_changed"] is True
    checks = _checks(tmp_path / "out")
    assert [c["step"] for c in checks] == [0, 1, 2, 3, 4]
    for c in checks:
        assert c["safe"]["n"] == 4 and c["red"]["n"] == 2 and len(c["replies"]) == 6
        assert 0 <= c["tokens_mean"] <= 6
    assert checks[0]["kl"] is None and all(isinstance(c["kl"], float) for c in checks[1:])  # TRL's, per update
    assert s["monitor"]["checks"] == 5 and s["monitor"]["stopped_at"] is None
    assert sum(line.startswith("monitor at update") for line in lines) == 5
    record = json.loads((tmp_path / "out" / "cai_train.json").read_text())
    assert record["summary"]["monitor"]["checks"] == 5 and record["settings"]["monitor_every"] == 1


def test_a_collapse_stops_trl_and_is_recorded(
    tmp_path: Path, setup: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cai.stages.refusal import is_refusal
    from cai.train import monitor_run
    from cai.train.monitor import Reply
    from cai.train.rl import train_rl

    real = monitor_run.make_generator

    def collapsing(tokenizer: Any, prompts: Any, max_new_tokens: int) -> Any:
        generate = real(tokenizer, prompts, max_new_tokens)
        calls = []

        def reply(model: Any) -> list[Reply]:
            replies = generate(model)  # the policy answers for real
            calls.append(1)
            return replies if len(calls) == 1 else [Reply(r.set, r.prompt, BOILERPLATE, r.tokens) for r in replies]

        return reply

    monkeypatch.setattr(monitor_run, "make_generator", collapsing)
    policy, pm, prompts = setup
    out = tmp_path / "out"
    lines: list[str] = []
    s = train_rl(
        str(policy),
        str(pm),
        str(prompts),
        str(out),
        _settings(monitor_stop=True),
        quiet=True,
        log=lines.append,
        refusal=is_refusal,
    )
    assert s["updates"] == 1 and s["monitor"]["stopped_at"] == 1  # of 4 planned
    assert s["params_changed"] is True
    assert "monitor: stopping training at update 1 (monitor_stop)" in lines
    record = json.loads((out / "cai_train.json").read_text())
    keys = {w["key"] for w in record["summary"]["monitor"]["warnings"]}
    assert {"safe-refusal", "one-sentence"} <= keys
    assert [c["step"] for c in _checks(out)] == [0, 1]
