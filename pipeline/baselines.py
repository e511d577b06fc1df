"""The trivial predictors every figure is reported beside, fitted on the training split.

- repeat_last: each target frame is the frame before it (teacher-forced) or the last input frame (continuation).
  Its probabilities use the training set's rate of cells where the repeated frame is wrong, so its NLL is that
  of a proper model and not infinite.
- pitch_frequency: each cell is on with its frequency in the training frames, whatever came before.
"""
from __future__ import annotations

import torch

from pipeline.dataset import Split, grid_of, window_starts
from pipeline.metrics import sounding
from pipeline.pianoroll import densify

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


class FrameWindows:
    """Frame windows (x, y) of a token dataset's decoded sequences, so frame baselines fit token data too."""

    def __init__(self, split: Split, L: int, onsets: bool = True, limit: int = 2000):
        self.split, self.L, self.onsets, self.limit = split, L, onsets, limit

    def __iter__(self):
        grid, n = grid_of(self.split.meta), 0
        for _, notes in self.split.notes():
            for a in window_starts(notes.n_frames, self.L, self.L):
                w = torch.from_numpy(densify(notes, grid.n_keys, a, a + 2 * self.L, onsets=self.onsets)).float()[None]
                yield w[:, :self.L], w[:, self.L:]
                n += 1
                if n >= self.limit:
                    return
