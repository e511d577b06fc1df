"""Scoring decided frames against the truth, for the model and the baselines alike (used by calibrate, the
representations' evaluation protocols and evaluate)."""
from __future__ import annotations

from collections import defaultdict

import torch

from pipeline.baselines import PROTOCOLS, repeat_last, repeat_last_probs
from pipeline.metrics import FrameCounts, Sweep, ThresholdGrid, nll_from_probs, onsets, sounding, sounding_prob


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


def table(counts) -> dict:
    """{protocol: {predictor: summary}} from counts keyed by (protocol, predictor)."""
    out: dict = defaultdict(dict)
    for (pr, who), c in sorted(counts.items()):
        out[pr][who] = c.summary()
    return dict(out)


def new_sweep(model) -> Sweep | ThresholdGrid:
    """Where a model's precision-recall trade-off is counted: every threshold at once for a factorised head,
    a grid of decoded thresholds otherwise."""
    return Sweep() if model.head.factorised else ThresholdGrid()


def add_to_sweep(sweep: Sweep | ThresholdGrid, model, out: torch.Tensor, y: torch.Tensor, k: int,
                 prev: torch.Tensor) -> None:
    """Count the model's teacher-forced next-frame decisions on one batch at every threshold of `sweep`
    (`out`: the decoder states, model.states(x, y); `prev`: model.previous(x, y))."""
    true = sounding(y, k)
    if isinstance(sweep, Sweep):
        sweep.add(sounding_prob(torch.sigmoid(model.head(out, y, prev)), k), true)
        return
    for i, t in enumerate(sweep.THRESHOLDS):
        sweep.add(i, sounding(model.head.decide(out, model.threshold(float(t)), prev)[0], k), true)


def pr_rows(sweep: Sweep | ThresholdGrid) -> list[dict]:
    """The precision-recall curve, at most about 100 points (every 10th of a Sweep's 999 thresholds)."""
    t, prec, rec, _ = sweep.curve()
    keep = slice(9, None, 10) if len(t) > 100 else slice(None)
    return [{"threshold": round(float(a), 4), "precision": float(b), "recall": float(c)}
            for a, b, c in zip(t[keep], prec[keep], rec[keep])]
