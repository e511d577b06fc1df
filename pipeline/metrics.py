"""Frame-level metrics over binary rolls, accumulated batch by batch."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class FrameCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    frames: int = 0
    pred_on: int = 0
    true_on: int = 0
    nll: float = 0.0  # nats, summed over cells

    def add(self, pred: torch.Tensor, true: torch.Tensor, nll_sum: float = 0.0) -> None:
        pred, true = pred.bool(), true.bool()
        self.tp += int((pred & true).sum())
        self.fp += int((pred & ~true).sum())
        self.fn += int((~pred & true).sum())
        self.frames += int(true.numel() // true.shape[-1])
        self.pred_on += int(pred.sum())
        self.true_on += int(true.sum())
        self.nll += float(nll_sum)

    def summary(self) -> dict:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        frames = max(self.frames, 1)
        return {
            "precision": p, "recall": r, "f1": f,
            "accuracy": self.tp / (self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else 0.0,
            "density_pred": self.pred_on / frames, "density_true": self.true_on / frames,
            "nll_per_frame": self.nll / frames if self.frames else math.nan,
        }


def sounding(cells: torch.Tensor, n_keys: int) -> torch.Tensor:
    """What sounds in a frame: the sustain plane, or sustain | onset when the frame carries an onset plane
    (a predicted onset on a silent cell is a one-frame note, as when decoding to MIDI)."""
    cells = cells.bool()
    return cells[..., :n_keys] | cells[..., n_keys:2 * n_keys] if cells.size(-1) == 2 * n_keys else cells


def nll_from_logits(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Negative log-likelihood in nats, summed over every cell (independent Bernoulli per pitch)."""
    return float(F.binary_cross_entropy_with_logits(logits, target, reduction="sum"))


def nll_from_probs(probs: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> float:
    return float(F.binary_cross_entropy(probs.clamp(eps, 1 - eps), target, reduction="sum"))
