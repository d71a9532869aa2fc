"""Option probabilities are not rounded by the model's dtype: they equal a float64 softmax of the
model's logits, computed here directly from the same final hidden state, in fp32 and in bf16.

Read from bf16 logits (the old path) the A/B probabilities of the embedded judge were off by up to
~1e-2 and took a handful of distinct values; the tolerance here is 1e-6.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CONVS = [
    [{"role": "user", "content": f"Reply {i}: (A) I'm sorry, I can't help. (B) Sure, here is how. Answer A or B."}]
    for i in ("one", "number two, which is longer", "3")
]  # different lengths: the batch is left-padded


def _cpu_bf16_matmul() -> bool:
    import torch

    try:
        torch.ones(2, 2, dtype=torch.bfloat16) @ torch.ones(2, 2, dtype=torch.bfloat16)
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_option_probs_equal_a_float64_softmax_of_the_same_hidden_state(embedded_model_dir: Path, dtype: str) -> None:
    import torch

    from cai.models.local import LocalBackend

    if dtype == "bf16" and not _cpu_bf16_matmul():
        pytest.skip("this CPU/torch build has no bf16 matmul")
    backend = LocalBackend(embedded_model_dir, dtype=dtype, device="cpu", batch_size=8)
    assert backend.model.dtype == (torch.float32 if dtype == "fp32" else torch.bfloat16)
    seen: list[torch.Tensor] = []
    hook = backend.model.model.norm.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        got = backend.option_probs(CONVS, ["A", "B"], prefix_sharing=False)
    finally:
        hook.remove()
    assert len(seen) == 1  # one batch: these are the hidden states the scores came from
    hidden = seen[0][:, -1, :].double()
    weight = backend.model.get_output_embeddings().weight.double()
    probs = torch.softmax(hidden @ weight.T, dim=-1)  # float64 over the whole vocabulary
    batch = sorted(range(len(CONVS)), key=lambda i: len(backend.encode(CONVS[i])))  # rows run by length
    for i, scores in enumerate(got):
        row = batch.index(i)
        assert scores.error is None and scores.path == "logprobs"
        raw = {o: float(probs[row, backend.option_token_ids(o)].sum()) for o in ("A", "B")}
        mass = sum(raw.values())
        for o in ("A", "B"):
            assert abs(scores.probs[o] - raw[o] / mass) < 1e-6, (i, o)
        assert abs(scores.mass - mass) < 1e-5 * max(mass, 1e-3)  # the full denominator is float32
    backend.close()
