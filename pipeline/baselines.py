"""The trivial predictors every figure is reported beside, fitted on the training split.

- repeat_last: each target frame is the frame before it (teacher-forced) or the last input frame (continuation).
  Its probabilities use the training set's rate of cells where the repeated frame is wrong, so its NLL is that
  of a proper model and not infinite.
- pitch_frequency: each cell is on with its frequency in the training frames, whatever came before.
"""
from __future__ import annotations

import torch

from pipeline.metrics import sounding

PROTOCOLS = ("next_frame", "continuation")


def repeat_last(x: torch.Tensor, y: torch.Tensor, protocol: str) -> torch.Tensor:
    """What the baseline predicts for each target frame."""
    if protocol == "next_frame":
        return torch.cat([x[:, -1:], y[:, :-1]], dim=1)
    return x[:, -1:].expand_as(y)


@torch.no_grad()
def fit(windows, n_keys: int) -> dict:
    """One pass over training windows (x, y): per protocol the share of cells where repeating is wrong, and
    each feature's frequency over the target frames."""
    wrong, total, on, frames = dict.fromkeys(PROTOCOLS, 0), 0, None, 0
    for x, y in windows:
        sx, sy = sounding(x, n_keys).float(), sounding(y, n_keys).float()
        for pr in PROTOCOLS:
            wrong[pr] += int((repeat_last(sx, sy, pr) != sy).sum())
        total += sy.numel()
        cells = y.float().reshape(-1, y.size(-1)).sum(0)
        on = cells if on is None else on + cells
        frames += y.numel() // y.size(-1)
    flip = {pr: min(max(wrong[pr] / max(total, 1), 1e-6), 0.5) for pr in PROTOCOLS}
    freq = (on / max(frames, 1)).clamp(1e-6, 1 - 1e-6) if on is not None else None
    return {"flip_rate": flip, "key_frequency": freq.tolist() if freq is not None else []}


def repeat_last_probs(x: torch.Tensor, y: torch.Tensor, protocol: str, flip: float, n_keys: int) -> torch.Tensor:
    base = sounding(repeat_last(x, y, protocol), n_keys).float()
    return base * (1 - flip) + (1 - base) * flip

