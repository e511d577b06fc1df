"""Frame-level metrics over binary rolls, accumulated batch by batch."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


def _f1(tp, fp, fn):
    return 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0


@dataclass
class FrameCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    frames: int = 0
    pred_on: int = 0
    true_on: int = 0
    nll: float = 0.0  # nats, summed over cells
    per_key: np.ndarray | None = None   # (3, keys): tp, fp, fn of each key, for the macro F1
    onset: list = field(default_factory=lambda: [0, 0, 0])  # tp, fp, fn of note starts
    has_onsets: bool = False

    def add(self, pred: torch.Tensor, true: torch.Tensor, nll_sum: float = 0.0,
            pred_onsets: torch.Tensor | None = None, true_onsets: torch.Tensor | None = None) -> None:
        pred, true = pred.bool(), true.bool()
        flat_p, flat_t = pred.reshape(-1, pred.shape[-1]), true.reshape(-1, true.shape[-1])
        keys = torch.stack([(flat_p & flat_t).sum(0), (flat_p & ~flat_t).sum(0), (~flat_p & flat_t).sum(0)])
        keys = keys.cpu().numpy().astype(np.int64)  # per key; the micro counts are their sums
        self.per_key = keys if self.per_key is None else self.per_key + keys
        tp, fp, fn = (int(v) for v in keys.sum(1))
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self.pred_on += tp + fp
        self.true_on += tp + fn
        self.frames += int(true.numel() // true.shape[-1])
        self.nll += float(nll_sum)
        if pred_onsets is not None:
            po, to = pred_onsets.bool(), true_onsets.bool()
            self.onset[0] += int((po & to).sum())
            self.onset[1] += int((po & ~to).sum())
            self.onset[2] += int((~po & to).sum())
            self.has_onsets = True

    def summary(self) -> dict:
        """Micro precision/recall/F1 over all cells, macro F1 over the keys that sound or are predicted in the
        reference or the prediction (a key absent from both has no F1), onset F1 over note starts."""
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        frames = max(self.frames, 1)
        macro = None
        if self.per_key is not None:
            tp, fp, fn = self.per_key
            seen = (tp + fp + fn) > 0
            macro = float(np.mean(2 * tp[seen] / (2 * tp[seen] + fp[seen] + fn[seen]))) if seen.any() else 0.0
        out = {
            "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "f1_macro": macro,
            "accuracy": self.tp / (self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else 0.0,
            "density_pred": self.pred_on / frames, "density_true": self.true_on / frames,
            "density_gap": (self.pred_on - self.true_on) / frames,
            "nll_per_frame": self.nll / frames if self.frames else math.nan,
        }
        if self.has_onsets:
            tp, fp, fn = self.onset
            out.update(onset_precision=tp / (tp + fp) if tp + fp else 0.0,
                       onset_recall=tp / (tp + fn) if tp + fn else 0.0, onset_f1=_f1(tp, fp, fn))
        return out


class _Curve:
    """Precision, recall and F1 at each of a set of thresholds, from the counts a subclass keeps."""

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(thresholds, tp, fp, fn), one entry per threshold."""
        raise NotImplementedError

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(thresholds, precision, recall, f1); precision is 1 where nothing is predicted."""
        t, tp, fp, fn = self.counts()
        prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
        rec = tp / np.maximum(tp + fn, 1)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        return t, prec, rec, f1

    def best(self) -> tuple[float, float]:
        """The threshold with the highest F1 (the lowest such), and that F1."""
        t, _, _, f1 = self.curve()
        k = int(np.argmax(f1))
        return float(t[k]), float(f1[k])


class Sweep(_Curve):
    """Precision and recall at every threshold at once: histograms of the probabilities of the cells that
    sound and of those that don't (1,000 bins), so one pass over the data serves a whole PR curve."""

    BINS = 1000

    def __init__(self):
        self.pos = np.zeros(self.BINS, np.int64)
        self.neg = np.zeros(self.BINS, np.int64)

    def add(self, probs: torch.Tensor, true: torch.Tensor) -> None:
        b = (probs.float().clamp(0, 1) * self.BINS).long().clamp(max=self.BINS - 1)
        t = true.bool()
        self.pos += torch.bincount(b[t], minlength=self.BINS).cpu().numpy()
        self.neg += torch.bincount(b[~t], minlength=self.BINS).cpu().numpy()

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For thresholds k / BINS, k = 1 .. BINS - 1 (a cell is on when its probability reaches the
        threshold's bin)."""
        tp = np.cumsum(self.pos[::-1])[::-1][1:]
        fp = np.cumsum(self.neg[::-1])[::-1][1:]
        return np.arange(1, self.BINS) / self.BINS, tp, fp, self.pos.sum() - tp


class ThresholdGrid(_Curve):
    """Precision and recall at a grid of thresholds, for heads whose decisions cannot be read off one pass of
    probabilities (a NADE's later cells depend on the earlier decisions): each threshold's decoded frames are
    counted."""

    THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)

    def __init__(self):
        self.tally = np.zeros((len(self.THRESHOLDS), 3), np.int64)  # tp, fp, fn per threshold

    def add(self, i: int, pred: torch.Tensor, true: torch.Tensor) -> None:
        """Count the decisions `pred` made at threshold THRESHOLDS[i] against `true` (same shape)."""
        p, t = pred.bool(), true.bool()
        self.tally[i] += [int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())]

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (self.THRESHOLDS.astype(float), *self.tally.T)


def onsets(frames: torch.Tensor, prev: torch.Tensor, n_keys: int) -> torch.Tensor:
    """Note starts (batch, T, n_keys): the onset plane when the frames carry one, else the cells that sound
    after a frame where they did not (`prev`: the frame before the first, (batch, 1, features))."""
    frames = frames.bool()
    if frames.size(-1) == 2 * n_keys:
        return frames[..., n_keys:]
    now, before = sounding(frames, n_keys), sounding(prev, n_keys)
    return now & ~torch.cat([before, now[:, :-1]], dim=1)


def sounding(cells: torch.Tensor, n_keys: int) -> torch.Tensor:
    """What sounds in a frame: the sustain plane, or sustain | onset when the frame carries an onset plane
    (a predicted onset on a silent cell is a one-frame note, as when decoding to MIDI)."""
    cells = cells.bool()
    return cells[..., :n_keys] | cells[..., n_keys:2 * n_keys] if cells.size(-1) == 2 * n_keys else cells


def sounding_prob(probs: torch.Tensor, n_keys: int) -> torch.Tensor:
    """The score a cell sounds by: its sustain or onset probability, whichever is higher, so thresholding it
    decides exactly as thresholding both planes and taking `sounding`."""
    return torch.maximum(probs[..., :n_keys], probs[..., n_keys:2 * n_keys]) if probs.size(-1) == 2 * n_keys else probs


def nll_from_logits(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Negative log-likelihood in nats, summed over every cell of Bernoulli logits: of independent cells, or of a
    NADE's conditionals (then exactly -log p of the cells given, in the head's order)."""
    return float(F.binary_cross_entropy_with_logits(logits, target, reduction="sum"))


def nll_from_probs(probs: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> float:
    return float(F.binary_cross_entropy(probs.clamp(eps, 1 - eps), target, reduction="sum"))
