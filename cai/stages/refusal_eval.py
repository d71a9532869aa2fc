"""How far the refusal detector can be trusted: its figures on labelled replies, and the reader
for a user's own labelled replies (`cai eval refusals --replies FILE`).

A labelled reply is one of four labels: ``refusal`` (declines the main request, with or without
an alternative), ``partial`` (declines part, or gives a watered-down or general version instead),
``compliance`` (does the main request, with or without warnings or a token "I shouldn't"), and
``other`` (declines nothing and does nothing: rambling, a question back, cut-off text). The
detector says yes or no; yes is right for ``refusal`` and ``partial``. A file may give the plain
``refusal: true | false`` instead of a label; such rows count as full refusals or compliance.

Figures: ``precision`` (of the yes calls, the share that are refusals or partial refusals),
``precision_full`` (the same with partial refusals left out, so a yes on a partial neither helps
nor hurts), ``recall_full`` and ``recall_partial`` (the share of each that is caught), ``recall``
(both together), and ``false_alarm`` (compliance and other replies called refusals).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cai.errors import did_you_mean, fail
from cai.io.readers import iter_jsonl

LABELS = ("refusal", "partial", "compliance", "other")
POSITIVE = frozenset({"refusal", "partial"})
OPTIONAL_TEXT = ("id", "prompt", "style", "split")


def _share(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


def score(rows: Iterable[Mapping[str, Any]], detect: Callable[[str], bool]) -> dict[str, Any]:
    """The detector's figures on labelled rows (each with ``reply`` and ``label``)."""
    n = {label: 0 for label in LABELS}
    said = {label: 0 for label in LABELS}
    for row in rows:
        n[row["label"]] += 1
        said[row["label"]] += bool(detect(row["reply"]))
    tp_full, tp_part = said["refusal"], said["partial"]
    false = said["compliance"] + said["other"]
    return {
        "n": sum(n.values()),
        "precision": _share(tp_full + tp_part, tp_full + tp_part + false),
        "precision_full": _share(tp_full, tp_full + false),
        "recall": _share(tp_full + tp_part, n["refusal"] + n["partial"]),
        "recall_full": _share(tp_full, n["refusal"]),
        "recall_partial": _share(tp_part, n["partial"]),
        "false_alarm": _share(false, n["compliance"] + n["other"]),
        "counts": {label: {"n": n[label], "called_refusal": said[label]} for label in LABELS},
    }


def score_by(rows: list[Mapping[str, Any]], detect: Callable[[str], bool], key: str = "style") -> dict[str, Any]:
    """`score` per value of `key` (rows without it are grouped under "-")."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get(key) or "-"), []).append(row)
    return {name: score(group, detect) for name, group in sorted(groups.items())}


def misses(rows: Iterable[Mapping[str, Any]], detect: Callable[[str], bool]) -> list[dict[str, Any]]:
    """The rows the detector gets wrong, each with what it said (for a person to read)."""
    out = []
    for row in rows:
        said = bool(detect(row["reply"]))
        if said != (row["label"] in POSITIVE):
            out.append({**row, "detector": said})
    return out


def read_labelled_replies(path: str | Path, option: str = "--replies") -> list[dict[str, Any]]:
    """A JSONL file of labelled replies, every way it can be wrong as ``path:line: field: …``."""
    name = str(path)
    rows = []
    for line, obj in iter_jsonl(path):
        rows.append(_check_row(obj, name, line))
    if not rows:
        raise fail(name, None, option, "no labelled replies in the file")
    return rows


def _check_row(obj: dict[str, Any], name: str, line: int) -> dict[str, Any]:
    """One row: a non-empty ``reply`` string and a known ``label`` (or a boolean ``refusal``)."""
    reply = obj.get("reply")
    if reply is None:
        raise fail(name, line, "reply", "missing")
    if not isinstance(reply, str):
        raise fail(name, line, "reply", f"must be a string, not {type(reply).__name__}")
    if not reply.strip():
        raise fail(name, line, "reply", "empty (an empty reply neither refuses nor complies: leave it out)")
    row: dict[str, Any] = {"reply": reply, "line": line}
    for key in OPTIONAL_TEXT:
        if obj.get(key) is not None:
            if not isinstance(obj[key], str | int):
                raise fail(name, line, key, f"must be a string, not {type(obj[key]).__name__}")
            row[key] = str(obj[key])
    # Any other plain field (a model name, a source, a temperature) is kept, as text, so that
    # `--by FIELD` can group by it; nested values are left out.
    for key, value in obj.items():
        if key not in row and key not in ("label", "refusal") and isinstance(value, str | int | float | bool):
            row[key] = str(value)
    row["label"] = _label(obj, name, line)
    return row


def _label(obj: dict[str, Any], name: str, line: int) -> str:
    if "label" in obj:
        label = obj["label"]
        if not isinstance(label, str):
            raise fail(name, line, "label", f"must be a string, not {type(label).__name__}")
        if label not in LABELS:
            hint = did_you_mean(label, LABELS)
            raise fail(name, line, "label", f"unknown label {label!r} (one of {', '.join(LABELS)})", hint)
        refusal = obj.get("refusal")
        if refusal is not None and not isinstance(refusal, bool):
            raise fail(name, line, "refusal", f"must be true or false, not {type(refusal).__name__}")
        if refusal is not None and refusal is not (label in POSITIVE):
            raise fail(name, line, "refusal", f"{refusal} disagrees with label {label!r}")
        return label
    refusal = obj.get("refusal")
    if refusal is None:
        raise fail(name, line, "label", f"missing (one of {', '.join(LABELS)}, or a boolean 'refusal')")
    if not isinstance(refusal, bool):
        raise fail(name, line, "refusal", f"must be true or false, not {type(refusal).__name__}")
    return "refusal" if refusal else "compliance"


def check_replies(rows: list[dict[str, Any]], detect: Callable[[str], bool], by: str = "style") -> dict[str, Any]:
    """Everything `cai eval refusals` reports on one set of labelled replies: the figures over
    all of them, per value of `by` where the rows have it, and the replies it gets wrong."""
    grouped = any(by in r for r in rows)
    return {
        "overall": score(rows, detect),
        "by": by if grouped else None,
        "groups": score_by(rows, detect, by) if grouped else {},
        "misses": misses(rows, detect),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_check(result: dict[str, Any], show: int = 5, width: int = 100) -> str:
    """`check_replies` as a person reads it: one line per group, then a few replies it got wrong."""
    head = f"{'':28} {'n':>5} {'precision':>9} {'full R':>7} {'partial R':>9} {'false alarm':>11}"
    lines = [head]
    groups = [("all", result["overall"]), *result["groups"].items()]
    for name, f in groups:
        lines.append(
            f"{name[:28]:28} {f['n']:>5} {_pct(f['precision']):>9} {_pct(f['recall_full']):>7} "
            f"{_pct(f['recall_partial']):>9} {_pct(f['false_alarm']):>11}"
        )
    wrong = result["misses"]
    lines.append(f"wrong on {len(wrong)} of {result['overall']['n']} replies" + (":" if wrong and show else ""))
    for row in wrong[: max(0, show)]:
        said = "called a refusal" if row["detector"] else "missed"
        text = " ".join(row["reply"].split())
        where = row.get("id") or f"line {row.get('line', '?')}"
        lines.append(f"  {where} ({row['label']}, {said}): {text[:width]}{'…' if len(text) > width else ''}")
    return "\n".join(lines)
