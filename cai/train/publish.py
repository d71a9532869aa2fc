"""Publishing a trained model so that a killed run never leaves a fake one (`TrainOutput`).

Under `accelerate launch` only the main process touches files; every other process waits for it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import cai
from cai.errors import file_error
from cai.io.atomic import WORK_PREFIX
from cai.io.lock import LOCK_FILE
from cai.train.common import (
    METRICS_FILE,
    NOT_MODEL_FILES,
    TRAIN_META,
    is_main_process,
    library_versions,
    wait_for_everyone,
)


class TrainOutput:
    """The output folder of one training run, written so that a killed run leaves no fake model.

    Training (and checkpoints) happen in `OUT/.tmp-<kind>`. Publishing assembles the complete
    model in a sibling folder (``.OUT.publishing``: model files, metrics, then `cai_train.json`
    last, all fsynced), then swaps it in with renames (OUT → ``.OUT.old``, sibling → OUT). So OUT
    either has no model files or a complete model with its marker; a kill at any step leaves
    leftovers that `prepare` recognises as ours and clears, without --overwrite. Readers refuse
    a cai training folder without the marker (`check_published`).

    The main process holds OUT's `FolderLock` from `prepare` to the end of `finalize` (the
    published folder gets its own lock before the swap), so two runs never share one --out.
    The work folder name is fixed (not per-process) so every `accelerate` process agrees on it.
    """

    def __init__(self, out: str | Path, kind: str, *, overwrite: bool = False):
        self.out = Path(out)
        self.kind = kind
        self.overwrite = overwrite
        self.work = self.out / f"{WORK_PREFIX}{kind}"
        self.final = self.work / "final"
        self.metrics = self.out / METRICS_FILE
        here = self.out.resolve()
        self.staging = here.with_name(f".{here.name}.publishing")
        self.old = here.with_name(f".{here.name}.old")
        self.lock: Any = None

    def check(self) -> None:
        """Refuse folders that hold something other than our own leftovers (e.g. a data dir)."""
        if not self.out.exists():
            if self.out.is_symlink() or (self.out.parent.exists() and not self.out.parent.is_dir()):
                raise file_error(str(self.out), "--out", "cannot create this folder (its parent is not a folder)")
            return
        if not self.out.is_dir():
            raise file_error(str(self.out), "--out", "exists and is not a folder")
        if (self.out / TRAIN_META).exists():
            if not self.overwrite:
                raise file_error(
                    str(self.out), "--out", "already holds a trained model; choose another folder or pass --overwrite"
                )
            return
        if self.final.is_dir():
            return  # killed while saving or publishing (an older cai moved files out of here): ours
        foreign = [p.name for p in self.out.iterdir() if not _ours(p.name)]
        if foreign:
            shown = ", ".join(sorted(foreign)[:3])
            raise file_error(str(self.out), "--out", f"folder is not empty ({shown} …); choose a new one")

    def prepare(self) -> None:
        """Main process clears the way; the others wait so nobody trains into a half-made folder."""
        self.check()
        wait_for_everyone()  # every process checks the folder as it was, before anyone changes it
        if is_main_process():
            from cai.io.lock import FolderLock

            self.lock = FolderLock(self.out)
            try:
                for leftover in (self.staging, self.old):
                    _remove(leftover)
                for item in self.out.iterdir():
                    if item.name != LOCK_NAME:
                        _remove(item)  # an --overwrite'n model, or a killed run's leftovers
                self.work.mkdir(parents=True)
                self.metrics.write_text("")  # a fresh log per run; a resumed log would mix runs
            except OSError as e:
                self.close()
                from cai.io.atomic import write_error

                raise write_error(self.out, e) from None
            except BaseException:
                self.close()
                raise
        wait_for_everyone()

    def close(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    def finalize(self, trainer: Any, tokenizer: Any, meta: dict[str, Any]) -> None:
        """Save on every process (ZeRO-3 gathers shards inside `save_model`), publish on main."""
        try:
            trainer.save_model(str(self.final))
        except OSError as e:
            from cai.io.atomic import write_error

            self.close()
            raise write_error(self.final, e) from None
        wait_for_everyone()
        if is_main_process():
            try:
                tokenizer.save_pretrained(str(self.final))  # idempotent; keeps the chat template
                self.publish(meta)
            except OSError as e:
                from cai.io.atomic import write_error

                _remove(self.staging)
                raise write_error(self.out, e) from None
            finally:
                self.close()
        wait_for_everyone()

    def publish(self, meta: dict[str, Any]) -> None:
        """Move the saved model from the work folder into OUT atomically (see the class doc)."""
        from cai.io.atomic import fsync_tree, write_json_atomic
        from cai.io.lock import FolderLock

        _remove(self.staging)
        self.staging.mkdir()
        for item in sorted(self.final.iterdir()):
            if item.name in NOT_MODEL_FILES:
                continue
            target = self.staging / item.name
            os.replace(item, target)
            if target.is_file():
                # Some writers create private temp files; a model folder is meant to be shared.
                os.chmod(target, 0o644)
        if self.metrics.exists():
            shutil.copy2(self.metrics, self.staging / METRICS_FILE)
        meta = {
            "cai_version": cai.__version__,
            "kind": self.kind,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "libraries": library_versions(),
            **meta,
        }
        from cai.cards import model_card, write_card
        from cai.outputs import TrainRecord

        # The model card (README.md, read by the Hub and huggingface_hub) before the marker.
        write_card(self.staging, model_card(TrainRecord.model_validate(meta)))
        write_json_atomic(self.staging / TRAIN_META, meta)  # the completion marker, last
        fsync_tree(self.staging)
        new_lock = FolderLock(self.staging)  # OUT stays locked through the swap
        try:
            _remove(self.old)
            os.replace(self.out, self.old)
            os.replace(self.staging, self.out)
            _fsync_dir(self.out.parent)
        except BaseException:
            new_lock.close()
            raise
        self.close()
        self.lock = new_lock
        _remove(self.old)


LOCK_NAME = LOCK_FILE


def _ours(name: str) -> bool:
    """Names a training run itself puts into its --out folder."""
    return name in (METRICS_FILE, LOCK_NAME) or name.startswith(WORK_PREFIX)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _fsync_dir(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
