"""Model spec strings → backends, and → what training loads.

``embedded``            the SmolLM2-135M-Instruct default (converted once into the cache)
``openai:<model>``      an OpenAI-compatible endpoint (``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``,
                        or ``base_url`` / the env var named by ``api_key_env``)
``fake`` / ``fake:<mode>``  the scripted test backend (see `cai.models.fake`)
anything else           a local folder or hub id, loaded with transformers

Each kind is one entry of the registry in `cai.models.kinds`; the functions here only find the
entry that claims a spec and call it. ``kinds=`` replaces the registry in effect for one call.

Heavy libraries are imported only when a backend is built, so ``cai --help`` stays fast.
"""

from __future__ import annotations

# Not used here since the kinds moved to `cai.models.kinds`, but tests patch
# `spec.importlib.util.find_spec` (the same module object `kinds._require` calls).
import importlib.util  # noqa: F401
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cai.models.base import Backend, ModelSpecError
from cai.models.kinds import NO_KEY, BackendRequest, ModelKind, ParsedSpec, find_kind, resolve_api_key

# NO_KEY, ParsedSpec and resolve_api_key lived here before the registry; importers keep working.
__all__ = [
    "NO_KEY",
    "ModelKind",
    "ParsedSpec",
    "list_models",
    "list_trained",
    "load_backend",
    "parse_spec",
    "resolve_api_key",
    "resolve_model_path",
]


def _claim(spec: str, kinds: Sequence[ModelKind] | None) -> tuple[ModelKind, ParsedSpec]:
    text = spec.strip()
    if not text:
        raise ModelSpecError("empty model spec; use 'embedded', 'openai:<model>' or a path")
    odd = next((ch for ch in text if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")), None)
    if odd is not None:  # a pasted newline or escape would otherwise reach a URL or a path
        raise ModelSpecError(f"a model spec is one line of printable text; it holds U+{ord(odd):04X}")
    kind = find_kind(text, kinds)
    return kind, kind.parse(text)


def parse_spec(spec: str, *, kinds: Sequence[ModelKind] | None = None) -> ParsedSpec:
    """Which kind `spec` is and its target; a malformed spec raises `ModelSpecError`."""
    return _claim(spec, kinds)[1]


def load_backend(
    spec: str,
    *,
    base_url: str | None = None,
    api_key_env: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    concurrency: int = 8,
    timeout: float = 60.0,
    deadline: float = 300.0,
    max_retries: int = 4,
    decoder: str = "auto",
    kinds: Sequence[ModelKind] | None = None,
) -> Backend:
    """Build the backend a spec string names. Raises `ModelSpecError` with a fix on failure."""
    kind, parsed = _claim(spec, kinds)
    request = BackendRequest(
        spec,
        parsed.target,
        base_url=base_url,
        api_key_env=api_key_env,
        dtype=dtype,
        device=device,
        concurrency=concurrency,
        timeout=timeout,
        deadline=deadline,
        max_retries=max_retries,
        decoder=decoder,
    )
    return kind.backend(request)


def resolve_model_path(spec: str, *, quiet: bool = False, kinds: Sequence[ModelKind] | None = None) -> str:
    """Map a model spec to something `from_pretrained` accepts.

    `embedded` becomes the converted embedded folder (converted on first use); an existing path
    becomes absolute; anything else is passed on as a hub id. API models (and the fake backend)
    cannot be trained. Every failure is a one-line `--model` `CaiError`.
    """
    try:
        kind = find_kind(spec, kinds)  # as given: a trainer never saw a stripped spec
    except ModelSpecError as e:  # only a registry without the catch-all kind gets here
        from cai.errors import option_error

        raise option_error("--model", str(e), value=spec) from None
    return kind.resolve_for_training(spec, quiet=quiet)


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
    from cai.errors import CaiError, file_error
    from cai.io.atomic import PUBLISHED_MARKER, is_unfinished_training
    from cai.io.outputs import read_output
    from cai.outputs import TrainRecord

    base = Path(root)
    if not base.is_dir():
        raise file_error(str(base), "--under", "no such folder" if not base.exists() else "not a folder")
    rows: list[dict[str, Any]] = []
    for here, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        folder = Path(here)
        if PUBLISHED_MARKER in files:
            dirs[:] = []  # a model folder holds no other models
            try:
                meta = read_output(TrainRecord, folder / PUBLISHED_MARKER)
                status = "complete"
            except CaiError:
                meta, status = TrainRecord(), f"unreadable {PUBLISHED_MARKER}"
            rows.append(
                {
                    "spec": str(folder),
                    "kind": meta.kind or "?",
                    "base_model": meta.base_model or "?",
                    "created": meta.created or "?",
                    "status": status,
                }
            )
        elif is_unfinished_training(folder):
            rows.append({"spec": str(folder), "kind": "?", "base_model": "?", "created": "?", "status": "unfinished"})
    return rows
