"""``python -m cai.cli …`` (used under ``accelerate launch -m cai.cli``) runs the `cai` command."""

from cai.cli.app import console

console()
