"""What `cai render` prints: the stage's own message builders with placeholder inputs."""

from __future__ import annotations

from typing import Any

from cai.constitution.load import load_constitution
from cai.errors import fail, option_error
from cai.stages import messages as conv
from cai.templates.renderer import placeholder

STEP_VARS = {
    "critique": ("prompt", "response"),
    "revision": ("prompt", "response", "critique"),
    "comparison": ("prompt", "response_a", "response_b"),
    "comparison_cot": ("prompt", "response_a", "response_b"),
    "contrast": ("prompt", "response", "side"),  # side: positive (default) or negative
    "distill": ("prompt",),  # cai critique --mode distill: the guidance, then the prompt
}


def preview_messages(
    template: str,
    constitution: str,
    principle: str | None,
    sets: dict[str, str],
    fewshot: bool = True,
    template_dirs: list[str] | None = None,
) -> list[dict[str, Any]]:
    c = load_constitution(constitution, template_dirs)
    # distill is no role under the constitution's `templates:` (see `cai.stages.critique`).
    roles = {**c.template_names(), "distill": "distill"}
    role = next((r for r, name in roles.items() if name == template or r == template), None)
    if role is None:
        # A template no pipeline step uses: render it alone with the given values.
        info = c.renderer.info(template)
        values = {
            k: sets.get(k, placeholder(k, t)) if t == "text" else placeholder(k, t) for k, t in info.variables.items()
        }
        unknown = sorted(set(sets) - set(info.variables))
        if unknown:
            raise option_error("--set", f"template {template!r} has no such variable", value=unknown[0])
        return [{"role": "user", "content": c.renderer.render(template, **values)}]
    allowed = STEP_VARS[role]
    unknown = sorted(set(sets) - set(allowed))
    if unknown:
        raise option_error("--set", f"unknown variable for {role} (use: {', '.join(allowed)})", value=unknown[0])
    v = {k: sets.get(k, f"<{k}>") for k in allowed if k != "side"}
    prompt = [{"role": "user", "content": v["prompt"]}]
    if role == "distill":
        from cai.stages.messages import distill_guidance, distill_messages

        return distill_messages(distill_guidance(c), prompt)
    if role in ("critique", "revision"):
        p = c.critique_principle(principle) if principle else c.critique_principles[0]
        if not fewshot:
            c.spec = c.spec.model_copy(update={"critique": c.spec.critique.model_copy(update={"few_shot": 0})})
        if role == "critique":
            return conv.critique_messages(c, prompt, v["response"], p)
        return conv.revision_messages(c, prompt, v["response"], p, v["critique"])
    p = c.comparison_principle(principle) if principle else c.comparison_principles[0]
    if role == "contrast":  # the context a reply is scored in, then the reply scored
        side = sets.get("side", "positive")
        if side not in ("positive", "negative"):
            raise option_error("--set", f"expected positive or negative, got {side!r}", value="side")
        if not getattr(p.principle, side, None):
            raise fail(p.source, None, f"{p.id}.{side}", "this principle has no contrast guidance")
        return [*conv.contrast_messages(c, prompt, p, side), {"role": "assistant", "content": v["response"]}]
    return conv.comparison_messages(
        c,
        prompt,
        v["response_a"],
        v["response_b"],
        p,
        cot=role == "comparison_cot",
        fewshot=fewshot,
    )
