"""Stage `acquire@<source>`: one corpus as a few large artifacts plus `manifest.parquet` and `skipped.parquet`.

Usage: python -m pipeline.acquire <source>

The sources are those of `pipeline/sources/registry.py`. A source that renders or copies (`downloads` false:
music21, local) is stored in Parquet shards and its folder is swapped in whole when done. A downloading source
(maestro, lakh, bitmidi) keeps what it fetched as the artifact: its folder persists between runs (`persist: true`
in dvc.yaml), so a killed download resumes from its `.part`, a verified archive is never fetched twice, and only
the manifest is rewritten.
"""
from __future__ import annotations

import hashlib
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline import params as P
from pipeline.atomic import atomic_path, write_parquet
from pipeline.cli import run_stage
from pipeline.manifest import MANIFEST, META_COLUMNS, SKIPPED, Item, Skip, make_id
from pipeline.shards import ShardWriter
from pipeline.sources.base import Context
from pipeline.sources.registry import REGISTRY

RAW = Path("data/raw")
KEEP = {"manifest.parquet", "skipped.parquet"}


def source_entries(source: str, p: P.Params, out_dir: Path) -> Iterable[Item | Skip]:
    """The registered source's entries for its data.<source> params, with artifacts written under `out_dir`."""
    if source not in REGISTRY:
        raise ValueError(f"unknown source {source!r}")
    ctx = Context(out_dir, int(p.data.max_file_mb * 2**20), p.data.http)
    return REGISTRY[source].entries(getattr(p.data, source), ctx)


def store(source: str, entries: Iterable[Item | Skip], out_dir: Path, max_bytes: int) -> tuple[pa.Table, pa.Table]:
    """Record entries (writing shards for bytes that have no artifact yet); return (manifest, skipped)."""
    rows, skipped = [], []
    seen: set[str] = set()

    def skip(e, reason: str, message: str) -> None:
        skipped.append(dict(id=make_id(source, e.member), source=source, member=e.member, stage="acquire",
                            reason=reason, message=message))

    with ShardWriter(out_dir) as shards:
        for e in tqdm(entries, desc=f"acquire {source}", unit="file", mininterval=1):
            id_ = make_id(source, e.member)
            if id_ in seen:  # two members with one name (possible in a tar): keep the first
                skip(e, "duplicate_name", "a member of the same name came earlier")
                continue
            seen.add(id_)
            if isinstance(e, Skip):
                skip(e, e.reason, e.message)
            elif e.data is not None and len(e.data) > max_bytes:
                skip(e, "too_large", f"{len(e.data)} bytes is over the data.max_file_mb cap")
            else:
                has = e.data is not None
                rows.append(dict(
                    id=id_, source=source, member=e.member,
                    artifact=(e.artifact or shards.add(id_, e.data)) if has else None,
                    md5=hashlib.md5(e.data).hexdigest() if has else None, bytes=len(e.data) if has else None,
                    **{k: e.meta.get(k) for k in META_COLUMNS},
                ))
    rows.sort(key=lambda r: r["id"])
    return pa.Table.from_pylist(rows, MANIFEST), pa.Table.from_pylist(skipped, SKIPPED)


def prune(out_dir: Path, manifest: pa.Table) -> None:
    """Drop files of earlier runs that the new manifest no longer points at (a changed URL, say)."""
    keep = KEEP | {a for a in manifest.column("artifact").to_pylist() if a}
    for path in out_dir.iterdir():
        if path.name not in keep and not path.name.endswith(".part"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m pipeline.acquire <source>")
    source = argv[0]
    start = time.perf_counter()
    p = P.load()
    if source not in p.data.sources:
        sys.exit(f"acquire: source {source!r} is not in data.sources {p.data.sources}")
    max_bytes = int(p.data.max_file_mb * 2**20)
    out = RAW / source
    if REGISTRY[source].downloads:
        out.mkdir(parents=True, exist_ok=True)
        manifest, skipped = store(source, source_entries(source, p, out), out, max_bytes)
        write_parquet(out / "skipped.parquet", skipped)
        write_parquet(out / "manifest.parquet", manifest)
        prune(out, manifest)
    else:
        with atomic_path(out) as tmp:
            tmp.mkdir(parents=True)
            manifest, skipped = store(source, source_entries(source, p, tmp), tmp, max_bytes)
            pq.write_table(manifest, tmp / "manifest.parquet", compression="zstd")
            pq.write_table(skipped, tmp / "skipped.parquet", compression="zstd")
    if manifest.num_rows == 0:
        raise SystemExit(f"acquire {source}: no MIDI file could be taken ({skipped.num_rows} skipped)")
    reasons = Counter(skipped.column("reason").to_pylist())
    stored = [a for a in manifest.column("artifact").to_pylist() if a]
    mb = sum(b for b in manifest.column("bytes").to_pylist() if b) / 1e6
    print(f"acquire {source}: {manifest.num_rows} MIDI files ({len(stored)} with bytes, {mb:.1f} MB) in "
          f"{time.perf_counter() - start:.0f} s -> {out}; skipped {skipped.num_rows}"
          + (f" {dict(reasons)}" if reasons else ""))


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
