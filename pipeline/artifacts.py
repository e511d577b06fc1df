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
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

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

    def __len__(self) -> int:
        return len(self.ids)


def iter_batches(raw_dir: Path, rows: Iterable[dict]) -> Iterator[Batch]:
    """Batches of the manifest rows that have an artifact, one artifact at a time in name order."""
    groups: dict[str, dict[str, str]] = defaultdict(dict)  # artifact -> member -> id
    for row in rows:
        if row.get("artifact"):
            groups[row["artifact"]][row["member"]] = row["id"]
    for artifact in sorted(groups):
        path = str(Path(raw_dir) / artifact)
        wanted = groups[artifact]
        name = artifact.lower()
        if name.endswith(".parquet"):
            ids_wanted = set(wanted.values())
            f = pq.ParquetFile(path)
            for g in range(f.num_row_groups):
                ids = f.read_row_group(g, columns=["id"], use_threads=False).column(0).to_pylist()
                if picked := tuple(i for i in ids if i in ids_wanted):
                    yield Batch(path, picked, row_group=g)
        elif name.endswith(".zip"):
            members = sorted(wanted)
            for k in range(0, len(members), BATCH_FILES):
                part = tuple(members[k:k + BATCH_FILES])
                yield Batch(path, tuple(wanted[m] for m in part), members=part)
        elif name.endswith(TAR_SUFFIXES):
            ids, blobs, size = [], [], 0
            with tarfile.open(path, mode="r|*") as tf:
                for info in tf:
                    if info.name in wanted and info.isfile():
                        ids.append(wanted[info.name])
                        blobs.append(tf.extractfile(info).read())
                        size += len(blobs[-1])
                        if len(ids) == BATCH_FILES or size >= BATCH_BYTES:
                            yield Batch(path, tuple(ids), blobs=tuple(blobs))
                            ids, blobs, size = [], [], 0
            if ids:
                yield Batch(path, tuple(ids), blobs=tuple(blobs))
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


def iter_bytes(raw_dir: Path, rows: Iterable[dict]) -> Iterator[tuple[str, bytes]]:
    """Yield (id, bytes) for manifest rows that have an artifact, one artifact at a time in name order."""
    for batch in iter_batches(raw_dir, rows):
        yield from read_batch(batch)
