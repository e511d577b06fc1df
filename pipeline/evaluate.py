"""Stage `evaluate`: metrics on the test split, each beside the repeat-the-last-frame baseline.

Protocols on the same windows (seq_len frames of input, the next seq_len frames as target):
- continuation: the model continues the input window on its own output, as in generation; token models have
  their output decoded to notes on the grid, so the figures mean the same for both representations;
- next_frame (piano rolls): the decoder sees the true previous frames (teacher forcing), the classic protocol;
- next_token (tokens): teacher-forced next-token NLL and accuracy, beside the training set's token frequencies.
The baseline's NLL uses the training set's rate of cells that differ from the frame it repeats, so it is a
proper probabilistic model and not an infinitely bad one. Frame metrics count a cell as sounding when its
sustain or onset cell is on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import params as P
from pipeline import runtime
from pipeline.atomic import write_json
from pipeline.checkpoint import load_model
from pipeline.cli import run_stage
from pipeline.dataset import Split, Windows, data_dir, grid_of, window_starts
from pipeline.metrics import FrameCounts, nll_from_logits, nll_from_probs, sounding
from pipeline.pianoroll import densify
from pipeline.rollout import continue_tokens, window_notes

OUT = Path("metrics/eval.json")


def repeat_last(x: torch.Tensor, y: torch.Tensor, protocol: str) -> torch.Tensor:
    """What the baseline predicts for each target frame."""
    if protocol == "next_frame":
        return torch.cat([x[:, -1:], y[:, :-1]], dim=1)
    return x[:, -1:].expand_as(y)


@torch.no_grad()
def baseline_flip_rates(windows, n_keys: int, protocols=("next_frame", "continuation")) -> dict[str, float]:
    """Per protocol, the share of cells where the repeated frame is wrong, on train windows (one pass)."""
    wrong, total = dict.fromkeys(protocols, 0), 0
    for x, y in windows:
        x, y = sounding(x, n_keys).float(), sounding(y, n_keys).float()
        for pr in protocols:
            wrong[pr] += int((repeat_last(x, y, pr) != y).sum())
        total += y.numel()
    return {pr: min(max(wrong[pr] / max(total, 1), 1e-6), 0.5) for pr in protocols}


def _baseline(counts: FrameCounts, x: torch.Tensor, y: torch.Tensor, protocol: str, flip: float) -> None:
    base = repeat_last(x, y, protocol)
    probs = base * (1 - flip) + (1 - base) * flip
    counts.add(base > 0.5, y, nll_from_probs(probs, y))


@torch.no_grad()
def evaluate_rolls(model, loader: DataLoader, flip: dict, threshold: float, device) -> dict:
    k = model.cfg.n_keys
    protocols = ("next_frame", "continuation")
    counts = {(pr, who): FrameCounts() for pr in protocols for who in ("model", "repeat_last")}
    model.to(device)
    for x, y in tqdm(loader, desc="evaluate", unit="batch", leave=False):
        x, y = x.to(device), y.to(device)
        true = sounding(y, k).float()
        for pr in protocols:
            logits = model(x, y) if pr == "next_frame" else model(x, steps=y.size(1), threshold=threshold)
            # NLL over the sustain plane: a proper per-cell likelihood of what sounds, as in the literature
            counts[pr, "model"].add(sounding(torch.sigmoid(logits) > threshold, k), true,
                                    nll_from_logits(logits[..., :k], y[..., :k]))
            _baseline(counts[pr, "repeat_last"], sounding(x, k).float(), true, pr, flip[pr])
    return {pr: {who: counts[pr, who].summary() for who in ("model", "repeat_last")} for pr in protocols}


@torch.no_grad()
def evaluate_tokens(model, split: Split, train: Split, flip: float, batch_size: int, device) -> tuple[dict, int]:
    """The token protocols, and how many frame windows the continuation scored."""
    L, grid = model.cfg.seq_len, grid_of(split.meta)
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
    counts = {"model": FrameCounts(), "repeat_last": FrameCounts()}
    batch: list = []

    def flush():
        seeds = [window_notes(notes, a, a + L) for notes, a in batch]
        gens = continue_tokens(model, split.tokenizer, grid, seeds, L, L, pad, device)
        for (notes, a), gen in zip(batch, gens):
            true = torch.from_numpy(densify(notes, grid.n_keys, a + L, a + 2 * L)).float()[None]
            pred = torch.from_numpy(densify(gen, grid.n_keys, 0, L)).float()[None]
            counts["model"].add(pred > 0.5, true)
            last = torch.from_numpy(densify(notes, grid.n_keys, a + L - 1, a + L)).float()[None]
            _baseline(counts["repeat_last"], last, true, "continuation", flip)
        batch.clear()

    for _, notes in tqdm(split.notes(), desc="evaluate (continuation)", unit="sequence", leave=False):
        for a in window_starts(notes.n_frames, L, L):
            batch.append((notes, a))
            if len(batch) == batch_size:
                flush()
    if batch:
        flush()
    continuation = {who: c.summary() for who, c in counts.items()}
    continuation["model"]["nll_per_frame"] = None  # a token model gives no per-cell probability
    return {"next_token": next_token, "continuation": continuation}, counts["model"].frames // L


class _FrameWindows:
    """Train frame windows of a token dataset (decoded), for the baseline's flip rate."""

    def __init__(self, split: Split, L: int, limit: int = 2000):
        self.split, self.L, self.limit = split, L, limit

    def __iter__(self):
        grid, n = grid_of(self.split.meta), 0
        for _, notes in self.split.notes():
            for a in window_starts(notes.n_frames, self.L, self.L):
                w = torch.from_numpy(densify(notes, grid.n_keys, a, a + 2 * self.L)).float()[None]
                yield w[:, :self.L], w[:, self.L:]
                n += 1
                if n >= self.limit:
                    return


def main() -> None:
    p = P.load()
    runtime.setup(p.seed)
    d = data_dir()
    test, train = Split(d, "test"), Split(d, "train")
    model = load_model(test.meta)
    L, device = model.cfg.seq_len, runtime.device("auto")
    if test.meta["kind"] == "tokens":
        flip = baseline_flip_rates(_FrameWindows(train, L), test.meta["n_keys"], ("continuation",))
        result, n_windows = evaluate_tokens(model, test, train, flip["continuation"], p.evaluate.batch_size, device)
    else:
        windows = Windows(test, L, L)
        n_windows = len(windows)
        if n_windows == 0:
            raise SystemExit(f"evaluate: no test sequence is {2 * L} frames long")
        flip = baseline_flip_rates(DataLoader(Windows(train, L, L), batch_size=p.evaluate.batch_size),
                                   test.meta["n_keys"])
        result = evaluate_rolls(model, DataLoader(windows, batch_size=p.evaluate.batch_size), flip,
                                p.evaluate.threshold, device)
    report = {"kind": test.meta["kind"], "threshold": p.evaluate.threshold, "test_windows": n_windows,
              "window_frames": L, **result}
    write_json(OUT, report)
    c, cb = result["continuation"]["model"], result["continuation"]["repeat_last"]
    print(f"evaluate: {n_windows} test windows ({test.meta['kind']}); continuation F1 {c['f1']:.3f} "
          f"(repeat-last {cb['f1']:.3f}), density {c['density_pred']:.2f} (true {c['density_true']:.2f}) -> {OUT}")


if __name__ == "__main__":
    run_stage(main)
