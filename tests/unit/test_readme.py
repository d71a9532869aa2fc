"""The README's second line is the command CI runs, verbatim."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text().splitlines()
    ci = [
        line
        for line in (REPO / ".ci/run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == [readme[1]]
    assert readme[0].startswith("python3 -m venv .venv") and ".venv/bin/cai " in readme[0]
