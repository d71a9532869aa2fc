"""Response pairs: loaded from a file (for `label --pairs` and `judge-eval`) or made from samples.

Accepted row formats, one JSON object per line (or rows of a `datasets` folder):

* TRL conversational preference, explicit prompt: ``prompt`` (messages), ``chosen`` and
  ``rejected`` (the assistant turn(s) that follow);
* TRL implicit prompt: ``chosen`` and ``rejected`` are whole conversations sharing a prefix;
* raw HH-RLHF: ``chosen`` / ``rejected`` transcript strings (``\\n\\nHuman: … \\n\\nAssistant: …``);
* unlabelled: ``prompt`` (text or messages) with ``response_a`` and ``response_b``.

A pair from a labelled row has ``a`` = the human-chosen response and ``human == "a"``; whoever
shows it to a judge decides the display order, so the file's order never leaks into a label.

`PairUnit`s are the label stage's records-to-be: their ids hash the run's settings (``key``) and
the inputs only, never model outputs, so a resumed run knows which work is done before it
calls any model.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai.chat import Conversation, Generation
from cai.errors import fail
from cai.io.readers import Where, read_rows
from cai.io.sources import SHIPPED, PromptItem, checked_turns, parse_hh, row_id
from cai.io.store import content_hash
from cai.paths import data_dir


@dataclass(frozen=True)
class Pair:
    """Two candidate next assistant replies to one conversation (which ends with a user turn)."""

    id: str
    prompt: Conversation
    a: str
    b: str
    human: str | None = None  # "a" when a person preferred `a`; None when unlabelled
    aspect: str | None = None  # e.g. "harmless" or "helpful": which principles fit the pair
    split: str | None = None  # "dev" (tune on it) or "test" (report it); None when the file has none


def pairs_from_responses(n: int, how: str = "all") -> list[tuple[int, int]]:
    """Index pairs over n sampled responses.

    ``all`` takes every unordered pair (n choose 2): all are informative, and since they share the
    conversation, the judge's prefix cache makes the extra comparisons cheap. ``consecutive``
    takes (0,1), (2,3), …: disjoint pairs, so no response is counted twice.
    """
    if how == "consecutive":
        return [(i, i + 1) for i in range(0, n - 1, 2)]
    return list(itertools.combinations(range(n), 2))


def _messages(value: Any, key: str, where: Where) -> list[dict[str, str]] | None:
    """A non-empty list of turns, each checked (`checked_turns`); None for any other value."""
    if isinstance(value, list) and value:
        return checked_turns(value, key, where)
    return None


def _split_last_reply(conv: list[dict[str, str]]) -> tuple[list[dict[str, str]], str] | None:
    """A conversation ending with an assistant turn → (the conversation before it, its text)."""
    if len(conv) < 2 or conv[-1]["role"] != "assistant":
        return None
    return conv[:-1], conv[-1]["content"].strip()


def _reply_text(value: Any, key: str, where: Where) -> str | None:
    """A reply next to an explicit prompt: text, or one assistant turn. Several turns are refused:
    a preference is between two next replies, and joining turns would invent one."""
    msgs = _messages(value, key, where)
    if msgs is not None:
        if len(msgs) != 1 or msgs[0]["role"] != "assistant":
            roles = ", ".join(m["role"] for m in msgs)
            raise fail(where[0], where[1], key, f"a reply is one assistant turn (got {len(msgs)}: {roles})")
        return msgs[0]["content"].strip()
    return value.strip() if isinstance(value, str) else None


def parse_pair_row(row: dict[str, Any], where: Where) -> Pair:
    """One row of any accepted format → a `Pair` (``fail`` naming the line when it fits none)."""
    path, line = where
    aspect = row.get("aspect") if isinstance(row.get("aspect"), str) else None
    if "response_a" in row or "response_b" in row:
        a, b = (
            _reply_text(row.get("response_a"), "response_a", where),
            _reply_text(row.get("response_b"), "response_b", where),
        )
        prompt = _messages(row.get("prompt"), "prompt", where) or (
            [{"role": "user", "content": row["prompt"].strip()}] if isinstance(row.get("prompt"), str) else None
        )
        if not (prompt and a and b):
            raise fail(path, line, "response_a", "unlabelled pairs need prompt, response_a and response_b")
        _differ(a, b, "response_b", where)
        return _make(row, prompt, a, b, None, aspect, where)
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if chosen is None or rejected is None:
        raise fail(
            path,
            line,
            "chosen",
            "expected chosen/rejected (TRL or HH-RLHF) or response_a/response_b",
        )
    prompt = _messages(row.get("prompt"), "prompt", where)
    if prompt is None and isinstance(row.get("prompt"), str) and row["prompt"].strip():
        text = row["prompt"]
        prompt = parse_hh(text) if "Human:" in text else [{"role": "user", "content": text.strip()}]
    if prompt is not None:  # explicit prompt: chosen/rejected are the replies
        a, b = _reply_text(chosen, "chosen", where), _reply_text(rejected, "rejected", where)
        if isinstance(chosen, str) and "\n\nHuman:" in chosen:  # HH transcripts next to a prompt
            a, b = _hh_reply(chosen, where), _hh_reply(rejected, where)
    else:  # implicit prompt: whole conversations, or HH transcripts
        conv_c = _messages(chosen, "chosen", where) or (parse_hh(chosen) if isinstance(chosen, str) else None)
        conv_r = _messages(rejected, "rejected", where) or (parse_hh(rejected) if isinstance(rejected, str) else None)
        split_c = _split_last_reply(conv_c) if conv_c else None
        split_r = _split_last_reply(conv_r) if conv_r else None
        if split_c is None or split_r is None:
            raise fail(path, line, "chosen", "chosen/rejected must end with an assistant reply")
        if split_c[0] != split_r[0]:
            raise fail(path, line, "rejected", "chosen and rejected do not share the same conversation")
        prompt, a, b = split_c[0], split_c[1], split_r[1]
    if not prompt or prompt[-1]["role"] != "user":
        raise fail(path, line, "prompt", "the conversation must end with a user turn")
    if not a or not b:
        raise fail(path, line, "chosen", "empty chosen or rejected reply")
    _differ(a, b, "rejected", where)
    return _make(row, prompt, a, b, "a", aspect, where)


def _differ(a: str, b: str, field: str, where: Where) -> None:
    """Two identical replies carry no preference: a label or a human-agreement score on them
    would be noise, so the pair is refused."""
    if a == b:
        raise fail(where[0], where[1], field, "the same reply on both sides (a pair needs two different replies)")


def _hh_reply(text: str, where: Where) -> str:
    split = _split_last_reply(parse_hh(text))
    if split is None:
        raise fail(where[0], where[1], "chosen", "HH transcript must end with an Assistant turn")
    return split[1]


def _make(
    row: dict[str, Any], prompt: Conversation, a: str, b: str, human: str | None, aspect: str | None, where: Where
) -> Pair:
    pid = row_id(row, where) or content_hash(prompt, a, b, length=12)
    split = row.get("split") if isinstance(row.get("split"), str) else None
    return Pair(pid, prompt, a, b, human, aspect, split)


def load_pairs(ref: str, limit: int | None = None) -> list[Pair]:
    """Pairs from a JSONL file, a `datasets` folder, or the shipped ``judge-dev`` set."""
    path = Path(ref)
    if not path.exists() and ref in SHIPPED:
        path = data_dir("data") / SHIPPED[ref]
    if not path.exists():
        raise fail(ref, None, "pairs", "no such file or folder (shipped: judge-dev)")
    rows = read_rows(path, field="pairs")
    pairs: list[Pair] = []
    seen: set[str] = set()
    for row, where in rows:
        pair = parse_pair_row(row, where)
        if pair.id in seen:
            raise fail(where[0], where[1], "id", f"duplicate pair id {pair.id!r}")
        seen.add(pair.id)
        pairs.append(pair)
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise fail(str(path), None, "pairs", "no pairs in file")
    return pairs


@dataclass
class PairUnit:
    """One pair to label; `error` when its responses could not be sampled."""

    id: str
    order: int  # position in an unsharded run (merge sorts by it)
    prompt_id: str
    pair: Pair
    responses: list[int] | None  # indices of the sampled responses; None for given pairs
    error: str | None = None


def _given_id(key: dict[str, Any], p: Pair) -> str:
    return content_hash("label", key, p.id, p.prompt, p.a, p.b)


def _sampled_id(key: dict[str, Any], it: PromptItem, x: int, y: int) -> str:
    return content_hash("label", key, it.id, it.messages, x, y)


def unit_ids(chunk: Sequence[PromptItem | Pair], key: dict[str, Any], per_prompt: list[tuple[int, int]]) -> list[str]:
    """The ids a chunk's units will have, known before any model call (for resume)."""
    return [
        _given_id(key, x) if isinstance(x, Pair) else _sampled_id(key, x, i, j)
        for x in chunk
        for i, j in ([(0, 0)] if isinstance(x, Pair) else per_prompt)
    ]


def given_units(chunk: Sequence[PromptItem | Pair], offset: int, key: dict[str, Any]) -> list[PairUnit]:
    return [PairUnit(_given_id(key, p), offset + k, p.id, p, None) for k, p in enumerate(chunk) if isinstance(p, Pair)]


def sampled_units(
    chunk: Sequence[PromptItem | Pair],
    offset: int,
    key: dict[str, Any],
    per_prompt: list[tuple[int, int]],
    generations: Sequence[Generation],
) -> list[PairUnit]:
    """Pairs of each prompt's sampled responses (one `Generation` of n texts per prompt)."""
    prompts = [it for it in chunk if isinstance(it, PromptItem)]
    need = 1 + max(j for _, j in per_prompt)
    units = []
    for k, (it, g) in enumerate(zip(prompts, generations, strict=True)):
        texts = [t.strip() for t in g.texts]
        err = g.error or (None if len(texts) >= need else f"{len(texts)} of {need} responses returned")
        for n, (x, y) in enumerate(per_prompt):
            a, b = ("", "") if err else (texts[x], texts[y])
            pair = Pair(f"{it.id}:{x}-{y}", it.messages, a, b)
            order = (offset + k) * len(per_prompt) + n
            units.append(PairUnit(_sampled_id(key, it, x, y), order, it.id, pair, [x, y], err))
    return units
