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
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import calibrate, distributions, music, music_plot
from pipeline import params as P
from pipeline import runtime
from pipeline.atomic import write_json
from pipeline.baselines import PROTOCOLS, repeat_last, repeat_last_probs
from pipeline.checkpoint import load_model
from pipeline.cli import run_stage
from pipeline.dataset import Split, Windows, data_dir, grid_of, window_starts
from pipeline.metrics import FrameCounts, Sweep, ThresholdGrid, nll_from_logits, nll_from_probs, onsets, sounding
from pipeline.pianoroll import densify
from pipeline.rollout import continue_tokens, reservoir, window_notes

OUT = Path("metrics/eval.json")
PR_CURVE = Path("metrics/pr_curve.json")
MUSIC_PNG = Path("metrics/music_distributions.png")
SAMPLES = Path("data/samples/index.json")


class Truth:
    """A batch's true frames, with what every predictor is scored against computed once."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, k: int):
        self.x, self.y, self.k, self.prev = x, y, k, x[:, -1:]
        self.sounding, self.onsets = sounding(y, k), onsets(y, self.prev, k)

    def add(self, counts: FrameCounts, decided: torch.Tensor, nll: float = 0.0) -> None:
        """Score decided full frames (the same layout as `y`)."""
        counts.add(sounding(decided, self.k), self.sounding, nll, onsets(decided, self.prev, self.k), self.onsets)


def score_baselines(counts, truth: Truth, cal: dict, freq: torch.Tensor, fixed: float, protocols=PROTOCOLS) -> None:
    """`freq`: the per-key training frequencies (calibrate's key_frequency) as a tensor on the batch's device."""
    base, x, y, k = cal["baselines"], truth.x, truth.y, truth.k
    freq = freq.expand_as(y)
    freq_nll = nll_from_probs(freq[..., :k], y[..., :k])
    for pr in protocols:
        nll = nll_from_probs(repeat_last_probs(x, y, pr, base["flip_rate"][pr], k), truth.sounding.float())
        truth.add(counts[pr, "repeat_last"], repeat_last(x, y, pr), nll)
        for name, t in (("pitch_frequency", fixed), ("pitch_frequency_tuned", base["frequency_threshold"])):
            truth.add(counts[pr, name], freq > t, freq_nll)


@torch.no_grad()
def evaluate_rolls(model, loader: DataLoader, cal: dict, fixed: float, device
                   ) -> tuple[dict, Sweep | ThresholdGrid]:
    k = model.cfg.n_keys
    counts, sweep = defaultdict(FrameCounts), calibrate.new_sweep(model)
    freq = torch.tensor(cal["baselines"]["key_frequency"], device=device)
    model.to(device)
    for x, y in tqdm(loader, desc="evaluate", unit="batch", leave=False):
        x, y = x.to(device), y.to(device)
        truth = Truth(x, y, k)
        out = model.states(x, y)
        logits = model.head(out, y)
        calibrate.add_to_sweep(sweep, model, out, y, k)
        # NLL of the sustain plane, as in the literature: exact for both heads (the NADE orders that plane first)
        nll = nll_from_logits(logits[..., :k], y[..., :k])
        for name, t in (("model", fixed), ("model_tuned", cal["threshold"])):
            choose = model.threshold(t)
            truth.add(counts["next_frame", name], model.head.decide(out, choose)[0], nll)
            taken, free = model.free(x, y.size(1), choose, y=y)  # free's logits score the true continuation
            truth.add(counts["continuation", name], taken, nll_from_logits(free[..., :k], y[..., :k]))
        score_baselines(counts, truth, cal, freq, fixed)
    return _table(counts), sweep


def _table(counts) -> dict:
    out: dict = defaultdict(dict)
    for (pr, who), c in sorted(counts.items()):
        out[pr][who] = c.summary()
    return dict(out)


@torch.no_grad()
def evaluate_tokens(model, split: Split, train: Split, cal: dict, fixed: float, batch_size: int,
                    device) -> tuple[dict, int]:
    """The token protocols, and how many frame windows the continuation scored."""
    L, grid, k = model.cfg.seq_len, grid_of(split.meta), split.meta["n_keys"]
    model.to(device)
    # next_token: teacher-forced, beside the unigram model of the training tokens
    freq = np.bincount(np.concatenate([ids for _, ids in train]), minlength=model.cfg.n_features).astype(float)
    pad = split.meta["pad_id"]
    freq[pad] = 0
    logp = torch.tensor(np.log(np.maximum(freq / freq.sum(), 1e-12)), dtype=torch.float32)
    nll = {"model": 0.0, "unigram": 0.0}
    right = {"model": 0, "unigram": 0}
    n = 0
    for x, y in DataLoader(Windows(split, L, L), batch_size=batch_size):
        x, y = x.to(device), y.to(device)
        logits = model(x, y).log_softmax(-1)
        nll["model"] -= float(logits.gather(-1, y.unsqueeze(-1)).sum())
        right["model"] += int((logits.argmax(-1) == y).sum())
        nll["unigram"] -= float(logp[y.cpu()].sum())
        right["unigram"] += int((y.cpu() == int(logp.argmax())).sum())
        n += y.numel()
    next_token = {who: {"nll_per_token": nll[who] / max(n, 1), "accuracy": right[who] / max(n, 1)}
                  for who in ("model", "unigram")}
    # continuation, on frame windows of the decoded test sequences
    counts: dict = defaultdict(FrameCounts)
    key_freq = torch.tensor(cal["baselines"]["key_frequency"])
    batch: list = []

    def flush():
        seeds = [window_notes(notes, a, a + L) for notes, a in batch]
        gens = continue_tokens(model, split.tokenizer, grid, seeds, L, L, pad, device)
        for (notes, a), gen in zip(batch, gens):
            w = torch.from_numpy(densify(notes, k, a, a + 2 * L, onsets=True)).float()[None]
            x, y = w[:, :L], w[:, L:]
            pred = torch.from_numpy(densify(gen, k, 0, L, onsets=True)).float()[None]
            truth = Truth(x, y, k)
            truth.add(counts["continuation", "model"], pred)
            score_baselines(counts, truth, cal, key_freq, fixed, ("continuation",))
        batch.clear()

    for _, notes in tqdm(split.notes(), desc="evaluate (continuation)", unit="sequence", leave=False):
        for a in window_starts(notes.n_frames, L, L):
            batch.append((notes, a))
            if len(batch) == batch_size:
                flush()
    if batch:
        flush()
    table = _table(counts)
    table["continuation"]["model"]["nll_per_frame"] = None  # a token model gives no per-cell probability
    return {"next_token": next_token, **table}, counts["continuation", "model"].frames // L


def real_windows(test: Split, frames: int, n: int, seed: int) -> list:
    """`n` test windows of `frames` frames, drawn uniformly (reservoir sampling: the split is streamed)."""
    tiles = ((notes, a) for _, notes in test.notes()
             for a in range(0, notes.n_frames - frames + 1, frames))  # tiled, non-overlapping
    chosen, _ = reservoir(tiles, n, np.random.default_rng(seed))
    return [window_notes(notes, a, a + frames) for notes, a in chosen]


def music_section(test: Split, index: list[dict], seed: int, picture: Path) -> dict:
    """The samples' statistics beside those of as many real test windows of the same length: means and gaps,
    and (`distributions`) how far their distributions overlap, after Yang & Lerch 2020 (see distributions.py);
    the histograms behind the latter are drawn to `picture`."""
    grid, frames = grid_of(test.meta), index[0]["generated_frames"]
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


def pr_rows(sweep: Sweep | ThresholdGrid) -> list[dict]:
    """The precision-recall curve, at most about 100 points (every 10th of a Sweep's 999 thresholds)."""
    t, prec, rec, _ = sweep.curve()
    keep = slice(9, None, 10) if len(t) > 100 else slice(None)
    return [{"threshold": round(float(a), 4), "precision": float(b), "recall": float(c)}
            for a, b, c in zip(t[keep], prec[keep], rec[keep])]


def main() -> None:
    p = P.load()
    runtime.setup(p.seed)
    d = data_dir()
    test, train = Split(d, "test"), Split(d, "train")
    model = load_model(test.meta)
    cal = calibrate.load()
    if not SAMPLES.exists():
        raise FileNotFoundError(f"{SAMPLES} is missing: run `dvc repro generate` first")
    index = json.loads(SAMPLES.read_text())["samples"]
    L, device, fixed = model.cfg.seq_len, runtime.device(p.train.device), p.evaluate.threshold
    if test.meta["kind"] == "tokens":
        result, n_windows = evaluate_tokens(model, test, train, cal, fixed, p.evaluate.batch_size, device)
        rows = []
    else:
        windows = Windows(test, L, L)
        n_windows = len(windows)
        if n_windows == 0:
            raise SystemExit(f"evaluate: no test sequence is {2 * L} frames long")
        result, sweep = evaluate_rolls(model, DataLoader(windows, batch_size=p.evaluate.batch_size), cal, fixed,
                                       device)
        rows = pr_rows(sweep)
    report = {"kind": test.meta["kind"], "test_windows": n_windows, "window_frames": L,
              "thresholds": {"fixed": fixed, "tuned": cal["threshold"], "tuned_valid_f1": cal["valid_f1"],
                             "pitch_frequency_tuned": cal["baselines"]["frequency_threshold"]},
              **result, "music": music_section(test, index, p.seed, MUSIC_PNG)}
    report["versus_repeat_last"] = margins(report)
    write_json(OUT, report)
    write_json(PR_CURVE, rows)
    c, cb = result["continuation"]["model"], result["continuation"]["repeat_last"]
    lost = [k for k, v in report["versus_repeat_last"].items() if v <= 0]
    print(f"evaluate: {n_windows} test windows ({test.meta['kind']}); continuation F1 {c['f1']:.3f} "
          f"(repeat-last {cb['f1']:.3f}), density {c['density_pred']:.2f} (true {c['density_true']:.2f}) -> {OUT}"
          + (f"\nWARNING: the model does not beat repeat-last on {', '.join(lost)}" if lost else ""))


if __name__ == "__main__":
    run_stage(main)
