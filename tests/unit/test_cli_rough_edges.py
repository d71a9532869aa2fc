"""Issue 14's rough edges, through the real CLI: `--version`, library chatter muted unless
`--verbose`, progress bars with rates and ETAs, `validate` listing every problem, `diff`
warning about a changed principle that kept its version, and `models --under` listing trained
models."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import cai
from cai.paths import data_dir
from tests.helpers import Result, invoke

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bad_inputs"


def cai_run(*args: str, env: dict[str, str] | None = None) -> Result:
    result = invoke(*args, env=env)
    assert "Traceback" not in result.stdout + result.stderr
    return result


# ------------------------------------------------------------------------------------- version


def test_version_prints_the_version_and_exits_zero() -> None:
    result = cai_run("--version")
    assert result.code == 0, result.stderr
    assert result.stdout == f"cai {cai.__version__}\n"


# ------------------------------------------------------------------------------------ verbosity


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _library_noise(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list[Any], _Records]]:
    """`cai label` whose stage first makes the noise libraries make: a Python deprecation warning
    and a transformers logger warning. Yields what got through: warnings and log records."""
    import cai.stages.label as stage

    original = stage.label_pairs

    def noisy(*args: Any, **kwargs: Any) -> Any:
        warnings.warn("`foo` is deprecated and will be removed in v9", FutureWarning, stacklevel=1)
        logging.getLogger("transformers.models.noisy").warning("Setting `pad_token_id` to `eos_token_id`")
        logging.getLogger("datasets.arrow").info("Loading cached processed dataset")
        return original(*args, **kwargs)

    monkeypatch.setattr(stage, "label_pairs", noisy)
    handler = _Records()
    roots = [logging.getLogger("transformers"), logging.getLogger("datasets")]
    for lg in roots:
        lg.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            yield seen, handler
    finally:
        for lg in roots:
            lg.removeHandler(handler)


def _label(tmp_path: Path, *extra: str, root: tuple[str, ...] = ()) -> Result:
    out = tmp_path / "out"
    result = cai_run(
        *root,
        "label",
        "--judge",
        "fake",
        "--out",
        str(out),
        "--pairs",
        str(FIXTURES / "pairs_ok.jsonl"),
        "--quiet",
        *extra,
    )
    assert result.code == 0, result.stderr
    return result


def test_library_warnings_and_logs_are_muted_without_verbose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    levels = {n: logging.getLogger(n).level for n in ("transformers", "datasets")}
    with _library_noise(monkeypatch) as (seen, logs):
        _label(tmp_path)
    assert [str(w.message) for w in seen] == []
    assert logs.messages == []
    # Restored afterwards: muting lasts as long as the command.
    assert {n: logging.getLogger(n).level for n in levels} == levels


@pytest.mark.parametrize("where", ["command", "root"])
def test_verbose_lets_library_output_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    logging.getLogger("datasets.arrow").setLevel(logging.INFO)  # what a user's own setup may ask for
    try:
        with _library_noise(monkeypatch) as (seen, logs):
            if where == "command":
                _label(tmp_path, "--verbose")
            else:
                _label(tmp_path, root=("--verbose",))
    finally:
        logging.getLogger("datasets.arrow").setLevel(logging.NOTSET)
    assert any("deprecated" in str(w.message) for w in seen)
    assert "Setting `pad_token_id` to `eos_token_id`" in logs.messages
    assert "Loading cached processed dataset" in logs.messages


@pytest.mark.parametrize(
    "command",
    [
        ("critique",),
        ("label",),
        ("judge-eval",),
        ("eval", "policy"),
        ("train", "sft"),
        ("train", "pm"),
        ("train", "ppo"),
        ("run",),
    ],
)
def test_every_long_command_takes_verbose(command: tuple[str, ...]) -> None:
    result = cai_run(*command, "--help")
    assert result.code == 0
    assert "--verbose" in result.stdout


def test_library_output_env_and_levels_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    from cai.verbosity import LibraryOutput, libraries_muted

    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    monkeypatch.delenv("DATASETS_VERBOSITY", raising=False)
    before = logging.getLogger("trl").level
    with LibraryOutput() as output:
        import os

        assert os.environ["TRANSFORMERS_VERBOSITY"] == "error" and os.environ["DATASETS_VERBOSITY"] == "error"
        assert logging.getLogger("trl").level == logging.ERROR
        assert libraries_muted()
        output.unmute()
        assert os.environ["TRANSFORMERS_VERBOSITY"] == "info" and "DATASETS_VERBOSITY" not in os.environ
    assert logging.getLogger("trl").level == before


def test_datasets_bars_off_while_muted_and_restored() -> None:
    import datasets

    from cai.train.common import quiet_libraries
    from cai.verbosity import LibraryOutput

    assert datasets.is_progress_bar_enabled()
    with LibraryOutput(), quiet_libraries(False):
        assert not datasets.is_progress_bar_enabled()  # "Tokenizing train dataset" and the like
    with LibraryOutput(verbose=True), quiet_libraries(False):
        assert datasets.is_progress_bar_enabled()
    with quiet_libraries(False, verbose=False):
        assert not datasets.is_progress_bar_enabled()
    assert datasets.is_progress_bar_enabled()


class _Trainer:
    """Just the callback API of a transformers Trainer, with its real default callbacks."""

    def __init__(self, *callbacks: Any) -> None:
        from transformers.trainer_callback import CallbackHandler

        self.callback_handler = CallbackHandler(list(callbacks), None, None, None, None)

    def add_callback(self, cb: Any) -> None:
        self.callback_handler.add_callback(cb)

    def remove_callback(self, cb: Any) -> None:
        self.callback_handler.remove_callback(cb)

    def log(self, logs: dict[str, float]) -> str:
        from transformers import TrainerControl, TrainerState

        state, control = TrainerState(max_steps=2), TrainerControl()
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            self.callback_handler.on_train_begin(None, state, control)
            self.callback_handler.on_log(None, state, control, logs=logs)
            self.callback_handler.on_train_end(None, state, control)
        return out.getvalue()


@pytest.mark.parametrize("bar", [True, False])
@pytest.mark.parametrize("verbose", [True, False])
def test_trainer_metric_dicts_only_with_verbose(bar: bool, verbose: bool) -> None:
    from transformers import PrinterCallback, ProgressCallback

    from cai.train.common import keep_metrics_off_terminal
    from cai.verbosity import LibraryOutput

    trainer = _Trainer(ProgressCallback() if bar else PrinterCallback())
    with LibraryOutput(verbose=verbose):
        keep_metrics_off_terminal(trainer, quiet=False)
        printed = trainer.log({"loss": 0.6931, "grad_norm": 1.25})
    assert ("'loss': " in printed) is verbose
    kept = [type(cb).__name__ for cb in trainer.callback_handler.callbacks]
    assert (kept != []) is (bar or verbose)  # the bar stays; only the dicts go


def test_trainer_prints_nothing_when_quiet() -> None:
    from transformers import PrinterCallback

    from cai.train.common import keep_metrics_off_terminal

    trainer = _Trainer(PrinterCallback())
    keep_metrics_off_terminal(trainer, quiet=True)
    assert trainer.log({"loss": 0.5}) == ""


# ------------------------------------------------------------------------------------- progress


def _render(columns: tuple[Any, ...], task: Any) -> list[str]:
    from rich.console import Console

    console = Console(width=200, color_system=None)
    cells = []
    for col in columns:
        with console.capture() as cap:
            console.print(col.render(task), end="")
        cells.append(cap.get())
    return cells


def _task(total: int, completed: int, elapsed: float, tokens: int = 0) -> Any:
    from rich.progress import Task, TaskID

    task = Task(TaskID(0), "label", total, completed, _get_time=lambda: 100.0, fields={"tokens": tokens})
    task.start_time = 100.0 - elapsed
    return task


def test_bar_pulses_with_elapsed_time_before_the_first_item() -> None:
    from cai.progress import progress_columns

    columns = progress_columns()
    task = _task(8, 0, elapsed=12)
    cells = _render(columns, task)
    assert cells[0] == "label" and cells[2] == "0/8"
    assert cells[3] == "– items/s" and cells[4] == "0:00:12" and cells[5] == "eta –"
    assert columns[1].render(task).pulse  # moving, not a bar stuck at 0
    task.completed = 1
    assert not columns[1].render(task).pulse


def test_bar_shows_rate_and_eta() -> None:
    from cai.progress import progress_columns

    cells = _render(progress_columns("pairs"), _task(8, 2, elapsed=10))
    assert cells[2:] == ["2/8", "0.2 pairs/s", "0:00:10", "eta 0:00:30"]
    cells = _render(progress_columns(), _task(100, 50, elapsed=2, tokens=3000))
    assert cells[3] == "25.0 items/s, 1500 tok/s" and cells[5] == "eta 0:00:02"
    assert _render(progress_columns(), _task(1, 1, elapsed=600))[5] == "done"


def test_slow_rates_read_per_minute() -> None:
    from cai.progress import progress_columns

    assert _render(progress_columns(), _task(10, 1, elapsed=60))[3] == "1.0 items/min"


def test_step_progress_prints_rate_on_stderr() -> None:
    from cai.progress import StepProgress

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        with StepProgress("judge-eval", 4) as prog:
            prog.advance(items=4)
        with StepProgress("quiet", 4, quiet=True) as silent:
            silent.advance(items=4, tokens=9)
    assert "judge-eval" in err.getvalue() and "4/4" in err.getvalue() and "items/s" in err.getvalue()
    assert "quiet" not in err.getvalue()
    assert (silent.items, silent.tokens) == (4, 9)


# ------------------------------------------------------------------------------------- validate


def _problems(result: Result) -> list[str]:
    assert result.code == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines[-1].endswith("file(s)")
    return lines[:-1]


def test_validate_reports_every_typo_once(tmp_path: Path) -> None:
    lib = tmp_path / "lib.yaml"
    lib.write_text(
        "kind: critique-principles\nversion: 1\nprinciples:\n"
        "  - {id: a, critque: x, revision: y}\n"
        "  - {id: b, critique: x, revison: y}\n"
        "  - {id: c, critique: x, revision: y, tagz: [t]}\n"
    )
    lines = _problems(cai_run("validate", str(lib)))
    assert lines == [
        f"{lib}:4: principles[0].critque: unknown key (did you mean 'critique'?)",
        f"{lib}:5: principles[1].revison: unknown key (did you mean 'revision'?)",
        f"{lib}:6: principles[2].tagz: unknown key (did you mean 'tags'?)",
    ]


def test_validate_reports_every_duplicate_key_and_id(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text("kind: critique-principles\nversion: 1\nversion: 2\nprinciples: []\nprinciples: []\n")
    lines = _problems(cai_run("validate", str(dup)))
    assert [line.split(": ")[0:2] for line in lines] == [[f"{dup}:3", "version"], [f"{dup}:5", "principles"]]
    ids = tmp_path / "ids.yaml"
    ids.write_text(
        "kind: critique-principles\nversion: 1\nprinciples:\n"
        + "".join(f"  - {{id: {i}, critique: x, revision: y}}\n" for i in ("a", "a", "b", "b"))
    )
    lines = _problems(cai_run("validate", str(ids)))
    assert [line.split(": ")[1] for line in lines] == ["principles[1].id", "principles[3].id"]


def test_validate_reports_every_problem_in_a_constitution(tmp_path: Path) -> None:
    c = tmp_path / "c.yaml"
    c.write_text(
        "kind: constitution\nname: t\nversion: 1\nlibraries: [harmlessness, comparison]\n"
        "critique:\n  principles: {ids: [harmful-contnt, unethical-conduct], tags: [harmfull]}\n"
        "comparison:\n  principles: {ids: [less-harmfull-wise]}\n"
        "templates:\n  critique: critiqe\n"
    )
    lines = _problems(cai_run("validate", str(c)))
    assert [line.split(": ")[1] for line in lines] == [
        "critique.principles.ids",
        "critique.principles.tags",
        "comparison.principles.ids",
        "templates.critique",
    ]
    assert "(did you mean 'harmful-content'?)" in lines[0] and "(did you mean 'critique'?)" in lines[3]


# ----------------------------------------------------------------------------------------- diff


def _diff_against(tmp_path: Path, change: dict[str, Any]) -> Result:
    lib = yaml.safe_load((data_dir("principles") / "harmlessness.yaml").read_text())
    lib["principles"][0].update(change)
    (tmp_path / "lib.yaml").write_text(yaml.safe_dump(lib, sort_keys=False))
    (tmp_path / "b.yaml").write_text("kind: constitution\nname: b\nversion: 1\nlibraries: [lib.yaml, comparison]\n")
    (tmp_path / "a.yaml").write_text("kind: constitution\nname: a\nversion: 1\nlibraries: [harmlessness, comparison]\n")
    result = cai_run("constitution", "diff", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"))
    assert result.code == 0, result.stderr
    return result


def test_diff_warns_when_a_changed_principle_kept_its_version(tmp_path: Path) -> None:
    result = _diff_against(tmp_path, {"critique": "Say what is wrong."})
    assert "~ critique harmful-content@1 -> harmful-content@1 (critique)" in result.stdout.splitlines()
    warning = result.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: critique principle 'harmful-content' changed")
    assert "kept version 1" in warning[0] and "bump its version" in warning[0]
    assert "warning" not in result.stdout


@pytest.mark.parametrize("change", [{"critique": "Say what is wrong.", "version": 2}, {"tags": ["harmful", "new"]}])
def test_diff_no_warning_after_a_bump_or_for_tags(tmp_path: Path, change: dict[str, Any]) -> None:
    result = _diff_against(tmp_path, change)
    assert result.stdout.count("~ critique harmful-content@1 -> ") == 1
    assert result.stderr == ""


# --------------------------------------------------------------------------------------- models


def _trained(folder: Path, kind: str, base: str) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    meta = {"kind": kind, "base_model": base, "created": "2025-01-02T03:04:05Z"}
    (folder / "cai_train.json").write_text(json.dumps(meta))


def test_models_under_lists_trained_models(tmp_path: Path) -> None:
    from cai.models.spec import parse_spec

    runs = tmp_path / "runs"
    _trained(runs / "q" / "sft", "sft", "embedded")
    _trained(runs / "q" / "pm", "pm", str(runs / "q" / "sft"))
    _trained(runs / "q" / "ppo", "ppo", str(runs / "q" / "sft"))
    _trained(runs / ".q.publishing", "sft", "embedded")  # a publish in progress: not a model yet
    (runs / "killed" / ".tmp-dpo").mkdir(parents=True)
    (runs / "q" / "data").mkdir()
    env = {"CAI_CACHE_DIR": str(tmp_path / "cache")}
    result = cai_run("models", "--under", str(runs), "--json", env=env)
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows[0]["spec"] == "embedded"
    trained = {Path(r["spec"]).relative_to(runs).as_posix(): r for r in rows[1:]}
    assert set(trained) == {"q/sft", "q/pm", "q/ppo", "killed"}
    assert (trained["q/sft"]["kind"], trained["q/sft"]["base_model"]) == ("sft", "embedded")
    assert trained["q/ppo"]["created"] == "2025-01-02T03:04:05Z" and trained["q/ppo"]["status"] == "complete"
    assert trained["killed"]["status"] == "unfinished"
    assert parse_spec(trained["q/sft"]["spec"]).kind == "local"
    text = cai_run("models", "--under", str(runs), env=env).stdout
    assert f"spec={runs / 'q' / 'pm'}  kind=pm  base_model={runs / 'q' / 'sft'}  created=2025-01-02T03:04:05Z" in text


def test_models_under_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    result = cai_run("models", "--under", str(tmp_path / "nothere"))
    assert result.code == 2
    assert result.stderr.strip() == f"{tmp_path / 'nothere'}: --under: no such folder"
