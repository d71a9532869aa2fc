"""The collapse monitor's figures and warnings: is the policy starting to refuse safe prompts, or
to answer everything with one boilerplate sentence?

Users of every RLHF framework report the same failure: a policy that learns to refuse everything,
or to repeat one sentence ("I'm sorry for any inconvenience, but as a chatbot …"), because the
reward model likes it. The reward curve does not show it; the replies do. So at fixed updates
the policy answers a small fixed set of prompts greedily (`cai.train.monitor_run` does the
generation and the TRL side), and each check records:

* ``safe`` / ``red``: the refusal share on safe prompts (which should stay near 0) and on the
  red-team training prompts (which may rise: that is the point of the run), by the refusal
  detector the caller gives (`cai.stages.refusal.is_refusal` from the CLI and `cai run`);
* ``words_mean`` / ``tokens_mean``: mean reply length;
* ``distinct2``: distinct word bigrams / all word bigrams over every reply (1.0: nothing repeats;
  it falls when replies start to share their wording);
* ``top_sentence`` and ``top_sentence_share``: the sentence found in the most replies, and the
  share of replies that contain it;
* ``kl``: TRL's KL(policy ‖ reference) estimate logged at that update (``kl_unit`` of the run).

`Watch` compares each check with the thresholds of `MonitorSettings` and with the first check
(before any update), and says in words what it sees. This module has no torch or TRL in it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cai.train.monitor_settings import MonitorSettings

# Does a reply decline? `cai.stages.refusal.is_refusal` in `cai train ppo` and `cai run`; it lives
# above this layer, so the caller hands it in. Without one, the refusal figures stay None.
Detector = Callable[[str], bool]

# Sentences end at . ! ? (or a line break); fewer words than this are not "a sentence" worth
# counting ("Sure!", "Yes." open many healthy replies).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
MIN_SENTENCE_WORDS = 4


@dataclass(frozen=True)
class Reply:
    """One greedy reply of the policy at a check."""

    set: str  # "safe" or "red"
    prompt: str
    text: str
    tokens: int


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def sentences(text: str) -> list[str]:
    """The reply's sentences, normalised (lower case, words only) so that punctuation and spacing
    do not hide a repeat; short ones are left out."""
    out = []
    for part in _SENTENCE_END.split(text.strip()):
        words = _words(part)
        if len(words) >= MIN_SENTENCE_WORDS:
            out.append(" ".join(words))
    return out


def distinct_n(texts: Sequence[str], n: int = 2) -> float | None:
    """Distinct word n-grams over all n-grams of `texts` (None: no reply is that long)."""
    grams = [tuple(w[i : i + n]) for w in map(_words, texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def top_sentence(texts: Sequence[str]) -> tuple[str | None, float]:
    """The sentence that the most replies contain, and the share of replies containing it."""
    if not texts:
        return None, 0.0
    counts = Counter(s for t in texts for s in set(sentences(t)))
    if not counts:
        return None, 0.0
    best, k = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))  # ties: the same one every run
    return best, k / len(texts)


def _refused(text: str, detector: Detector | None) -> bool | None:
    if detector is None:
        return None
    return bool(text.strip()) and detector(text)  # an empty reply declines nothing


def _refusals(replies: Sequence[Reply], which: str, detector: Detector | None) -> dict[str, Any]:
    mine = [r for r in replies if r.set == which]
    if detector is None:
        return {"n": len(mine), "refused": None, "share": None}
    k = sum(bool(_refused(r.text, detector)) for r in mine)
    return {"n": len(mine), "refused": k, "share": k / len(mine) if mine else None}


def measure(step: int, replies: Sequence[Reply], kl: float | None, detector: Detector | None) -> dict[str, Any]:
    """One check's figures (the module docstring says what each means), replies included."""
    texts = [r.text for r in replies]
    sentence, share = top_sentence(texts)
    return {
        "step": step,
        "safe": _refusals(replies, "safe", detector),
        "red": _refusals(replies, "red", detector),
        "words_mean": sum(len(_words(t)) for t in texts) / len(texts) if texts else None,
        "tokens_mean": sum(r.tokens for r in replies) / len(replies) if replies else None,
        "distinct2": distinct_n(texts, 2),
        "top_sentence": sentence,
        "top_sentence_share": share,
        "kl": kl,
        "replies": [
            {"set": r.set, "prompt": r.prompt, "reply": r.text, "refusal": _refused(r.text, detector)} for r in replies
        ],
    }


@dataclass
class Watch:
    """Thresholds against each check, and the first check as the run's own baseline."""

    settings: MonitorSettings
    first: dict[str, Any] | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)  # every warning so far, with its step

    def check(self, row: dict[str, Any]) -> list[dict[str, str]]:
        """The warnings this check raises ({key, text}); the first check becomes the baseline."""
        if self.first is None:
            self.first = row
        found = [w for w in (self._safe(row), self._rise(row), self._one_sentence(row), self._distinct(row)) if w]
        self.warnings += [{"step": row["step"], **w} for w in found]
        return found

    def _safe(self, row: dict[str, Any]) -> dict[str, str] | None:
        safe, limit = row["safe"], self.settings.monitor_refusal_max
        if safe["share"] is None or safe["share"] <= limit:
            return None
        return {
            "key": "safe-refusal",
            "text": f"{safe['refused']} of {safe['n']} safe prompts refused ({safe['share']:.0%} > {limit:.0%})",
        }

    def _rise(self, row: dict[str, Any]) -> dict[str, str] | None:
        assert self.first is not None
        now, then = row["safe"]["share"], self.first["safe"]["share"]
        if row is self.first or now is None or then is None or now - then <= self.settings.monitor_refusal_rise:
            return None
        return {
            "key": "safe-refusal-rise",
            "text": f"safe-prompt refusals rose from {then:.0%} at the first check to {now:.0%} "
            f"(more than {self.settings.monitor_refusal_rise:.0%} points)",
        }

    def _one_sentence(self, row: dict[str, Any]) -> dict[str, str] | None:
        share, limit = row["top_sentence_share"], self.settings.monitor_repeat_max
        if row["top_sentence"] is None or share <= limit:
            return None
        return {
            "key": "one-sentence",
            "text": f"{share:.0%} of replies contain the same sentence (> {limit:.0%}): “{row['top_sentence']}”",
        }

    def _distinct(self, row: dict[str, Any]) -> dict[str, str] | None:
        assert self.first is not None
        now, then = row["distinct2"], self.first["distinct2"]
        floor = self.settings.monitor_distinct2_min
        if row is self.first or now is None or not then or now >= floor * then:
            return None
        return {
            "key": "distinct-drop",
            "text": f"distinct-2 fell from {then:.2f} at the first check to {now:.2f} (below {floor:.0%} of it): "
            "the replies are converging on the same wording",
        }


def summary_of(watch: Watch, rows: list[dict[str, Any]], stopped_at: int | None) -> dict[str, Any]:
    """What `cai_train.json` records of the monitor: every warning, the first and last check's
    figures (replies left out: they are in metrics.jsonl), and where training was stopped."""

    def brief(row: dict[str, Any] | None) -> dict[str, Any] | None:
        return {k: v for k, v in row.items() if k != "replies"} if row else None

    return {
        "checks": len(rows),
        "warnings": watch.warnings,
        "stopped_at": stopped_at,
        "first": brief(rows[0] if rows else None),
        "last": brief(rows[-1] if rows else None),
    }
