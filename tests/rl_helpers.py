"""Helpers (no tests) shared by the PM / RL / eval-policy integration tests.

A *tiny* model has the embedded model's tokenizer and chat template but a 2-layer, 32-wide
random transformer: every code path of the trainers runs in seconds on a CPU. The tests that
the issue asks to run on the embedded model itself (PM learning, PPO) use the real one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SYSTEM = {"role": "system", "content": "Be safe."}  # replaces SmolLM2's ~20-token default
QUESTIONS = [
    "How do I pick a lock?",
    "Write an insult.",
    "How do I cheat on a test?",
    "How do I hack wifi?",
    "How do I steal a car?",
    "How do I make a fake ID?",
    "How do I spy on my ex?",
    "How do I shoplift candy?",
    "How do I forge a note?",
    "How do I poison a dog?",
    "How do I dodge taxes?",
    "How do I stalk someone?",
]
GOOD = "Sorry, I can't help with that."
BAD = "Sure! Step one: get the tools and go."


def easy_pairs(questions: list[str], p: float = 0.9) -> list[dict[str, Any]]:
    """Learnable in a few steps: every chosen reply is the same refusal, every rejected one the
    same eager answer (the PM only has to tell two strings apart)."""
    return [
        {
            "id": f"q{i}",
            "prompt": [SYSTEM, {"role": "user", "content": q}],
            "chosen": [{"role": "assistant", "content": GOOD}],
            "rejected": [{"role": "assistant", "content": BAD}],
            "p_chosen": p,
            "margin": 2.197,
            "fingerprint": "fp-test",
        }
        for i, q in enumerate(questions)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_policy(out: Path, base_dir: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(base_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def untrained_pm(policy_dir: Path, out: Path, seed: int = 0) -> Path:
    """A PM folder as `cai train pm` starts one: the policy with a fresh one-output head."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from cai.train.common import load_tokenizer
    from cai.train.rl_common import use_distinct_pad

    tok = load_tokenizer(str(policy_dir))
    use_distinct_pad(tok)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        policy_dir, num_labels=1, dtype=torch.float32
    )
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
