"""Clean model revisions and flag the ones that should not become training data.

Small models wrap their rewrites in boilerplate ("Revision: …", "Here is a revised response:")
or produce empty, truncated or looping text. We strip the wrappers and *flag* the rest, so the
export can leave them out and the summary can count them, instead of training on them silently.
The copy flags (`CopyCheck`, `critique_copy`) catch revisions that paste a few-shot exemplar or
the round's own critique in place of an answer; the boilerplate flag (`boilerplate`) catches
refusals and apologies that name nothing of the request ("I'm sorry for any inconvenience, but as
a chatbot …"), which taught earlier SL-CAI models to decline safe and harmful prompts alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cai.stages.refusal import is_refusal

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
    drop_boilerplate: bool = True

    @classmethod
    def of(
        cls, exemplar_texts: Iterable[str], n: int = COPY_NGRAM, drop: bool = True, drop_boilerplate: bool = True
    ) -> CopyCheck:
        return cls(frozenset(g for t in exemplar_texts for g in ngrams(t, n)), n, drop, drop_boilerplate)

    def exemplar_copy(self, answer: str, prompt: Sequence[Mapping[str, str]]) -> bool:
        """The answer shares at least one word n-gram with an exemplar text that the user's own
        prompt (any of its turns) does not also contain: quoting the question is not copying."""
        shared = ngrams(answer, self.n) & self.exemplar_grams
        if not shared:
            return False
        return bool(shared - set().union(*(ngrams(m["content"], self.n) for m in prompt)))

    def flags(self, answer: str, prompt: Sequence[Mapping[str, str]], critique: str | None = None) -> list[str]:
        """The copy and boilerplate flags of one answer; `critique` None (distill mode) skips
        critique_copy."""
        out = [EXEMPLAR_COPY] if self.exemplar_copy(answer, prompt) else []
        if critique is not None and critique_copy(answer, critique, self.n):
            out.append(CRITIQUE_COPY)
        if boilerplate(answer, " ".join(m["content"] for m in prompt if m.get("role") == "user")):
            out.append(BOILERPLATE)
        return out

    def droppable(self) -> frozenset[str]:
        """The recomputed flags that keep an answer out under these settings."""
        return (COPY_FLAGS if self.drop else frozenset()) | ({BOILERPLATE} if self.drop_boilerplate else set())


# ---------------------------------------------------------------------------- boilerplate
# A revision that declines or apologises without naming anything the user asked about, in stock
# words, is a stock sentence, not an answer to this prompt: SFT on it teaches the model to say it
# anywhere ("I'm unable to assist with requests that conflict with my policy").

BOILERPLATE = "boilerplate"
RECOMPUTED_FLAGS = COPY_FLAGS | {BOILERPLATE}  # flags judged afresh from the text at export
BOILERPLATE_SPECIFIC_WORDS = 2
"""At most this many specific words (content words outside `_GENERIC`) in a boilerplate answer:
a real decline names what it declines and what to do instead, in more words than that."""
_APOLOGY = re.compile(
    r"^\W*(?:i'?m (?:so |very |really |truly )?sorry|i am (?:so |very |really )?sorry|(?:i )?apologi[sz]e|"
    r"my apologies|unfortunately|as an? (?:ai|chatbot|language model|virtual assistant|assistant)\b)"
)
_STOP = frozenset(
    """about after also always anyone anything around because been before being best could does doing
    done even ever every from give going have having here into just know like make many more most
    much need never only other others people please really should some someone something than that
    their them then there these they thing things this those through tell very want ways were what
    when where which while will with without would write your yours the and for you can how but not
    get got any are was his her him she who why own out use way too all one may our its did has had let
    say see now new yes try lot off put set ask don isn won didn doesn""".split()  # noqa: SIM905
)
# Words of stock refusals and apologies: they say nothing about any particular request.
_GENERIC = frozenset(
    """sorry inconvenience unable assist assistance request requests policy policies guideline
    guidelines chatbot language model assistant equipped provide support comply fulfil fulfill
    appropriate content conflict conflicts refuse refusing refusal decline declining personal matter
    matters professional reach better advice question questions topic topics resources qualified
    expert concerns sensitive discuss task tasks else kind type nature apologize apologise apologies
    unfortunately cannot help harmful ethical ethics illegal dangerous inappropriate responsible
    standards principles programmed designed purpose able regarding related information happy
    understand respect safe safety other""".split()  # noqa: SIM905
)


def _content(text: str) -> list[str]:
    return [w for w in words(text.replace("\u2019", "'")) if len(w) >= 3 and w not in _STOP and not w.isdigit()]


def boilerplate(answer: str, prompt: str) -> bool:
    """The answer opens with a refusal or an apology, shares no content word (three letters or
    more, compared by the first five) with the prompt, and has at most `BOILERPLATE_SPECIFIC_WORDS`
    specific words: a bare "I'm sorry, but I can't assist with that." is flagged, "I won't help you
    hurt someone; walk away and call for help" is not. A prompt with no content words leaves
    nothing to compare. A heuristic: on the hand-labelled refusal set it flags 104 of 544 refusals
    (the stock ones) and none of 256 compliant replies."""
    asked = {w[:5] for w in _content(prompt)}
    said = _content(answer)
    if not asked or asked & {w[:5] for w in said}:
        return False
    if sum(w not in _GENERIC for w in said) > BOILERPLATE_SPECIFIC_WORDS:
        return False
    plain = answer.strip().lower().replace("\u2019", "'")
    return bool(_APOLOGY.match(plain)) or is_refusal(answer)
