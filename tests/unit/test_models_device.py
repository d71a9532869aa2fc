"""dtype policy: bf16 on GPUs and on CPUs with bf16 matrix units, fp32 elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from cai.models.device import choose_dtype, cpu_flags, cpu_has_bf16_matmul, normalise_dtype


@pytest.mark.parametrize(
    ("flags", "expected"),
    [({"avx2", "fma"}, "fp32"), ({"avx512f", "avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16"),
     (set(), "fp32")],
)
def test_auto_on_cpu_follows_bf16_units(flags: set[str], expected: str) -> None:
    assert choose_dtype("auto", "cpu", flags=flags) == expected


def test_auto_on_cuda() -> None:
    assert choose_dtype("auto", "cuda", cuda_bf16=True) == "bf16"
    assert choose_dtype("auto", "cuda:1", cuda_bf16=False) == "fp16"


@pytest.mark.parametrize(("given", "name"), [("fp32", "fp32"), ("float32", "fp32"),
                                             ("bfloat16", "bf16"), ("FP16", "fp16")])
def test_explicit_dtype_wins(given: str, name: str) -> None:
    assert choose_dtype(given, "cpu", flags={"amx_bf16"}) == name
    assert choose_dtype(given, "cuda", cuda_bf16=True) == name


def test_unknown_dtype() -> None:
    with pytest.raises(ValueError, match="unknown dtype"):
        normalise_dtype("int3")


def test_cpu_flags_parsing(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_has_bf16_matmul(cpu_flags(info))
    assert cpu_flags(tmp_path / "missing") == frozenset()
