"""Where shipped data lives, and how names resolve to files.

In a source checkout the data folders sit at the repository root; in an installed wheel they
are packaged under ``cai/_data``. Users' own files are always addressed by path.
"""

from __future__ import annotations

import os
from pathlib import Path

from cai.errors import did_you_mean, fail

_PKG = Path(__file__).resolve().parent

# The constitution every command and recipe uses unless told otherwise (a shipped name).
DEFAULT_CONSTITUTION = "harmless"


def data_dir(name: str) -> Path:
    """A shipped data folder: principles, constitution, prompts or data."""
    packaged = _PKG / "_data" / name
    if packaged.is_dir():
        return packaged
    return _PKG.parent / name


def shipped_names(folder: str, suffix: str = ".yaml") -> list[str]:
    d = data_dir(folder)
    return sorted(p.name[: -len(suffix)] for p in d.glob(f"*{suffix}")) if d.is_dir() else []


def resolve_named(
    ref: str, folder: str, what: str, base: Path | None = None, suffixes: tuple[str, ...] = (".yaml", ".yml")
) -> Path:
    """Resolve `ref` as a path (relative to `base` when given) or as a shipped name."""
    # Relative to the file that names it when there is one, never silently to the cwd: the
    # result must not depend on where the command runs.
    candidates = [base / ref] if base is not None and not Path(ref).is_absolute() else [Path(ref)]
    for c in candidates:
        if c.is_file():
            return c.resolve()
        if c.exists() and not c.is_dir():  # a FIFO or a device: say so, rather than "no such file"
            raise fail(str(c), None, what, "not a regular file (a FIFO, device or socket); give a file")
    looks_like_path = any(s in ref for s in ("/", "\\")) or ref.endswith(suffixes)
    if not looks_like_path:
        for suffix in suffixes:
            shipped = data_dir(folder) / f"{ref}{suffix}"
            if shipped.is_file():
                return shipped.resolve()
    names = shipped_names(folder)
    raise fail(
        ref,
        None,
        what,
        f"no such file or shipped {what} (shipped: {', '.join(names) or 'none'})",
        did_you_mean(ref, names),
    )


def refuse_symlink(path: Path, what: str) -> None:
    """cai writes only files it owns: a symbolic link where it would write (a lock, records, an
    export) could point anywhere, and writing through it would truncate or append to that file."""
    if path.is_symlink():
        raise fail(str(path), None, what, "is a symbolic link; cai does not write through links (remove it)")


def refuse_links_under(folder: Path, what: str) -> None:
    """`refuse_symlink` for everything under `folder` (links are not followed), for a folder a
    resumed stage may write anywhere in: checked before the run writes its first file."""
    if not folder.is_dir() or folder.is_symlink():
        refuse_symlink(folder, what)
        return
    for here, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            refuse_symlink(Path(here) / name, what)


def is_inside(path: Path, folder: Path) -> bool:
    """Is `path` (resolved, links followed) `folder` itself or somewhere under it?"""
    try:
        path.resolve().relative_to(folder.resolve())
    except (ValueError, OSError):
        return False
    return True


def refuse_input_inside(path: str | Path, out: str | Path, what: str) -> None:
    """An input file that lives inside the output folder could be a file the run writes (a prompt
    file named records.jsonl would be appended to while it is read): refuse it."""
    p, o = Path(path), Path(out)
    if p.exists() and is_inside(p, o):
        raise fail(str(path), None, what, f"lives inside the output folder {out}; keep inputs outside --out")


def plain_name(name: str, what: str = "name") -> str:
    """A run name becomes a folder under ``runs/``: one path component, nothing that climbs out."""
    bad = (
        not name.strip()
        or name in (".", "..")
        or any(c in name for c in "/\\\0")
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or name != name.strip()
    )
    if bad:
        raise ValueError(
            f"{name!r} is not a plain name: one folder name under runs/, "
            "without slashes, '..', control characters or surrounding spaces"
        )
    return name
