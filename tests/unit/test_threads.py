"""CPU threads: shard i/N takes cores // N, ``--threads`` and ``CAI_THREADS`` override it, bad
values are one-line errors, commands really apply the choice, and the `cai` entry point asks
libgomp for passive waiting when the command shares the machine, unless the user tuned it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cai.errors import CaiError
from cai.models.threads import choose_threads, cli_environment, usable_cores
from tests.helpers import REPO, cai_env, invoke


@pytest.fixture
def torch_threads() -> Iterator[None]:
    """Start from a count no rule below chooses (so an unapplied choice shows), restore after."""
    before = torch.get_num_threads()
    torch.set_num_threads(5)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("shard", "cores", "expected"),
    [((0, 1), 2, None), ((0, 2), 2, 1), ((1, 2), 16, 8), ((3, 4), 16, 4), ((0, 4), 2, 1), ((2, 3), 8, 2)],
)
def test_a_shard_takes_its_share_of_the_cores(shard: tuple[int, int], cores: int, expected: int | None) -> None:
    assert choose_threads(None, {}, shard, cores) == expected


def test_the_option_beats_the_variable_and_both_beat_the_shard_rule() -> None:
    assert choose_threads("3", {"CAI_THREADS": "6"}, (0, 2), 16) == 3
    assert choose_threads(None, {"CAI_THREADS": "6"}, (0, 2), 16) == 6
    assert choose_threads(None, {"CAI_THREADS": "6"}, (0, 1), 16) == 6
    assert choose_threads(None, {"CAI_THREADS": "  "}, (0, 2), 16) == 8  # empty: not given


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "2 threads"])
def test_a_bad_count_names_where_it_came_from(value: str) -> None:
    with pytest.raises(CaiError, match=f"^--threads: {value}: "):
        choose_threads(value, {}, (0, 1), 2)
    with pytest.raises(CaiError, match=f"^CAI_THREADS: {value}: "):
        choose_threads(None, {"CAI_THREADS": value}, (0, 1), 2)


def _critique(out: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    args = ("critique", "--prompts", "red-team", "--limit", "2", "--model", "fake", "--quiet", "-o", str(out))
    r = invoke(*args, *extra, env=env)
    return r.code, r.stderr


@pytest.mark.parametrize("value", ["0", "-2", "x"])
def test_a_bad_count_on_the_command_line_is_one_line_exit_2(tmp_path: Path, value: str) -> None:
    code, err = _critique(tmp_path / "o", f"--threads={value}")
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(f"--threads: {value}: "), err
    code, err = _critique(tmp_path / "o", env={"CAI_THREADS": value})
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(f"CAI_THREADS: {value}: "), err
    assert not (tmp_path / "o").exists()  # refused before anything was written


@pytest.mark.usefixtures("torch_threads")
def test_a_sharded_command_runs_with_its_share(tmp_path: Path) -> None:
    code, err = _critique(tmp_path / "o", "--shard", "1/2", env={"CAI_THREADS": ""})
    assert code == 0, err
    assert torch.get_num_threads() == max(1, usable_cores() // 2)


@pytest.mark.usefixtures("torch_threads")
def test_a_command_runs_with_the_count_it_was_given(tmp_path: Path) -> None:
    assert _critique(tmp_path / "a", "--threads", "3", env={"CAI_THREADS": "2"})[0] == 0
    assert torch.get_num_threads() == 3
    assert _critique(tmp_path / "b", env={"CAI_THREADS": "2"})[0] == 0
    assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("torch_threads")
def test_an_unsharded_untold_command_leaves_torch_alone(tmp_path: Path) -> None:
    assert _critique(tmp_path / "o", env={"CAI_THREADS": ""})[0] == 0
    assert torch.get_num_threads() == 5


@pytest.mark.parametrize(
    ("argv", "environ", "passive"),
    [
        (["label", "--shard", "0/2"], {}, True),
        (["label", "--shard=1/3"], {}, True),
        (["eval", "policy", "--threads", "1"], {}, True),
        (["run", "quickstart", "--threads=2"], {}, True),
        (["run", "quickstart"], {"CAI_THREADS": "1"}, True),
        # alone: libgomp's spinning is what makes short parallel regions fast (83.7 vs 63.0 tok/s)
        (["run", "quickstart"], {}, False),
        (["label", "--shard", "0/1"], {}, False),
        (["run", "quickstart"], {"CAI_THREADS": " "}, False),
        (["label", "--shard"], {}, False),  # the parser's own error comes later
        (["label", "--shard", "0/+2"], {}, True),  # what parse_shard reads as N = 2
        (["label", "--shard=", "0/2"], {}, False),  # an empty inline value does not take the next
        (["label", "--threads="], {}, False),  # empty: not given, as an empty CAI_THREADS
        # the user's own tuning of libgomp is left as it is
        (["label", "--shard", "0/2"], {"OMP_WAIT_POLICY": "active"}, False),
        (["label", "--shard", "0/2"], {"GOMP_SPINCOUNT": "300000"}, False),
    ],
)
def test_passive_waiting_only_when_the_command_shares_the_machine(
    argv: list[str], environ: dict[str, str], passive: bool
) -> None:
    before = dict(environ)
    out = cli_environment(dict(environ), argv)
    assert out == (before | {"OMP_WAIT_POLICY": "PASSIVE"} if passive else before)


def test_the_console_entry_sets_the_policy_before_torch_loads() -> None:
    """libgomp reads OMP_WAIT_POLICY once, when torch loads it: the entry point must set it first."""
    code = (
        "import os, sys, cai.cli.app as app; "
        "sys.argv = ['cai', 'label', '--shard', '0/2']; "
        "app.main = lambda: print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules); app.console()"
    )
    env = {k: v for k, v in cai_env().items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.split() == ["PASSIVE", "False"], proc.stderr


@pytest.mark.parametrize("command", [("critique",), ("label",), ("eval", "policy"), ("train", "sft"), ("run",)])
def test_every_computing_command_takes_threads(command: tuple[str, ...]) -> None:
    r = invoke(*command, "--help")
    assert r.code == 0 and "--threads" in r.stdout and "CAI_THREADS" in r.stdout, r.stdout
