"""The model-kind registry: every built-in kind, the one-line refusals to train, and a test's own
kind reaching `cai critique` and `cai train sft` without touching the built-in registry.

The toy kind actually trained from is in tests/integration/test_model_kinds_train.py (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai.errors import CaiError
from cai.models.base import ModelSpecError
from cai.models.fake import FakeBackend
from cai.models.kinds import (
    BUILTIN_KINDS,
    BackendRequest,
    ModelKind,
    ParsedSpec,
    current_kinds,
    find_kind,
    prefixed,
    registry_with,
    using_kinds,
)
from cai.models.spec import load_backend, parse_spec, resolve_model_path
from tests.helpers import Result, invoke


def _lines(proc: Result) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def _toy_name(spec: str) -> str:
    name = spec.partition(":")[2]
    if not name:
        raise ModelSpecError("'toy:' needs a name, e.g. 'toy:x'")
    return name


def toy_kind(requests: list[BackendRequest] | None = None) -> ModelKind:
    """`toy:<name>`: the scripted fake backend under the toy spec; it cannot be trained."""

    def backend(req: BackendRequest) -> FakeBackend:
        if requests is not None:
            requests.append(req)
        fake = FakeBackend()
        fake.spec = req.spec  # records name the model by the spec the user gave
        return fake

    return ModelKind(
        "toy", prefixed("toy"), backend, target=_toy_name, untrainable="toy models are scripted; nothing to train"
    )


# --------------------------------------------------------------------------- the built-in registry


@pytest.mark.parametrize(
    ("spec", "kind", "target"),
    [
        ("embedded", "embedded", ""),
        ("fake", "fake", "default"),
        ("fake:always-a", "fake", "always-a"),
        ("openai:gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("./models/mine", "local", "./models/mine"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "local", "HuggingFaceTB/SmolLM2-135M-Instruct"),
        ("embeddedX", "local", "embeddedX"),  # exact names and prefixes only; the rest is a path
        ("fakeish", "local", "fakeish"),
    ],
)
def test_every_builtin_kind_parses_its_spec(spec: str, kind: str, target: str) -> None:
    assert find_kind(spec).name == kind
    parsed = parse_spec(spec)
    assert (parsed.kind, parsed.target) == (kind, target)


def test_the_registry_is_a_value_with_the_catch_all_last() -> None:
    assert isinstance(BUILTIN_KINDS, tuple)
    assert [k.name for k in BUILTIN_KINDS] == ["embedded", "fake", "openai", "local"]
    assert current_kinds() is BUILTIN_KINDS  # nothing registered outside a `using_kinds` block
    with pytest.raises(AttributeError):
        BUILTIN_KINDS[0].name = "other"  # type: ignore[misc]  # entries are frozen too


def test_unknown_fake_mode_error_is_unchanged() -> None:
    with pytest.raises(ModelSpecError) as e:
        parse_spec("fake:nope")
    assert str(e.value) == "unknown fake mode 'nope'; choose one of default, always-a, slow"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("openai:gpt-4o-mini", "an API model cannot be trained; give a local path, a hub id or 'embedded'"),
        ("fake", "the scripted test backend cannot be trained; give a local path, a hub id or 'embedded'"),
        ("fake:always-a", "the scripted test backend cannot be trained; give a local path, a hub id or 'embedded'"),
    ],
)
def test_api_and_fake_models_refuse_training_in_one_line(spec: str, reason: str) -> None:
    with pytest.raises(CaiError) as e:
        resolve_model_path(spec)
    assert str(e.value) == f"--model: {spec}: {reason}"


def test_fake_refuses_training_on_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))
    proc = invoke("train", "sft", "--data", str(data), "--out", str(tmp_path / "o"), "--model", "fake", "--quiet")
    assert proc.code == 2 and len(_lines(proc)) == 1, proc.stderr
    assert "the scripted test backend cannot be trained" in proc.stderr
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- adding a kind


def test_a_kind_added_for_one_call_leaves_the_registry_alone() -> None:
    requests: list[BackendRequest] = []
    kinds = registry_with(toy_kind(requests))
    backend = load_backend("toy:y", kinds=kinds, dtype="fp32", concurrency=3)
    assert isinstance(backend, FakeBackend) and backend.spec == "toy:y"
    [req] = requests
    assert (req.spec, req.target, req.dtype, req.concurrency) == ("toy:y", "y", "fp32", 3)
    assert parse_spec("toy:y", kinds=kinds).kind == "toy"
    assert parse_spec("toy:y").kind == "local"  # the built-in registry never saw it
    with pytest.raises(CaiError, match=r"^--model: toy:y: toy models are scripted; nothing to train$"):
        resolve_model_path("toy:y", kinds=kinds)


def test_using_kinds_is_scoped_and_names_are_unique() -> None:
    with using_kinds(toy_kind()) as registry:
        assert current_kinds() is registry and registry[0].name == "toy" and registry[-1].name == "local"
        assert parse_spec("toy:x").kind == "toy"
        with pytest.raises(ValueError, match="model kind 'toy' is registered twice"), using_kinds(toy_kind()):
            pass
        assert current_kinds() is registry  # a failed registration changed nothing
    assert current_kinds() is BUILTIN_KINDS
    with pytest.raises(ValueError, match="model kind 'fake' is registered twice"):
        registry_with(ModelKind("fake", prefixed("fake"), FakeBackend))


def test_a_registry_without_a_catch_all_is_a_one_line_error() -> None:
    kinds = (toy_kind(),)
    with pytest.raises(ModelSpecError, match="no model kind matches 'embedded'"):
        parse_spec("embedded", kinds=kinds)
    with pytest.raises(CaiError, match=r"^--model: embedded: no model kind matches 'embedded'"):
        resolve_model_path("embedded", kinds=kinds)


def test_spec_validation_goes_through_the_registry(tmp_path: Path) -> None:
    """Recipes validate specs with `parse_spec`: the kind's own parser, named by the recipe key."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("kind: recipe\nname: r\nmodels: {policy: 'toy:'}\nstages:\n  critique: {}\n")
    assert parse_spec("toy:").kind == "local"  # without the kind, a (hub id like) local spec
    with using_kinds(toy_kind()):
        assert parse_spec("toy:x") == ParsedSpec("toy", "x")
        r = invoke("validate", str(recipe))
    assert r.code == 2 and r.stderr.splitlines()[0].endswith(": models.policy: 'toy:' needs a name, e.g. 'toy:x'")


def test_a_toy_kind_runs_cai_critique(tmp_path: Path) -> None:
    requests: list[BackendRequest] = []
    out = tmp_path / "crit"
    with using_kinds(toy_kind(requests)):
        proc = invoke(
            "critique", "--prompts", "red-team", "--limit", "2", "--model", "toy:x", "--quiet", "-o", str(out)
        )
    assert proc.code == 0, proc.stderr
    assert [(r.spec, r.target) for r in requests] == [("toy:x", "x")]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        assert r["provenance"]["model"] == "toy:x" and r["provenance"]["model_info"]["spec"] == "toy:x"
        assert r["final_revision"] and r["error"] is None
    # Outside the block the spec is a local path again, and no such folder exists.
    proc = invoke("critique", "--prompts", "red-team", "--limit", "1", "--model", "./toy:x", "-o", str(tmp_path / "c2"))
    assert proc.code == 2 and "model folder ./toy:x does not exist" in proc.stderr


def test_a_toy_kind_reaches_cai_train_sft(tmp_path: Path) -> None:
    """The trainer asks the toy kind for a path; here it refuses, in its own words, in one line."""
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))
    with using_kinds(toy_kind()):
        proc = invoke("train", "sft", "--data", str(data), "--out", str(tmp_path / "o"), "--model", "toy:x", "--quiet")
    assert proc.code == 2 and _lines(proc) == ["--model: toy:x: toy models are scripted; nothing to train"]


def test_cai_models_still_lists_the_embedded_model(tmp_path: Path) -> None:
    proc = invoke("models", "--json", env={"CAI_CACHE_DIR": str(tmp_path)})
    assert proc.code == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows[0]["spec"] == "embedded" and parse_spec(rows[0]["spec"]).kind == "embedded"
