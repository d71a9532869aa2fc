"""Which trainers the installed TRL offers, asked without importing TRL.

TRL deleted `PPOTrainer` after 1.12 (it lived in ``trl.experimental.ppo`` in 1.0–1.12); RLOO and
GRPO are its maintained online trainers and exist in every TRL cai supports. Asking early (when
settings are validated, before any model loads) turns "this TRL has no PPO" into one line that
names the fix instead of a traceback minutes into a run. The check looks for the module's files,
so it answers for the TRL that is installed, whatever its version string says.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path

PPO_EXTRA = "cai[ppo]"
PPO_LAST_TRL = "1.12"
MAINTAINED = ("rloo", "grpo")


def trl_version() -> str | None:
    """The installed TRL's version, or None when TRL is not installed."""
    try:
        return metadata.version("trl")
    except metadata.PackageNotFoundError:
        return None


def has_ppo() -> bool:
    """True when the installed TRL ships ``trl.experimental.ppo`` (TRL 1.0–1.12)."""
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(
        (Path(root) / "experimental" / "ppo" / "__init__.py").is_file() for root in spec.submodule_search_locations
    )


def ppo_missing_message() -> str:
    """What to do when PPO is asked for and the installed TRL has none (one line, the fix first)."""
    installed = trl_version()
    where = f"TRL {installed} (installed)" if installed else "the installed TRL"
    return (
        f"{where} has no PPOTrainer (TRL removed it after {PPO_LAST_TRL}); "
        f"use algorithm rloo or grpo (TRL's maintained trainers), or install PPO with: pip install '{PPO_EXTRA}'"
    )
