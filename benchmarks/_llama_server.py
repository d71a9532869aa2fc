"""llama.cpp's own C++ `llama-server`, built from the sources inside the llama-cpp-python sdist.

    .venv/bin/python benchmarks/_llama_server.py            # build (or find) it; prints its path

The sdist is the one the `server` extra pins (pyproject.toml), fetched from PyPI by pip, so the
build works offline from everything but PyPI. Only the `llama-server` target is compiled, as one
static binary, into ``~/.cache/cai/llama-server/<version>/`` (``$XDG_CACHE_HOME`` respected);
a later call finds it there. The ggml flags are the ones the test extras need on these machines:
a native build (-march=native) dies with "illegal instruction" where the CPU advertises
instructions (AMX) the VM does not allow.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from cai.models.threads import usable_cores

REPO = Path(__file__).resolve().parents[1]
GGML_FLAGS = ["-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON"]
# No web UI (it would be fetched from a hub), no TLS, no tests: a plain static server binary.
BUILD_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
]


class Unavailable(RuntimeError):
    """llama-server cannot be built or started here; the message says why in one line."""


def pinned_version() -> str:
    """The llama-cpp-python version the `server` extra pins: one home for that version."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for req in extras["server"]:
        if req.startswith("llama-cpp-python") and "==" in req:
            return req.split("==", 1)[1].strip()
    raise Unavailable("pyproject.toml's server extra pins no llama-cpp-python version")


def cache_dir(version: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "cai" / "llama-server" / version


def find_binary(version: str | None = None) -> Path | None:
    """The cached binary, or None where it has not been built."""
    path = cache_dir(version or pinned_version()) / "llama-server"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _run(cmd: list[str], log: Path, what: str) -> None:
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise Unavailable(f"{what} failed ({proc.returncode}); see {log}")


def build(version: str | None = None, jobs: int = 2) -> Path:
    """Build llama-server unless the cache has it; its path. Takes minutes on two cores."""
    version = version or pinned_version()
    if found := find_binary(version):
        return found
    cmake = shutil.which("cmake")
    if cmake is None:
        raise Unavailable("no cmake on PATH (pip install cmake)")
    out = cache_dir(version)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "build.log"
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp_name:
        tmp = Path(tmp_name)
        pip = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
        _run([*pip, "-d", str(tmp), f"llama-cpp-python=={version}"], log, "pip download of the sdist")
        sdist = next(tmp.glob("llama_cpp_python-*.tar.gz"), None)
        if sdist is None:
            raise Unavailable(f"pip downloaded no llama-cpp-python {version} sdist; see {log}")
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp / "src", filter="data")
        source = next((tmp / "src").glob("*/vendor/llama.cpp"), None)
        if source is None:
            raise Unavailable(f"the {sdist.name} sdist has no vendor/llama.cpp")
        build_dir = tmp / "build"
        _run([cmake, "-S", str(source), "-B", str(build_dir), *BUILD_FLAGS, *GGML_FLAGS], log, "cmake configure")
        target = [cmake, "--build", str(build_dir), "--target", "llama-server", "-j", str(jobs)]
        _run(target, log, "cmake build")
        binary = next(build_dir.rglob("bin/llama-server"), None)
        if binary is None:
            raise Unavailable(f"the build made no bin/llama-server; see {log}")
        staged = out / "llama-server.partial"
        shutil.copy2(binary, staged)
        staged.replace(out / "llama-server")  # atomic: a killed build leaves no half binary
    return out / "llama-server"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(
    binary: Path,
    gguf: Path,
    log_path: Path,
    *,
    parallel: int,
    ctx_per_slot: int = 512,
    threads: int | None = None,
    timeout: float = 120.0,
) -> Iterator[str]:
    """Run llama-server with ``parallel`` slots and continuous batching on 127.0.0.1; yields
    its OpenAI base URL. The context is split evenly among the slots, hence the product."""
    port = _free_port()
    n_threads = str(threads or usable_cores())  # the cores this process may use, as torch's peers
    cmd = [
        str(binary),
        *("--model", str(gguf), "--host", "127.0.0.1", "--port", str(port)),
        *("--parallel", str(parallel), "--cont-batching"),
        *("--ctx-size", str(ctx_per_slot * parallel)),
        *("--threads", n_threads, "--threads-batch", n_threads),
        # No reuse of an earlier request's prompt: a repeated benchmark round would skip the
        # prefill that every other peer computes afresh on each call.
        *("--no-cache-prompt", "--cache-ram", "0"),
        "--no-webui",
    ]
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(proc, base, log_path, timeout)
            yield f"{base}/v1"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_healthy(proc: subprocess.Popen[bytes], base: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise Unavailable(f"llama-server exited ({proc.returncode}): {tail[0]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{base}/health", timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.3)
    raise Unavailable(f"llama-server not healthy after {timeout:.0f} s; see {log_path}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    try:
        path = build()
    except Unavailable as e:
        raise SystemExit(f"llama-server: {e}") from None
    print(f"{path}  ({time.perf_counter() - t0:.0f} s)")
