"""`cai constitution diff`: what changed between two constitutions, principle by principle.

Records name a principle as ``id@version``; a principle whose text changed but kept its version
makes records from both texts look alike, so the diff warns about it (tags alone do not change
what a model is asked, so they do not need a bump).
"""

from __future__ import annotations

from cai.constitution.model import Constitution, Versioned


def _by_id(items: list[Versioned]) -> dict[str, Versioned]:
    return {v.id: v for v in items}


# Fields that only select principles; changing them does not change what a model is asked.
_SELECTION_ONLY = frozenset({"tags"})


def _section(title: str, a: list[Versioned], b: list[Versioned], warnings: list[str]) -> list[str]:
    da, db = _by_id(a), _by_id(b)
    lines: list[str] = []
    for pid in db.keys() - da.keys():
        lines.append(f"+ {title} {db[pid].ref}")
    for pid in da.keys() - db.keys():
        lines.append(f"- {title} {da[pid].ref}")
    for pid in sorted(da.keys() & db.keys()):
        pa, pb = (
            da[pid].principle.model_dump(exclude={"version"}),
            db[pid].principle.model_dump(exclude={"version"}),
        )
        changed = sorted(k for k in pa if pa[k] != pb[k])
        if changed or da[pid].version != db[pid].version:
            what = ", ".join(changed) if changed else "version only"
            lines.append(f"~ {title} {da[pid].ref} -> {db[pid].ref} ({what})")
            text = [k for k in changed if k not in _SELECTION_ONLY]
            if text and da[pid].version == db[pid].version:
                warnings.append(
                    f"warning: {title} principle {pid!r} changed ({', '.join(text)}) but kept version "
                    f"{db[pid].version}: records of both texts read {db[pid].ref}; bump its version "
                    f"(version: {db[pid].version + 1} on the principle or its library)"
                )
    return sorted(lines, key=lambda s: (s[2:], s[0]))


def diff_constitutions(a: Constitution, b: Constitution) -> list[str]:
    """The diff, one change per line; lines starting ``warning:`` (last) are changed principles
    whose version was not bumped."""
    warnings: list[str] = []
    lines = [
        f"a: {a.name} v{a.spec.version} {a.fingerprint()}",
        f"b: {b.name} v{b.spec.version} {b.fingerprint()}",
    ]
    lines += _section("critique", a.critique_principles, b.critique_principles, warnings)
    lines += _section("comparison", a.comparison_principles, b.comparison_principles, warnings)
    for key in ("system_prompt",):
        if getattr(a.spec, key) != getattr(b.spec, key):
            lines.append(f"~ {key} changed")
    for section in ("critique", "comparison"):
        fa, fb = getattr(a.spec, section).few_shot, getattr(b.spec, section).few_shot
        if fa != fb:
            lines.append(f"~ {section}.few_shot {fa} -> {fb}")
    if a.spec.critique.sampling != b.spec.critique.sampling:
        lines.append(f"~ critique.sampling {a.spec.critique.sampling} -> {b.spec.critique.sampling}")
    if a.spec.critique.rounds != b.spec.critique.rounds:
        lines.append(f"~ critique.rounds {a.spec.critique.rounds} -> {b.spec.critique.rounds}")
    if a.critique_exemplars != b.critique_exemplars:
        lines.append(f"~ critique exemplars {len(a.critique_exemplars)} -> {len(b.critique_exemplars)}")
    if a.comparison_exemplars != b.comparison_exemplars:
        lines.append(f"~ comparison exemplars {len(a.comparison_exemplars)} -> {len(b.comparison_exemplars)}")
    if a.template_hashes() != b.template_hashes():
        lines.append("~ templates changed")
    if len(lines) == 2:
        lines.append("no differences")
    return lines + warnings
