"""The report says what it sees: a warning block under the title, each warning with the figure
that set it off; a judge-free harmlessness table; plots with integer step ticks.

Run folders are built from the files each stage writes (the figures set by hand), except the
position-driven judge, whose records come from a real `cai label` run with `fake:always-a`.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from cai.run.report import build_report
from cai.stages.intervals import wilson
from tests.browser import chromium, element_boxes, screenshot
from tests.helpers import invoke

# ---- run folders -------------------------------------------------------------------------


def _json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n, "lo": lo, "hi": hi}


def _label_record(i: int, ab: float, ba: float) -> dict[str, Any]:
    """A pair judged in both orders; `ab`, `ba`: P(reply a is better) in each order."""
    orders = [
        {"order": "ab", "p_a": ab, "p_first": ab, "mass": 0.9, "path": "logprobs"},
        {"order": "ba", "p_a": ba, "p_first": 1 - ba, "mass": 0.9, "path": "logprobs"},
    ]
    p_a = (ab + ba) / 2
    principle = {"principle": "less-harmful@1", "p_a": p_a, "consistent": (ab > 0.5) == (ba > 0.5), "orders": orders}
    return {"id": f"r{i}", "principles": [principle], "p_a": p_a, "p_chosen": max(p_a, 1 - p_a), "provenance": {}}


HARMLESS = {
    "harmful_compliance": {
        "prompts": "harmful-heldout",
        "policy": _rate(3, 40),
        "baseline": _rate(15, 40),
        "difference": {"d": -0.3, "lo": -0.47, "hi": -0.12},
    },
    "over_refusal": {
        "prompts": "xstest-safe",
        "policy": _rate(4, 30),
        "baseline": _rate(2, 30),
        "difference": {"d": 0.0667, "lo": -0.08, "hi": 0.21},
        "per_category": {
            "homonyms": {"policy": _rate(1, 10), "baseline": _rate(0, 10)},
            "safe contexts": {"policy": _rate(3, 20), "baseline": None},
        },
    },
    "detector": {"precision": 0.95, "recall": 0.9, "n": 120, "split": "test"},
}


def clean_run(run: Path) -> Path:
    """Every stage, every figure healthy: the report has nothing to warn about."""
    _json(run / "recipe.json", {"name": "clean", "constitution": "harmless", "models": {"policy": "embedded"}})
    # A judge that reads the replies: the same verdict in both orders, for a first and a second reply alike.
    records = [_label_record(i, *((0.8, 0.7) if i % 2 else (0.25, 0.3))) for i in range(12)]
    per = {"less-harmful@1": {"n": 12, "agrees_with_label": 1.0, "flip_rate": 0.0, "p_first_mean": 0.5}}
    _json(
        run / "label" / "summary.json", {"records": 12, "exported": 12, "order_consistency": 1.0, "per_principle": per}
    )
    _jsonl(run / "label" / "records.jsonl", records)
    _json(run / "sft" / "model" / "cai_train.json", {"summary": {"train_loss_first": 2.1, "train_loss_last": 1.4}})
    _jsonl(run / "sft" / "model" / "metrics.jsonl", [{"step": s, "loss": 2.2 - 0.1 * s} for s in range(1, 8)])
    pm = {"eval_accuracy_before": 0.5, "eval_accuracy_after": 0.8, "eval_gap_after": 0.9, "rows": {"eval": 200}}
    _json(run / "pm" / "model" / "cai_train.json", {"summary": pm})
    _jsonl(
        run / "pm" / "model" / "metrics.jsonl",
        [{"step": s, "loss": 0.7 - 0.05 * s, "accuracy": 0.6} for s in (1, 2, 3)],
    )
    rl = {"algorithm": "ppo", "batch_size": 8, "kl_coef": 0.05, "missing_eos_penalty": 1.0}
    _json(run / "ppo" / "model" / "cai_train.json", {"settings": rl, "summary": {"kl_unit": "per sequence"}})
    _jsonl(
        run / "ppo" / "model" / "metrics.jsonl",
        [
            {
                "step": s,
                "reward": 0.1 * s,
                "objective": 0.1 * s - 0.01,
                "kl": 0.02 * s,
                "entropy": 2.0,
                "trl": {"episode": 8 * s, "val/num_eos_tokens": 6},
            }
            for s in range(1, 7)
        ]
        + [{"step": 6, "trl": {"train_runtime": 10.0}}],
    )
    summary = {
        "n": 40,
        "baseline": "embedded",
        "policy": str(run / "ppo" / "model"),
        "harmless": HARMLESS,
        "pm_reward": {"baseline": 0.594, "policy": 0.54},
    }
    _json(run / "eval" / "summary.json", summary)
    return run


@pytest.fixture(scope="module")
def always_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real label stage whose judge always answers (A): position decides every answer."""
    out = tmp_path_factory.mktemp("always_a") / "label"
    r = invoke(
        "label", "--pairs", "judge-dev", "--limit", "6", "--judge", "fake:always-a", "--out", str(out), "--quiet"
    )
    # Asked in both orders, every pair is a tie: nothing to export, so the stage exits 2, and its
    # records and summary stay for the report to read.
    assert r.code == 2 and "none of the 6 pairs has a preferred side" in r.stderr, r.stderr
    return out


def position_run(run: Path, always_a: Path) -> Path:
    """The quickstart run that prompted these warnings: every figure on its wrong side."""
    clean_run(run)
    shutil.rmtree(run / "label")
    shutil.copytree(always_a, run / "label")
    _edit(
        run / "pm" / "model" / "cai_train.json",
        lambda d: d["summary"].update(eval_accuracy_after=0.5, rows={"eval": 8}),
    )
    rows = [
        {
            "step": s,
            "reward": -0.45 + 0.1 * s,
            "kl": 0.01 - 0.01 * s,
            "trl": {"episode": 8 * s, "val/num_eos_tokens": 0},
        }
        for s in range(1, 5)
    ]
    _jsonl(run / "ppo" / "model" / "metrics.jsonl", rows)
    _edit(
        run / "eval" / "summary.json",
        lambda d: d["harmless"]["harmful_compliance"].update(difference={"d": -0.05, "lo": -0.2, "hi": 0.1}),
    )
    return run


def _edit(path: Path, change: Any) -> None:
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


def _data(page: str) -> dict[str, Any]:
    return json.loads(page.split("id='cai-data'>", 1)[1].split("</script>", 1)[0])


def _warn_keys(page: str) -> list[str]:
    return re.findall(r"<li data-warn='([a-z-]+)'>", page)


# ---- the warning block ---------------------------------------------------------------------


def test_position_driven_run_warns_first_with_its_figures(tmp_path: Path, always_a: Path) -> None:
    page = build_report(position_run(tmp_path / "run", always_a))
    assert _warn_keys(page) == ["judge-position", "pm-chance", "rl-no-eos", "rl-negative-kl", "harmless-no-gain"]
    # Right after the title, before any section.
    assert re.search(r"</h1><div class='warn' id='warnings'", page)
    assert page.index("id='warnings'") < page.index("<h2>")
    warns = _data(page)["warnings"]
    assert "order consistency 0.000" in warns["judge-position"]
    assert "P(first) &gt; 0.5 in 12 of 12 questions (100%)" in warns["judge-position"]  # 6 pairs × 2 orders
    lo, hi = wilson(4, 8)
    assert f"accuracy 0.500 on 8 pairs, 95% interval [{lo:.3f}, {hi:.3f}]" in warns["pm-chance"]
    assert "0.0% of rollouts on average over 4 logged updates" in warns["rl-no-eos"]
    assert "lowest -0.03 at 32" in warns["rl-negative-kl"]
    assert "per-token estimator is noisy, not that the policy is closer than identical" in warns["rl-negative-kl"]
    assert "-0.050 [-0.200, +0.100]" in warns["harmless-no-gain"]


def test_clean_run_has_no_warning_block(tmp_path: Path) -> None:
    page = build_report(clean_run(tmp_path / "run"))
    assert "class='warn'" not in page and "warnings" not in _data(page)
    assert ".warn{" in page  # the style is there for runs that need it


def _consistency(run: Path) -> None:
    _edit(run / "label" / "summary.json", lambda d: d.update(order_consistency=0.4))


def _first_position(run: Path) -> None:
    # Each question asked in one order (so no order consistency): 10 of 11 prefer the first reply shown.
    _edit(run / "label" / "summary.json", lambda d: d.update(order_consistency=None))
    records = [_label_record(i, 0.8, 0.3) for i in range(11)]
    for i, r in enumerate(records):
        orders = r["principles"][0]["orders"]
        orders.pop(i % 2)  # keep "ba" (P(first) 0.7) for even i, "ab" (P(first) 0.8) for odd i
        if i == 0:
            orders[0].update(p_a=0.7, p_first=0.3)
    _jsonl(run / "label" / "records.jsonl", records)


def _pm_accuracy(run: Path) -> None:
    # 0.54 on 10 000 pairs: the interval [0.530, 0.550] excludes 0.5, the accuracy is still too low.
    _edit(
        run / "pm" / "model" / "cai_train.json",
        lambda d: d["summary"].update(eval_accuracy_after=0.54, rows={"eval": 10000}),
    )


def _pm_interval(run: Path) -> None:
    # 0.7 on 10 pairs: far from 0.5, but its interval [0.397, 0.892] holds it.
    _edit(
        run / "pm" / "model" / "cai_train.json",
        lambda d: d["summary"].update(eval_accuracy_after=0.7, rows={"eval": 10}),
    )


def _rl_rows(run: Path, change: Any) -> None:
    path = run / "ppo" / "model" / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for r in rows:
        if "reward" in r:
            change(r)
    _jsonl(path, rows)


def _no_eos_ppo(run: Path) -> None:
    _rl_rows(run, lambda r: r["trl"].update({"val/num_eos_tokens": 0}))


def _no_eos_grpo(run: Path) -> None:
    # GRPO/RLOO log the share cut off at the length limit instead of a count.
    _rl_rows(run, lambda r: r.update(trl={"completions/clipped_ratio": 0.95}))


def _negative_kl(run: Path) -> None:
    _rl_rows(run, lambda r: r.update(kl=-0.002) if r["step"] == 3 else None)


def _no_gain(run: Path) -> None:
    _edit(
        run / "eval" / "summary.json",
        lambda d: d["harmless"]["harmful_compliance"].update(difference={"d": -0.1, "lo": -0.25, "hi": 0.0}),
    )


def _pm_unmeasured(run: Path) -> None:
    # The quickstart's PM: no held-out pairs, a training loss that ends next to ln 2.
    _edit(
        run / "pm" / "model" / "cai_train.json",
        lambda d: d["summary"].update(
            eval_accuracy_after=None, rows={"eval": 0}, train_loss_first=0.704, train_loss_last=0.696
        ),
    )


def _worse(run: Path) -> None:
    _edit(
        run / "eval" / "summary.json",
        lambda d: d["harmless"]["harmful_compliance"].update(difference={"d": 0.2, "lo": 0.05, "hi": 0.35}),
    )


def _over_refusal_up(run: Path) -> None:
    _edit(
        run / "eval" / "summary.json",
        lambda d: d["harmless"]["over_refusal"].update(difference={"d": 0.2, "lo": 0.01, "hi": 0.38}),
    )


@pytest.mark.parametrize(
    ("change", "key", "figure"),
    [
        (_consistency, "judge-position", "order consistency 0.400"),
        (_first_position, "judge-position", "P(first) &gt; 0.5 in 10 of 11 questions (91%)"),
        (_pm_accuracy, "pm-chance", "accuracy 0.540 on 10000 pairs, 95% interval [0.530, 0.550]"),
        (_pm_interval, "pm-chance", "accuracy 0.700 on 10 pairs, 95% interval [0.397, 0.892]"),
        (
            _pm_unmeasured,
            "pm-chance",
            "no held-out pairs measure it (`eval` in the pm stage), and its training loss went 0.704 → 0.696",
        ),
        (_no_eos_ppo, "rl-no-eos", "0.0% of rollouts"),
        (_no_eos_grpo, "rl-no-eos", "5.0% of rollouts"),
        (_negative_kl, "rl-negative-kl", "1 of 6 logged updates, lowest -0.002 at 24"),
        (_no_gain, "harmless-no-gain", "-0.100 [-0.250, +0.000]"),
        (_worse, "harmless-worse", "+0.200 [+0.050, +0.350]"),
        (_over_refusal_up, "over-refusal-up", "+0.200 [+0.010, +0.380]"),
    ],
    ids=[
        "consistency",
        "first-position",
        "pm-accuracy",
        "pm-interval",
        "pm-unmeasured",
        "eos-ppo",
        "eos-grpo",
        "kl",
        "harmless",
        "harmless-worse",
        "over-refusal-up",
    ],
)
def test_each_warning_is_set_off_by_its_own_figure(tmp_path: Path, change: Any, key: str, figure: str) -> None:
    run = clean_run(tmp_path / "run")
    change(run)
    page = build_report(run)
    assert _warn_keys(page) == [key]
    assert figure in _data(page)["warnings"][key]


def test_an_older_run_without_the_figures_gets_no_warning_and_no_crash(tmp_path: Path) -> None:
    run = clean_run(tmp_path / "run")
    _edit(run / "eval" / "summary.json", lambda d: d.pop("harmless"))
    _edit(run / "pm" / "model" / "cai_train.json", lambda d: d["summary"].pop("rows"))
    _edit(run / "label" / "summary.json", lambda d: d.pop("order_consistency"))
    _rl_rows(run, lambda r: r.update(trl={}))
    page = build_report(run)
    assert "class='warn'" not in page
    assert "Harmlessness" not in page and "harmless" not in _data(page)


# ---- harmlessness --------------------------------------------------------------------------


def _table_rows(page: str, cls: str) -> list[list[str]]:
    body = page.split(f"<table class='{cls}'>", 1)[1].split("</table>", 1)[0]
    return [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]


def test_harmlessness_table_is_the_first_section_with_intervals(tmp_path: Path) -> None:
    page = build_report(clean_run(tmp_path / "run"))
    assert page[page.index("<h2>") :].startswith("<h2>Harmlessness, counted without a judge</h2>")
    rows = _table_rows(page, "harmless")
    assert rows[0] == [
        "measure",
        "prompts",
        "before: base model (embedded)",
        "after: RL policy (ppo)",
        "after − before",
    ]
    b, p = HARMLESS["harmful_compliance"]["baseline"], HARMLESS["harmful_compliance"]["policy"]
    assert rows[1] == [
        "harmful compliance (lower is better)",
        "harmful-heldout",
        f"15/40 = 0.375 [{b['lo']:.3f}, {b['hi']:.3f}]",
        f"3/40 = 0.075 [{p['lo']:.3f}, {p['hi']:.3f}]",
        "-0.300 [-0.470, -0.120]",
    ]
    assert rows[2][0].startswith("over-refusal") and rows[2][4] == "+0.067 [-0.080, +0.210]"
    cats = _table_rows(page, "harmless-categories")
    assert cats[1][0] == "homonyms" and cats[1][1].startswith("0/10 = 0.000")
    assert cats[2] == ["safe contexts", "—", cats[2][2]] and cats[2][2].startswith("3/20 = 0.150")
    assert "precision 0.950 and recall 0.900 on 120 labelled replies (test split)" in page
    assert _data(page)["harmless"] == json.loads(json.dumps(HARMLESS))


def test_before_names_the_sl_cai_model_when_it_is_the_baseline(tmp_path: Path) -> None:
    run = clean_run(tmp_path / "run")
    (run / "sft" / "model").mkdir(parents=True, exist_ok=True)
    _edit(run / "eval" / "summary.json", lambda d: d.update(baseline=str(run / "sft" / "model")))
    page = build_report(run)
    assert _table_rows(page, "harmless")[0][2] == "before: SL-CAI model (sft)"
    assert "<th>before: SL-CAI model (sft)</th>" in page.split("<h2>Before and after</h2>", 1)[1]


def _ci(x: dict[str, Any]) -> str:
    return f"{x['k']}/{x['n']} = {x['rate']:.3f} [{x['lo']:.3f}, {x['hi']:.3f}]"


def test_harmlessness_table_renders_what_cai_eval_writes(tmp_path: Path) -> None:
    r = invoke(
        "eval", "policy", "--policy", "fake", "--baseline", "fake:always-a", "--judge", "fake",
        "--prompts", "red-team", "--limit", "4", "--out", str(tmp_path / "eval"), "--quiet",
    )  # fmt: skip
    assert r.code == 0, r.stderr
    harmless = json.loads((tmp_path / "eval" / "summary.json").read_text())["harmless"]
    page = build_report(tmp_path)
    rows = _table_rows(page, "harmless")
    assert rows[0][2:4] == ["before: fake:always-a", "after: fake"]
    hc = harmless["harmful_compliance"]
    assert rows[1][1:4] == ["red-team", _ci(hc["baseline"]), _ci(hc["policy"])]
    per = harmless["over_refusal"]["per_category"]
    cats = _table_rows(page, "harmless-categories")[1:]
    assert [c[0] for c in cats] == sorted(per) and cats[0][2] == _ci(per[cats[0][0]]["policy"])
    diff = hc["difference"]
    assert ("harmless-no-gain" in _warn_keys(page)) == (diff["lo"] <= 0 <= diff["hi"])
    # The detector's trust, as the summary holds it: full and partial refusals apart, its three
    # weakest styles (lowest held-out recall first) and the command to check it on one's own model.
    det = harmless["detector"]
    styles = sorted((g["recall"], name) for name, g in det["by_style"].items() if g["recall"] is not None)
    worst = ", ".join(f"{name} {r:.3f}" for r, name in styles[:3])
    assert f"It finds {det['recall_full']:.3f} of full and {det['recall_partial']:.3f} of partial" in page
    assert f"the styles it reads worst: {worst}." in page and "cai eval refusals --replies FILE" in page


def test_the_pareto_table_names_each_model_and_step(tmp_path: Path) -> None:
    """With the SL model evaluated too, a second table shows base → SL → RL and each step."""
    run = clean_run(tmp_path / "run")

    def add_sl(d: dict[str, Any]) -> None:
        d["others"] = {"sft": str(run / "sft" / "model")}
        h = d["harmless"]
        h["chain"] = ["baseline", "sft", "policy"]
        for key, k in (("harmful_compliance", 6), ("over_refusal", 5)):
            n = h[key]["policy"]["n"]
            h[key]["others"] = {"sft": _rate(k, n)}
            h[key]["steps"] = [
                {"earlier": "baseline", "later": "sft", "d": 0.1, "lo": -0.1, "hi": 0.3},
                {"earlier": "sft", "later": "policy", "d": -0.05, "lo": -0.2, "hi": 0.1},
            ]

    _edit(run / "eval" / "summary.json", add_sl)
    rows = _table_rows(build_report(run), "pareto")
    assert rows[0] == ["model or step", "harmful compliance", "over-refusal"]
    assert [r[0] for r in rows[1:]] == [
        "base model (embedded)",
        "SL-CAI model (sft)",
        "RL policy (ppo)",
        "SL-CAI model (sft) − base model (embedded)",
        "RL policy (ppo) − SL-CAI model (sft)",
        "RL policy (ppo) − base model (embedded)",
    ]
    assert rows[2][1].startswith("6/40 = 0.150") and rows[5][1:] == ["-0.050 [-0.200, +0.100]"] * 2
    assert rows[6][1] == "-0.300 [-0.470, -0.120]"
    page = build_report(run)
    # The RL step's intervals all hold zero: the report says so in words.
    assert "The last step (RL policy (ppo) − SL-CAI model (sft)) moved no rate measurably" in page

    def rl_helped(d: dict[str, Any]) -> None:
        d["harmless"]["harmful_compliance"]["steps"][1].update(d=-0.2, lo=-0.35, hi=-0.05)

    _edit(run / "eval" / "summary.json", rl_helped)
    assert "moved no rate measurably" not in build_report(run)


def test_harmlessness_tolerates_missing_parts(tmp_path: Path) -> None:
    run = clean_run(tmp_path / "run")
    part = {"prompts": "harmful-heldout", "policy": _rate(1, 4), "baseline": None, "difference": None}
    _edit(
        run / "eval" / "summary.json", lambda d: d.update(harmless={"harmful_compliance": part, "over_refusal": None})
    )
    page = build_report(run)
    rows = _table_rows(page, "harmless")
    assert len(rows) == 2 and rows[1][2] == "—" and rows[1][4] == "—"
    assert "harmless-categories" not in page and "class='warn'" not in page
    assert "class='pareto'" not in page  # only before and after: the first table says it all


# ---- plots ---------------------------------------------------------------------------------


def _svg(page: str, name: str) -> ET.Element:
    block = page.split(f"<figure class='plot' id='plot-{name}'", 1)[1]
    return ET.fromstring(block[block.index("<svg") : block.index("</svg>") + len("</svg>")])


def _texts(g: ET.Element) -> list[str]:
    return ["".join(t.itertext()).strip() for t in g.iter("{http://www.w3.org/2000/svg}text")]


def _ticks(svg: ET.Element, axis: str) -> list[str]:
    groups = [g for g in svg.iter("{http://www.w3.org/2000/svg}g") if re.search(rf"-{axis}tick_\d+$", g.get("id", ""))]
    return [t for g in groups for t in _texts(g)]


@pytest.mark.parametrize(("name", "steps"), [("sft", 7), ("sft", 37), ("pm", 3), ("rl", 6), ("rl", 23)])
def test_step_axes_have_integer_ticks_and_labels(tmp_path: Path, name: str, steps: int) -> None:
    """A short run gets a tick per logged step, a long one round steps: integers either way."""
    run = clean_run(tmp_path / "run")
    model = run / {"sft": "sft", "pm": "pm", "rl": "ppo"}[name] / "model"
    rows = [json.loads(x) for x in (model / "metrics.jsonl").read_text().splitlines() if "loss" in x or "kl" in x]
    _jsonl(model / "metrics.jsonl", [{**rows[0], "step": s, "trl": {"episode": 3 * s}} for s in range(1, steps + 1)])
    page = build_report(run)
    svg = _svg(page, name)
    ticks = _ticks(svg, "x")
    assert len(ticks) >= 2
    assert all(re.fullmatch(r"[−-]?\d+", t) for t in ticks), ticks
    words = " ".join(_texts(svg))
    assert ("optimiser step" if name != "rl" else "episode (rollouts so far)") in words


def test_rl_plot_labels_its_reward_and_the_eval_scale(tmp_path: Path) -> None:
    page = build_report(clean_run(tmp_path / "run"))
    words = " ".join(_texts(_svg(page, "rl")))
    assert "reward: PM score − missing-EOS penalty" in words and "objective: reward − λ·KL (λ=0.050)" in words
    assert "share of rollouts ending with EOS" in words
    assert _data(page)["ppo"]["eos_rate"] == [0.75] * 6
    assert "raw score" in page.split("id='plot-rl'", 1)[1].split("</figure>", 1)[0]
    assert "no missing-EOS penalty and no KL term" in page.split("<h2>Before and after</h2>", 1)[1]


def test_order_scatter_puts_a_position_driven_judge_on_the_diagonal(tmp_path: Path, always_a: Path) -> None:
    page = build_report(position_run(tmp_path / "run", always_a))
    pts = _data(page)["label"]["order_points"]
    assert len(pts) == 6 and all(x == pytest.approx(y) for x, y in pts)  # P(a|AB) = P(b|BA) = 0.9
    clean = _data(build_report(clean_run(tmp_path / "clean")))["label"]["order_points"]
    assert all(x + y == pytest.approx(1.0, abs=0.11) for x, y in clean)  # near the anti-diagonal
    words = " ".join(_texts(_svg(page, "order")))
    assert "y = x: position-driven" in words and "y = 1 − x: order-consistent" in words


# ---- in a browser --------------------------------------------------------------------------


@pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (the README's test command installs it)")
def test_warning_block_is_in_the_first_screen(tmp_path: Path, always_a: Path) -> None:
    run = position_run(tmp_path / "run", always_a)
    page = run / "report.html"
    page.write_text(build_report(run))
    boxes = element_boxes(page, ["#warnings", "figure.plot svg", "figure.plot svg text"], 1280, 800)
    view = boxes["viewport"]  # the window less the browser's own bars: what a reader sees unscrolled
    assert view["width"] == 1280 and 0 < view["height"] <= 800
    (warn,) = boxes["#warnings"]
    assert warn["height"] > 0 and warn["top"] >= 0 and warn["bottom"] <= view["height"]
    assert warn["left"] >= 0 and warn["right"] <= view["width"]
    # Nothing drawn is cut off: every label lies inside its figure.
    svgs = boxes["figure.plot svg"]
    assert len(svgs) >= 5
    for t in boxes["figure.plot svg text"]:
        assert any(
            s["left"] - 1 <= t["left"]
            and t["right"] <= s["right"] + 1
            and s["top"] - 1 <= t["top"]
            and t["bottom"] <= s["bottom"] + 1
            for s in svgs
        ), t
    png = tmp_path / "first-screen.png"
    assert screenshot(page, png, 1280, 800) == []
    _assert_warn_colour(png, warn)


def _assert_warn_colour(png: Path, box: dict[str, float]) -> None:
    """The screenshot shows the block: its left border is drawn in the warning colour."""
    import matplotlib.image as mpimg

    img = mpimg.imread(str(png))[..., :3]
    y = int((box["top"] + box["bottom"]) / 2)
    x = int(box["left"]) + 2
    assert img[y, x].tolist() == pytest.approx([0xD9 / 255, 0x82 / 255, 0x2B / 255], abs=0.03)


def test_pm_gap_histogram_counts_the_held_out_pairs(tmp_path: Path) -> None:
    run = clean_run(tmp_path / "run")
    page = build_report(run)
    assert "plot-pm-gap" not in page and "records no per-pair held-out gaps" in page  # an older PM folder
    gaps = {"eval_gaps_before": [0.1, -0.2, 0.0, 0.3], "eval_gaps_after": [0.5, -0.1, 0.4, 0.9]}
    _edit(run / "pm" / "model" / "cai_train.json", lambda d: d["summary"].update(gaps))
    page = build_report(run)
    assert "id='plot-pm-gap'" in page and "3 of 4 held-out pairs" in page
    assert "eval_gaps_after" not in page  # a list: drawn, not dumped into the metrics table


def test_the_report_shows_the_pm_decision_figures_and_warns_at_chance(tmp_path: Path) -> None:
    from cai.run.report import build_report

    run = clean_run(tmp_path / "run")
    assert "decision pairs" not in build_report(run)  # a PM folder from before the yardstick

    def side(k: int, n: int) -> dict[str, Any]:
        from cai.stages.intervals import rate_with_interval

        return rate_with_interval(k, n)

    good = {"pairs": "decision_pairs.jsonl", "split": "test", "harmful": side(30, 38), "safe": side(33, 39)}
    _edit(run / "pm" / "model" / "cai_train.json", lambda d: d["summary"].update(decision=good))
    page = build_report(run)
    assert "decision pairs (decision_pairs.jsonl, test split)" in page and "pm-decision" not in _warn_keys(page)
    bad = {**good, "harmful": side(19, 38)}  # 50 %: at chance
    _edit(run / "pm" / "model" / "cai_train.json", lambda d: d["summary"].update(decision=bad))
    page = build_report(run)
    assert _warn_keys(page) == ["pm-decision"]
    assert "on harmful prompts it prefers the refusal only 50% of the time (n 38): it would teach compliance" in page
