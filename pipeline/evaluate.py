"""Stage `evaluate`: frame metrics on the test split, each beside the repeat-the-last-frame baseline.

Two protocols on the same windows:
- next_frame: the decoder sees the true previous frames (teacher forcing), the classic benchmark protocol;
- continuation: the model continues the input window on its own thresholded outputs, as in generation.
The baseline's NLL uses the training set's rate of cells that differ from the frame it repeats, so it is a
proper probabilistic model and not an infinitely bad one.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import params as P
from pipeline.cli import run_stage
from pipeline import runtime
from pipeline.atomic import write_json
from pipeline.checkpoint import load_model
from pipeline.dataset import Rolls, Windows, read_meta
from pipeline.metrics import FrameCounts, nll_from_logits, nll_from_probs

OUT = Path("metrics/eval.json")
PROTOCOLS = ("next_frame", "continuation")


def repeat_last(x: torch.Tensor, y: torch.Tensor, protocol: str) -> torch.Tensor:
    """What the baseline predicts for each target frame."""
    if protocol == "next_frame":
        return torch.cat([x[:, -1:], y[:, :-1]], dim=1)
    return x[:, -1:].expand_as(y)


@torch.no_grad()
def baseline_flip_rates(loader: DataLoader) -> dict[str, float]:
    """Per protocol, the share of cells where the repeated frame is wrong, on train windows (one pass)."""
    wrong, total = dict.fromkeys(PROTOCOLS, 0), 0
    for x, y in loader:
        for pr in PROTOCOLS:
            wrong[pr] += int((repeat_last(x, y, pr) != y).sum())
        total += y.numel()
    return {pr: min(max(wrong[pr] / max(total, 1), 1e-6), 0.5) for pr in PROTOCOLS}


@torch.no_grad()
def evaluate(model, loader: DataLoader, flip: dict, threshold: float, device) -> dict:
    counts = {(pr, who): FrameCounts() for pr in PROTOCOLS for who in ("model", "repeat_last")}
    model.to(device)
    for x, y in tqdm(loader, desc="evaluate", unit="batch", leave=False):
        x, y = x.to(device), y.to(device)
        for pr in PROTOCOLS:
            logits = model(x, y) if pr == "next_frame" else model(x, steps=y.size(1), threshold=threshold)
            counts[pr, "model"].add(torch.sigmoid(logits) > threshold, y, nll_from_logits(logits, y))
            base = repeat_last(x, y, pr)
            probs = base * (1 - flip[pr]) + (1 - base) * flip[pr]
            counts[pr, "repeat_last"].add(base > 0.5, y, nll_from_probs(probs, y))
    return {pr: {who: counts[pr, who].summary() for who in ("model", "repeat_last")} for pr in PROTOCOLS}


def main() -> None:
    p = P.load()
    runtime.setup(p.seed)
    meta = read_meta()
    model = load_model(meta)
    seq_len = model.cfg.seq_len
    test = Windows(Rolls.load("test"), seq_len, seq_len)
    if len(test) == 0:
        raise SystemExit(f"evaluate: no test sequence is {2 * seq_len} frames long")
    train = DataLoader(Windows(Rolls.load("train"), seq_len, seq_len), batch_size=p.evaluate.batch_size)
    flip = baseline_flip_rates(train)
    loader = DataLoader(test, batch_size=p.evaluate.batch_size)
    result = evaluate(model, loader, flip, p.evaluate.threshold, runtime.device("auto"))
    report = {"threshold": p.evaluate.threshold, "test_windows": len(test), "window_frames": seq_len, **result}
    write_json(OUT, report)
    m, b = result["next_frame"]["model"], result["next_frame"]["repeat_last"]
    c, cb = result["continuation"]["model"], result["continuation"]["repeat_last"]
    print(f"evaluate: {len(test)} test windows; next-frame F1 {m['f1']:.3f} (repeat-last {b['f1']:.3f}), "
          f"continuation F1 {c['f1']:.3f} (repeat-last {cb['f1']:.3f}) -> {OUT}")


if __name__ == "__main__":
    run_stage(main)
