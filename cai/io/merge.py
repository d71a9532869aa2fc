"""`cai merge`: shard folders of one ``--shard i/N`` run become one folder, or nothing at all.

A merge that silently drops work is worse than none: a shard killed half-way, or one whose
records were emptied, would otherwise merge into a folder that looks complete and exports 4 of 8
rows with exit code 0. Shard plans are deterministic (items are cut into chunks of the run's
``batch_size`` in input order, and shard i takes the chunks whose index is i mod N), and each
manifest records the number of items and the batch size, so the merge knows exactly which
records every shard owes and checks, before anything is written:

- every shard of the run is given once, and all were made with the same settings (the
  constitution fingerprint among them);
- every record is well formed (an ``id`` string and an integer ``order``), belongs to its own
  shard's plan, and no work unit is recorded twice;
- every shard holds all the records its plan asks for.

Otherwise one line names the shard and what is missing, and `--out` is left untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cai.errors import fail, file_error
from cai.io.pairs import pairs_from_responses
from cai.io.readers import iter_jsonl, read_json_file
from cai.io.store import MANIFEST, RECORDS, Store, dedupe
from cai.paths import refuse_symlink


def _shard_manifest(d: Path) -> dict[str, Any]:
    path = d / MANIFEST
    if not d.is_dir():
        raise fail(str(d), None, "", "no such shard folder")
    if not path.is_file():
        raise fail(str(d), None, "", f"not a run folder (no {MANIFEST})")
    return read_json_file(path, kind="run manifest")


def _shard_of(d: Path, m: dict[str, Any]) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in str(m.get("shard", "0/1")).split("/"))
    except ValueError:
        raise fail(str(d / MANIFEST), None, "shard", f"not a shard of a run ({m.get('shard')!r})") from None
    if n < 1 or not 0 <= i < n:
        raise fail(str(d / MANIFEST), None, "shard", f"not a shard of a run ({m.get('shard')!r})")
    return i, n


def check_shards(dirs: list[Path], manifests: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Every shard of one `--shard i/N` run, each once: half a run must not pass for a whole."""
    seen: dict[int, Path] = {}
    total = None
    shards = []
    for d, m in zip(dirs, manifests, strict=True):
        i, n = _shard_of(d, m)
        if total is not None and n != total:
            raise fail(str(d / MANIFEST), None, "shard", f"shard {i}/{n} of a {total}-shard run")
        total = n
        if i in seen:
            raise fail(str(d), None, "shard", f"shard {i}/{n} given twice (also {seen[i]})")
        seen[i] = d
        shards.append((i, n))
    missing = [f"{i}/{total}" for i in range(total or 1) if i not in seen]
    if missing:
        raise fail(str(dirs[0]), None, "shard", f"missing shards: {', '.join(missing)}; merge needs all {total}")
    return shards


def _count(m: dict[str, Any], key: str, path: Path) -> int:
    value = m.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "batch_size" else 0):
        raise fail(str(path), None, key, f"{value!r} is not a count; this manifest cannot be checked for a merge")
    return value


def units_per_item(m: dict[str, Any], path: Path) -> int:
    """How many records one input item gives: one per prompt (critique) or given pair (label);
    for a label run that samples its pairs, one per pair of sampled responses."""
    if m.get("stage") == "label" and m.get("policy") is not None and m.get("method") != "rlcd":
        n = _count(m, "responses_per_prompt", path)
        return len(pairs_from_responses(n, str(m.get("pairing") or "all")))
    return 1


def planned_orders(m: dict[str, Any], shard: tuple[int, int], path: Path) -> set[int]:
    """The `order` of every record shard `shard` owes, from the plan its manifest describes."""
    n_items = _count(m, "n_prompts" if m.get("stage") == "critique" else "n_inputs", path)
    batch = _count(m, "batch_size", path)
    per = units_per_item(m, path)
    i, n = shard
    starts = [s for c, s in enumerate(range(0, n_items, batch)) if c % n == i]
    items = [k for start in starts for k in range(start, min(start + batch, n_items))]
    return {k * per + u for k in items for u in range(per)}


def _shard_records(d: Path) -> list[dict[str, Any]]:
    """A shard's complete records; a malformed one is a one-line error naming its line."""
    path = d / RECORDS
    refuse_symlink(path, "merge")
    if not path.exists():
        return []
    rows = []
    for lineno, r in iter_jsonl(path, committed_only=True, require=("id", "order")):
        if not isinstance(r["id"], str) or not r["id"]:
            raise fail(str(path), lineno, "id", "must be a non-empty string")
        if isinstance(r["order"], bool) or not isinstance(r["order"], int):
            raise fail(str(path), lineno, "order", "must be an integer")
        rows.append(r)
    return dedupe(rows)[0]


def check_coverage(d: Path, m: dict[str, Any], shard: tuple[int, int], records: list[dict[str, Any]]) -> None:
    """Shard `shard`'s records are exactly its plan: nothing foreign, nothing twice, nothing missing."""
    where = f"{d / RECORDS}"
    plan = planned_orders(m, shard, d / MANIFEST)
    seen: set[int] = set()
    for r in records:
        if r["order"] not in plan:
            what = f"record {r['id']} (order {r['order']}) is not in shard {shard[0]}/{shard[1]}'s plan"
            raise fail(where, None, "order", what)
        if r["order"] in seen:
            raise fail(where, None, "order", f"work unit {r['order']} recorded twice under different ids")
        seen.add(r["order"])
    missing = len(plan) - len(seen)
    if missing:
        raise fail(
            str(d),
            None,
            "shard",
            f"shard {shard[0]}/{shard[1]} is incomplete: {missing} of {len(plan)} records missing "
            "(killed or cut short?); rerun it with the same command to finish it, then merge",
        )


def merge_stores(dirs: list[Path], out: Path) -> tuple[int, Store]:
    """Merge shard folders into one, ordered as an unsharded run would write them.

    Returns (records written, the merged store, still locked: the caller exports and closes it).
    """
    if not dirs:
        raise fail("merge", None, "", "give the shard folders to merge")
    manifests = [_shard_manifest(d) for d in dirs]
    shards = check_shards(dirs, manifests)
    base = {k: v for k, v in manifests[0].items() if k != "shard"}
    for d, m in zip(dirs, manifests, strict=True):
        other = {k: v for k, v in m.items() if k != "shard"}
        if other != base:
            diff = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
            raise fail(str(d / MANIFEST), None, diff[0], "shards were made with different settings")
    resolved = {d.resolve() for d in dirs}
    if out.resolve() in resolved:
        raise file_error(out, "--out", "is one of the shard folders; merge into a new folder")
    held = out / "records.jsonl"
    if held.is_file() and held.stat().st_size > 0:
        # Appending skips ids already there, so a record a shard has redone since would be kept
        # in its old form: a merge starts from an empty folder.
        raise file_error(out, "--out", "already holds merged records; merge into a new (or empty) folder")
    records = []
    for d, m, shard in zip(dirs, manifests, shards, strict=True):
        rows = _shard_records(d)
        check_coverage(d, m, shard, rows)
        records += rows
    ordered = sorted(records, key=lambda r: (r["order"], r["id"]))
    base.pop("cai_version", None)
    store = Store(out, {**base, "shard": "merged"}, lock=True)
    try:
        return store.append(ordered), store
    except BaseException:
        store.close()
        raise
