"""Fixed work units shared by the data stages.

Prompts are cut into chunks of `batch_size` in input order; shard i of N takes the chunks whose
index is i mod N. A chunk is always generated as one batch with seeds derived from its index,
so a resumed, sharded or uninterrupted run computes exactly the same batches and therefore the
same outputs, even on backends whose results depend on batch composition (padding).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


def chunks_for_shard(
    items: Sequence[T], batch_size: int, shard: tuple[int, int]
) -> Iterator[tuple[int, int, Sequence[T]]]:
    """Yield (chunk index, offset of its first item, items) for this shard."""
    i, n = shard
    for c, start in enumerate(range(0, len(items), batch_size)):
        if c % n == i:
            yield c, start, items[start : start + batch_size]


def shard_size(n_items: int, batch_size: int, shard: tuple[int, int]) -> int:
    i, n = shard
    return sum(min(batch_size, n_items - s) for c, s in enumerate(range(0, n_items, batch_size)) if c % n == i)


class _Records(Protocol):
    """What a resumable loop needs of a store: membership and the record an id holds."""

    def __contains__(self, record_id: object) -> bool: ...
    def get(self, record_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Pending(Generic[T]):
    """One chunk of this shard and the work it still needs: the ids of its units missing from the
    store, or failed there when failed records are retried."""

    index: int
    offset: int
    items: Sequence[T]
    positions: list[int]  # where in the chunk's unit order the units still to do stand
    todo: list[str]  # their ids, in that order
    retry: list[str]  # the part of `todo` already in the store: failed records to replace


def pending_chunks(
    items: Sequence[T],
    batch_size: int,
    shard: tuple[int, int],
    store: _Records,
    ids_of: Callable[[int, Sequence[T]], list[str]],
    failed: Callable[[dict[str, Any] | None], bool] | None,
) -> Iterator[Pending[T]]:
    """The resumable loop every data stage runs: each chunk of this shard with its units still to
    do (`ids_of(chunk index, chunk)` gives every unit's id, known before any model call), so a
    resumed run does only what is missing and, when `failed` is given, redoes what failed."""
    for ci, offset, chunk in chunks_for_shard(items, batch_size, shard):
        ids = ids_of(ci, chunk)
        positions = [k for k, i in enumerate(ids) if i not in store or (failed is not None and failed(store.get(i)))]
        todo = [ids[k] for k in positions]
        yield Pending(ci, offset, chunk, positions, todo, [i for i in todo if i in store])
