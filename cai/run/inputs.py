"""Content digests of the data files a run's stages read, so that a stage key sees an edited file.

A stage's key used to hash the *names* of its inputs; editing a prompt file in place then left
the stage "done". Each stage descriptor names the section keys that point at data
(`Stage.inputs`); this module turns each such reference into a digest of the bytes behind it,
once per run (a file shared by several stages is read once).

A reference is resolved the way the runners resolve it: relative to the recipe's folder when it
exists there, else as given, else a shipped set's name. Only regular files are read, and a folder
(a saved `datasets` folder) is digested file by file; anything else (missing, a FIFO, a device)
gets a digest of what it is, not of its content, and the stage's own loader refuses it later.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Callable
from pathlib import Path

CHUNK = 1 << 20


def _file_digest(path: Path, h: hashlib._Hash) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)


def digest_path(path: Path) -> str:
    """sha256 (16 hex digits) of a regular file's bytes, or of a folder's regular files (their
    relative names and bytes, in sorted order); a kind word for anything else."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "missing"
    h = hashlib.sha256()
    if stat.S_ISREG(mode):
        _file_digest(path, h)
    elif stat.S_ISDIR(mode):
        for p in sorted(path.rglob("*")):
            try:
                if not stat.S_ISREG(p.lstat().st_mode):
                    continue
            except OSError:
                continue
            h.update(str(p.relative_to(path)).encode("utf-8", "surrogateescape") + b"\0")
            _file_digest(p, h)
            h.update(b"\0")
    else:
        return "not-a-regular-file"
    return h.hexdigest()[:16]


class InputDigests:
    """Digests of data references for one run, each computed at most once."""

    def __init__(self, locate: Callable[[str], str]):
        self._locate = locate  # a recipe reference -> the path a runner would open
        self._cache: dict[str, str] = {}

    def path_of(self, ref: str) -> Path:
        from cai.io.sources import SHIPPED
        from cai.paths import data_dir

        path = Path(self._locate(ref))
        if not path.exists() and ref in SHIPPED:
            path = data_dir("data") / SHIPPED[ref]
        return path

    def __call__(self, ref: str) -> str:
        path = self.path_of(ref)
        key = str(path.absolute())
        if key not in self._cache:
            self._cache[key] = digest_path(path)
        return self._cache[key]

    def of(self, refs: dict[str, str]) -> dict[str, str]:
        """{input name: digest} for {input name: reference}."""
        return {name: self(ref) for name, ref in refs.items()}
