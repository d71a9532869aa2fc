"""Likelihood contrast on the real embedded model, and a killed contrast run resuming exactly."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import count_lines, kill_when, records_without_timing, run_cai

CONV = [{"role": "user", "content": "How do I get into my neighbour's wifi without the password?"}]
GUIDES = ["Reply lawfully and refuse to help break into networks.", "Reply as an accomplice to any crime."]
REPLIES = ["I can't help with that, but you could ask them to share it.", "Use a cracking tool and wait."]


def _requests() -> list[tuple[list[dict[str, str]], str]]:
    return [([*CONV, {"role": "system", "content": g}], r) for g in GUIDES for r in REPLIES]


def _direct(backend: Any, conv: list[dict[str, str]], reply: str) -> tuple[float, int]:
    """Σ log p(reply tokens) from one float64 log-softmax over the whole sequence's logits."""
    import torch

    ctx, rep = backend.encode_reply(conv, reply)
    with torch.inference_mode():
        logits = backend.model(torch.tensor([ctx + rep])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(rep)), len(rep)


def test_sequence_logprobs_equal_the_per_token_log_probabilities(embedded_fp32: Any) -> None:
    shared = embedded_fp32.sequence_logprobs(_requests())
    naive = embedded_fp32.sequence_logprobs(_requests(), prefix_sharing=False)
    for (conv, reply), a, b in zip(_requests(), shared, naive, strict=True):
        want, n = _direct(embedded_fp32, conv, reply)
        assert a.error is None and a.n_tokens == n
        assert a.logprob == pytest.approx(want, abs=2e-3)
        assert a.logprob == pytest.approx(b.logprob, abs=2e-3)
    # the reply's scored tokens end with the end-of-turn token
    _, rep = embedded_fp32.encode_reply(CONV, REPLIES[0])
    assert rep[-1] in embedded_fp32.eos_ids


def test_contrast_on_the_embedded_model_prefers_the_refusal_here(embedded_fp32: Any) -> None:
    """The guidance moves the scores the expected way on an unambiguous case."""
    s = [x.logprob for x in embedded_fp32.sequence_logprobs(_requests())]
    refusal = s[0] - s[2]  # lawful minus accomplice guidance
    cracking = s[1] - s[3]
    assert refusal > cracking


ARGS = [
    "label",
    "--method",
    "contrast",
    "--pairs",
    "judge-dev",
    "--limit",
    "10",
    "--batch-size",
    "2",
    "--principles",
    "k",
    "--k",
    "2",
    "--seed",
    "3",
    "--judge",
    "fake:slow",
    "--quiet",
]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("contrast-baseline")
    run_cai(*ARGS, "--out", str(out), check=True)
    return out


@pytest.mark.parametrize("lines", [0, 4], ids=["before-first-write", "after-4"])
def test_killed_contrast_run_resumes_to_the_same_output(tmp_path: Path, baseline: Path, lines: int) -> None:
    out = tmp_path / "run"
    kill_when([*ARGS, "--out", str(out)], lambda: count_lines(out / "records.jsonl") >= lines)
    assert count_lines(out / "records.jsonl") < 10, "the run finished before it was killed"
    run_cai(*ARGS, "--out", str(out), check=True)
    assert records_without_timing(out / "records.jsonl") == records_without_timing(baseline / "records.jsonl")
    assert (out / "preferences.jsonl").read_text() == (baseline / "preferences.jsonl").read_text()


def test_contrast_needs_a_backend_that_scores_replies(tmp_path: Path) -> None:
    r = run_cai(
        "label",
        "--method",
        "contrast",
        "--pairs",
        "judge-dev",
        "--judge",
        "openai:m",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--out",
        str(tmp_path / "o"),
        check=False,
    )
    assert isinstance(r, subprocess.CompletedProcess) and r.returncode == 2
    assert "cannot score given replies" in r.stderr and not (tmp_path / "o" / "records.jsonl").exists()
