"""The convert stage and the training loader, measured against the obvious alternatives in one run.

Usage: PYTHONPATH=. python benchmarks/represent_speed.py [--files 5000] [--baseline-files 300] [--workers 2]

1. Convert throughput (files/s, notes/s) on the shared Lakh and pop files replicated to --files byte-unique
   files, piano rolls and tokens, against pretty_midi's get_piano_roll on the same beat grid (parse + roll),
   over the same worker count on --baseline-files files.
2. Bytes on disk per 1,000 frames of the piano-roll shards against a dense uint8 .npy of the same rolls
   (sustain plane only, n_keys bytes per frame), on the distinct shared files (replicas would flatter the
   compression).
3. Loader batches/s (train windows, train.batch_size, transposition on) against the train step's batches/s
   (DeepMusician-size model: 2-layer GRU 256, forward + backward + AdamW step) on the same batches.
A progress bar on stderr counts these steps (ticked between the timed parts, never inside one; prepare and convert
draw their own bars below it); the last line on stdout sums up the run.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_speed import SHARED, build, corpus, files_per_second  # noqa: E402

from pipeline import convert, prepare  # noqa: E402
from pipeline import params as P  # noqa: E402

STEPS = ("prepare", "convert pianoroll", "convert tokens", "pretty_midi baseline", "loader", "train step",
         "storage")  # main()'s parts, in order


def say(line: str) -> None:
    """Print a line to stdout, clearing the progress bars around it."""
    with tqdm.external_write_mode():
        print(line)


def params(workers: int, **represent) -> P.Params:
    return P.parse({"data": {"sources": ["local"], "local": {"path": "x"}}, "prepare": {"workers": workers},
                    "filter": {"instruments": ["all"]}, "dedupe": {"content": False, "by_title": False},
                    "represent": represent})


def prepared(workdir: Path, blobs: list[bytes], p: P.Params) -> None:
    build(workdir, blobs)
    os.chdir(workdir)
    prepare.run(p, Path("data/prepared"))


def run_convert(p: P.Params) -> tuple[float, dict, Path]:
    out = Path("data/processed") / p.represent.kind
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t = time.perf_counter()
    meta = convert.run(p, out)
    dt = time.perf_counter() - t
    meta.write(out / "meta.json")
    return dt, meta, out


def pretty_midi_roll(data: bytes) -> int:
    import pretty_midi

    warnings.filterwarnings("ignore")
    try:
        pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception:
        return 0
    beats = pm.get_beats()
    if len(beats) < 2:
        return 0
    grid = np.interp(np.arange(0, len(beats) - 1, 0.25), np.arange(len(beats)), beats)  # 4 steps per beat
    return int(pm.get_piano_roll(times=grid).shape[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--baseline-files", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=60)
    args = ap.parse_args()
    blobs = corpus(args.files)
    print(f"corpus: {len(blobs)} byte-unique files ({sum(map(len, blobs)) / 1e6:.0f} MB); {args.workers} workers "
          f"on {os.cpu_count()} cores")

    bar = tqdm(total=len(STEPS), desc="represent_speed", unit="step", mininterval=1)

    def begin(part: str) -> None:
        """Tick off the parts before `part` (one of STEPS) and name it on the bar."""
        bar.update(STEPS.index(part) - bar.n)
        bar.set_postfix_str(part)

    with tempfile.TemporaryDirectory() as tmp:
        begin("prepare")
        prepared(Path(tmp), blobs, params(args.workers))
        rates = {}
        for kind in ("pianoroll", "tokens"):
            begin(f"convert {kind}")
            p = params(args.workers, kind=kind, tokenizer="REMI")
            dt, meta, out = run_convert(p)
            files = len({r for r in pq.read_table("data/prepared/selected.parquet",
                                                  columns=["file"]).column(0).to_pylist()})
            notes = sum(meta.notes.values())
            rates[kind] = files / dt
            say(f"convert {kind:9s}: {files / dt:7.0f} files/s, {notes / dt / 1e6:5.2f} M notes/s "
                f"({len(meta.parts)} shards)")

        begin("pretty_midi baseline")
        base = files_per_second(pretty_midi_roll, blobs[: args.baseline_files], args.workers)
        say(f"pretty_midi get_piano_roll equivalent: {base:7.1f} files/s -> piano-roll convert is "
            f"{rates['pianoroll'] / base:.0f}x faster")

        # 3. loader against the train step, on the replicated corpus's piano rolls
        begin("loader")
        p = params(args.workers, kind="pianoroll")
        run_convert(p)
        from torch.utils.data import DataLoader

        from pipeline.dataset import Split, Windows, data_dir
        from pipeline.model import Config, Seq2Seq

        torch.set_num_threads(os.cpu_count() or 1)
        t_ = p.train
        split = Split(data_dir(), "train")
        w = Windows(split, t_.seq_len, t_.stride, shuffle=True, seed=0, transpose=(-3, 3))
        loader_rate = {}
        for workers in (0, 1):
            loader = iter(DataLoader(w, batch_size=t_.batch_size, num_workers=workers))
            next(loader)
            t = time.perf_counter()
            batches = [next(loader) for _ in range(args.batches)]
            loader_rate[workers] = args.batches / (time.perf_counter() - t)
            say(f"loader ({workers} workers): {loader_rate[workers]:7.1f} batches/s of "
                f"{t_.batch_size} x {2 * t_.seq_len} frames x {w.meta.features} features")
        begin("train step")
        model = Seq2Seq(Config(n_features=w.meta.features, n_keys=w.meta.n_keys, hidden=p.model.hidden,
                               layers=p.model.layers, dropout=p.model.dropout, seq_len=t_.seq_len))
        opt = torch.optim.AdamW(model.parameters())
        from pipeline import losses

        def step(x, y):
            loss = losses.focal(model(x, y), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        step(*batches[0])
        t = time.perf_counter()
        for x, y in batches[:20]:
            step(x, y)
        train_rate = 20 / (time.perf_counter() - t)
        say(f"train step: {train_rate:7.1f} batches/s (hidden 256, 2 layers, CPU threads "
            f"{torch.get_num_threads()})")

    # 2. storage, on the distinct shared files
    begin("storage")
    distinct = sorted({p.read_bytes() for p in SHARED.rglob("*.mid") if "broken" not in p.parts})
    with tempfile.TemporaryDirectory() as tmp:
        p = params(args.workers, kind="pianoroll")
        prepared(Path(tmp), distinct, p)
        _, meta, out = run_convert(p)
        frames = sum(meta.frames.values())
        size = sum(f.stat().st_size for f in out.glob("*.parquet"))
        dense = frames * meta.n_keys + 128 * sum(meta.sequences.values())
        say(f"storage on {sum(meta.sequences.values())} distinct sequences ({frames} frames): "
            f"{size / frames * 1000:7.0f} bytes per 1,000 frames vs dense uint8 .npy {dense / frames * 1000:7.0f} "
            f"(1/{dense / size:.0f})")
    bar.update(len(STEPS) - bar.n)
    bar.close()
    print(json.dumps({"convert_files_per_s": {k: round(v) for k, v in rates.items()}}))
    print(f"represent_speed: convert {rates['pianoroll']:.0f} files/s to piano rolls ({rates['pianoroll'] / base:.0f}x "
          f"pretty_midi), {rates['tokens']:.0f} to tokens, on {len(blobs)} files with {args.workers} workers; loader "
          f"{loader_rate[0]:.1f} batches/s against {train_rate:.1f} train steps/s ({loader_rate[0] / train_rate:.0f}x "
          f"headroom); shards 1/{dense / size:.0f} of dense rolls")


if __name__ == "__main__":
    main()
