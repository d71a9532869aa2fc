"""Append-only JSONL record stores that survive `kill -9` at any instant.

A store is ``DIR/records.jsonl`` plus ``DIR/run.json`` (the settings that produced it). Each
record has an ``id`` derived from its inputs. Writes append whole lines in one `write` and
fsync, so after a kill the file holds complete records followed by at most one torn line, which
`open` detects and cuts off; the work it belonged to is redone and the ids already present are
skipped, so nothing is lost and nothing is written twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cai import __version__
from cai.errors import fail
from cai.io.readers import iter_jsonl

RECORDS = "records.jsonl"
MANIFEST = "run.json"


def content_hash(*parts: Any, length: int = 16) -> str:
    """A stable hash of JSON-serialisable inputs (key order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from a base seed and labels, so each unit of work has its own RNG stream."""
    return int(content_hash(*parts, length=8), 16) & 0x7FFFFFFF


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """A store file's complete records ([] before the first write).

    The torn last line a killed writer leaves is not an error: see `iter_jsonl`'s
    ``committed_only``; `Store` also cuts it off the file so that appends start on a fresh line.
    """
    if not path.exists():
        return []
    return [rec for _, rec in iter_jsonl(path, committed_only=True)]


class Store:
    """One stage's records in one folder, with its manifest."""

    def __init__(self, directory: str | Path, manifest: dict[str, Any]):
        self.dir = Path(directory)
        self.path = self.dir / RECORDS
        self.manifest = {**manifest, "cai_version": __version__}
        self.dir.mkdir(parents=True, exist_ok=True)
        self._check_manifest()
        self._repair()
        self.records: list[dict[str, Any]] = read_jsonl(self.path)
        self.ids = {r["id"] for r in self.records}

    def _check_manifest(self) -> None:
        mpath = self.dir / MANIFEST
        if mpath.exists():
            old = json.loads(mpath.read_text())
            keys = sorted(k for k in self.manifest if k != "cai_version" and old.get(k) != self.manifest[k])
            if keys:
                raise fail(
                    str(mpath),
                    None,
                    keys[0],
                    f"this folder holds a run with different settings ({', '.join(keys)}); "
                    "use another --out folder to start a new run",
                )
        else:
            tmp = mpath.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.manifest, indent=2, sort_keys=True))
            os.replace(tmp, mpath)

    def _repair(self) -> None:
        """Cut a torn last line so that appends start on a fresh line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())

    def __contains__(self, record_id: str) -> bool:
        return record_id in self.ids

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Append the records whose ids are new, in one write; returns how many were written."""
        fresh = []
        for r in records:
            if r["id"] in self.ids:
                continue
            self.ids.add(r["id"])
            fresh.append(r)
        if not fresh:
            return 0
        blob = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in fresh)
        with open(self.path, "ab") as f:
            f.write(blob.encode())
            f.flush()
            os.fsync(f.fileno())
        self.records.extend(fresh)
        return len(fresh)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)


def parse_shard(text: str | None) -> tuple[int, int]:
    """`i/N` → (i, N); None → (0, 1)."""
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise fail("--shard", None, "shard", f"expected i/N, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise fail("--shard", None, "shard", f"need 0 <= i < N, got {text!r}")
    return i, n


def merge_stores(dirs: list[Path], out: Path) -> int:
    """Merge shard folders into one, ordered as an unsharded run would write them."""
    manifests = [json.loads((d / MANIFEST).read_text()) for d in dirs]
    base = {k: v for k, v in manifests[0].items() if k not in ("shard",)}
    for d, m in zip(dirs, manifests, strict=True):
        other = {k: v for k, v in m.items() if k not in ("shard",)}
        if other != base:
            diff = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
            raise fail(str(d / MANIFEST), None, diff[0], "shards were made with different settings")
    records: dict[str, dict[str, Any]] = {}
    for d in dirs:
        for r in read_jsonl(d / RECORDS):
            records.setdefault(r["id"], r)
    ordered = sorted(records.values(), key=lambda r: (r.get("order", 0), r["id"]))
    store = Store(out, {**base, "shard": "merged"})
    return store.append(ordered)
