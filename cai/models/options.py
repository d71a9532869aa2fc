"""Turning a judge's output into option probabilities; pure functions, no model needed.

Token matching (the ``logprobs`` path): a returned token counts for label ``X`` when, after
stripping whitespace and brackets, it equals ``X`` — so ``"A"``, ``" A"``, ``"(A"`` and
``"A)"`` all count for ``A``. Tokens like ``"("`` or ``"The"`` count for nothing and lower the
``mass``.

Text parsing (the ``text`` fallback), first rule that matches wins:
  1. the whole answer is a label, e.g. ``"B"``, ``"(B)."``;
  2. the first bracketed label, e.g. ``"... (A) is better"``;
  3. ``answer/option/choice [is|:] X``;
  4. the answer starts with a label followed by ``)``, ``.``, ``:`` or ``,``.
Anything else is an error with the raw text kept — never a default label.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from cai.models.base import OptionScores

_STRIP = " \t\r\n()[]{}.:,*\"'"


def truncate_at_stop(text: str, stops: Sequence[str]) -> str:
    """Cut ``text`` at the earliest stop string (servers and stopping criteria overshoot)."""
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(cuts)] if cuts else text


def normalise_token(token: str) -> str:
    return token.strip(_STRIP)


def match_logprobs(top: Sequence[tuple[str, float]], options: Sequence[str], *, raw: str | None = None) -> OptionScores:
    """Sum the probabilities of the top tokens matching each option."""
    mass_by = dict.fromkeys(options, 0.0)
    for token, logprob in top:
        key = normalise_token(token)
        if key in mass_by:
            mass_by[key] += math.exp(logprob)
    mass = sum(mass_by.values())
    if mass <= 0:
        return OptionScores.failed(f"none of the options {list(options)} among the {len(top)} top tokens", raw=raw)
    return OptionScores(probs={o: p / mass for o, p in mass_by.items()}, mass=mass, path="logprobs", raw=raw)


def parse_option(text: str, options: Sequence[str]) -> OptionScores:
    """Probability 1 on the option a free-text answer names (see module docs for the rules)."""
    alts = "|".join(re.escape(o) for o in sorted(options, key=len, reverse=True))
    found = None
    whole = text.strip(_STRIP)
    if whole in options:
        found = whole
    rules = (
        rf"\(({alts})\)",
        rf"\b(?i:answer|option|choice)\s*(?:is|:)?\s*\(?({alts})\b",
        rf"^\s*\(?({alts})[).:,]",
    )
    for pattern in rules:
        if found is not None:
            break
        m = re.search(pattern, text)
        if m:
            found = m.group(1)
    if found is None:
        return OptionScores.failed(f"could not parse one of {list(options)} from the answer", path="text", raw=text)
    return OptionScores(probs={o: (1.0 if o == found else 0.0) for o in options}, mass=1.0, path="text", raw=text)
