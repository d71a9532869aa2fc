"""Clean model revisions and flag the ones that should not become training data.

Small models wrap their rewrites in boilerplate ("Revision: …", "Here is a revised response:")
or produce empty, truncated or looping text. We strip the wrappers and *flag* the rest, so the
export can leave them out and the summary can count them, instead of training on them silently.
"""

from __future__ import annotations

import re

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
