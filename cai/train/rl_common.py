"""What the preference model and the RL trainers must agree on: tokens, padding and scoring.

**One scoring convention everywhere.** A reply's reward is the PM's score head read at the
*last token* of ``chat_template(prompt, add_generation_prompt=True) + answer tokens + EOS``.
That is exactly where TRL's PPO reads it (`get_reward`: the token before the first pad of the
response, which after `truncate_response` is the EOS), so the PM is trained (`cai.train.pm`),
evaluated (`cai eval policy`) and used by RLOO/GRPO (`PMReward`) on the same position.

**A pad token that is not EOS.** SmolLM2 (like many chat models) pads with its EOS,
``<|im_end|>``, which also ends every turn *inside* the prompt. TRL's PPO derives attention
masks from ``ids != pad_token_id``, so such a pad would hide every earlier end-of-turn from the
policy, the reference, the value model and the PM. `use_distinct_pad` picks another special
token already in the vocabulary (never a new one: that would change the embedding matrix the PM
shares with the policy).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cai.errors import fail, file_error
from cai.io.readers import read_json_file

Conversation = list[dict[str, str]]

# --------------------------------------------------------------------------- tokens


def use_distinct_pad(tokenizer: Any) -> None:
    """Make the pad token a special token that is not EOS and never occurs in a chat.

    Candidates that the chat template itself emits (``<|im_start|>`` …) are skipped: padding
    with them would mask real prompt tokens just as padding with EOS does.
    """
    eos = tokenizer.eos_token
    if eos is None:
        raise ValueError("the tokenizer has no EOS token; RL needs one to end replies")
    used: set[int] = set()
    if tokenizer.chat_template:
        chat = [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": "a"},
        ]
        rendered = tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True)
        used = set(rendered["input_ids"])
    vocab = tokenizer.get_vocab()
    candidates = [
        tokenizer.pad_token,
        tokenizer.unk_token,
        *getattr(tokenizer, "all_special_tokens", []),
        "<|endoftext|>",
        "<pad>",
    ]
    for tok in candidates:
        if tok and tok != eos and tok in vocab and vocab[tok] not in used:
            tokenizer.pad_token = tok
            return
    raise ValueError(
        "no special token other than EOS to pad with; add a pad token to the "
        "base model before training its PM and policy"
    )


def encode_prompt(tokenizer: Any, messages: Conversation) -> list[int]:
    """The token ids a policy sees before it answers (chat template + generation prompt)."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(out["input_ids"])


def encode_answer(tokenizer: Any, text: str) -> list[int]:
    """An answer's tokens followed by EOS, as the policy would have generated them."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [*ids, tokenizer.eos_token_id]


# --------------------------------------------------------------------------- checks


def _tokenizer_facts(path: str) -> tuple[Any, dict[str, Any]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    facts = {
        "bos_token": tok.bos_token,
        "eos_token": tok.eos_token,
        "unk_token": tok.unk_token,
        "chat_template": tok.chat_template,
    }
    return tok, facts


def check_same_tokenizer(policy_path: str, pm_path: str) -> None:
    """Fail (CaiError) unless the PM reads the policy's token ids the way the policy writes them.

    TRL's PPO hands the *policy's* ids straight to the reward and value models, so equal
    vocabularies (same ids for the same strings), the same BOS/EOS/UNK and the same chat
    template are required. The pad token may differ: every trainer here sets its own.
    """
    a, fa = _tokenizer_facts(policy_path)
    b, fb = _tokenizer_facts(pm_path)
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        only_a = sorted(set(va) - set(vb))[:3]
        moved = sorted(t for t in set(va) & set(vb) if va[t] != vb[t])[:3]
        detail = f"{len(va)} vs {len(vb)} tokens"
        if only_a:
            detail += f"; only in the policy: {only_a}"
        if moved:
            detail += f"; different ids: {moved}"
        raise fail(
            pm_path,
            None,
            "tokenizer",
            f"the PM's vocabulary differs from the policy's ({detail}); TRL's PPO feeds the "
            "policy's token ids to the PM, so train the PM from the policy model "
            "(cai train pm --model POLICY)",
        )
    for key in ("bos_token", "eos_token", "unk_token", "chat_template"):
        if fa[key] != fb[key]:
            shown = "differs" if key == "chat_template" else f"{fb[key]!r} vs {fa[key]!r}"
            raise fail(
                pm_path,
                None,
                "tokenizer",
                f"{key} {shown} (PM vs policy); the PM must "
                "share the policy's tokenizer (train it with --model POLICY)",
            )


def check_pm_folder(path: str) -> str:
    """A PM folder: a transformers model with a one-output sequence-classification head."""
    from cai.io.atomic import check_published

    p = Path(path).expanduser()
    check_published(p, "--pm")
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise file_error(str(p), "--pm", "not a model folder (no config.json); give the --out folder of `cai train pm`")
    cfg = read_json_file(cfg_path, kind="model config")
    archs = cfg.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise file_error(
            str(p),
            "--pm",
            f"not a preference model (architectures: {', '.join(archs) or 'none'}); train one with `cai train pm`",
        )
    labels = cfg.get("num_labels", len(cfg.get("id2label") or {}) or 2)
    if labels != 1:
        raise file_error(str(p), "--pm", f"a PM has one output, this model has {labels}")
    return str(p.resolve())


# --------------------------------------------------------------------------- scoring


class PMScorer:
    """Scores token sequences with a PM exactly as TRL's PPO does (see the module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    @classmethod
    def load(
        cls,
        path: str,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        batch_size: int = 8,
    ) -> PMScorer:
        from transformers import AutoModelForSequenceClassification

        from cai.train.common import load_tokenizer, training_dtype

        path = check_pm_folder(path)
        tokenizer = load_tokenizer(path)
        use_distinct_pad(tokenizer)
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype or training_dtype())
        if device is not None:
            model.to(device)
        model.eval()
        model.requires_grad_(False)
        return cls(model, tokenizer, batch_size=batch_size)

    @torch.no_grad()
    def score_ids(self, seqs: Sequence[Sequence[int]]) -> list[float]:
        """The score at each sequence's last token (right padding; pads never reach the head)."""
        out: list[float] = []
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        backbone = getattr(self.model, self.model.base_model_prefix)
        for start in range(0, len(seqs), self.batch_size):
            chunk = seqs[start : start + self.batch_size]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, s in enumerate(chunk):
                ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
                mask[i, : len(s)] = 1
            ids, mask = ids.to(device), mask.to(device)
            hidden = backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            last = mask.sum(1) - 1
            logits = self.model.score(hidden[torch.arange(len(chunk), device=device), last])
            out.extend(float(x) for x in logits[:, 0].float().cpu())
        return out

    def encode(self, prompt: Conversation, answer: str) -> list[int]:
        return encode_prompt(self.tokenizer, prompt) + encode_answer(self.tokenizer, answer)

    def score(self, prompts: Sequence[Conversation], answers: Sequence[str]) -> list[float]:
        """Score text replies (re-tokenised with the PM's tokenizer)."""
        return self.score_ids([self.encode(p, a) for p, a in zip(prompts, answers, strict=True)])


class PMReward:
    """A TRL reward function (RLOO/GRPO ``reward_funcs``): PM score − missing-EOS penalty.

    It scores the policy's *own* completion ids (TRL passes them; they end with EOS when the
    reply finished), so RLOO/GRPO rewards match PPO's. The KL part of the objective is the
    trainer's (``beta``), not this function's.
    """

    __name__ = "pm"  # TRL names reward columns and metrics after the function

    def __init__(self, scorer: PMScorer, missing_eos_penalty: float | None):
        self.scorer = scorer
        self.penalty = missing_eos_penalty
        self.tokenizer = scorer.tokenizer

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        **_: Any,
    ) -> list[float]:
        eos = self.tokenizer.eos_token_id
        if completion_ids is None:  # text-only callers: re-tokenise the replies
            completion_ids = [encode_answer(self.tokenizer, trl_text(c)) for c in completions]
        seqs = [
            encode_prompt(self.tokenizer, trl_messages(p)) + list(c)
            for p, c in zip(prompts, completion_ids, strict=True)
        ]
        scores = self.scorer.score_ids(seqs)
        if self.penalty:
            scores = [
                s - self.penalty if not c or c[-1] != eos else s for s, c in zip(scores, completion_ids, strict=True)
            ]
        return scores


def trl_messages(prompt: Any) -> Conversation:
    """A prompt as TRL hands it to a reward function (text or messages) as messages."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def trl_text(completion: Any) -> str:
    """A completion as TRL hands it to a reward function (text or messages) as text."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion)
