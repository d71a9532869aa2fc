"""A test's own model kind, end to end through the CLI: `cai critique --model toy:x` writes the
data and `cai train sft --model toy:x` trains the folder the kind resolves to (a tiny random
model with the embedded tokenizer), without the built-in registry knowing about `toy`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai.models.fake import FakeBackend
from cai.models.kinds import BackendRequest, ModelKind, prefixed, using_kinds
from tests.helpers import invoke
from tests.rl_helpers import tiny_policy

# Needs the converted embedded model for its tokenizer (~20 s the first time) and runs TRL: about
# 10 s once converted, too heavy for the unit tests (which load no model).
pytestmark = [pytest.mark.slow, pytest.mark.trl]


def _toy_kind(base: Path, resolved: list[tuple[str, bool]]) -> ModelKind:
    """`toy:<name>`: the scripted fake backend to generate with, `base` to train from."""

    def backend(req: BackendRequest) -> FakeBackend:
        fake = FakeBackend()
        fake.spec = req.spec
        return fake

    def train_path(spec: str, quiet: bool) -> str:
        resolved.append((spec, quiet))
        return str(base)

    return ModelKind("toy", prefixed("toy"), backend, train_path=train_path)


def test_a_toy_kind_is_trained_through_cai_train_sft(tmp_path: Path, embedded_model_dir: Path) -> None:
    from cai.train.common import changed_params, load_causal_lm
    from tests.train_helpers import snapshot_params

    base = tiny_policy(tmp_path / "tiny", embedded_model_dir)
    resolved: list[tuple[str, bool]] = []
    crit, out = tmp_path / "crit", tmp_path / "sft"
    with using_kinds(_toy_kind(base, resolved)):
        proc = invoke(
            "critique", "--prompts", "red-team", "--limit", "4", "--model", "toy:x", "--quiet", "-o", str(crit)
        )
        assert proc.code == 0, proc.stderr
        proc = invoke(
            "train", "sft", "--data", str(crit), "--model", "toy:x", "--out", str(out), "--quiet", "--json",
            "--max-steps", "2", "--batch-size", "2", "--max-length", "256", "--lr", "1e-3",
        )  # fmt: skip
    assert proc.code == 0, proc.stderr
    assert resolved == [("toy:x", True)]  # the trainer asked the toy kind, once, for its base
    summary = json.loads(proc.stdout)
    assert summary["params_changed"] is True and summary["steps"] == 2

    meta = json.loads((out / "cai_train.json").read_text())
    assert meta["base_model"] == "toy:x" and meta["base_model_path"] == str(base)
    trained = snapshot_params(load_causal_lm(str(out)))
    assert changed_params(snapshot_params(load_causal_lm(str(base))), trained)
