"""CI runs the README's commands verbatim: its second line (the whole suite on the newest
releases), then the PPO-stack line of its dependency section (the TRL tests on TRL 1.12)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_commands() -> None:
    readme = (REPO / "README.md").read_text().splitlines()
    ci = [
        line
        for line in (REPO / ".ci/run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert len(ci) == 2 and ci[0] == readme[1]
    assert readme[0].startswith("python3 -m venv .venv") and ".venv/bin/cai " in readme[0]
    # The PPO stack: a second virtualenv with the `ppo` extra, where PPO tests must run.
    assert ci[1] in readme, "the README's dependency section must give the PPO-stack command verbatim"
    assert '.venv-ppo/bin/pip install torch==2.13.0 -e ".[dev,ppo]"' in ci[1]
    assert ci[1].endswith("CAI_EXPECT_PPO=1 .venv-ppo/bin/python -m pytest -m trl")
