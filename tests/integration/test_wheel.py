"""The wheel carries the data folders: build it, install it in a fresh venv outside the repository,
and validate, show and render the default constitution from there.

The venv gets the wheel with `--no-deps` plus only the light dependencies these commands need
(no torch), so the test also proves that they do not import the heavy stack.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cai.constitution.load import load_constitution

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DATA_DIRS = ("principles", "constitution", "prompts", "data", "recipes")
LIGHT_DEPS = ("jinja2", "pyyaml", "pydantic", "typer", "rich")


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    assert "Traceback" not in proc.stderr
    return proc.stdout


def pinned(dist: str) -> str:
    """The version this environment already has, so pip can reuse its cached wheel."""
    try:
        return f"{dist}=={importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return dist


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    # Build from a snapshot so that files being edited or caches in the checkout do not leak in.
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "_data")
    for name in ("cai", *DATA_DIRS):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for extra in ("LICENSE", "LICENSE.txt"):
        if (REPO / extra).exists():
            shutil.copy(REPO / extra, src / extra)
    dist = work / "dist"
    run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, src], cwd=work, timeout=600)
    (built,) = dist.glob("cai-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    root = tmp_path_factory.mktemp("venv")
    env_dir = root / "env"
    run([sys.executable, "-m", "venv", env_dir], cwd=root)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    run(
        [py, "-m", "pip", "install", "-q", *(pinned(d) for d in LIGHT_DEPS)],
        cwd=root,
        env=env,
        timeout=600,
    )
    run([py, "-m", "pip", "install", "-q", "--no-deps", wheel], cwd=root, env=env)
    elsewhere = root / "elsewhere"  # a working folder with no repository around it
    elsewhere.mkdir()
    return env_dir, env, elsewhere


def test_wheel_contains_every_data_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for d in DATA_DIRS:
        for f in (REPO / d).rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts:
                assert f"cai/_data/{f.relative_to(REPO).as_posix()}" in names, f
    assert {"cai/cli/app.py", "cai/cli/__main__.py", "cai/models/engine/decode.py", "cai/run/pipeline.py"} <= names


def test_installed_cai_validates_shows_and_renders(venv: tuple[Path, dict[str, str], Path]) -> None:
    env_dir, env, cwd = venv
    py, cai = env_dir / "bin" / "python", env_dir / "bin" / "cai"

    where = json.loads(
        run(
            [
                py,
                "-c",
                "import json, cai; from cai.paths import data_dir; "
                "print(json.dumps([cai.__file__, str(data_dir('prompts'))]))",
            ],
            cwd=cwd,
            env=env,
        )
    )
    pkg, prompts_dir = Path(where[0]).parent, Path(where[1])
    assert env_dir.resolve() in pkg.resolve().parents, "cai was not imported from the venv"
    assert prompts_dir == pkg / "_data" / "prompts"
    data_root = pkg / "_data"

    run([cai, "--help"], cwd=cwd, env=env)
    out = run(
        [
            cai,
            "validate",
            data_root / "principles",
            data_root / "constitution",
            data_root / "prompts",
        ],
        cwd=cwd,
        env=env,
    )
    assert out.startswith("ok: ")

    show = json.loads(run([cai, "constitution", "show", "harmless", "--json"], cwd=cwd, env=env))
    assert all(Path(p).is_relative_to(data_root) for p in show["chain"])
    # Same data, different place: the fingerprint does not move.
    assert show["fingerprint"] == load_constitution("harmless").fingerprint()

    text = run([cai, "render", "critique", "-c", "harmless"], cwd=cwd, env=env)
    first = load_constitution("harmless").critique_principles[0].principle
    assert first.critique in text  # type: ignore[union-attr]
    messages = json.loads(run([cai, "render", "comparison", "-c", "harmless", "--json"], cwd=cwd, env=env))
    assert messages[-1]["role"] == "user"

    # Nothing heavy is installed here, so none of the above can have imported it.
    probe = "import importlib.util as u; print([m for m in ('torch', 'trl') if u.find_spec(m)])"
    assert run([py, "-c", probe], cwd=cwd, env=env).strip() == "[]"
