"""What each quality filter's default rejects on real files, and how the timing classes fall.

Usage: python benchmarks/quality_filters.py [--corpus ../shared/data/midi]

Runs the `local` source and `prepare` (params.yaml's values, the local path changed) on every MIDI file under
--corpus in a temporary workspace, then prints, for each quality filter, its value and every file it rejected
with the measure, and the share of tracks in each timing class per top folder (quantised sequencer files,
expressive performances). These are the figures behind the defaults in params.yaml (docs/data-quality.md).
Run by hand (about half a minute on the shared corpus), not by the tests. A progress bar on stderr counts the
stages run; the last line on stdout sums up what the quality filters rejected.
"""
from __future__ import annotations

import argparse
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
from near_duplicates import ROOT, run_prepare
from tqdm import tqdm

from pipeline.prepare import FILTER_REASONS

QUALITY = ("min_pitch_class_entropy", "max_silence_beats", "max_notes_per_beat", "min_chunk_divergence",
           "max_instruments")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "midi")
    args = ap.parse_args()
    if not args.corpus.is_dir():
        raise SystemExit(f"no folder {args.corpus} (the shared corpus is absent from a plain clone)")
    with tempfile.TemporaryDirectory(prefix="quality-filters-") as tmp:
        with tqdm(total=2, desc="quality_filters", unit="stage", mininterval=1) as bar:
            run_prepare(Path(tmp) / "work", args.corpus, progress=bar)
        prepared = Path(tmp) / "work" / "data" / "prepared"
        rejects = pq.read_table(prepared / "rejects.parquet").to_pylist()
        selected = pq.read_table(prepared / "selected.parquet", columns=["id", "timing"]).to_pylist()
    reasons = Counter(r["reason"] for r in rejects)
    kept, rejected = len({r['id'] for r in selected}), sum(r['track'] is None for r in rejects)
    print(f"{kept} files kept, {rejected} rejected ({dict(sorted(reasons.items()))})")
    by_filter = {}
    for key in QUALITY:
        hits = [r for r in rejects if r["reason"] == FILTER_REASONS[key]]
        by_filter[key] = len(hits)
        print(f"filter.{key}: rejects {len(hits)}")
        for r in hits:
            print(f"    {r['id'].removeprefix('local/')}: {r['message']}")
    timing: dict[str, Counter] = defaultdict(Counter)
    for r in selected:
        timing[r["id"].split("/")[1]].update(r["timing"])
    print("timing classes of the kept tracks, per folder:")
    for folder, c in sorted(timing.items()):
        total = sum(c.values())
        print(f"    {folder:16s} {total:5d} tracks: " + ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(c.items())))
    print(f"quality_filters: {sum(by_filter.values())} rejected by the quality filters ("
          + ", ".join(f"{k} {v}" for k, v in by_filter.items()) + f"); {kept} files kept, {rejected} rejected in all, "
          f"under {args.corpus}")


if __name__ == "__main__":
    main()
