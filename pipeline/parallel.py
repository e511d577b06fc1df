"""Order-preserving parallel map that streams: at most a few chunks are in flight, so memory stays flat."""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def n_workers(requested: int) -> int:
    return requested if requested > 0 else (os.cpu_count() or 1)


def _run_chunk(fn: Callable[[T], R], chunk: list[T]) -> list[R]:
    return [fn(x) for x in chunk]


def imap(fn: Callable[[T], R], items: Iterable[T], workers: int, chunk: int = 16) -> Iterator[R]:
    """Like map(fn, items), in order, over `workers` processes (in-process when workers == 1)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    it = iter(items)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        while True:
            while len(pending) < 2 * workers and (batch := list(islice(it, chunk))):
                pending.append(pool.submit(_run_chunk, fn, batch))
            if not pending:
                return
            yield from pending.popleft().result()
