"""RL tokenizer checks on the embedded model's tokenizer: the pad token, and refusing a PM that
reads other ids (directly and through `cai train ppo`, before any model loads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cai.errors import CaiError
from cai.train.rl_common import check_same_tokenizer, encode_prompt, use_distinct_pad
from tests.helpers import run_cai

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def copy_tokenizer(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    return dst


def test_pad_is_never_eos_nor_a_chat_token(embedded_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    assert tok.pad_token == tok.eos_token  # SmolLM2 pads with <|im_end|>: the problem
    use_distinct_pad(tok)
    assert tok.pad_token != tok.eos_token
    ids = encode_prompt(tok, [{"role": "user", "content": "hi"}])
    assert tok.eos_token_id in ids  # end-of-turn tokens live inside prompts …
    assert tok.pad_token_id not in ids  # … the pad never does, so masks stay right


def test_tokenizer_mismatch_is_a_clear_error(tmp_path: Path, embedded_model_dir: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    check_same_tokenizer(str(embedded_model_dir), str(embedded_model_dir))  # same: fine
    other = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1, "</s>": 2}, unk_token="<unk>"))
    other.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=other, unk_token="<unk>", eos_token="</s>").save_pretrained(
        tmp_path / "other"
    )
    with pytest.raises(CaiError) as err:
        check_same_tokenizer(str(embedded_model_dir), str(tmp_path / "other"))
    text = str(err.value)
    assert "vocabulary differs from the policy's (49152 vs 3 tokens" in text
    assert "--model POLICY" in text and "\n" not in text

    # Same vocabulary, different EOS: also refused, naming the token.
    changed = copy_tokenizer(embedded_model_dir, tmp_path / "eos")
    cfg = json.loads((changed / "tokenizer_config.json").read_text())
    cfg["eos_token"] = "<|endoftext|>"
    (changed / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CaiError, match="eos_token '<\\|endoftext\\|>' vs '<\\|im_end\\|>'"):
        check_same_tokenizer(str(embedded_model_dir), str(changed))


def test_ppo_refuses_a_pm_with_another_tokenizer(tmp_path: Path, embedded_model_dir: Path) -> None:
    """Checked before any model loads: TRL's PPO would feed the PM ids it cannot read."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pm = tmp_path / "pm"
    other = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1, "</s>": 2}, unk_token="<unk>"))
    other.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=other, unk_token="<unk>", eos_token="</s>").save_pretrained(pm)
    (pm / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForSequenceClassification"], "id2label": {"0": "LABEL_0"}})
    )
    proc = run_cai(
        "train",
        "ppo",
        "--policy",
        "embedded",
        "--pm",
        str(pm),
        "--prompts",
        "red-team",
        "--out",
        str(tmp_path / "out"),
        timeout=120,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        len(lines) == 1
        and "tokenizer: the PM's vocabulary differs from the policy's" in lines[0]
        and "cai train pm --model POLICY" in lines[0]
    )
    assert not (tmp_path / "out").exists()
