"""The prepare stage at scale: throughput against a pretty_midi equivalent, and peak memory as the corpus grows.

Usage: python benchmarks/prepare_speed.py [--files 5000] [--baseline-files 300] [--workers 2] [--near-copies]
       [--distinct-songs] [--no-near]

The shared Lakh and pop files are replicated to --files files, each made byte-unique (an extra track with one
text event) so that no replica is skipped by the md5 dedupe and every one is parsed. Measured in one run:
  1. prepare.run, the whole stage (read shards, md5, parse + content hash + instrument filter in a process pool,
     dedupe and grouping), at 1/5, 1/2 and all of the corpus, each in a fresh process for its peak RSS;
  2. the same per-file work done with pretty_midi (parse, the same content hash, the same filter), over the
     same worker count, on --baseline-files files (pretty_midi is too slow for all of them), before and after 1.;
     the ratio is against their mean.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "midi"


def unique(data: bytes, k: int) -> bytes:
    text = f"replica {k}".encode()
    event = b"\x00\xff\x01" + bytes([len(text)]) + text + b"\x00\xff\x2f\x00"
    ntracks = struct.unpack(">H", data[10:12])[0]
    return data[:10] + struct.pack(">H", ntracks + 1) + data[12:] + b"MTrk" + struct.pack(">I", len(event)) + event


def near_copy(data: bytes, k: int) -> bytes:
    """Replica k as a different transcription of the same song would be: every pitched part transposed by
    1 + k % 11 semitones and one note of it (which depends on k) left out, so its content hash differs from every
    other replica's and only the near-duplicate level can join it to them."""
    from symusic import Score

    score = Score.from_midi(data)
    for t in score.tracks:
        if not t.is_drum and len(t.notes):
            t.shift_pitch(1 + k % 11, inplace=True)
            notes = list(t.notes)
            del notes[k % len(notes)]
            t.notes = notes
    return score.dumps_midi()


def distinct_copy(base: list[bytes], k: int, cluster: int = 4) -> bytes:
    """Replica k as one of `cluster` versions of a song of its own: song k // cluster is a base file with its
    pitch classes permuted (a permutation drawn per round through the base files, the identity in the first), so
    songs differ in their intervals and the near-duplicate level keeps them apart; each version after the first
    is transposed and has one note left out. Every file is selected and the pairs grow with the files, not with
    their square, as in a real corpus (LMD holds a few versions of a song, not hundreds)."""
    from symusic import Note, Score

    song, version = divmod(k, cluster)
    rounds, b = divmod(song, len(base))
    cls = np.random.default_rng(rounds).permutation(12) if rounds else np.arange(12)
    score = Score.from_midi(base[b])
    for t in score.tracks:
        if t.is_drum or not len(t.notes):
            continue
        a = t.notes.numpy()
        pitch = a["pitch"].astype(np.int64)
        pitch = np.clip(pitch // 12 * 12 + cls[pitch % 12] + version, 0, 127)
        keep = np.arange(len(pitch)) != (k % len(pitch) if version else -1)
        t.notes = Note.from_numpy(a["time"][keep], a["duration"][keep], pitch[keep].astype(np.int8),
                                  a["velocity"][keep], "tick")
    return score.dumps_midi()


def corpus(n: int, near_copies: bool = False, distinct: bool = False) -> list[bytes]:
    from symusic import Score

    base = []
    for f in sorted(SHARED.glob("lakh/**/*.mid")) + sorted(SHARED.glob("pop_multitrack/*.mid")):
        data = f.read_bytes()
        try:
            Score.from_midi(unique(data, 0))
        except Exception:
            continue
        base.append(data)
    if near_copies:
        return [unique(near_copy(base[k % len(base)], k), k) for k in range(n)]
    if distinct:
        return [unique(distinct_copy(base, k), k) for k in range(n)]
    return [unique(base[k % len(base)], k) for k in range(n)]


def build(workdir: Path, blobs: list[bytes]) -> None:
    from pipeline.acquire import store
    from pipeline.manifest import Item

    out = workdir / "data/raw/local"
    out.mkdir(parents=True)
    manifest, skipped = store("local", (Item(f"f{k:06d}.mid", b) for k, b in enumerate(blobs)), out, 1 << 30)
    pq.write_table(manifest, out / "manifest.parquet")
    pq.write_table(skipped, out / "skipped.parquet")


def _peak_kb() -> int:
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))


def run_stage(workdir: Path, workers: int, near: bool = True) -> dict:
    """prepare.run in this process (called in a child for a clean peak RSS)."""
    # A child started from the big parent inherits the parent's peak RSS at exec (the kernel carries it over
    # from the borrowed address space), which once made the parent's corpus look like the stage's memory:
    # reset it, and count the pool's workers apart.
    Path("/proc/self/clear_refs").write_text("5")
    os.chdir(workdir)
    from pipeline import params as P
    from pipeline import prepare

    prepare.use_system_allocator()  # as the stage's main does
    p = P.parse({"data": {"sources": ["local"], "local": {"path": "x"}}, "prepare": {"workers": workers},
                 **({} if near else {"dedupe": {"near": {"threshold": 0}}})})
    t = time.perf_counter()
    report = prepare.run(p, workdir / "out")
    dt = time.perf_counter() - t
    deadline = time.time() + 10
    while multiprocessing.active_children() and time.time() < deadline:  # reap the pool to read its peaks
        time.sleep(0.05)
    return {"seconds": dt, "files": report["files"]["acquired"], "peak_rss_mb": _peak_kb() / 1024,
            "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "selected": report["files"]["selected"], "reasons": report["by_reason"], "near": report["dedupe"]["near"]}


def pretty_midi_inspect(data: bytes) -> dict:
    """prepare's per-file work done with pretty_midi: parse, content hash, instrument filter."""
    import pretty_midi

    warnings.filterwarnings("ignore")
    try:
        pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as e:
        return {"reason": type(e).__name__}
    res = pm.resolution
    onsets, pitches, kept = [], [], 0
    for inst in pm.instruments:
        if not inst.notes:
            continue
        t = np.array([pm.time_to_tick(n.start) for n in inst.notes], dtype=np.float64)
        onsets.append(np.rint(t * 4 / res).astype(np.int64))
        pitches.append(np.array([n.pitch for n in inst.notes]) + (128 if inst.is_drum else 0))
        kept += not inst.is_drum
    if not onsets:
        return {"reason": "no_notes"}
    t, p = np.concatenate(onsets), np.concatenate(pitches)
    t -= t.min()
    pairs = np.unique(t * 512 + p)
    return {"hash": hashlib.sha1(pairs.tobytes()).hexdigest(), "kept": kept}


def files_per_second(fn, blobs: list[bytes], workers: int) -> float:
    """fn over blobs in the stage's process pool (small chunks: the baselines are slow per file)."""
    from tqdm import tqdm

    from pipeline.parallel import imap

    t = time.perf_counter()
    for _ in tqdm(imap(fn, blobs, workers, chunk=4), total=len(blobs), desc=getattr(fn, "__name__", "baseline"),
                  unit="file", mininterval=1):
        pass
    return len(blobs) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--baseline-files", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--near-copies", action="store_true",
                    help="replicas as near-copies (transposed, one note left out): the near-duplicate level's "
                         "stress test, every replica joining the others of its song")
    ap.add_argument("--distinct-songs", action="store_true",
                    help="replicas as distinct songs in versions of 4 (pitch classes permuted per song; each version "
                         "transposed, one note left out): every file selected, pairs linear in the files")
    ap.add_argument("--no-near", action="store_true", help="the near-duplicate level off (dedupe.near.threshold 0)")
    ap.add_argument("--stage-only", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage_only:
        print(json.dumps(run_stage(Path(args.stage_only), args.workers, not args.no_near)))
        return

    blobs = corpus(args.files, args.near_copies, args.distinct_songs)
    print(f"corpus: {len(blobs)} byte-unique files ({sum(map(len, blobs)) / 1e6:.0f} MB) from the shared "
          f"Lakh and pop files; {args.workers} workers on {os.cpu_count()} cores")
    sample = blobs[: args.baseline_files]
    # the baseline before and after the stage's runs: this virtual machine's speed drifts by 10 to 25% over a
    # run, and the mean of the two brackets the stage's time
    before = files_per_second(pretty_midi_inspect, sample, args.workers)
    rates, peaks = {}, {}
    for n in sorted({args.files // 5, args.files // 2, args.files}):
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp), blobs[:n])
            off = ["--no-near"] if args.no_near else []
            out = subprocess.run([sys.executable, __file__, "--stage-only", tmp, "--workers", str(args.workers), *off],
                                 capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
            r = json.loads(out.stdout.strip().splitlines()[-1])
        rates[n], peaks[n] = r["files"] / r["seconds"], r["peak_rss_mb"]
        print(f"prepare stage, {n:6d} files: {rates[n]:7.0f} files/s  peak RSS {r['peak_rss_mb']:6.0f} MB, "
              f"each worker at most {r['worker_peak_rss_mb']:4.0f} MB  "
              f"(selected {r['selected']}; {r['reasons']}; near level {r['near']})")

    after = files_per_second(pretty_midi_inspect, sample, args.workers)
    base = (before + after) / 2
    print(f"pretty_midi equivalent, {len(sample)} files: {base:7.1f} files/s (before the stage's runs {before:.1f}, "
          f"after {after:.1f})")
    lo, hi = min(peaks), max(peaks)
    print(f"prepare_speed: {rates[args.files]:.0f} files/s at {args.files} files, {rates[args.files] / base:.0f}x the "
          f"pretty_midi equivalent; main process {peaks[lo]:.0f} -> {peaks[hi]:.0f} MB from {lo} to {hi} files "
          f"({(peaks[hi] - peaks[lo]) * 1024 / max(hi - lo, 1):.2f} KB a file)")


if __name__ == "__main__":
    main()
