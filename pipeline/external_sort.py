"""Rows sorted in bounded memory: an external merge sort over Arrow tables.

Rows are appended in any order. They are gathered into small Arrow tables; every `run_bytes` of them is sorted
and written to a temporary file as Arrow IPC record batches (a sorted run). `tables()` then merges the runs,
reading each `read_rows` rows at a time and at most `fan_in` runs at once (more are first merged into longer
runs), so the process holds about one run's worth of rows plus `fan_in` x `read_rows` rows however many rows there
are (Knuth, TAOCP vol. 3, 5.4: external sorting by merging sorted runs).

The order is the stable sort by `keys` ascending, nulls first, exactly as `pyarrow.compute.sort_indices` gives it
over all rows at once (ties keep the order rows were appended in), so the result does not depend on `run_bytes`.
"""
from __future__ import annotations

import bisect
import os
import tempfile
from typing import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc


def _sort(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    return table.take(pc.sort_indices(table, [(k, "ascending", "at_start") for k in keys]))


def _key(v) -> tuple:
    # Arrow's order with nulls at the start: null, then NaN (before any number), then values; strings compare by
    # code point in Python and by UTF-8 bytes in Arrow, the same order
    if v is None:
        return (0,)
    if v != v:  # NaN, which compares false with everything in Python
        return (1,)
    return (2, v)


def _key_tuples(table: pa.Table, keys: Sequence[str]) -> list[tuple]:
    """Each row's keys as a tuple that Python orders as Arrow's sort does (_key)."""
    columns = [table.column(k).to_pylist() for k in keys]
    return [tuple(_key(v) for v in row) for row in zip(*columns)]


class _Run:
    """One sorted run in the spill file, read a batch (`read_rows` rows) at a time."""

    def __init__(self, fd: int, batches: list[tuple[int, int]], schema: pa.Schema, keys: Sequence[str]) -> None:
        self._fd, self._batches, self._schema, self._keys, self._next = fd, batches, schema, keys, 0
        self.rows: pa.Table | None = None
        self.key: list[tuple] = []  # the loaded rows' key tuples
        self.load()

    def load(self) -> None:
        """The next batch, if any (rows is None once the run is spent)."""
        if self._next == len(self._batches):
            self.rows, self.key = None, []
            return
        offset, size = self._batches[self._next]
        self._next += 1
        message = pa.py_buffer(os.pread(self._fd, size, offset))
        self.rows = pa.Table.from_batches([pa.ipc.read_record_batch(message, self._schema)])
        self.key = _key_tuples(self.rows, self._keys)

    @property
    def more_on_disk(self) -> bool:
        return self._next < len(self._batches)

    def take(self, n: int) -> pa.Table:
        """The first n loaded rows, removed (the next batch loaded when none are left)."""
        head = self.rows.slice(0, n)
        self.rows, self.key = self.rows.slice(n), self.key[n:]
        if not self.rows.num_rows:
            self.load()
        return head


class ExternalSort:
    """Rows of `schema` sorted by `keys` (column names) in bounded memory.

    append/extend rows, then iterate `tables()` once for every row in order, in tables of about `run_bytes` each.
    Memory: up to `run_bytes` of appended rows (Arrow) plus `batch_rows` rows as Python dicts while appending; up
    to `read_rows` rows of each of at most `fan_in` runs while merging (more runs are first merged `fan_in` at a
    time into longer ones, a pass over the spilled rows each time). The runs go to one anonymous temporary file
    (its name unlinked when it is made: nothing is left behind, even by a killed process), closed by close() or
    the context manager.

    Raises ValueError for a sort key that is not a column, and for dictionary-encoded columns (a record batch
    spilled alone does not carry its dictionaries)."""

    def __init__(self, schema: pa.Schema, keys: Sequence[str], *, run_bytes: int = 1 << 20,
                 batch_rows: int = 512, read_rows: int = 128, fan_in: int = 64) -> None:
        missing = [k for k in keys if k not in schema.names]
        if missing:
            raise ValueError(f"ExternalSort: sort keys {missing} are not columns of the schema")
        encoded = [f.name for f in schema if pa.types.is_dictionary(f.type)]
        if encoded:
            raise ValueError(f"ExternalSort: dictionary-encoded columns {encoded} cannot be spilled as bare record "
                             "batches: cast them to their value type")
        if fan_in < 2:
            raise ValueError(f"ExternalSort: fan_in must be at least 2, got {fan_in}")
        self.schema, self.keys = schema, list(keys)
        self.run_bytes, self.batch_rows, self.read_rows, self.fan_in = run_bytes, batch_rows, read_rows, fan_in
        self._dicts: list[dict] = []
        self._tables: list[pa.Table] = []
        self._bytes = 0
        self._file = None  # the spill file, made at the first run
        self._runs: list[list[tuple[int, int]]] = []  # each run's record batches: (offset, size) in the file
        self.num_rows = 0
        self.runs_spilled = 0  # the sorted runs written before merging

    def __enter__(self) -> "ExternalSort":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def append(self, row: dict) -> None:
        """One row, a dict by column name (absent columns are null)."""
        self._dicts.append(row)
        if len(self._dicts) >= self.batch_rows:
            self._gather()

    def extend(self, table: pa.Table) -> None:
        """Rows already in a table with this schema's columns (in any order)."""
        self._gather()
        self._add(table.select(self.schema.names).cast(self.schema))

    def _gather(self) -> None:
        if self._dicts:
            rows, self._dicts = self._dicts, []
            self._add(pa.Table.from_pylist(rows, self.schema))

    def _add(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        self.num_rows += table.num_rows
        self._tables.append(table)
        self._bytes += table.nbytes
        if self._bytes >= self.run_bytes:
            self._spill()

    def _spill(self) -> None:
        """The gathered rows, sorted, as the next run in the spill file."""
        run = _sort(pa.concat_tables(self._tables), self.keys)
        self._tables, self._bytes = [], 0
        self._runs.append(self._write_run([run]))
        self.runs_spilled += 1

    def _write_run(self, tables: Iterable[pa.Table]) -> list[tuple[int, int]]:
        """Sorted tables, in order, as one run in the spill file (its record batches as IPC messages): the
        batches' (offset, size)."""
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="external-sort-")
        batches = []
        for t in tables:
            for b in t.to_batches(max_chunksize=self.read_rows):
                if b.num_rows:
                    message = b.serialize()
                    batches.append((self._file.seek(0, os.SEEK_END), message.size))
                    self._file.write(message)
        self._file.flush()
        return batches

    def tables(self) -> Iterator[pa.Table]:
        """Every row appended, in order, as tables of about run_bytes (none when no row was appended)."""
        self._gather()
        if not self._runs:  # everything fits in one run: sorted here, nothing written
            if self._tables:
                yield _sort(pa.concat_tables(self._tables), self.keys)
            self._tables, self._bytes = [], 0
            return
        if self._tables:
            self._spill()
        while len(self._runs) > self.fan_in:  # a pass that merges fan_in runs at a time into longer runs
            self._runs = [self._write_run(self._merge(self._runs[i:i + self.fan_in]))
                          for i in range(0, len(self._runs), self.fan_in)]
        out, size = [], 0
        for step in self._merge(self._runs):
            out.append(step)
            size += step.nbytes
            if size >= self.run_bytes:
                yield pa.concat_tables(out).combine_chunks()
                out, size = [], 0
        if out:
            yield pa.concat_tables(out).combine_chunks()

    def _merge(self, spilled: list[list[tuple[int, int]]]) -> Iterator[pa.Table]:
        """The rows of the given runs, in order, a step at a time."""
        runs = [_Run(self._file.fileno(), batches, self.schema, self.keys) for batches in spilled]
        while True:
            live = [(i, r) for i, r in enumerate(runs) if r.rows is not None]
            if not live:
                return
            # the frontier: the least (last loaded key, run) among runs with rows still on disk; every row not
            # loaded yet comes after it in (key, run) order, so every loaded row up to it can go out now
            waiting = [(r.key[-1], i) for i, r in live if r.more_on_disk]
            frontier = min(waiting) if waiting else None
            parts = []
            for i, r in live:
                if frontier is None:
                    n = r.rows.num_rows
                elif i <= frontier[1]:  # ties with the frontier's key go out from runs appended before it
                    n = bisect.bisect_right(r.key, frontier[0])
                else:
                    n = bisect.bisect_left(r.key, frontier[0])
                while n:  # a run whose loaded rows all go out may have more of them in its next batch
                    parts.append(r.take(n))
                    if r.rows is None or frontier is None:
                        break
                    n = (bisect.bisect_right(r.key, frontier[0]) if i <= frontier[1]
                         else bisect.bisect_left(r.key, frontier[0]))
            # parts in run order, then a stable sort: ties keep the order they were appended in
            yield _sort(pa.concat_tables(parts), self.keys) if len(parts) > 1 else parts[0]
