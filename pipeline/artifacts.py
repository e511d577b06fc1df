"""Read MIDI bytes back from whatever artifact acquire kept: Parquet shards, a zip, or a tarball.

Manifest rows name their artifact (a file in data/raw/<source>/) and member. Archives are never extracted:
zip members are read by name; a tarball is streamed once, front to back, picking the wanted members.
Members were vetted when the manifest was made, so only names listed there are ever read.

The bytes come in batches. A batch of a shard or a zip only names where its files lie (a row group, a list of
members), so a worker process can read and decompress them itself and the main process ships a few names,
not megabytes; a tarball can only be streamed, so its batches carry their bytes.
"""
from __future__ import annotations

import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.archive import TAR_SUFFIXES

BATCH_FILES = 256            # a shard's row group (shards.ROWS_PER_GROUP); as many zip or tar members
BATCH_BYTES = 32 << 20       # a tar batch carries at most this much, so big files don't pile up in memory


@dataclass(frozen=True)
class Batch:
    path: str
    ids: tuple[str, ...]
    row_group: int | None = None      # a shard's row group
    members: tuple[str, ...] = ()     # zip members, in the order of ids
    blobs: tuple[bytes, ...] = ()     # tar members' bytes, in the order of ids
    rows: tuple[int, ...] = ()        # each file's row number in the table given to iter_batches

    def __len__(self) -> int:
        return len(self.ids)


Rows = Union[pa.Table, Iterable[dict]]  # manifest rows: a table, or dicts, with id, artifact and member


def _as_table(rows: Rows) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows
    rows = list(rows)
    return pa.table({k: pa.array([r.get(k) for r in rows], pa.string()) for k in ("id", "artifact", "member")})


def iter_batches(raw_dir: Path, rows: Rows, chosen: np.ndarray | None = None) -> Iterator[Batch]:
    """Batches of the manifest rows that have an artifact, one artifact at a time in name order, each artifact's
    files by member name. `chosen`: the row numbers to read ((k,) ints, ascending, each once; every row where
    None). Each batch's `rows` are its files' row numbers in `rows`. Raises ValueError where `chosen` is not
    ascending row numbers (a boolean mask would be read as rows 0 and 1).

    The table is never copied whole: it costs 16 bytes a row here (each row's artifact code and their order), and
    only one artifact's rows are taken out and held as Python strings at a time, so a web-scale manifest given as
    a table stays in Arrow's compact columns and the memory grows with the largest artifact, not the corpus."""
    rows = _as_table(rows)
    if chosen is not None:
        chosen = np.asarray(chosen)
        if chosen.dtype.kind not in "iu" or (chosen[1:] <= chosen[:-1]).any() or (
                len(chosen) and not 0 <= chosen[0] <= chosen[-1] < rows.num_rows):
            raise ValueError(f"iter_batches: `chosen` must be ascending row numbers of the {rows.num_rows} rows, "
                             "each once")
    numbers = np.arange(rows.num_rows, dtype=np.int64) if chosen is None else chosen.astype(np.int64)
    column = rows.column("artifact")
    encoded = pc.dictionary_encode(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    names = encoded.dictionary.to_pylist()
    codes = pc.fill_null(encoded.indices, -1).to_numpy()[numbers]  # -1: no artifact
    order = np.argsort(codes, kind="stable")
    starts = np.r_[0, np.cumsum(np.bincount(codes + 1, minlength=len(names) + 1))]  # each code's run in order
    listed = rows.select(["member", "id"])
    for code in sorted(range(len(names)), key=names.__getitem__):  # Python orders str as Arrow orders UTF-8
        at = numbers[order[starts[code + 1]:starts[code + 2]]]
        if not names[code] or not len(at):
            continue
        part = listed.take(pa.array(at)).append_column("row", pa.array(at)).sort_by("member")
        yield from _artifact_batches(Path(raw_dir) / names[code], part.column("member").to_pylist(),
                                     part.column("id").to_pylist(), part.column("row").to_pylist())


def _artifact_batches(path: Path, members: list[str], ids: list[str], numbers: list[int]) -> Iterator[Batch]:
    """One artifact's batches of the wanted files (`members`, sorted, with their ids and row numbers)."""
    name, path = path.name.lower(), str(path)
    if name.endswith(".parquet"):
        wanted = dict(zip(ids, numbers))
        f = pq.ParquetFile(path)
        for g in range(f.num_row_groups):
            got = f.read_row_group(g, columns=["id"], use_threads=False).column(0).to_pylist()
            if picked := tuple(i for i in got if i in wanted):
                yield Batch(path, picked, row_group=g, rows=tuple(wanted[i] for i in picked))
    elif name.endswith(".zip"):
        for k in range(0, len(members), BATCH_FILES):
            yield Batch(path, tuple(ids[k:k + BATCH_FILES]), members=tuple(members[k:k + BATCH_FILES]),
                        rows=tuple(numbers[k:k + BATCH_FILES]))
    elif name.endswith(TAR_SUFFIXES):
        wanted = {m: (i, n) for m, i, n in zip(members, ids, numbers)}
        picked, blobs, size = [], [], 0
        with tarfile.open(path, mode="r|*") as tf:
            for info in tf:
                if info.name in wanted and info.isfile():
                    picked.append(wanted.pop(info.name))  # the first member of a name, as acquire kept it
                    blobs.append(tf.extractfile(info).read())
                    size += len(blobs[-1])
                    if len(picked) == BATCH_FILES or size >= BATCH_BYTES:
                        yield Batch(path, tuple(i for i, _ in picked), blobs=tuple(blobs),
                                    rows=tuple(n for _, n in picked))
                        picked, blobs, size = [], [], 0
        if picked:
            yield Batch(path, tuple(i for i, _ in picked), blobs=tuple(blobs), rows=tuple(n for _, n in picked))
    else:
        raise ValueError(f"{path}: unknown artifact type")


def read_batch(batch: Batch) -> Iterator[tuple[str, bytes]]:
    """(id, bytes) for each file of a batch, in its order."""
    if batch.row_group is not None:
        table = pq.ParquetFile(batch.path).read_row_group(batch.row_group, columns=["id", "data"], use_threads=False)
        ids, data = table.column(0).to_pylist(), table.column(1)
        if len(ids) == len(batch.ids):
            yield from zip(ids, data.to_pylist())
        else:
            wanted = set(batch.ids)
            for k, id_ in enumerate(ids):
                if id_ in wanted:
                    yield id_, data[k].as_py()
    elif batch.members:
        with zipfile.ZipFile(batch.path) as zf:
            for id_, member in zip(batch.ids, batch.members):
                yield id_, zf.read(member)
    else:
        yield from zip(batch.ids, batch.blobs)


def iter_bytes(raw_dir: Path, rows: Rows) -> Iterator[tuple[str, bytes]]:
    """Yield (id, bytes) for manifest rows that have an artifact, one artifact at a time in name order."""
    for batch in iter_batches(raw_dir, rows):
        yield from read_batch(batch)
