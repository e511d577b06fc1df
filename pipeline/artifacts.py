"""Read MIDI bytes back from whatever artifact acquire kept: Parquet shards, a zip, or a tarball.

Manifest rows name their artifact (a file in data/raw/<source>/) and member. Archives are never extracted:
zip members are read by name; a tarball is streamed once, front to back, picking the wanted members.
Members were vetted when the manifest was made, so only names listed there are ever read.
"""
from __future__ import annotations

import tarfile
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator

from pipeline.archive import TAR_SUFFIXES
from pipeline.shards import iter_shard


def iter_bytes(raw_dir: Path, rows: Iterable[dict]) -> Iterator[tuple[str, bytes]]:
    """Yield (id, bytes) for manifest rows that have an artifact, one artifact at a time in name order."""
    groups: dict[str, dict[str, str]] = defaultdict(dict)  # artifact -> member -> id
    for row in rows:
        if row.get("artifact"):
            groups[row["artifact"]][row["member"]] = row["id"]
    for artifact in sorted(groups):
        path = Path(raw_dir) / artifact
        wanted = groups[artifact]
        name = artifact.lower()
        if name.endswith(".parquet"):
            yield from iter_shard(path, set(wanted.values()))
        elif name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                for member in sorted(wanted):
                    yield wanted[member], zf.read(member)
        elif name.endswith(TAR_SUFFIXES):
            with tarfile.open(path, mode="r|*") as tf:
                for info in tf:
                    if info.name in wanted and info.isfile():
                        yield wanted[info.name], tf.extractfile(info).read()
        else:
            raise ValueError(f"{path}: unknown artifact type")
