"""Model spec strings → backends.

``embedded``            the SmolLM2-135M-Instruct default (converted once into the cache)
``openai:<model>``      an OpenAI-compatible endpoint (``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``,
                        or ``base_url`` / the env var named by ``api_key_env``)
``fake`` / ``fake:<mode>``  the scripted test backend (see `cai.models.fake`)
anything else           a local folder or hub id, loaded with transformers

Heavy libraries are imported only when a backend is built, so ``cai --help`` stays fast.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai.models.base import Backend, ModelSpecError

# Placeholder sent when no key is configured: llama.cpp and local vLLM need none, but the
# openai client refuses to start without one.
NO_KEY = "none"


@dataclass(frozen=True)
class ParsedSpec:
    kind: str  # "embedded" | "openai" | "fake" | "local"
    target: str  # model name, fake mode or path/hub id ("" for embedded)


def parse_spec(spec: str) -> ParsedSpec:
    spec = spec.strip()
    if not spec:
        raise ModelSpecError("empty model spec; use 'embedded', 'openai:<model>' or a path")
    if spec == "embedded":
        return ParsedSpec("embedded", "")
    if spec == "fake" or spec.startswith("fake:"):
        from cai.models.fake import MODES

        mode = spec.partition(":")[2] or "default"
        if mode not in MODES:
            raise ModelSpecError(f"unknown fake mode {mode!r}; choose one of {', '.join(MODES)}")
        return ParsedSpec("fake", mode)
    if spec.startswith("openai:"):
        model = spec.partition(":")[2].strip()
        if not model:
            raise ModelSpecError("'openai:' needs a model name, e.g. 'openai:gpt-4o-mini'")
        return ParsedSpec("openai", model)
    return ParsedSpec("local", spec)


def _require(module: str, hint: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ModelSpecError(f"this model spec needs the `{module}` package: {hint}")


def resolve_api_key(api_key_env: str | None) -> str:
    """The key's value (never logged): the named env var, else OPENAI_API_KEY, else NO_KEY."""
    if api_key_env:
        value = os.environ.get(api_key_env)
        if not value:
            raise ModelSpecError(f"--api-key-env names {api_key_env}, which is not set")
        return value
    return os.environ.get("OPENAI_API_KEY") or NO_KEY


def load_backend(
    spec: str,
    *,
    base_url: str | None = None,
    api_key_env: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    concurrency: int = 8,
    timeout: float = 60.0,
    max_retries: int = 4,
    decoder: str = "auto",
) -> Backend:
    """Build the backend a spec string names. Raises `ModelSpecError` with a fix on failure."""
    parsed = parse_spec(spec)
    if parsed.kind == "fake":
        from cai.models.fake import FakeBackend

        return FakeBackend(parsed.target)
    if parsed.kind == "openai":
        _require("openai", "pip install openai")
        from cai.models.api import ApiBackend, RetryPolicy

        return ApiBackend(
            parsed.target,
            api_key=resolve_api_key(api_key_env),
            base_url=base_url,  # None: the client reads OPENAI_BASE_URL itself
            spec=spec,
            concurrency=concurrency,
            timeout=timeout,
            retry=RetryPolicy(max_retries=max_retries),
        )
    _require("torch", "pip install torch")
    _require("transformers", "pip install transformers")
    from cai.models.local import LocalBackend

    if parsed.kind == "embedded":
        _require("gguf", "pip install gguf  (transformers reads the embedded GGUF with it)")
        from cai.models.embedded import embedded_dir, ensure_embedded, is_converted, require_gguf

        if not is_converted(embedded_dir()):
            require_gguf()  # fail with the install hint before importing anything heavy
        path: str | Path = ensure_embedded()
    else:
        path = parsed.target
        local = Path(path).expanduser()
        if local.exists():
            path = str(local)
        elif path.startswith((".", "/", "~")):
            raise ModelSpecError(f"model folder {path} does not exist")
        # else: a hub id; transformers resolves it (from its cache when offline)
    try:
        return LocalBackend(path, spec=spec, dtype=dtype, device=device, decoder=decoder)
    except OSError as exc:  # transformers: not found locally and no hub access
        raise ModelSpecError(f"cannot load model {spec!r}: {exc}") from exc


def list_models() -> list[dict[str, Any]]:
    """What `cai models` shows: the embedded model and every model folder in the cai cache."""
    from cai.models.embedded import (
        EMBEDDED_NAME,
        embedded_dir,
        find_gguf,
        folder_size,
        is_converted,
        models_dir,
    )

    rows: list[dict[str, Any]] = []
    emb = embedded_dir()
    gguf = find_gguf()
    converted = is_converted(emb)
    rows.append(
        {
            "spec": "embedded",
            "name": EMBEDDED_NAME,
            "converted": converted,
            "path": str(emb),
            "size_bytes": folder_size(emb) if converted else 0,
            "source": str(gguf) if gguf else None,
            "source_installed": gguf is not None,
        }
    )
    root = models_dir()
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if folder == emb or folder.name.startswith(".") or not folder.is_dir():
                continue
            if (folder / "config.json").is_file():
                rows.append(
                    {
                        "spec": str(folder),
                        "name": folder.name,
                        "converted": True,
                        "path": str(folder),
                        "size_bytes": folder_size(folder),
                        "source": None,
                        "source_installed": True,
                    }
                )
    return rows


def list_trained(root: str | Path) -> list[dict[str, Any]]:
    """What `cai models --under DIR` adds: every trained model folder under `root`.

    A folder counts once its completion marker is there (`cai_train.json`, written last when a
    training run publishes); its `spec` is the folder as found from `root`, so it can be passed
    to ``--model`` / ``--policy`` (or ``--pm`` for a preference model) as printed. A folder a run
    is still writing, or one a killed run left, is listed as unfinished so it is not mistaken for
    a missing model. Hidden folders (work and publishing folders) are not searched.
    """
    from cai.errors import CaiError, fail
    from cai.io.atomic import PUBLISHED_MARKER, is_unfinished_training
    from cai.io.readers import read_json_file

    base = Path(root)
    if not base.is_dir():
        raise fail(str(base), None, "--under", "no such folder" if not base.exists() else "not a folder")
    rows: list[dict[str, Any]] = []
    for here, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        folder = Path(here)
        if PUBLISHED_MARKER in files:
            dirs[:] = []  # a model folder holds no other models
            try:
                meta = read_json_file(folder / PUBLISHED_MARKER, kind="training record")
                status = "complete"
            except CaiError:
                meta, status = {}, f"unreadable {PUBLISHED_MARKER}"
            rows.append(
                {
                    "spec": str(folder),
                    "kind": meta.get("kind", "?"),
                    "base_model": meta.get("base_model", "?"),
                    "created": meta.get("created", "?"),
                    "status": status,
                }
            )
        elif is_unfinished_training(folder):
            rows.append({"spec": str(folder), "kind": "?", "base_model": "?", "created": "?", "status": "unfinished"})
    return rows
