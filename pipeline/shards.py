"""MIDI bytes kept as a few large Parquet shards instead of one file (and one DVC output) per MIDI."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([("id", pa.string()), ("data", pa.binary())])
SHARD_BYTES = 256 << 20
ROWS_PER_GROUP = 256


class ShardWriter:
    """Append (id, bytes) rows; start a new shard when the current one passes `max_bytes`."""

    def __init__(self, out_dir: Path, prefix: str = "midi", max_bytes: int = SHARD_BYTES):
        self.out_dir, self.prefix, self.max_bytes = Path(out_dir), prefix, max_bytes
        self._writer: pq.ParquetWriter | None = None
        self._rows: list[tuple[str, bytes]] = []
        self._index = -1
        self._size = 0

    @property
    def current(self) -> str:
        return f"{self.prefix}-{self._index:05d}.parquet"

    def add(self, id: str, data: bytes) -> str:
        """Store one file; return the name of the shard that holds it."""
        if self._writer is None or self._size >= self.max_bytes:
            self._roll()
        self._rows.append((id, data))
        self._size += len(data)
        if len(self._rows) >= ROWS_PER_GROUP:
            self._flush()
        return self.current

    def _flush(self) -> None:
        if self._rows and self._writer is not None:
            ids, blobs = zip(*self._rows)
            self._writer.write_table(pa.table([pa.array(ids), pa.array(blobs, pa.binary())], schema=SCHEMA))
            self._rows = []

    def _roll(self) -> None:
        self.close()
        self._index += 1
        self._size = 0
        self._writer = pq.ParquetWriter(self.out_dir / self.current, SCHEMA, compression="zstd")

    def close(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_shard(path: Path, wanted: set[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """Stream (id, bytes) from one shard, a row group at a time."""
    f = pq.ParquetFile(path)
    for batch in f.iter_batches(columns=["id", "data"], batch_size=ROWS_PER_GROUP):
        ids = batch.column(0).to_pylist()
        if wanted is None or all(i in wanted for i in ids):
            yield from zip(ids, batch.column(1).to_pylist())
        else:
            blobs = batch.column(1)
            for i, id_ in enumerate(ids):
                if id_ in wanted:
                    yield id_, blobs[i].as_py()
