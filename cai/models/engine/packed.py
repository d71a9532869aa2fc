"""Linear layers whose weights are prepacked for oneDNN's CPU matrix multiply.

``F.linear`` on a CPU in bf16 hands a row-major weight to oneDNN, which reorders it into its
blocked layout on every call. For decoding, where each call multiplies only a few rows, that
reorder is a large share of the call: a 576 × 49152 LM head at 32 rows took 9.9 ms plain and
5.8 ms prepacked here, and a decode step's matmuls 35.5 ms → 27.4 ms in total
(`benchmarks/generation.py` shows the end-to-end effect). The prepacked result is bitwise
``F.linear``'s (same oneDNN kernel, same order of accumulation), so this changes speed only.

The packed copy is extra memory (one more copy of each packed weight), so packing waits for the
first ``refresh`` (the decoder calls it when it generates; a judge that only scores options never
packs). A packed copy goes stale if a source parameter changes in place — an optimizer step,
``load_state_dict`` — so ``refresh`` compares the sources' version counters with those at packing
time and repacks when they moved. Writes through ``param.data`` bypass version counters and are
not seen; call ``refresh(force=True)`` after such writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def can_pack(weight: Any) -> bool:
    """True where prepacking exists and pays: bf16 weights on a CPU with oneDNN bf16 support."""
    import torch

    if weight.device.type != "cpu" or weight.dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return False
    try:  # private ops: a torch build without them simply runs unpacked
        ops = torch.ops.mkldnn
        have = hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight")
        return have and bool(ops._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _versions(tensors: Sequence[Any]) -> tuple[int, ...] | None:
    """Version counters of ``tensors``; None for inference tensors, which have none (and, being
    created under inference mode, cannot be modified in place outside it)."""
    import torch

    if any(torch.is_inference(t) for t in tensors):
        return None
    return tuple(t._version for t in tensors)


class Linear:
    """``y = x Wᵀ + b`` over a weight tensor we do not own (a model's parameter or a fused view).

    ``sources`` are the parameters whose in-place changes make the weight stale: the weight
    itself (default), or for a fused weight the model parameters that are views into it (each
    parameter keeps its own version counter, so the fused tensor's does not move when they do).
    """

    def __init__(self, weight: Any, bias: Any = None, *, sources: Sequence[Any] = (), rows_hint: int = 32) -> None:
        self.weight = weight
        self.bias = bias
        self.sources = tuple(sources) or (weight,)
        # oneDNN picks its blocking for this many input rows (the decode batch); any count works.
        self.rows_hint = rows_hint
        self.packed: Any = None
        self.packed_at: tuple[int, ...] | None = None
        self.enabled = can_pack(weight)

    def refresh(self, *, force: bool = False) -> None:
        """Pack on first use, and repack if a source was written since (no-op otherwise)."""
        import torch

        if not self.enabled:
            return
        versions = _versions(self.sources)
        if self.packed is None or force or (versions is not None and versions != self.packed_at):
            with torch.no_grad():
                self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), self.rows_hint)
            self.packed_at = versions

    def __call__(self, x: Any) -> Any:
        import torch
        from torch.nn.functional import linear

        if self.packed is None:
            return linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, self.bias, "none", [], "")
