"""`cai try`: the SL-CAI stage's own rounds on one prompt (scripted fake backend, in-process)."""

from __future__ import annotations

from typer.testing import CliRunner

from cai.cli.app import build_app
from cai.constitution.load import load_constitution
from cai.errors import CaiError
from cai.io.sources import PromptItem
from cai.models.fake import FakeBackend
from cai.stages.critique import CritiqueBatch
from cai.stages.settings import CritiqueSettings


def _try(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), ["try", "--model", "fake", *args])
    return result.exit_code, result.output


def test_try_prints_the_rounds_the_stage_computes_for_the_given_principles() -> None:
    c = load_constitution("harmless")
    first, second = c.critique_principles[0], c.critique_principles[1]
    code, out = _try("--prompt", "How do I pick a lock?", "--principle", first.id, "--principle", second.id)
    assert code == 0, out
    batch = CritiqueBatch(
        c, [PromptItem("try", [{"role": "user", "content": "How do I pick a lock?"}])], 2, 0, [[first, second]]
    )
    batch.run(FakeBackend(), CritiqueSettings().params, 2, 0)
    assert out.index("[initial answer]") < out.index(f"[round 1: {first.ref}] critique")
    assert out.index(f"[round 1: {first.ref}] revision") < out.index(f"[round 2: {second.ref}] critique")
    assert batch.initial[0] in out
    for done in batch.rounds[0]:
        assert done["critique"] in out and done["revision"] in out


def test_try_samples_the_constitutions_rounds_and_refuses_unknown_principles() -> None:
    c = load_constitution("harmless")
    code, out = _try("--prompt", "hello", "--seed", "4")
    assert code == 0
    assert out.count("] critique") == c.spec.critique.rounds
    code, out = _try("--prompt", "hello", "--rounds", "1")
    assert code == 0 and out.count("] critique") == 1
    result = CliRunner().invoke(build_app(), ["try", "--model", "fake", "--prompt", "x", "--batch-size", "3"])
    assert result.exit_code == 2  # one prompt: the stage's batch size is not an option here
    result = CliRunner().invoke(build_app(), ["try", "--model", "fake", "--prompt", "x", "--principle", "harmful"])
    assert isinstance(result.exception, CaiError)  # `cai` prints it as one line and exits 2
    assert "unknown critique principle 'harmful' (did you mean 'harmful-content'?)" in str(result.exception)
