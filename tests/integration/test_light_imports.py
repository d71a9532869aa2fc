"""Light commands stay light: the data commands, `--help` and the model modules import no ML stack.

Each check needs a fresh interpreter (in the test process torch is long imported), so each runs
`python -c` in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO, cai_env

HEAVY = ("torch", "transformers", "trl", "datasets", "accelerate", "openai", "matplotlib")
PROBE = """
import sys
from cai.cli.app import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=60, env=cai_env()
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["validate", "principles", "constitution", "prompts"],
        ["constitution", "show", "harmless"],
        ["constitution", "diff", "harmless", "harmless-concise"],
        ["render", "comparison_cot"],
    ],
)
def test_data_commands_do_not_import_the_ml_stack(args: list[str]) -> None:
    proc = _python(PROBE.format(heavy=HEAVY), *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "HEAVY=", proc.stderr


def test_importing_the_commands_loads_no_torch() -> None:
    code = (
        "import sys, cai.cli.app; cai.cli.app.build_app(); "
        "print(any(m in sys.modules for m in ('torch', 'trl', 'transformers')))"
    )
    proc = _python(code)
    assert proc.stdout.strip() == "False", proc.stderr


def test_train_help_lists_sft_without_importing_torch() -> None:
    code = (
        "import sys\nfrom cai.cli.app import build_app\nbuild_app()\n"
        "assert 'torch' not in sys.modules, 'torch imported at registration'\n"
        "assert 'trl' not in sys.modules\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    # The help itself stays light too (the listing is checked in tests/unit/test_train_cli.py).
    for args in (["train", "--help"], ["train", "sft", "--help"]):
        proc = _python(PROBE.format(heavy=("torch", "trl")), *args)
        assert "sft" in proc.stdout, proc.stdout
        assert proc.stderr.strip().splitlines()[-1] == "HEAVY=", proc.stderr


def test_model_modules_import_nothing_heavy() -> None:
    code = (
        "import sys, cai.models.spec, cai.models.local, cai.models.api, cai.models.embedded, "
        "cai.models.fake, cai.models.engine.prefix, cai.models.device, cai.models.engine.attention; "
        "heavy = [m for m in ('torch', 'transformers', 'openai', 'llama_cpp') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
