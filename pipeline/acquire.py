"""Stage `acquire@<source>`: one corpus as a few large artifacts plus `manifest.parquet` and `skipped.parquet`.

Usage: python -m pipeline.acquire <source>

Sources that are rendered or copied (music21, local) are stored in Parquet shards and their folder is swapped
in whole when done. Downloaded sources (maestro, lakh, bitmidi) keep what they fetched as the artifact: their
folder persists between runs (`persist: true` in dvc.yaml), so a killed download resumes from its `.part`, a
verified archive is never fetched twice, and only the manifest is rewritten.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline import params as P
from pipeline.atomic import atomic_path, write_parquet
from pipeline.cli import run_stage
from pipeline.http import Client, HttpConfig
from pipeline.manifest import MANIFEST, META_COLUMNS, SKIPPED, Item, Skip, make_id
from pipeline.shards import ShardWriter

RAW = Path("data/raw")
DOWNLOADED = ("maestro", "lakh", "bitmidi")
KEEP = {"manifest.parquet", "skipped.parquet"}


def source_entries(source: str, p: P.Params, out_dir: Path) -> Iterable[Item | Skip]:
    max_bytes = int(p.data.max_file_mb * 2**20)
    h = p.data.http
    http = Client(HttpConfig(h.user_agent, h.timeout_s, h.retries, h.backoff_s))
    if source == "music21":
        from pipeline.sources.music21_corpus import iter_corpus

        m = p.data.music21
        return iter_corpus(m.composers, m.max_files, workers=os.cpu_count() or 1)
    if source == "local":
        from pipeline.sources.local import iter_local

        return iter_local(p.data.local.path, max_bytes)
    if source == "maestro":
        from pipeline.sources.maestro import iter_maestro

        return iter_maestro(p.data.maestro.url, p.data.maestro.checksum, http, out_dir, max_bytes)
    if source == "lakh":
        from pipeline.sources.lakh import iter_lakh

        return iter_lakh(p.data.lakh.url, p.data.lakh.checksum, http, out_dir, max_bytes)
    if source == "bitmidi":
        from pipeline.sources.bitmidi import BitmidiConfig, iter_bitmidi

        b = p.data.bitmidi
        polite = Client(HttpConfig(b.user_agent, h.timeout_s, h.retries, h.backoff_s, b.requests_per_second))
        cfg = BitmidiConfig(b.base_url, b.max_files, b.page_size, b.respect_robots, b.user_agent)
        return iter_bitmidi(cfg, polite, out_dir, max_bytes)
    raise ValueError(f"unknown source {source!r}")


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
    p = P.load()
    if source not in p.data.sources:
        sys.exit(f"acquire: source {source!r} is not in data.sources {p.data.sources}")
    max_bytes = int(p.data.max_file_mb * 2**20)
    out = RAW / source
    if source in DOWNLOADED:
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
    print(f"acquire {source}: {manifest.num_rows} MIDI files ({len(stored)} with bytes, {mb:.1f} MB) -> {out}; "
          f"skipped {skipped.num_rows}" + (f" {dict(reasons)}" if reasons else ""))


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
