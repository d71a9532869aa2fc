"""Write exports atomically: a killed export never leaves a half-written file or folder.

A write that fails (a full disk, a read-only folder) removes its temporary file and becomes a
one-line error naming the path; the previous version of the file stays in place, so a rerun after
freeing space writes it again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from cai.errors import CaiError, fail
from cai.io.lock import LOCK_FILE
from cai.paths import refuse_symlink

# The file a trained model's folder gets last: its presence means "a complete model is here".
PUBLISHED_MARKER = "cai_train.json"
# Work folders a training run keeps inside its --out folder until it publishes.
WORK_PREFIX = ".tmp-"


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[IO[str]]:
    """A text file at a temporary name, fsynced and renamed over `path` on success."""
    tmp = path.with_name(f".{path.name}.tmp")
    refuse_symlink(path, "")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # a leftover of a killed write, or a planted link: never written through
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with open(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise write_error(path, e) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_error(path: Path, e: OSError) -> CaiError:
    """A failed write as one line naming the path (a full disk is the usual cause)."""
    hint = "; free some space and rerun to resume" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return fail(str(path), None, "", f"cannot write: {e.strerror or e}{hint}")


def write_jsonl_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    with _replacing(path) as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    with _replacing(path) as f:
        f.write(text)


def write_json_atomic(path: Path, data: Any) -> None:
    with _replacing(path) as f:
        f.write(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True))


def _rmtree(p: Path) -> None:
    if p.is_symlink():  # a link is removed, never followed
        p.unlink()
    elif p.exists():
        shutil.rmtree(p, ignore_errors=True)


def save_dataset_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """`datasets.save_to_disk` into a temp folder, then swap it in."""
    from datasets import Dataset
    from datasets.utils import logging as ds_logging

    tmp = path.with_name(f".{path.name}.tmp")
    old = path.with_name(f".{path.name}.old")
    refuse_symlink(path, "")
    for p in (tmp, old):
        _rmtree(p)
    # The export is a small, quick step; its own progress bar is noise among the stage's.
    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        Dataset.from_list(rows).save_to_disk(str(tmp))
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except OSError as e:
        _rmtree(tmp)
        if old.exists() and not path.exists():
            with contextlib.suppress(OSError):
                os.replace(old, path)
        raise write_error(path, e) from None
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()
    _rmtree(old)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (and `root`), so a rename publishes data that is
    on disk, not only in the page cache."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            _fsync_path(Path(dirpath) / name, os.O_RDONLY)
        _fsync_path(Path(dirpath), os.O_RDONLY)


def _fsync_path(p: Path, flags: int) -> None:
    fd = os.open(p, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_unfinished_training(path: str | Path) -> bool:
    """A folder a cai training run writes into, holding no complete model (no marker): a run
    still training, or one killed before (or while) it published."""
    p = Path(path)
    if not p.is_dir() or (p / PUBLISHED_MARKER).exists():
        return False
    return any(x.name.startswith(WORK_PREFIX) or x.name == LOCK_FILE for x in p.iterdir())


def check_published(path: str | Path, what: str) -> None:
    """Refuse a cai training output without its completion marker (killed, or still running)."""
    if is_unfinished_training(path):
        raise fail(
            str(path),
            None,
            what,
            f"holds no complete model (no {PUBLISHED_MARKER}): its training was killed or is still running; "
            "rerun the training command to finish it",
        )
