"""The shipped accelerate configs parse with accelerate's own loader and say what they claim."""

from __future__ import annotations

import pytest

from tests.helpers import REPO

CONFIGS = REPO / "accelerate"


@pytest.mark.parametrize(("name", "kind", "precision", "zero_stage"), [
    ("ddp.yaml", "MULTI_GPU", "bf16", None),
    ("deepspeed_zero2.yaml", "DEEPSPEED", "bf16", 2),
    ("deepspeed_zero3.yaml", "DEEPSPEED", "bf16", 3),
    ("cpu_2proc.yaml", "MULTI_GPU", "no", None),  # torchrun launcher + use_cpu; see the file
])
def test_config_loads(name: str, kind: str, precision: str, zero_stage: int | None) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(CONFIGS / name))
    assert str(cfg.distributed_type).rsplit(".", 1)[-1] == kind
    assert str(cfg.mixed_precision).rsplit(".", 1)[-1].lower() == precision
    if zero_stage is not None:
        assert cfg.deepspeed_config["zero_stage"] == zero_stage
    if name == "deepspeed_zero3.yaml":
        # Without this the shards are never gathered into a loadable model folder.
        assert cfg.deepspeed_config["zero3_save_16bit_model"] is True
    if name == "cpu_2proc.yaml":
        assert cfg.use_cpu is True and cfg.num_processes == 2
