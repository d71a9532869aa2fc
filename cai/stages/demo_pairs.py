"""`cai demo-pairs`: the constitution's demonstrations turned into preference pairs.

The constitution → data → classifier route to a reward: for each demonstration (an author-written
prompt and its ideal reply, `cai.constitution.demonstrations`), the policy (the SL-CAI model)
answers the same prompt, and the pair says the demonstration's reply is preferred over the
policy's own (``p_chosen`` 1.0). `cai train pm --data OUT` trains a PM on them, and RL uses it as
the ``demo-pm`` reward. The policy answers the bare prompt, as RL prompts it (no system turn), so
the PM learns to tell the behaviour apart where RL will ask it to.

Written to OUT: ``preferences.jsonl`` (TRL's explicit-prompt format plus ``p_chosen``, ``id``,
``fingerprint``: what `cai train pm` reads), ``provenance.jsonl`` (line i: where pair i came
from) and ``summary.json``. A demonstration whose sampled reply failed, came back empty or equals
the demonstration's reply gives no pair; the summary counts each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cai import __version__
from cai.constitution.demonstrations import Placed, select
from cai.constitution.model import Constitution
from cai.errors import fail
from cai.io.atomic import write_json_atomic, write_jsonl_atomic
from cai.io.store import content_hash, derive_seed
from cai.models.base import Backend, GenerationParams
from cai.stages.settings import DemoPairsSettings

PAIRS_FILE = "preferences.jsonl"
PROVENANCE_FILE = "provenance.jsonl"


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _pair(c: Constitution, placed: Placed, own: str, raw: str, fp: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One pair (the demonstration's reply over the policy's own) and where it came from."""
    pair_id = f"{placed.id}-{content_hash(own, length=8)}"
    pair = {
        "id": pair_id,
        "prompt": _user(placed.demo.prompt),
        "chosen": [{"role": "assistant", "content": placed.demo.reply}],
        "rejected": [{"role": "assistant", "content": own}],
        "p_chosen": 1.0,
        "fingerprint": fp,
    }
    origin = {
        "id": pair_id,
        "source": "demonstration",
        "demonstration": placed.id,
        "kind": placed.demo.kind,
        "category": placed.demo.category,
        "written_at": f"{placed.path}:{placed.line}" if placed.line else placed.path,
        "constitution": c.name,
        "fingerprint": fp,
        "raw_output": raw,
        "cai_version": __version__,
    }
    return pair, origin


def build_demo_pairs(
    c: Constitution,
    policy: Backend,
    out: str | Path,
    settings: DemoPairsSettings | None = None,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the pairs to `out` (see the module docstring); returns the summary."""
    s = settings or DemoPairsSettings()
    chosen = select(c.demonstrations, s.demonstrations)
    if not chosen:
        raise fail(str(c.path), None, "demonstrations", "this constitution has no demonstrations to make pairs from")
    params = GenerationParams(
        max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, seed=derive_seed(seed, "demo-pairs")
    )
    gens = policy.generate([_user(p.demo.prompt) for p in chosen], params)
    fp = c.fingerprint()
    pairs: list[dict[str, Any]] = []
    provenance: list[dict[str, Any]] = []
    skipped = {"failed": 0, "empty": 0, "same_as_demonstration": 0}
    for placed, gen in zip(chosen, gens, strict=True):
        own = gen.texts[0].strip() if gen.error is None and gen.texts else None
        reason = "failed" if own is None else "empty" if not own else None
        if own is not None and own == placed.demo.reply.strip():
            reason = "same_as_demonstration"
        if reason is not None:
            skipped[reason] += 1
            continue
        pair, origin = _pair(c, placed, own, gen.texts[0], fp)
        pairs.append(pair)
        provenance.append(origin | {"policy": policy.spec, "params": params.as_record(), "seed": seed})
    if not pairs:
        raise fail(str(out), None, "demonstrations", f"no pair could be made ({skipped})")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(folder / PAIRS_FILE, pairs)
    write_jsonl_atomic(folder / PROVENANCE_FILE, provenance)
    summary = {
        "pairs": len(pairs),
        "demonstrations": len(chosen),
        "declines": sum(p["kind"] == "decline" for p in provenance),
        "answers": sum(p["kind"] == "answer" for p in provenance),
        "skipped": skipped,
        "constitution": c.name,
        "fingerprint": fp,
        "policy": policy.spec,
        "policy_info": policy.describe(),
        "params": params.as_record(),
        "seed": seed,
        "cai_version": __version__,
        "out": str(folder.resolve()),
    }
    write_json_atomic(folder / "summary.json", summary)
    return summary
