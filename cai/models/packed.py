"""Linear layers whose weights are prepacked for oneDNN's CPU matrix multiply.

``F.linear`` on a CPU in bf16 hands a row-major weight to oneDNN, which reorders it into its
blocked layout on every call. For decoding, where each call multiplies only a few rows, that
reorder is a large share of the call: a 576 × 49152 LM head at 32 rows took 9.9 ms plain and
5.8 ms prepacked here, and a decode step's matmuls 35.5 ms → 27.4 ms in total
(`benchmarks/generation.py` shows the end-to-end effect). The prepacked result is bitwise
``F.linear``'s (same oneDNN kernel, same order of accumulation), so this changes speed only.

The packed copy is extra memory (one more copy of each packed weight). It goes stale if the
source weight changes in place — an optimizer step, ``load_state_dict`` — so callers ``refresh``
before use: the weight's version counter says whether anything wrote to it since packing.
"""

from __future__ import annotations

from typing import Any


def can_pack(weight: Any) -> bool:
    """True where prepacking exists and pays: bf16 weights on a CPU with oneDNN bf16 support."""
    import torch

    if weight.device.type != "cpu" or weight.dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return False
    try:  # private ops: a torch build without them simply runs unpacked
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


class Linear:
    """``y = x Wᵀ + b`` over a weight tensor we do not own (a model's parameter or a fused view)."""

    def __init__(self, weight: Any, bias: Any = None, *, rows_hint: int = 32) -> None:
        self.weight = weight
        self.bias = bias
        # oneDNN picks its blocking for this many input rows (the decode batch); any count works.
        self.rows_hint = rows_hint
        self.packed: Any = None
        self.version = -1
        self.enabled = can_pack(weight)
        self.refresh()

    def refresh(self) -> None:
        """Repack if the weight was written since the last packing (no-op otherwise)."""
        import torch

        if self.enabled and self.weight._version != self.version:
            with torch.no_grad():
                self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), self.rows_hint)
            self.version = self.weight._version

    def __call__(self, x: Any) -> Any:
        import torch
        from torch.nn.functional import linear

        if self.packed is None:
            return linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, self.bias, "none", [], "")
