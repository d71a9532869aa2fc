"""Append-only JSONL record stores that survive `kill -9` at any instant.

A store is ``DIR/records.jsonl`` plus ``DIR/run.json`` (the settings that produced it). Each
record has an ``id`` derived from its inputs. Writes append whole lines in one `write` and
fsync, so after a kill the file holds complete records followed by at most one torn line, which
`open` detects and cuts off; the work it belonged to is redone and the ids already present are
skipped, so nothing is lost and nothing is written twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cai import __version__
from cai.errors import fail, file_error, option_error
from cai.io.atomic import write_error, write_json_atomic
from cai.io.lock import LOCK_FILE, FolderLock
from cai.io.readers import iter_jsonl, read_json_file
from cai.paths import refuse_symlink

RECORDS = "records.jsonl"
MANIFEST = "run.json"


def content_hash(*parts: Any, length: int = 16) -> str:
    """A stable hash of JSON-serialisable inputs (key order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from a base seed and labels, so each unit of work has its own RNG stream."""
    return int(content_hash(*parts, length=8), 16) & 0x7FFFFFFF


def read_jsonl(path: Path, require: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """A store file's complete records ([] before the first write).

    The torn last line a killed writer leaves is not an error: see `iter_jsonl`'s
    ``committed_only``; `Store` also cuts it off the file so that appends start on a fresh line.
    """
    if not path.exists():
        return []
    return [rec for _, rec in iter_jsonl(path, committed_only=True, require=require)]


class Store:
    """One stage's records in one folder, with its manifest.

    ``lock=True`` (what the stages use, as ``with Store(..., lock=True) as store``) takes the
    folder's `FolderLock` before anything is read or repaired, and holds it until `close`.

    Ids are unique in `records`: a line whose id is already present is a duplicate (two writers
    before the lock existed, or a hand-edited file) and is dropped, counted in `duplicates`; a
    line with a higher ``retried`` count than the record it repeats replaces it (a failed record
    redone by a later run, see `append`).
    """

    def __init__(self, directory: str | Path, manifest: dict[str, Any], *, lock: bool = False):
        self.dir = Path(directory)
        self.path = self.dir / RECORDS
        self.manifest = {**manifest, "cai_version": __version__}
        for name in (LOCK_FILE, RECORDS, MANIFEST):  # before the lock file is made or opened
            refuse_symlink(self.dir / name, "--out")
        self.lock = FolderLock(self.dir) if lock else None
        try:
            self._mkdir()
            self._check_manifest()
            self._repair()
            self.records, self.duplicates = dedupe(read_jsonl(self.path, require=("id",)))
        except BaseException:
            self.close()
            raise
        self.ids = {r["id"]: k for k, r in enumerate(self.records)}
        self.retried = 0  # records this process redid

    def _mkdir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(self.dir, e) from None
        if not self.dir.is_dir():
            raise file_error(str(self.dir), "--out", "exists and is not a folder")

    def close(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_manifest(self) -> None:
        mpath = self.dir / MANIFEST
        if mpath.exists():
            old = read_json_file(mpath, kind="run manifest")
            keys = sorted(k for k in self.manifest if k != "cai_version" and old.get(k) != self.manifest[k])
            if keys and not self._holds_records():  # nothing to protect: a corrected rerun starts afresh
                write_json_atomic(mpath, self.manifest)
            elif keys:
                raise fail(
                    str(mpath),
                    None,
                    keys[0],
                    f"this folder holds a run with different settings ({', '.join(keys)}); "
                    "use another --out folder to start a new run",
                )
        else:
            write_json_atomic(mpath, self.manifest)

    def _holds_records(self) -> bool:
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def _repair(self) -> None:
        """Cut a torn last line so that appends start on a fresh line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW)
                try:
                    os.ftruncate(fd, keep)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as e:
                raise write_error(self.path, e) from None

    def __contains__(self, record_id: str) -> bool:
        return record_id in self.ids

    def get(self, record_id: str) -> dict[str, Any] | None:
        k = self.ids.get(record_id)
        return None if k is None else self.records[k]

    def append(self, records: Iterable[dict[str, Any]], *, retry: Iterable[str] = ()) -> int:
        """Append the records whose ids are new, or listed in `retry` (failed records being
        redone: written with ``retried`` one higher, replacing the old record), in one write;
        returns how many were written.

        A failed write (a full disk) is cut back off the file and becomes a one-line error; the
        store is unchanged, so a rerun after freeing space redoes exactly that work.
        """
        redo = set(retry)
        fresh = []
        seen: set[str] = set()
        for r in records:
            if r["id"] in seen or (r["id"] in self.ids and r["id"] not in redo):
                continue
            seen.add(r["id"])
            old = self.get(r["id"])
            fresh.append({**r, "retried": int(old.get("retried", 0)) + 1} if old is not None else r)
        if not fresh:
            return 0
        blob = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in fresh).encode()
        append_bytes(self.path, blob)
        for r in fresh:
            k = self.ids.get(r["id"])
            if k is None:
                self.ids[r["id"]] = len(self.records)
                self.records.append(r)
            else:
                self.records[k] = r
                self.retried += 1
        return len(fresh)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)


def dedupe(lines: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Records unique by id, in first-seen order; a retried record replaces the one it redid.
    Returns (records, duplicates dropped)."""
    out: list[dict[str, Any]] = []
    where: dict[str, int] = {}
    dropped = 0
    for r in lines:
        k = where.get(r["id"])
        if k is None:
            where[r["id"]] = len(out)
            out.append(r)
        elif int(r.get("retried", 0)) > int(out[k].get("retried", 0)):
            out[k] = r
        else:
            dropped += 1
    return out, dropped


def append_bytes(path: Path, blob: bytes) -> None:
    """Append in one go and fsync; on failure cut the file back to its old length."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise write_error(path, e) from None
    finally:
        os.close(fd)


def parse_shard(text: str | None) -> tuple[int, int]:
    """`i/N` → (i, N); None → (0, 1)."""
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise option_error("--shard", f"expected i/N, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise option_error("--shard", f"need 0 <= i < N, got {text!r}")
    return i, n
