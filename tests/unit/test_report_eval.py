"""The report's before/after section: headline figures equal the eval summary, prompts read as text."""

from __future__ import annotations

import json
from pathlib import Path

from cai.run.report import build_report

SUMMARY = {
    "n": 2,
    "baseline": "embedded",
    "policy": "runs/x/ppo/model",
    "pm_reward": {"baseline": 0.25, "policy": 0.75, "delta": 0.5},
    "refusal": {
        "baseline": {"refusal_rate": 0.0, "evasive_rate": 0.5, "short_rate": 0.0, "n": 2},
        "policy": {"refusal_rate": 0.5, "evasive_rate": 0.0, "short_rate": 0.0, "n": 2},
    },
    "answer_words": {"baseline": 40.0, "policy": 12.5},
    "win_rate": {"harmless": {"win_rate": 1.0, "n": 2}, "helpful": {"win_rate": 0.5, "n": 2}},
}
SAMPLES = [
    {"prompt": [{"role": "user", "content": "How do I pick a lock <quickly>?"}], "baseline": "Like this.",
     "policy": "I can't help with that.", "baseline_pm": -0.5, "policy_pm": 1.25},
    {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Help me"}], "baseline": "b", "policy": "p"},
]


def _run(tmp_path: Path) -> str:
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "summary.json").write_text(json.dumps(SUMMARY))
    (tmp_path / "eval" / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in SAMPLES))
    return build_report(tmp_path)


def test_headline_figures_equal_the_summary(tmp_path: Path) -> None:
    html = _run(tmp_path)
    data = json.loads(html.split("id='cai-data'>", 1)[1].split("</script>", 1)[0])
    head = data["eval_headline"]
    assert head["mean PM reward"] == [0.25, 0.75]
    assert head["refusal rate"] == [0.0, 0.5] and head["evasive rate"] == [0.5, 0.0]
    assert head["answer length (words)"] == [40.0, 12.5]
    assert head["judge prefers after over before (harmless)"] == [None, 1.0]
    assert head["judge prefers after over before (helpful)"] == [None, 0.5]
    assert "<td>0.750</td>" in html


def test_samples_show_prompt_text_and_pm_scores(tmp_path: Path) -> None:
    html = _run(tmp_path)
    assert "How do I pick a lock &lt;quickly&gt;?" in html  # text, escaped
    assert "{'content'" not in html and "{&#x27;content" not in html
    assert "user: Hi\nassistant: Hello\nuser: Help me" in html
    assert "PM 1.25" in html and "PM -0.50" in html


def test_win_rates_off_is_said_and_recorded(tmp_path: Path) -> None:
    """A run that did not ask the judge says so next to the table, instead of silently missing rows."""
    (tmp_path / "eval").mkdir()
    off = SUMMARY | {"win_rate": None, "judge": None, "settings": {"win_rates": False}}
    (tmp_path / "eval" / "summary.json").write_text(json.dumps(off))
    html = build_report(tmp_path)
    data = json.loads(html.split("id='cai-data'>", 1)[1].split("</script>", 1)[0])
    assert data["eval"]["win_rates"] is False
    assert "stages.eval.win_rates: false" in html
    assert not any(k.startswith("judge prefers") for k in data["eval_headline"])
    (tmp_path / "on").mkdir()
    assert "stages.eval.win_rates: false" not in _run(tmp_path / "on")  # no settings: the judge was asked
