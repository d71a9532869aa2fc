"""Fixed work units shared by the data stages.

Prompts are cut into chunks of `batch_size` in input order; shard i of N takes the chunks whose
index is i mod N. A chunk is always generated as one batch with seeds derived from its index,
so a resumed, sharded or uninterrupted run computes exactly the same batches and therefore the
same outputs, even on backends whose results depend on batch composition (padding).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

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
