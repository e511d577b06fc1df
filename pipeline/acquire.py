"""Stage `acquire@<source>`: store one corpus as Parquet shards of MIDI bytes plus `manifest.parquet`.

Usage: python -m pipeline.acquire <source>
"""
from __future__ import annotations

import hashlib
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable

import pyarrow as pa
from tqdm import tqdm

from pipeline import params as P
from pipeline.cli import run_stage
from pipeline.atomic import atomic_path
from pipeline.manifest import MANIFEST, SKIPPED, Item, Skip, make_id
from pipeline.shards import ShardWriter

RAW = Path("data/raw")


def source_entries(source: str, p: P.Params) -> Iterable[Item | Skip]:
    max_bytes = int(p.data.max_file_mb * 2**20)
    if source == "music21":
        from pipeline.sources.music21_corpus import iter_corpus

        m = p.data.music21
        return iter_corpus(m.composers, m.max_files, workers=os.cpu_count() or 1)
    if source == "local":
        from pipeline.sources.local import iter_local

        return iter_local(p.data.local.path, max_bytes)
    raise ValueError(f"unknown source {source!r}")


def store(source: str, entries: Iterable[Item | Skip], out_dir: Path, max_bytes: int) -> tuple[pa.Table, pa.Table]:
    """Write entries into shards under out_dir; return (manifest, skipped) tables."""
    rows, skipped = [], []
    seen: set[str] = set()
    with ShardWriter(out_dir) as shards:
        for e in tqdm(entries, desc=f"acquire {source}", unit="file", mininterval=1):
            id_ = make_id(source, e.member)
            if id_ in seen:  # two members with one name (possible in tar): keep the first
                skipped.append(dict(id=id_, source=source, member=e.member, stage="acquire",
                                    reason="duplicate_name", message="a member of the same name came earlier"))
                continue
            seen.add(id_)
            if isinstance(e, Skip):
                skipped.append(dict(id=id_, source=source, member=e.member, stage="acquire",
                                    reason=e.reason, message=e.message))
            elif len(e.data) > max_bytes:
                skipped.append(dict(id=id_, source=source, member=e.member, stage="acquire", reason="too_large",
                                    message=f"{len(e.data)} bytes is over the data.max_file_mb cap"))
            else:
                artifact = shards.add(id_, e.data)
                rows.append(dict(
                    id=id_, source=source, artifact=artifact, member=e.member,
                    md5=hashlib.md5(e.data).hexdigest(), bytes=len(e.data),
                    title=e.meta.get("title"), composer=e.meta.get("composer"),
                    license=e.meta.get("license"), split=e.meta.get("split"),
                ))
    return pa.Table.from_pylist(rows, MANIFEST), pa.Table.from_pylist(skipped, SKIPPED)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m pipeline.acquire <source>")
    source = argv[0]
    p = P.load()
    if source not in p.data.sources:
        sys.exit(f"acquire: source {source!r} is not in data.sources {p.data.sources}")
    max_bytes = int(p.data.max_file_mb * 2**20)
    import pyarrow.parquet as pq

    with atomic_path(RAW / source) as tmp:
        tmp.mkdir(parents=True)
        manifest, skipped = store(source, source_entries(source, p), tmp, max_bytes)
        if manifest.num_rows == 0:
            raise SystemExit(f"acquire {source}: no MIDI file could be taken ({skipped.num_rows} skipped)")
        pq.write_table(manifest, tmp / "manifest.parquet", compression="zstd")
        pq.write_table(skipped, tmp / "skipped.parquet", compression="zstd")
    reasons = Counter(skipped.column("reason").to_pylist())
    mb = sum(manifest.column("bytes").to_pylist()) / 1e6
    print(f"acquire {source}: {manifest.num_rows} MIDI files ({mb:.1f} MB) -> {RAW / source}; "
          f"skipped {skipped.num_rows}" + (f" {dict(reasons)}" if reasons else ""))


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
