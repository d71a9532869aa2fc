"""Render every prompt a stage will build, once, before the stage writes anything.

A template that declares a variable the stage does not give it, or a principle too long for the
render budget, would otherwise fail at the first batch: after the output folder and its
`run.json` exist. Here each template the stage uses is rendered with every principle it may
sample and a stand-in conversation, so any such error comes first and the folder stays unmade.
"""

from __future__ import annotations

from cai.constitution.model import Constitution
from cai.stages.messages import (
    comparison_messages,
    contrast_messages,
    distill_guidance,
    prompt_messages,
    revision_messages,
)
from cai.stages.settings import JudgeSettings

STAND_IN = [{"role": "user", "content": "a question"}]


def check_critique(c: Constitution, mode: str) -> None:
    """The critique stage's prompts: distill's guidance, or a critique and a revision turn for each
    critique principle (which renders the few-shot exemplars too)."""
    if mode == "distill":
        distill_guidance(c)
        return
    prompt_messages(c, STAND_IN)
    for p in c.critique_principles:
        revision_messages(c, STAND_IN, "an answer", p, "a critique")


def check_judge(c: Constitution, judge: JudgeSettings) -> None:
    """The judge's prompts for one scoring method: a comparison question (with or without
    reasoning) or a contrast guidance turn for each comparison principle."""
    for p in c.comparison_principles:
        if judge.method == "contrast":
            for side in ("positive", "negative"):
                if getattr(p.principle, side, None):
                    contrast_messages(c, STAND_IN, p, side)
        else:
            comparison_messages(c, STAND_IN, "reply one", "reply two", p, cot=judge.cot, fewshot=judge.fewshot)
