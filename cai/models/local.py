"""`LocalBackend`: a transformers causal LM on CPU or CUDA, batched.

Generation sorts the (conversation, sample) jobs by prompt length and runs them in batches of
``batch_size`` with left padding (so every row's next token is at the same column), then puts
the results back in input order. Sampling is seeded per call inside ``torch.random.fork_rng``,
so a call never disturbs (or depends on) the caller's global RNG: same inputs, seed and batch
size give the same outputs.

Option probabilities: for label ``X`` we sum the next-token probabilities of the single-token
encodings of ``"X"`` and ``" X"`` (a model may answer with or without a leading space), read at
the first position of the assistant turn, or right after an assistant prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cai.models.base import Conversation, Generation, GenerationParams, OptionScores, SequenceScore
from cai.models.device import choose_device, choose_dtype, torch_dtype
from cai.models.engine.sampling import StopOnStrings, StopTail, SuppressEos, is_prefix, picker
from cai.models.options import truncate_at_stop


class LocalBackend:
    """A transformers model behind the `Backend` protocol."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        spec: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 32,
        prefix_sharing: bool = True,
        min_shared_prefix: int = 16,
        decoder: str = "auto",
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = spec or str(model_path)
        self.model_path = str(model_path)
        self.device = choose_device(device)
        self.dtype = choose_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.prefix_sharing = prefix_sharing
        self.min_shared_prefix = min_shared_prefix
        from cai.io.atomic import check_published

        check_published(self.model_path, "model")  # a killed training run's folder is no model
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        if not getattr(self.tokenizer, "chat_template", None):
            # Every request would fail with transformers' "chat_template is not set": stop first.
            from cai.errors import fail

            raise fail(
                self.spec,
                None,
                "model",
                "the tokenizer has no chat template (a base model?); use an instruct/chat model",
            )
        self.model = self._load_model(AutoModelForCausalLM)
        self.model.eval()
        self.model.requires_grad_(False)
        gen_eos = self.model.generation_config.eos_token_id
        eos = gen_eos if gen_eos is not None else self.tokenizer.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos])
        pad = self.tokenizer.pad_token_id
        self.pad_id: int = pad if pad is not None else min(self.eos_ids)
        self._torch = torch
        self.decoder = self._choose_decoder(decoder)

    def _choose_decoder(self, decoder: str) -> Any:
        """Our cached decoder (`cai.models.engine.decode`) or None for transformers' ``generate``.

        ``auto`` uses ours on CPU where the architecture is supported: that is where
        ``generate``'s per-step overheads dominated. CUDA keeps ``generate`` (tested there).
        """
        from cai.models.engine.decode import LlamaDecoder
        from cai.models.engine.layers import supports

        if decoder not in ("auto", "cai", "transformers"):
            raise ValueError(f"unknown decoder {decoder!r}; choose auto, cai or transformers")
        wanted = decoder == "cai" or (decoder == "auto" and self.device == "cpu")
        if wanted and supports(self.model):
            return LlamaDecoder(self.model)
        if decoder == "cai":
            raise ValueError(f"the cai decoder does not support {self.model.config.model_type!r} models")
        return None

    def _load_model(self, auto_cls: Any) -> Any:
        """On CPU, our GQA kernel (see `cai.models.engine.attention`), else eager: torch's flash
        attention CPU kernel is slow for one-token decode steps. CUDA keeps the default."""
        dtype = torch_dtype(self.dtype)
        if self.device == "cpu":
            from cai.models.engine.attention import register

            for attn in (register(), "eager"):
                if attn is None:
                    continue
                try:
                    return auto_cls.from_pretrained(self.model_path, dtype=dtype, attn_implementation=attn)
                except ValueError:  # the architecture does not take pluggable attention
                    continue
        return auto_cls.from_pretrained(self.model_path, dtype=dtype).to(self.device)

    # ---- encoding -------------------------------------------------------------------------

    def encode(self, conversation: Conversation) -> list[int]:
        """Token ids of the chat-templated prompt (generation prompt, or continued prefix)."""
        cont = is_prefix(conversation)
        ids = self.tokenizer.apply_chat_template(
            list(conversation),
            add_generation_prompt=not cont,
            continue_final_message=cont,
            tokenize=True,
            return_dict=False,
        )
        return list(ids)

    def _encode_all(self, conversations: Sequence[Conversation]) -> list[list[int] | str]:
        """Ids per conversation, or an error string: one bad template never sinks a batch."""
        out: list[list[int] | str] = []
        for conv in conversations:
            try:
                out.append(self.encode(conv))
            except Exception as exc:  # template errors are per-conversation values
                out.append(f"cannot render conversation: {type(exc).__name__}: {exc}")
        return out

    # ---- generation -----------------------------------------------------------------------

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: GenerationParams,
        *,
        min_new_tokens: int = 0,
    ) -> list[Generation]:
        """See `Backend.generate`. ``min_new_tokens`` (benchmarks) suppresses EOS until then."""
        torch = self._torch
        encoded = self._encode_all(conversations)
        results = [Generation() for _ in conversations]
        jobs = [(ci, k) for ci, ids in enumerate(encoded) if not isinstance(ids, str) for k in range(params.n)]
        for ci, ids in enumerate(encoded):
            if isinstance(ids, str):
                results[ci].error = ids
        jobs.sort(key=lambda job: len(encoded[job[0]]))
        texts: dict[tuple[int, int], str] = {}
        devices = [torch.cuda.current_device()] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(params.seed)
            for start in range(0, len(jobs), self.batch_size):
                batch = jobs[start : start + self.batch_size]
                prompts = [encoded[ci] for ci, _ in batch]
                try:
                    outs, counts = self._generate_batch(prompts, params, min_new_tokens)
                except Exception as exc:  # e.g. out of memory: record, keep going
                    for ci, _ in batch:
                        results[ci].error = f"generation failed: {type(exc).__name__}: {exc}"
                    continue
                for (ci, k), text, count in zip(batch, outs, counts, strict=True):
                    texts[(ci, k)] = text
                    results[ci].n_tokens += count
        for ci, result in enumerate(results):
            if result.error is None:
                result.texts = [texts[(ci, k)] for k in range(params.n)]
        return results

    def _generate_batch(
        self, prompts: Sequence[Any], params: GenerationParams, min_new_tokens: int
    ) -> tuple[list[str], list[int]]:
        if self.decoder is not None:
            return self._decode_batch(prompts, params, min_new_tokens)
        ids, mask = self._left_pad(prompts)
        width = ids.shape[1]
        sample = params.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": sample,
            "pad_token_id": self.pad_id,
            "eos_token_id": sorted(self.eos_ids),
        }
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:  # silence the model's sampling defaults, which greedy decoding ignores
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if min_new_tokens > 0:
            from transformers import LogitsProcessorList

            until = width + min(min_new_tokens, params.max_new_tokens)
            kwargs["logits_processor"] = LogitsProcessorList([SuppressEos(sorted(self.eos_ids), until)])
        if params.stop:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [StopOnStrings(StopTail(self.tokenizer, params.stop), width)]
            )
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
        texts, counts = [], []
        for row in out[:, width:].tolist():
            n = len(row)
            for pos, tok in enumerate(row):
                if tok in self.eos_ids:
                    n = pos + 1  # the EOS token was generated too
                    break
            text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
            texts.append(truncate_at_stop(text, params.stop))
            counts.append(n)
        return texts, counts

    def _decode_batch(
        self, prompts: Sequence[Any], params: GenerationParams, min_new_tokens: int
    ) -> tuple[list[str], list[int]]:
        stopped = StopTail(self.tokenizer, params.stop)
        rows = self.decoder.generate(
            prompts,
            max_new_tokens=params.max_new_tokens,
            pick=picker(params, self._torch),
            eos_ids=sorted(self.eos_ids),
            pad_id=self.pad_id,
            min_new_tokens=min(min_new_tokens, params.max_new_tokens),
            is_stopped=stopped if stopped.stops else None,
            min_shared_prefix=self.min_shared_prefix,
        )
        texts = [truncate_at_stop(self.tokenizer.decode(r, skip_special_tokens=True), params.stop) for r in rows]
        return texts, [len(r) for r in rows]

    def _left_pad(self, prompts: Sequence[Sequence[int]]) -> tuple[Any, Any]:
        torch = self._torch
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            mask[row, width - len(p) :] = 1
        return ids, mask

    # ---- option probabilities -------------------------------------------------------------

    def option_token_ids(self, option: str) -> list[int]:
        """Single-token encodings of ``option`` and ``" " + option`` (deduplicated)."""
        ids: list[int] = []
        for variant in (option, " " + option):
            toks = self.tokenizer.encode(variant, add_special_tokens=False)
            if len(toks) == 1 and toks[0] not in ids:
                ids.append(toks[0])
        return ids

    def option_probs(
        self,
        conversations: Sequence[Conversation],
        options: Sequence[str],
        *,
        prefix_sharing: bool | None = None,
    ) -> list[OptionScores]:
        from cai.models.engine.prefix import grouped_option_scores

        option_ids = {o: self.option_token_ids(o) for o in options}
        bad = [o for o, ids in option_ids.items() if not ids]
        if not options or bad:
            why = f"options {bad} are not single tokens" if bad else "no options given"
            return [OptionScores.failed(why) for _ in conversations]
        encoded = self._encode_all(conversations)
        ok = [i for i, ids in enumerate(encoded) if not isinstance(ids, str)]
        share = self.prefix_sharing if prefix_sharing is None else prefix_sharing
        results: list[OptionScores] = [
            OptionScores(probs={}, mass=0.0, error=ids if isinstance(ids, str) else None) for ids in encoded
        ]
        if not ok:
            return results
        scores = self._score(
            ok,
            results,
            lambda: grouped_option_scores(
                self.model,
                [encoded[i] for i in ok],  # type: ignore[misc]
                list(option_ids.values()),
                pad_id=self.pad_id,
                batch_size=self.batch_size,
                share=share,
                min_prefix=self.min_shared_prefix,
            ),
        )
        if scores is None:
            return results
        for i, (probs, mass) in zip(ok, scores, strict=True):
            # Not the model's own logits (bf16 gives a small judge a handful of distinct gaps):
            # the last hidden state through the lm_head in float32/float64 (`option_scores`).
            results[i] = OptionScores(probs=dict(zip(option_ids, probs, strict=True)), mass=mass, path="logprobs")
        return results

    def _score(self, ok: Sequence[int], results: Sequence[Any], compute: Any) -> Any:
        """Run one batched scoring call without gradients; on failure every scored row gets the
        error (a value, not an exception, like a failed generation) and None is returned."""
        try:
            with self._torch.inference_mode():
                return compute()
        except Exception as exc:
            for i in ok:
                results[i].error = f"scoring failed: {type(exc).__name__}: {exc}"
            return None

    # ---- sequence log-probabilities --------------------------------------------------------

    def encode_reply(self, conversation: Conversation, reply: str) -> tuple[list[int], list[int]]:
        """(context ids ending with the generation prompt, the reply's ids through end-of-turn).

        The reply's ids are cut from the templated whole conversation, so they are exactly the
        tokens a chat model would have produced (tokenising the reply alone can differ at its
        first token); trailing template text after the end-of-turn token is not scored.
        """
        context = self.encode(conversation)
        whole = self.tokenizer.apply_chat_template(
            [*conversation, {"role": "assistant", "content": reply}],
            add_generation_prompt=False,
            tokenize=True,
            return_dict=False,
        )
        whole = list(whole)
        if whole[: len(context)] != context:
            raise ValueError("the chat template renders the reply's context differently from the prompt")
        reply_ids = whole[len(context) :]
        ends = [i for i, t in enumerate(reply_ids) if t in self.eos_ids]
        return context, reply_ids[: ends[0] + 1] if ends else reply_ids

    def sequence_logprobs(
        self, requests: Sequence[tuple[Conversation, str]], *, prefix_sharing: bool | None = None
    ) -> list[SequenceScore]:
        from cai.models.engine.sequence import grouped_sequence_logprobs

        encoded: list[tuple[list[int], list[int]] | str] = []
        for conv, reply in requests:
            try:
                encoded.append(self.encode_reply(conv, reply))
            except Exception as exc:  # a template error is one request's value
                encoded.append(f"cannot render conversation: {type(exc).__name__}: {exc}")
        ok = [i for i, e in enumerate(encoded) if not isinstance(e, str)]
        results = [SequenceScore(None, error=e if isinstance(e, str) else None) for e in encoded]
        if not ok:
            return results
        share = self.prefix_sharing if prefix_sharing is None else prefix_sharing
        scores = self._score(
            ok,
            results,
            lambda: grouped_sequence_logprobs(
                self.model,
                [encoded[i] for i in ok],  # type: ignore[misc]
                pad_id=self.pad_id,
                batch_size=self.batch_size,
                share=share,
                min_prefix=self.min_shared_prefix,
            ),
        )
        if scores is None:
            return results
        for i, sc in zip(ok, scores, strict=True):
            results[i] = SequenceScore(sc, n_tokens=len(encoded[i][1]))  # type: ignore[index]
        return results

    # ---- provenance -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "backend": "transformers",
            "model_path": self.model_path,
            "dtype": self.dtype,
            "device": self.device,
            "batch_size": self.batch_size,
            "prefix_sharing": self.prefix_sharing,
            "decoder": "cai" if self.decoder is not None else "transformers",
        }

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
