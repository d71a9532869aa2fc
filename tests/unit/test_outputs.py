"""Stage outputs are types (`cai.outputs`): what a stage writes reads back whole, a wrong type is
caught where it is written and where it is read, and the report and cards take the types."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from cai.errors import CaiError
from cai.io.outputs import read_output, read_output_lines, write_output
from cai.outputs import CritiqueRecord, CritiqueSummary, EvalSummary, LabelRecord, LabelSummary, TrainRecord
from cai.run.registry import BUILTIN
from tests.helpers import invoke, run_fake_recipe

CAI = Path(__file__).resolve().parents[2] / "cai"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recipe run on the fake model: critique, label and eval write their outputs for real."""
    return run_fake_recipe(tmp_path_factory.mktemp("outputs") / "run", limit=3)


@pytest.mark.parametrize(
    ("rel", "kind"),
    [
        ("critique/summary.json", CritiqueSummary),
        ("label/summary.json", LabelSummary),
        ("eval/summary.json", EvalSummary),
    ],
)
def test_a_summary_reads_back_whole_and_typed(run: Path, rel: str, kind: type) -> None:
    written = json.loads((run / rel).read_text())
    typed = read_output(kind, run / rel)
    assert typed.figures() == written  # nothing the stage recorded is lost or reshaped
    assert typed.exported == written["exported"] if "exported" in written else typed.n == written["n"]


def test_records_read_back_typed(run: Path) -> None:
    crit = read_output_lines(CritiqueRecord, run / "critique" / "records.jsonl")
    assert len(crit) == 3 and all(r.rounds and r.rounds[0].principle for r in crit)
    labels = read_output_lines(LabelRecord, run / "label" / "records.jsonl")
    assert labels and all(r.provenance is not None and r.provenance.fingerprint for r in labels)
    raw = [json.loads(line) for line in (run / "label" / "records.jsonl").read_text().splitlines()]
    assert [r.p_chosen for r in labels] == [r["p_chosen"] for r in raw]


def test_counts_stay_ints_and_rates_floats(run: Path) -> None:
    """`int | float` fields keep the type written, so a summary rewritten from its type is the same file."""
    typed = read_output(EvalSummary, run / "eval" / "summary.json")
    hc = typed.harmless.harmful_compliance if typed.harmless else None
    assert hc is not None and hc.baseline is not None
    assert isinstance(hc.baseline.k, int) and isinstance(hc.baseline.rate, float)
    assert json.dumps(typed.figures(), sort_keys=True) == json.dumps(
        json.loads((run / "eval" / "summary.json").read_text()), sort_keys=True
    )


def test_a_wrong_type_in_a_run_file_is_one_line_naming_file_and_field(run: Path, tmp_path: Path) -> None:
    bad = tmp_path / "run"
    bad.mkdir()
    for name in ("recipe.json",):
        (bad / name).write_text((run / name).read_text())
    (bad / "eval").mkdir()
    summary = json.loads((run / "eval" / "summary.json").read_text())
    summary["harmless"]["harmful_compliance"]["policy"]["k"] = "seven"
    (bad / "eval" / "summary.json").write_text(json.dumps(summary))
    r = invoke("report", str(bad))
    assert r.code == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and "eval/summary.json" in line and "harmless.harmful_compliance.policy.k" in line
    assert not (bad / "report.html").exists()


def test_a_wrong_type_in_a_records_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(
        json.dumps({"id": "a", "p_chosen": 0.7}) + "\n" + json.dumps({"id": "b", "p_chosen": "high"}) + "\n"
    )
    with pytest.raises(CaiError) as e:
        read_output_lines(LabelRecord, path)
    assert str(e.value).startswith(f"{path}:2:") and "p_chosen" in str(e.value)


def test_a_stage_cannot_write_a_summary_its_readers_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exported"):
        write_output(CritiqueSummary, tmp_path / "summary.json", {"exported": "ten"})
    assert not (tmp_path / "summary.json").exists()


def test_a_training_record_written_before_results_had_their_key_still_reads() -> None:
    old = TrainRecord.model_validate({"kind": "pm", "train_loss_last": 0.69, "rows": {"eval": 0}})
    assert old.results().train_loss_last == 0.69 and old.results().rows.eval == 0


def test_every_builtin_stage_names_its_summary_type() -> None:
    named = {s.name: s.summary.__name__ for s in BUILTIN}
    assert named == {
        "critique": "CritiqueSummary",
        "sft": "TrainSummary",
        "label": "LabelSummary",
        "pm": "TrainSummary",
        "demo_pm": "TrainSummary",
        "dpo": "TrainSummary",
        "ppo": "TrainSummary",
        "eval": "EvalSummary",
    }


# What may still be an untyped mapping in the report and the cards: the page's own JSON block,
# the recipe (not a stage output), and the renderers' generic tables and front matter.
UNTYPED_OK = {"data", "models", "meta", "front", "d", "figures", "sections"}


def _params(path: Path) -> list[tuple[str, str, str]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for a in [*node.args.args, *node.args.kwonlyargs]:
                if a.annotation is not None:
                    out.append((node.name, a.arg, ast.unparse(a.annotation)))
    return out


def test_report_and_cards_take_stage_outputs_as_types() -> None:
    files = [*sorted((CAI / "run").glob("report*.py")), CAI / "cards.py"]
    untyped = [
        f"{p.name}:{fn}({arg}: {ann})"
        for p in files
        for fn, arg, ann in _params(p)
        if ("dict[str, Any]" in ann or "Mapping[str, Any]" in ann) and arg not in UNTYPED_OK
    ]
    assert untyped == []
    # And they read run files only through the typed readers.
    for p in files:
        text = p.read_text()
        assert "read_jsonl(" not in text and ".jsonl(" not in text, p.name
