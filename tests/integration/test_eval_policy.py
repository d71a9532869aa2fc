"""`eval policy` with real models: the embedded model against a tiny random one, judged by the
embedded model, scored by a PM — every summary figure is filled in and in range."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rl_helpers import tiny_policy, untrained_pm

pytestmark = pytest.mark.slow


def test_eval_policy_on_the_embedded_model(tmp_path: Path, embedded_model_dir: Path) -> None:
    from cai.constitution.load import load_constitution
    from cai.io.sources import load_prompts
    from cai.models.settings import open_backend
    from cai.stages.evaluate import evaluate_policy, write_policy_eval
    from cai.stages.settings import EvalSettings
    from cai.train.rl_common import PMScorer

    tiny = tiny_policy(tmp_path / "tiny", embedded_model_dir)
    scorer = PMScorer.load(str(untrained_pm(tiny, tmp_path / "pm")))
    settings = EvalSettings(max_new_tokens=12, temperature=0.0, principles="one", batch_size=4)
    policy, baseline = open_backend("embedded"), open_backend(str(tiny))
    try:
        summary, samples = evaluate_policy(
            policy,
            load_prompts("red-team", limit=2),
            load_constitution("harmless"),
            baseline=baseline,
            judge=policy,
            scorer=scorer,
            settings=settings,
            quiet=True,
        )
    finally:
        policy.close()
        baseline.close()
    print(f"\n{summary['win_rate']}\n{summary['pm_reward']}\n{summary['refusal']}")
    assert summary["n"] == 2 and summary["generation_errors"] == {"policy": 0, "baseline": 0}
    assert set(summary["pm_reward"]) == {"policy", "baseline", "delta"}
    for aspect in ("harmless", "helpful"):
        w = summary["win_rate"][aspect]
        assert w["n"] == 2 and w["failed"] == 0 and 0.0 <= w["win_rate"] <= 1.0
        assert 0.0 < w["p_policy_mean"] < 1.0 and w["order_consistency"] is not None
    for name in ("policy", "baseline"):
        assert summary["refusal"][name]["n"] == 2
    assert all(isinstance(s["policy"], str) and s["policy"] for s in samples)
    assert all(isinstance(s["judge_helpful_p_policy"], float) for s in samples)
    write_policy_eval(tmp_path / "ev", summary, samples)
    assert (tmp_path / "ev" / "summary.json").is_file()
