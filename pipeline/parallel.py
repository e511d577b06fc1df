"""Order-preserving parallel map that streams, and survives a worker killed by the OS.

At most a few chunks are in flight, so memory stays flat. When a worker dies (out of memory, a crash in C++
code), the pool breaks for every task in it: the chunk that was being collected is re-run one item at a time,
each in a fresh pool, so the item that kills its worker is found and handed to `on_crash`; the chunks that were
lost with the old pool are submitted again.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def n_workers(requested: int) -> int:
    return requested if requested > 0 else (os.cpu_count() or 1)


def isolated(fn: Callable[[T], R], items: Iterable[T], on_crash: Callable[[T], R]) -> Iterator[R]:
    """fn(x) for each item, each in a fresh one-process pool: the item that kills its process gets on_crash(x)."""
    for x in items:
        pool = ProcessPoolExecutor(max_workers=1)
        try:
            yield pool.submit(fn, x).result()
        except BrokenProcessPool:
            yield on_crash(x)
        finally:
            pool.shutdown(wait=True)


def _run_chunk(fn: Callable[[T], R], chunk: list[T]) -> list[R]:
    return [fn(x) for x in chunk]


def _submit(pool: ProcessPoolExecutor, fn: Callable[[T], R], chunk: list[T]):
    """The chunk's future, or None where the pool broke (a worker died) since the last result was collected:
    the chunk then waits for the next pool, as those lost with the old pool do."""
    try:
        return pool.submit(_run_chunk, fn, chunk)
    except BrokenProcessPool:
        return None


def imap(fn: Callable[[T], R], items: Iterable[T], workers: int, chunk: int = 32,
         on_crash: Callable[[T], R] | None = None) -> Iterator[R]:
    """Like map(fn, items), in order, over `workers` processes (in-process when workers == 1)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    it = iter(items)
    pool = ProcessPoolExecutor(max_workers=workers)
    pending: deque = deque()
    try:
        while True:
            while len(pending) < 4 * workers and (batch := list(islice(it, chunk))):
                pending.append((batch, _submit(pool, fn, batch)))
            if not pending:
                return
            batch, future = pending.popleft()
            try:
                if future is None:
                    raise BrokenProcessPool("the pool broke before this chunk was submitted")
                results = future.result()
            except BrokenProcessPool:
                if on_crash is None:
                    raise
                pool.shutdown(wait=False, cancel_futures=True)
                results = list(isolated(fn, batch, on_crash))
                pool = ProcessPoolExecutor(max_workers=workers)
                pending = deque((b, _submit(pool, fn, b)) for b, _ in pending)
            yield from results
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
