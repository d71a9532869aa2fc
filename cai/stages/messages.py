"""Builds the exact message lists that models receive at each step.

The stages and `cai render` both call these functions, so what `render` prints is what a model
sees. Few-shot exemplars are earlier turns of the same chat, rendered with the same templates as
the live question, so the model sees the format it is expected to follow.
"""

from __future__ import annotations

from cai.constitution.model import Constitution, Versioned
from cai.models.base import Conversation, Message

COT_ANSWER_PREFIX = "So the answer is ("


def _msg(role: str, content: str) -> Message:
    return {"role": role, "content": content}


def prompt_messages(c: Constitution, prompt: Conversation) -> Conversation:
    """The policy's input for its first answer: the system prompt, then the user's turns."""
    head = [_msg("system", c.spec.system_prompt)] if c.spec.system_prompt else []
    return head + [dict(m) for m in prompt]


def _critique_turns(c: Constitution, principle: Versioned, critique: str | None) -> list[Message]:
    p = principle.principle
    turns = [_msg("user", c.renderer.render(c.spec.templates.critique, critique_request=p.critique))]  # type: ignore[union-attr]
    if critique is not None:
        turns.append(_msg("assistant", critique))
    return turns


def _revision_turn(c: Constitution, principle: Versioned) -> Message:
    p = principle.principle
    return _msg("user", c.renderer.render(c.spec.templates.revision, revision_request=p.revision))  # type: ignore[union-attr]


def critique_fewshot(c: Constitution) -> list[Message]:
    """Exemplar conversations shown before the live one (limited by `critique.few_shot`)."""
    n = c.spec.critique.few_shot
    exemplars = c.critique_exemplars if n is None else c.critique_exemplars[:n]
    out: list[Message] = []
    for ex in exemplars:
        out += [_msg("user", ex.prompt), _msg("assistant", ex.response)]
        for r in ex.rounds:
            p = c.critique_principle(r.principle)
            out += _critique_turns(c, p, r.critique)
            out += [_revision_turn(c, p), _msg("assistant", r.revision)]
    return out


def critique_messages(c: Constitution, prompt: Conversation, answer: str, principle: Versioned) -> Conversation:
    """Ask for a critique of `answer` (the latest revision) under `principle`."""
    head = [_msg("system", c.spec.system_prompt)] if c.spec.system_prompt else []
    return (
        head
        + critique_fewshot(c)
        + [dict(m) for m in prompt]
        + [_msg("assistant", answer)]
        + _critique_turns(c, principle, None)
    )


def revision_messages(
    c: Constitution, prompt: Conversation, answer: str, principle: Versioned, critique: str
) -> Conversation:
    """Ask for a revision, after the model's own critique."""
    return [*critique_messages(c, prompt, answer, principle), _msg("assistant", critique), _revision_turn(c, principle)]


def comparison_fewshot(c: Constitution, cot: bool) -> list[Message]:
    n = c.spec.comparison.few_shot
    exemplars = c.comparison_exemplars if n is None else c.comparison_exemplars[:n]
    template = c.spec.templates.comparison_cot if cot else c.spec.templates.comparison
    out: list[Message] = []
    for ex in exemplars:
        question = c.comparison_principle(ex.principle).principle.question  # type: ignore[union-attr]
        out.append(
            _msg(
                "user",
                c.renderer.render(
                    template,
                    conversation=[_msg("user", ex.prompt)],
                    response_a=ex.response_a,
                    response_b=ex.response_b,
                    question=question,
                ),
            )
        )
        answer = f"{ex.reasoning.strip()} {COT_ANSWER_PREFIX}{ex.answer})" if cot and ex.reasoning else ex.answer
        out.append(_msg("assistant", answer))
    return out


def comparison_messages(
    c: Constitution,
    prompt: Conversation,
    response_a: str,
    response_b: str,
    principle: Versioned,
    cot: bool = False,
    fewshot: bool = True,
) -> Conversation:
    """The judge's question; the answer token is read at the start of the assistant turn."""
    template = c.spec.templates.comparison_cot if cot else c.spec.templates.comparison
    question = principle.principle.question  # type: ignore[union-attr]
    head = comparison_fewshot(c, cot) if fewshot else []
    text = c.renderer.render(
        template,
        conversation=[dict(m) for m in prompt],
        response_a=response_a,
        response_b=response_b,
        question=question,
    )
    return [*head, _msg("user", text)]


def contrast_messages(c: Constitution, prompt: Conversation, principle: Versioned, side: str) -> Conversation:
    """The context a reply is scored in for likelihood contrast: the conversation, then the
    principle's ``positive`` or ``negative`` guidance as a system turn (after the conversation,
    so that one prefill of the conversation serves every principle and side)."""
    guidance = getattr(principle.principle, side)
    text = c.renderer.render(c.spec.templates.contrast, guidance=guidance)
    return [*(dict(m) for m in prompt), _msg("system", text)]


def rlcd_messages(c: Constitution, prompt: Conversation, side: str) -> Conversation:
    """The policy's input for a pair by construction: the constitution's positive or negative
    system prompt (``rlcd``) in place of its usual one, then the user's turns."""
    assert c.spec.rlcd is not None
    return [_msg("system", getattr(c.spec.rlcd, side)), *(dict(m) for m in prompt)]


def cot_answer_messages(judge_messages: Conversation, reasoning: str) -> Conversation:
    """Continue the judge's own reasoning up to the answer letter, so its probability can be read."""
    text = reasoning.split(COT_ANSWER_PREFIX)[0].rstrip()
    return [*judge_messages, _msg("assistant", f"{text}\n{COT_ANSWER_PREFIX}")]


# The template of distill mode's system turn (`cai critique --mode distill`), found by name.
DISTILL_TEMPLATE = "distill"


def distill_guidance(c: Constitution) -> str:
    """The system turn of distill mode: the constitution's system prompt and its selected
    critique principles' critique texts (what every answer is reviewed against in revise mode)."""
    principles = [p.principle.critique for p in c.critique_principles]  # type: ignore[union-attr]
    return c.renderer.render(DISTILL_TEMPLATE, system_prompt=c.spec.system_prompt or "", principles=principles)


def distill_messages(guidance: str, prompt: Conversation) -> Conversation:
    """The policy's input in distill mode (also what `cai render distill` prints)."""
    return [{"role": "system", "content": guidance}, *(dict(m) for m in prompt)]
