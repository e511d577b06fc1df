"""Where a piano-roll model loses the empty beats of its data: free-running against teacher-forced sampling.

Usage: python benchmarks/empty_beats.py [--model models/model.pt] [--temperatures 1.0,0.9]

On every test window of 32 + 64 frames (one every 32 frames), with Bernoulli sampling at each temperature (draws
seeded): the statistics of 64 free-running frames after the 32 real ones (as `generate` writes them), beside the
real 64 frames, and the empty-beat rate (MusPy's: the share of beats in which no note starts) of 64 frames each
sampled given the true frames before it (teacher-forced, a model window of seq_len frames at a time, each from
the true seq_len frames before it). A model whose teacher-forced rate is already far below
the real one does not know where the data holds a beat; one that is close there and far free-running drifts on
its own output. Needs `make repro` (or `dvc repro train`) done first; run by hand, about a minute on 2 cores.
Progress bars on stderr; the last line on stdout sums up the empty-beat rates.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline import music
from pipeline.checkpoint import load_model
from pipeline.dataset import Split, data_dir, window_starts
from pipeline.pianoroll import densify
from pipeline.representations.pianoroll import roll_notes
from pipeline.rollout import continue_roll
from pipeline.sampling import Sampler

SEED, AHEAD, STRIDE = 32, 64, 32  # frames: the seed, what is generated after it, between window starts
SHOWN = ("notes", "pitches_used", "pitch_class_entropy", "polyphony", "empty_beat_rate")


def means(frames: torch.Tensor, grid) -> dict:
    """Per statistic of SHOWN, its mean over the windows `frames` (windows, frames, features)."""
    d = [music.describe(roll_notes(f.numpy().astype(bool), grid.n_keys), grid, f.shape[0]) for f in frames]
    return {k: float(np.nanmean([s[k] for s in d])) for k in SHOWN}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("models/model.pt"))
    ap.add_argument("--temperatures", default="1.0")
    args = ap.parse_args()
    test = Split(data_dir(), "test")
    grid, k, on = test.meta.grid, test.meta.n_keys, test.meta.onsets
    model = load_model(test.meta, args.model).eval()
    if model.cfg.seq_len > SEED:
        raise SystemExit(f"empty_beats: the model reads {model.cfg.seq_len} frames; this measure seeds {SEED}")
    x, y = [], []
    for _, notes in tqdm(test.notes(), total=sum(map(len, test.lengths)), desc="empty_beats: test windows",
                         unit="sequence", mininterval=1):
        for a in window_starts(notes.n_frames, (SEED + AHEAD) // 2, STRIDE):
            x.append(densify(notes, k, a, a + SEED, onsets=on))
            y.append(densify(notes, k, a + SEED, a + SEED + AHEAD, onsets=on))
    x, y = torch.tensor(np.stack(x)).float(), torch.tensor(np.stack(y)).float()
    real = means(y, grid)
    print(f"{len(x)} test windows; real: " + ", ".join(f"{n} {v:.3f}" for n, v in real.items()))
    temperatures = [float(v) for v in args.temperatures.split(",")]
    bar = tqdm(total=2 * len(temperatures), desc="empty_beats: sampling", unit="pass", mininterval=1)
    rates = []
    for t in temperatures:
        sampler = Sampler("bernoulli", 0.5, t, 8, False, k, torch.Generator().manual_seed(1))
        with torch.no_grad():
            bar.set_postfix_str(f"temperature {t}, free-running")
            free = means(continue_roll(model, x, AHEAD, sampler), grid)
            bar.update()
            bar.set_postfix_str(f"temperature {t}, teacher-forced")
            # teacher-forced over the horizon the model is trained on: each seq_len-frame half from the true
            # seq_len frames before it, as continue_roll generates a window at a time
            L, whole = model.cfg.seq_len, torch.cat([x, y], 1)
            parts = [model.decode(whole[:, SEED + a - L:SEED + a], y[:, a:a + L], sampler) for a in range(0, AHEAD, L)]
            forced = means(torch.cat(parts, 1), grid)["empty_beat_rate"]
            bar.update()
        gaps = ", ".join(f"{n} {(v - real[n]) / real[n]:+.1%}" for n, v in free.items() if n != "empty_beat_rate")
        tqdm.write(f"temperature {t}: free-running {gaps}, empty beats {free['empty_beat_rate']:.3f}; "
                   f"teacher-forced sampled empty beats {forced:.3f} (real {real['empty_beat_rate']:.3f})")
        rates.append(f"temperature {t}: free-running {free['empty_beat_rate']:.3f}, teacher-forced {forced:.3f}")
    bar.close()
    print(f"empty_beats: empty-beat rate over {len(x)} test windows, real {real['empty_beat_rate']:.3f}; "
          + "; ".join(rates))


if __name__ == "__main__":
    main()
