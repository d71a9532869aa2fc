"""Model and dataset cards: the ``README.md`` that Hugging Face tools read in every cai output.

A trained model folder or an exported dataset is meant to be shared; the card is what the Hub,
``huggingface_hub.ModelCard``/``DatasetCard`` and ``datasets.load_dataset`` read first. Its YAML
front matter carries the metadata those tools understand (``base_model``, ``datasets``,
``library_name``, ``tags``, ``task_categories``, ``configs``/``data_files``, ``size_categories``,
``license`` when known); its body says where the thing came from — constitution name and
fingerprint, method, data sources, settings, the figures of the run's summary — so a model on
the Hub can be traced back to the principles that shaped it.

Cards are rendered from what the run already recorded (``cai_train.json``, ``summary.json``,
record provenance), with no clock and no absolute paths, so an identical run writes an
identical card. Everything shown passes through `cai.redact` first: a judge's endpoint URL or a
key echoed into an error message must not reach a public README.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

import cai
from cai import label_methods as methods
from cai.io.atomic import write_text_atomic
from cai.outputs import (
    CritiqueSummary,
    DataSource,
    JudgeSettings,
    LabelSummary,
    Provenance,
    RunManifest,
    TrainRecord,
)
from cai.redact import redact

CARD_FILE = "README.md"
BASE_TAGS = ["cai", "constitutional-ai", "trl"]
# A training kind's tag on the Hub, and what its model folder is for.
KIND_TAGS = {"sft": "sft", "pm": "reward-model", "ppo": "ppo", "rloo": "rloo", "grpo": "grpo", "dpo": "dpo"}
KIND_METHOD = {
    "sft": "SL-CAI supervised fine-tuning on constitutional revisions (TRL SFTTrainer)",
    "pm": "preference model on AI (RLAIF) labels (TRL RewardTrainer, cai's soft-label loss)",
    "ppo": "RL-CAI: PPO against the preference model (TRL PPOTrainer)",
    "rloo": "RL-CAI: RLOO against the preference model (TRL RLOOTrainer)",
    "grpo": "RL-CAI: GRPO against the preference model (TRL GRPOTrainer)",
    "dpo": "DPO on AI (RLAIF) preference labels (TRL DPOTrainer)",
}
# `embedded` names the de-quantised GGUF of this model (see `cai.models.embedded`).
EMBEDDED_BASE = ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")
# Files and folders inside a stage's run folder that trainers read: the run folder names the data.
STAGE_EXPORTS = {
    "dataset",
    "sft.jsonl",
    "sft_prompt_completion.jsonl",
    "dataset_prompt_completion",
    "preferences.jsonl",
}
# Record provenance keys a dataset card shows (the rest — model paths, timings — stay in records).
PROVENANCE_SHOWN = ("model", "judge", "policy", "rounds", "seed", "params", "judge_settings")


# --------------------------------------------------------------------------- rendering


def public_spec(spec: Any) -> Any:
    """A model spec as a card may show it: a local folder by its name only (a card travels
    with the model; the path it was trained at says nothing to a reader and may be private)."""
    if isinstance(spec, str) and ("/" in spec or "\\" in spec) and not spec.startswith("openai:"):
        return Path(spec).name or spec
    return spec


def _front_matter(meta: Mapping[str, Any]) -> str:
    data = {k: v for k, v in meta.items() if v not in (None, [], {})}
    return "---\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True) + "---\n"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str):
        return v.replace("|", "\\|").replace("\n", " ")
    return json.dumps(v, ensure_ascii=False, sort_keys=True).replace("|", "\\|")


def _table(rows: Iterable[tuple[str, Any]], head: tuple[str, str] = ("", "")) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "| --- | --- |"]
    lines += [f"| {k} | {_value(v)} |" for k, v in rows]
    return "\n".join(lines)


def _scalars(d: Mapping[str, Any], prefix: str = "", depth: int = 2) -> list[tuple[str, Any]]:
    """Flat (dotted key, value) figures of a summary: numbers, strings, booleans (lists left out)."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and depth > 0:
            out += _scalars(v, f"{key}.", depth - 1)
        elif isinstance(v, bool | int | float | str) or v is None:
            out.append((key, v))
    return out


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for `n` rows."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    for limit, name in bounds:
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def _card(front: Mapping[str, Any], title: str, sections: Sequence[tuple[str, str]]) -> str:
    body = [f"# {title}", ""]
    for head, text in sections:
        if text:
            body += [f"## {head}", "", text.rstrip(), ""]
    return _front_matter(redact(dict(front))) + "\n" + redact("\n".join(body))


def write_card(folder: str | Path, text: str) -> None:
    """Write ``folder/README.md`` atomically (a killed write leaves the previous card)."""
    write_text_atomic(Path(folder) / CARD_FILE, text)


# --------------------------------------------------------------------------- model cards


def _front_of(folder: Path) -> dict[str, Any]:
    """The YAML front matter of a folder's card ({} when it has none or it does not parse)."""
    try:
        text = (folder / CARD_FILE).read_text(encoding="utf-8")
        if text.startswith("---\n"):
            found = yaml.safe_load(text[4 : text.index("\n---", 4)])
            return found if isinstance(found, dict) else {}
    except (OSError, ValueError, yaml.YAMLError):
        pass
    return {}


def resolve_base(spec: str | None) -> tuple[str | None, str | None]:
    """(hub id, license) of a base model spec: `embedded` is SmolLM2-135M-Instruct; a cai model
    folder passes on its own card's base; a hub id is itself; another local folder is unknown."""
    if not spec:
        return None, None
    if spec == "embedded":
        return EMBEDDED_BASE
    path = Path(spec).expanduser()
    if path.exists():
        front = _front_of(path)
        base = front.get("base_model")
        if isinstance(base, list):
            base = base[0] if base else None
        return (base if isinstance(base, str) else None), front.get("license")
    return spec, None


def _source_name(path: str) -> str:
    """A data source as a card names it: its run folder (``…/critique`` for ``…/critique/dataset``)
    or file name, never the absolute path of someone's disk."""
    p = Path(path)
    inside = p.name in STAGE_EXPORTS or (p.parent / "run.json").is_file()
    return p.parent.name if inside and p.parent.name else p.name


def _manifest(path: Path) -> RunManifest:
    """The ``run.json`` of the run folder a data source lies in (or is); empty when there is none
    (a data set from elsewhere) or it cannot be read."""
    for folder in (path.parent, path):
        try:
            return RunManifest.model_validate_json((folder / "run.json").read_bytes())
        except (OSError, ValueError):
            continue
    return RunManifest()


def data_provenance(sources: Sequence[DataSource]) -> list[dict[str, Any]]:
    """What the run folders a model was trained on say about themselves (their ``run.json``)."""
    out = []
    for src in sources:
        path = Path(src.path or "")
        run = _manifest(path)
        out.append(
            {
                "name": _source_name(str(path)),
                "kind": src.kind,
                "rows": src.rows,
                "sha256": src.sha256,
                "stage": run.stage,
                "constitution": run.constitution,
                "fingerprint": run.fingerprint,
            }
        )
    return out


def model_card(meta: TrainRecord, name: str | None = None) -> str:
    """The card of a trained model folder, from its ``cai_train.json`` contents (`meta`).

    The title defaults to the kind of model, not the folder's name: a model folder is renamed
    and moved (publishing itself renames it), and its card should not change with it.
    """
    kind = meta.kind or ""
    version = meta.cai_version or cai.__version__
    data = data_provenance([*meta.data, *meta.human, *meta.helpful])
    base, license_ = resolve_base(meta.base_model)
    pipeline = "text-classification" if kind == "pm" else "text-generation"
    constitutions = sorted({(d["constitution"], d["fingerprint"]) for d in data if d["fingerprint"]}, key=str)
    fingerprints = sorted(set(meta.constitution_fingerprints) | {f for _, f in constitutions})
    front = {
        "base_model": base,
        "datasets": sorted({d["name"] for d in data}),
        "library_name": "transformers",
        "pipeline_tag": pipeline,
        "license": license_,
        "tags": [*BASE_TAGS, KIND_TAGS.get(kind, kind)],
        "cai": {"kind": kind, "version": version, "fingerprints": fingerprints},
    }
    known = {f for _, f in constitutions}
    rows = [(c or "(unnamed)", f) for c, f in constitutions] + [
        ("(from the data)", f) for f in fingerprints if f not in known
    ]
    provenance = "\n".join(
        [
            f"Method: {KIND_METHOD.get(kind, kind)}. Trained with cai {version}.",
            "",
            f"Base model: `{public_spec(meta.base_model)}`"
            + (f" ({base})" if base and base != meta.base_model else "")
            + ".",
            "",
            _table(rows, ("constitution", "fingerprint")) if rows else "Constitution: not recorded in the data.",
        ]
    )
    data_table = "\n".join(
        ["| source | stage | rows | sha256 |", "| --- | --- | --- | --- |"]
        + [f"| {d['name']} | {d['stage'] or d['kind']} | {d['rows']} | {str(d['sha256'])[:16]} |" for d in data]
    )
    settings = meta.settings.figures() if meta.settings is not None else {}
    summary = meta.summary.figures() if meta.summary is not None else {}
    libs = meta.libraries or {}
    return _card(
        front,
        name or f"cai {KIND_TAGS.get(kind, kind)} model",
        [
            ("Provenance", provenance),
            ("Data", data_table if data else ""),
            ("Settings", _table(_scalars(settings), ("setting", "value")) if settings else ""),
            ("Results", _table(_scalars(summary), ("figure", "value")) if summary else ""),
            ("Libraries", _table(sorted(libs.items()), ("library", "version")) if libs else ""),
        ],
    )


# --------------------------------------------------------------------------- dataset cards


def dataset_card(
    *,
    title: str,
    tags: Sequence[str],
    configs: Sequence[tuple[str, str]],
    rows: int,
    provenance: Provenance | None,
    method: str,
    layout: str,
    figures: Mapping[str, Any],
) -> str:
    """A dataset card: ``configs`` are (config name, JSONL file) pairs, the first the default."""
    front = {
        "pretty_name": title,
        "tags": [*BASE_TAGS, *tags],
        "task_categories": ["text-generation"],
        "size_categories": [size_category(rows)],
        "configs": [
            {
                "config_name": name,
                "data_files": [{"split": "train", "path": path}],
                **({"default": True} if i == 0 else {}),
            }
            for i, (name, path) in enumerate(configs)
        ],
    }
    prov = provenance.figures() if provenance is not None else {}
    shown = [
        ("constitution", prov.get("constitution")),
        ("fingerprint", prov.get("fingerprint")),
        *(
            (k, public_spec(prov[k]) if k in ("model", "judge", "policy") else prov[k])
            for k in PROVENANCE_SHOWN
            if prov.get(k) is not None
        ),
        ("cai version", prov.get("cai_version", cai.__version__)),
    ]
    return _card(
        front,
        title,
        [
            ("Provenance", f"Method: {method}\n\n" + _table(shown, ("what", "value"))),
            ("Files and columns", layout),
            ("Figures", _table(_scalars(figures), ("figure", "value"))),
        ],
    )


CRITIQUE_LAYOUT = """\
| file (saved dataset) | columns | for |
| --- | --- | --- |
| `sft.jsonl` (`dataset/`) | `messages` | TRL SFTTrainer: conversational language modelling |
| `sft_prompt_completion.jsonl` (`dataset_prompt_completion/`) | `prompt`, `completion` | \
TRL SFTTrainer: conversational prompt-completion |
| `cai.jsonl` (`dataset_cai/`) | `init_prompt`, `init_response`, `critic_prompt`, `critic_response`, \
`revision_prompt`, `revision_response`, `prompt`, `messages`, `chosen`, `rejected`, `id`, `prompt_id`, \
`principles`, `fingerprint` | people: the public CAI dataset's layout, with provenance |
| `provenance.jsonl` | `id`, `prompt_id`, `principles`, `fingerprint`, `source` | \
line i belongs to row i of the SFT files |

* `messages` feeds SFTTrainer's loss on every token (the assistant's only with `assistant_only_loss`
  and a chat template that marks generations).
* `prompt`/`completion` feed SFTTrainer's `completion_only_loss`: only the final revision is trained.
* `messages` and `prompt` start with the constitution's system prompt when it has one.
* The target is each prompt's latest revision that no flag excludes (an earlier one when later
  ones are flagged; no row when all are). Revisions that copy a few-shot exemplar
  (`exemplar-copy`) or the round's critique (`critique-copy`), and refusals or apologies that name
  nothing of the request (`boilerplate`), are flagged: see the figures.
* Rows whose `source` is `demonstration` (after the revisions) are the constitution's author-written
  demonstrations (prompt and ideal reply; `kind` decline or answer); they have no `cai.jsonl` row."""

DISTILL_LAYOUT = """\
| file (saved dataset) | columns | for |
| --- | --- | --- |
| `sft.jsonl` (`dataset/`) | `messages` | TRL SFTTrainer: conversational language modelling |
| `sft_prompt_completion.jsonl` (`dataset_prompt_completion/`) | `prompt`, `completion` | \
TRL SFTTrainer: conversational prompt-completion |
| `provenance.jsonl` | `id`, `prompt_id`, `principles`, `fingerprint` | line i belongs to row i of the SFT files |

* Context distillation: each answer was written under a system turn holding the constitution's
  system prompt and critique principles (`principles` lists them); `messages` and `prompt` hold the
  user's turns only, so the trained model learns to answer that way without being told.
* There is no `cai.jsonl`: with one answer per prompt there is no rejected first answer.
* Answers that copy a few-shot exemplar (`exemplar-copy`) or are otherwise flagged are left out.
* Rows whose `source` is `demonstration` are the constitution's author-written demonstrations."""

LABEL_LAYOUT = """\
| file (saved dataset) | columns | for |
| --- | --- | --- |
| `preferences.jsonl` (`dataset/`) | `prompt`, `chosen`, `rejected`, `p_chosen`, `p_chosen_logit` | \
TRL RewardTrainer / DPOTrainer (conversational, explicit prompt); cai's PM |
| `provenance.jsonl` | `id`, `prompt_id`, `principles`, `fingerprint` | line i belongs to row i of the preferences |

* `prompt`/`chosen`/`rejected` feed RewardTrainer's `-logsigmoid(r_c - r_r)` and DPOTrainer's DPO loss.
* `p_chosen` (> 0.5, the judge's soft label) is ignored by TRL; `cai train pm` trains on it with the soft
  cross-entropy `-(p·logsigmoid(r_c - r_r) + (1 - p)·logsigmoid(r_r - r_c))`.
* `p_chosen_logit = logit(p_chosen)` is ignored by TRL. Renamed to `margin` it would feed RewardTrainer's
  `-logsigmoid(r_c - r_r - margin)`; it is not called `margin` so that nobody gets that loss by accident.
* Ties (|p - 0.5| < tie_tolerance) are not exported; `labels.ties` counts them."""


def critique_dataset_card(provenance: Provenance | None, summary: CritiqueSummary) -> str:
    distill = summary.mode == "distill"
    return dataset_card(
        title="SL-CAI context distillation" if distill else "SL-CAI revisions",
        tags=["sft"],
        configs=[
            ("default", "sft.jsonl"),
            ("prompt_completion", "sft_prompt_completion.jsonl"),
            *([] if distill else [("cai", "cai.jsonl")]),
        ],
        rows=(summary.exported or 0) + (summary.demonstrations or 0),
        provenance=provenance,
        method=_critique_method(distill, summary.demonstrations or 0),
        layout=DISTILL_LAYOUT if distill else CRITIQUE_LAYOUT,
        figures={k: v for k, v in summary.figures().items() if k not in ("per_principle", "flags")}
        | {"flags": summary.flags or {}},
    )


def _critique_method(distill: bool, demonstrations: int) -> str:
    added = f" Added: {demonstrations} author-written demonstrations from the constitution (prompt, ideal reply)"
    demos = added + ", marked `source: demonstration` in provenance.jsonl." if demonstrations else ""
    return (
        "SL-CAI by context distillation: the model's answers to red-team prompts under the "
        "constitution's system prompt and principles are the SFT targets for the prompts without them."
        if distill
        else "SL-CAI: the model's answers to red-team prompts, critiqued and revised against "
        "principles sampled from the constitution; the latest unflagged revision is the SFT target."
    ) + demos


def label_method_sentence(provenance: Provenance | None, summary: LabelSummary) -> str:
    """How this dataset's labels were made, from what the run recorded (never a fixed text)."""
    judge = (provenance.judge_settings if provenance is not None else None) or JudgeSettings()
    method = summary.method or judge.method or "mc"
    entry = methods.method(method)
    if entry is not None and entry.constructs_pairs:
        rescore = summary.rescore
        if rescore:
            return (
                f"{entry.describes}, relabelled by {_describe(rescore)} (agreement with the "
                f"construction: {summary.rescore_agreement})."
            )
        return f"{entry.describes}; every label is p_chosen = 1."
    order_matters = entry is None or entry.order_matters
    orders = " and both option orders" if order_matters and judge.orders == "both" else ""
    return f"RL-CAI (RLAIF), method {method}: {_describe(method)}, averaged over principles{orders}."


def _describe(name: str) -> str:
    entry = methods.method(name)
    return entry.describes if entry is not None else name


def label_dataset_card(provenance: Provenance | None, summary: LabelSummary) -> str:
    written = summary.figures()
    labels = written.get("labels") or {}
    figures = {
        k: written.get(k)
        for k in (
            "records",
            "exported",
            "errors",
            "identical",
            "unlabelled",
            "human_agreement",
            "order_consistency",
            "option_mass",
        )
    }
    figures["labels"] = {k: v for k, v in labels.items() if k != "histogram"}
    figures["position_bias"] = written.get("position_bias") or {}
    return dataset_card(
        title="RLAIF preference labels",
        tags=["dpo", "reward-model", "rlaif", "preference"],
        configs=[("default", "preferences.jsonl")],
        rows=summary.exported or 0,
        provenance=provenance,
        method=label_method_sentence(provenance, summary),
        layout=LABEL_LAYOUT,
        figures=figures,
    )
