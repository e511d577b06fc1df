"""Stage `evaluate`: metrics on the test split, each beside trivial baselines on the same windows.

Protocols on the same windows (seq_len frames of input, the next seq_len frames as target):
- next_frame (piano rolls): the decoder sees the true previous frames (teacher forcing), the classic protocol;
- continuation: the model continues the input window on its own output, as in generation; token models have
  their output decoded to notes on the grid, so the figures mean the same for both representations;
- next_token (tokens): teacher-forced next-token NLL and accuracy, beside the training set's token frequencies.
Every predictor is scored at `evaluate.threshold` and at the threshold `calibrate` chose on valid ("_tuned").
Baselines: repeat_last (the last frame again) and pitch_frequency (each key at its training frequency).
`versus_repeat_last` holds the model's margins over repeat_last: a negative one means the model lost.
`music` compares statistics of the `generate` samples with as many real test windows of the same length.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import distributions, music, music_plot, representations, runtime
from pipeline import params as P
from pipeline.atomic import write_json
from pipeline.baselines import PROTOCOLS
from pipeline.checkpoint import load_model
from pipeline.cli import run_stage
from pipeline.contracts import read_calibration
from pipeline.dataset import Split, data_dir
from pipeline.paths import EVAL, MUSIC_PNG, PR_CURVE, SAMPLE_INDEX
from pipeline.rollout import reservoir, window_notes


def real_windows(test: Split, frames: int, n: int, seed: int) -> list:
    """`n` test windows of `frames` frames, drawn uniformly (reservoir sampling: the split is streamed)."""
    sequences = tqdm(test.notes(), total=sum(map(len, test.lengths)), desc="evaluate (real windows)",
                     unit="sequence", mininterval=1)
    tiles = ((notes, a) for _, notes in sequences
             for a in range(0, notes.n_frames - frames + 1, frames))  # tiled, non-overlapping
    chosen, _ = reservoir(tiles, n, np.random.default_rng(seed))
    return [window_notes(notes, a, a + frames) for notes, a in chosen]


def music_section(test: Split, index: list[dict], seed: int, picture: Path) -> dict:
    """The samples' statistics beside those of as many real test windows of the same length: means and gaps,
    and (`distributions`) how far their distributions overlap, after Yang & Lerch 2020 (see distributions.py);
    the histograms behind the latter are drawn to `picture`."""
    grid, frames = test.meta.grid, index[0]["generated_frames"]
    real = [music.describe(w, grid, frames) for w in real_windows(test, frames, len(index), seed)]
    generated = [s["music"] for s in index]
    dist = distributions.distributions(generated, real)
    music_plot.write_png(picture, generated, real, dist, music.NAMES)
    return {"samples": len(index), "silent_samples": sum(s["generated_notes"] == 0 for s in index),
            "real_windows": len(real), "frames": frames,
            **music.compare(generated, real), "distributions": dist}


def margins(report: dict) -> dict:
    """How far the model is ahead of repeat_last (F1: higher is better; NLL: lower is better)."""
    out = {}
    for pr in PROTOCOLS:
        if "model" not in report.get(pr, {}):
            continue
        m, b = report[pr]["model"], report[pr]["repeat_last"]
        out[f"{pr}_f1"] = m["f1"] - b["f1"]
        out[f"{pr}_onset_f1"] = m["onset_f1"] - b["onset_f1"]
        if m.get("nll_per_frame") is not None:
            out[f"{pr}_nll"] = b["nll_per_frame"] - m["nll_per_frame"]
    return out


def main() -> None:
    start = time.perf_counter()
    p = P.load()
    runtime.setup(p.seed)
    d = data_dir()
    test, train = Split(d, "test"), Split(d, "train")
    model = load_model(test.meta)
    cal = read_calibration()
    if not SAMPLE_INDEX.exists():
        raise FileNotFoundError(f"{SAMPLE_INDEX} is missing: run `dvc repro generate` first")
    index = json.loads(SAMPLE_INDEX.read_text())["samples"]
    L, device, fixed = model.cfg.seq_len, runtime.device(p.train.device), p.evaluate.threshold
    result, n_windows, rows = representations.of(test.meta.kind).evaluate(model, test, train, cal, fixed,
                                                                           p.evaluate.batch_size, device)
    report = {"kind": test.meta.kind, "test_windows": n_windows, "window_frames": L,
              "thresholds": {"fixed": fixed, "tuned": cal["threshold"], "tuned_valid_f1": cal["valid_f1"],
                             "pitch_frequency_tuned": cal["baselines"]["frequency_threshold"]},
              **result, "music": music_section(test, index, p.seed, MUSIC_PNG)}
    report["versus_repeat_last"] = margins(report)
    write_json(EVAL, report)
    write_json(PR_CURVE, rows)
    c, cb = result["continuation"]["model"], result["continuation"]["repeat_last"]
    lost = [k for k, v in report["versus_repeat_last"].items() if v <= 0]
    if lost:  # before the closing line, which stays the stage's last
        print(f"WARNING: the model does not beat repeat-last on {', '.join(lost)}")
    ms = report["music"]
    print(f"evaluate: {n_windows} test windows ({test.meta.kind}) in {time.perf_counter() - start:.0f} s; "
          f"continuation F1 {c['f1']:.3f} (repeat-last {cb['f1']:.3f}), density {c['density_pred']:.2f} "
          f"(true {c['density_true']:.2f}); music of {ms['samples']} samples beside {ms['real_windows']} real "
          f"windows -> {EVAL}, {PR_CURVE}, {MUSIC_PNG}")


if __name__ == "__main__":
    run_stage(main)
