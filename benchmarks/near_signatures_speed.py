"""The near-duplicate signatures' speed per file: the reference (numpy and datasketch) against the C pass
(pipeline/near_signatures.c), on the same files in one run.

Usage: python benchmarks/near_signatures_speed.py [MIDI_DIR] [--runs N]
Default MIDI_DIR is ../shared/data/midi/lakh (every .mid below it). Each file's parts are the ones prepare passes
to `signatures` (its pitched parts: drums by prepare's instrument inference left out), read once before timing.
Each path signs every file once per run; the figures are the median of N runs (default 7), single process, so
per core, in microseconds per file: `signatures_reference`, and `signatures` with the C pass (its Python side
included: the checks, the concatenation, the ctypes call). Also printed: the mean parts, notes and distinct
shingles per file, and whether both paths gave the same signatures on every file (the tests check it too:
tests/test_near_duplicates.py). Prints figures; it is not a test.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from pipeline import gm, native, smf
from pipeline import near_duplicates as N
from pipeline.instruments import infer, is_choral

KEY = N.NearKey(intervals=6, num_perm=256, threshold=0.3)  # params.yaml's dedupe.near


def prepare_parts(song: smf.Song) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (onsets, pitches) of the parts prepare signs: every part its instrument inference does not call
    drums (as pipeline.prepare._inspect does)."""
    choral = is_choral([p.name for p in song.parts])
    return [(p.start, p.pitch) for p in song.parts
            if infer(p.program, p.on_drum_channel, p.name, choral).family != gm.DRUMS]


def median_seconds(fn, files: list, runs: int) -> float:
    """The median over `runs` of the time to call fn(parts, KEY) on every file once, in seconds."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        for parts in files:
            fn(parts, KEY)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/data/midi/lakh"))
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    files = []
    for p in sorted(Path(args.root).rglob("*.mid")):
        try:
            files.append(prepare_parts(smf.read(p.read_bytes())))
        except Exception:  # noqa: BLE001 -- time the files read() accepts
            continue
    if not files:
        raise SystemExit(f"no readable .mid file under {args.root}")
    if not native.enabled(N.NEAR_SIGNATURES) or native.load(N.NEAR_SIGNATURES) is None:
        raise SystemExit("no C signature pass here (PIPELINE_NEAR_NATIVE=0, or see the warning above): "
                         "nothing to compare")
    same = all(np.array_equal(N.signatures(f, KEY), N.signatures_reference(f, KEY)) for f in files)
    n = len(files)
    shingles = [len(N._shingle_sets(f, KEY.intervals)[1]) for f in files]
    print(f"{n} files: {sum(map(len, files)) / n:.1f} pitched parts, "
          f"{sum(len(p) for f in files for _, p in f) / n:,.0f} notes and {sum(shingles) / n:,.0f} distinct "
          f"shingles per file; num_perm {KEY.num_perm}; median of {args.runs} runs, one process")
    ref = median_seconds(N.signatures_reference, files, args.runs)
    c = median_seconds(N.signatures, files, args.runs)
    print(f"reference (numpy + datasketch): {ref / n * 1e6:7.1f} us/file")
    print(f"C (near_signatures.c):          {c / n * 1e6:7.1f} us/file   {ref / c:.1f}x faster")
    print(f"the same signatures on every file: {same}")


if __name__ == "__main__":
    main()
