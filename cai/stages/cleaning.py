"""Clean model revisions and flag the ones that should not become training data.

Small models wrap their rewrites in boilerplate ("Revision: …", "Here is a revised response:")
or produce empty, truncated or looping text. We strip the wrappers and *flag* the rest, so the
export can leave them out and the summary can count them, instead of training on them silently.
The copy flags (`CopyCheck`, `critique_copy`) catch revisions that paste a few-shot exemplar or
the round's own critique in place of an answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_PREFIXES = [
    r"revis(?:ed|ion)(?: response| answer| version)?\s*[:\-]",
    r"rewritten(?: response| answer| version)?\s*[:\-]",
    r"(?:here(?:'s| is) )?(?:my |the |a )?(?:revised|rewritten|updated|improved|new) "
    r"(?:response|answer|version|reply)[^:\n]{0,60}:",
    r"sure[,!.]? here(?:'s| is)[^:\n]{0,80}:",
    r"(?:okay|ok|certainly|of course)[,!.]?\s*here(?:'s| is)[^:\n]{0,80}:",
    r"response\s*:",
    r"assistant\s*:",
]
PREFIX_RE = re.compile(r"^\s*(?:" + "|".join(_PREFIXES) + r")\s*", re.IGNORECASE)
QUOTES = ('"', "“", "”", "'")


def clean_revision(text: str) -> str:
    """Strip leading boilerplate and wrapping quotes, repeatedly (models stack them)."""
    out = text.strip()
    for _ in range(4):
        new = PREFIX_RE.sub("", out, count=1).strip()
        if len(new) >= 2 and new[0] in QUOTES and new[-1] in QUOTES:
            new = new[1:-1].strip()
        if new == out:
            break
        out = new
    return out


def _repetition(text: str, n: int = 4) -> float:
    """Share of word n-grams that are repeats: high values mean the model looped."""
    words = text.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(max(0, len(words) - n + 1))]
    if len(grams) < 8:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def quality_flags(revision: str, *, previous: str = "", request: str = "") -> list[str]:
    """Reasons a revision is unfit for SFT; empty when it looks usable."""
    flags: list[str] = []
    words = revision.split()
    if not words:
        return ["empty"]
    if len(words) < 3:
        flags.append("too-short")
    if _repetition(revision) > 0.5:
        flags.append("repetitive")
    if request and revision.strip() == request.strip():
        flags.append("echoes-request")
    if re.search(r"\b(critique|critiquerequest|revisionrequest)\s*:", revision, re.IGNORECASE):
        flags.append("format-leak")
    if previous and revision.strip() == previous.strip():
        flags.append("unchanged")
    return flags


# ---------------------------------------------------------------------------- copy flags
# Small models asked to revise often paste text instead: a few-shot exemplar's revision (the
# answer to someone else's question) or their own critique. Neither is an answer to the prompt,
# so both are flagged, by word n-gram overlap.

COPY_NGRAM = 8
"""Length of the word n-grams the copy flags compare. Eight lowercase words in a row are rarely
shared by two independent texts, while a pasted clause shares several; shorter n-grams start to
match stock phrases ("i can't help with that because it ...")."""
CRITIQUE_COPY_SHARE = 0.5  # share of the revision's n-grams found in the critique that flags it
EXEMPLAR_COPY = "exemplar-copy"
CRITIQUE_COPY = "critique-copy"
COPY_FLAGS = frozenset({EXEMPLAR_COPY, CRITIQUE_COPY})
_WORD_RE = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Word tokens as the copy flags see them: maximal runs of word characters (``\\w+``) of the
    lowercased text, so case, punctuation, quotes and spacing never hide a copy."""
    return _WORD_RE.findall(text.lower())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def critique_copy(revision: str, critique: str, n: int = COPY_NGRAM) -> bool:
    """The revision repeats the round's critique: their normalised texts (the `words`, joined)
    are equal, or at least `CRITIQUE_COPY_SHARE` (half) of the revision's word n-grams, counted
    by position, occur in the critique. A revision shorter than n words has no n-grams and is
    flagged only when equal."""
    rev = words(revision)
    if rev and rev == words(critique):
        return True
    grams = [tuple(rev[i : i + n]) for i in range(len(rev) - n + 1)]
    if not grams:
        return False
    crit = ngrams(critique, n)
    return sum(g in crit for g in grams) >= CRITIQUE_COPY_SHARE * len(grams)


@dataclass(frozen=True)
class CopyCheck:
    """What the copy flags compare an answer with: the word n-grams of every few-shot exemplar
    text the prompts can show (built once per run), the n, and whether flagged answers are
    dropped (from the SFT export, and as the base of the next round)."""

    exemplar_grams: frozenset[tuple[str, ...]]
    n: int = COPY_NGRAM
    drop: bool = True

    @classmethod
    def of(cls, exemplar_texts: Iterable[str], n: int = COPY_NGRAM, drop: bool = True) -> CopyCheck:
        return cls(frozenset(g for t in exemplar_texts for g in ngrams(t, n)), n, drop)

    def exemplar_copy(self, answer: str, prompt: Sequence[Mapping[str, str]]) -> bool:
        """The answer shares at least one word n-gram with an exemplar text that the user's own
        prompt (any of its turns) does not also contain: quoting the question is not copying."""
        shared = ngrams(answer, self.n) & self.exemplar_grams
        if not shared:
            return False
        return bool(shared - set().union(*(ngrams(m["content"], self.n) for m in prompt)))

    def flags(self, answer: str, prompt: Sequence[Mapping[str, str]], critique: str | None = None) -> list[str]:
        """The copy flags of one answer; `critique` None (distill mode) skips critique_copy."""
        out = [EXEMPLAR_COPY] if self.exemplar_copy(answer, prompt) else []
        if critique is not None and critique_copy(answer, critique, self.n):
            out.append(CRITIQUE_COPY)
        return out
