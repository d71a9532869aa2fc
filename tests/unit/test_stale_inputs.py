"""Content-keyed stages: editing any input a recipe's stages read redoes the stages that read it
(and the ones after them, which read their output), and no stage before it.

The training stages are replaced by stubs (`use_stages`) that only write their completion marker:
what is tested is the pipeline's keys, not training, so the fake model is enough.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from cai.run.context import RunContext
from cai.run.registry import BUILTIN, TRAINED, StageRegistry, use_stages
from tests.helpers import invoke

ORDER = ["critique", "sft", "label", "dpo", "eval"]


def _stub_training(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    """Read the files a training stage would (so a missing one still fails), write the marker."""
    for name, ref in ctx.stages[out.name].inputs(cfg).items():
        assert Path(ctx.local(ref)).is_file(), name
    (out / TRAINED).parent.mkdir(parents=True, exist_ok=True)
    (out / TRAINED).write_text("{}")
    return {"out": str(out / "model")}


def _registry() -> StageRegistry:
    """The built-in stages with sft and dpo stubbed; no stage claims to train a policy, so later
    stages use the recipe's fake model."""
    stub = {"run": _stub_training, "policy_label": None}
    return StageRegistry(tuple(dataclasses.replace(s, **stub) if s.name in ("sft", "dpo") else s for s in BUILTIN))


INPUTS: dict[str, str] = {
    "crit.jsonl": '{"id": "c1", "prompt": "How do I pick a lock?"}\n{"id": "c2", "prompt": "Tell me a secret."}\n',
    "helpful.jsonl": '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n',
    "label.txt": "How do I hotwire a car?\nWhat is the best poison?\n",
    "human.jsonl": '{"prompt": "q", "chosen": "good answer", "rejected": "bad answer"}\n',
    "held.jsonl": '{"prompt": "q2", "chosen": "fine answer", "rejected": "awful answer"}\n',
    "eval.jsonl": '{"id": "e1", "prompt": "How do I make a weapon?"}\n',
    "look.jsonl": '{"id": "l1", "prompt": "How do I kill a process?", "category": "tech"}\n',
    "const.yaml": "kind: constitution\nname: mine\nversion: 1\ninclude: harmless\n"
    'system_prompt: "Be kind."\ncritique:\n  rounds: 1\n',
}
RECIPE = """kind: recipe
name: stale
constitution: const.yaml
models: {policy: fake, judge: fake}
stages:
  critique: {prompts: crit.jsonl, rounds: 1, batch_size: 2}
  sft: {helpful: [helpful.jsonl]}
  label: {prompts: label.txt, method: contrast, batch_size: 2}
  dpo: {human: [human.jsonl], eval: [held.jsonl]}
  eval: {prompts: eval.jsonl, lookalike: look.jsonl, win_rates: false}
"""
# Which file each edit touches, and the first stage that reads it: that stage and every later
# one (they read its output) are redone; every earlier one is skipped.
EDITS = {
    "crit.jsonl": "critique",
    "helpful.jsonl": "sft",
    "label.txt": "label",
    "human.jsonl": "dpo",
    "held.jsonl": "dpo",
    "eval.jsonl": "eval",
    "look.jsonl": "eval",
    "const.yaml": "critique",
}


def _run(recipe: Path, out: Path) -> list[str]:
    """Run the recipe; the stages this run did (not skipped), from its log lines."""
    log = out / "log.txt"
    before = log.read_text() if log.exists() else ""
    r = invoke("run", str(recipe), "--out", str(out), "-q", "--no-report")
    assert r.code == 0, r.stderr
    new = log.read_text()[len(before) :]
    return [s for s in ORDER if f"{s}: starting" in new or f"{s}: resuming" in new]


def _edit(path: Path) -> None:
    text = path.read_text()
    if path.suffix == ".yaml":
        path.write_text(text.replace("Be kind.", "Be kind and brief."))
    elif path.suffix == ".txt":
        path.write_text(text.replace("best poison", "strongest poison"))
    else:
        path.write_text(text.replace('answer"', 'answer."').replace('?"', '? "').replace('"hello"', '"hello!"'))
    assert path.read_text() != text


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    for name, text in INPUTS.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "r.yaml").write_text(RECIPE)
    return tmp_path / "r.yaml"


@pytest.mark.parametrize("edited", list(EDITS))
def test_an_edited_input_redoes_the_stages_that_read_it_and_no_other(recipe: Path, edited: str) -> None:
    out = recipe.parent / "run"
    with use_stages(_registry()):
        assert _run(recipe, out) == ORDER
        assert _run(recipe, out) == []  # unchanged: every stage skipped
        _edit(recipe.parent / edited)
        first = EDITS[edited]
        assert _run(recipe, out) == ORDER[ORDER.index(first) :]
        log = (out / "log.txt").read_text()
        if edited != "const.yaml":
            assert f"{first}: inputs changed (" in log and f"({edited}) edited" in log
        else:
            assert f"{first}: inputs changed (constitution)" in log
        assert _run(recipe, out) == []  # and settled again


def test_stage_state_records_each_input_with_its_digest(recipe: Path) -> None:
    out = recipe.parent / "run"
    with use_stages(_registry()):
        _run(recipe, out)
    state = json.loads((out / "eval" / "stage.json").read_text())
    assert set(state["inputs"]) == {"prompts", "lookalike"}
    assert state["inputs"]["lookalike"]["ref"] == "look.jsonl"
    assert len(state["inputs"]["lookalike"]["sha256"]) == 16
    dpo = json.loads((out / "dpo" / "stage.json").read_text())
    assert set(dpo["inputs"]) == {"human[0]", "eval[0]"}


def test_how_patiently_an_endpoint_is_asked_redoes_nothing(recipe: Path) -> None:
    """A longer request deadline or more retries (to get past a slow server) changes no output, so
    no stage is redone; a model setting that changes outputs (dtype) redoes them all."""
    out = recipe.parent / "run"
    with use_stages(_registry()):
        assert _run(recipe, out) == ORDER
        text = recipe.read_text()
        recipe.write_text(
            text.replace(
                "{policy: fake, judge: fake}", "{policy: fake, judge: fake, max_retries: 9, request_deadline: 900}"
            )
        )
        assert _run(recipe, out) == []
        recipe.write_text(text.replace("{policy: fake, judge: fake}", "{policy: fake, judge: fake, dtype: fp32}"))
        assert _run(recipe, out) == ORDER
