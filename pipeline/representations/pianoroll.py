"""Piano rolls: notes stored as intervals (pipeline/pianoroll.py), densified into frames a window at a time.

A frame is the sustain plane (one cell per key: pitches low to high, then drum classes) and, with
`represent.onsets`, the onset plane in the same order. The model's head is `model.head` (independent sigmoids
or a NADE); its steps are cells decided against a threshold or sampled, so `calibrate` fits a threshold.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import losses
from pipeline.codecs import PianoRollCodec
from pipeline.metrics import FrameCounts, nll_from_logits, sounding
from pipeline.pianoroll import Notes, densify, from_roll
from pipeline.representations.base import Representation, Validation
from pipeline.rollout import continue_roll
from pipeline.sampling import Sampler
from pipeline.scoring import Truth, add_to_sweep, new_sweep, pr_rows, score_baselines, table


def roll_notes(frames: np.ndarray, n_keys: int) -> Notes:
    """Notes from model frames (sustain plane, then the onset plane when there is one)."""
    if frames.shape[1] == 2 * n_keys:
        return from_roll(frames[:, :n_keys], frames[:, n_keys:])
    return from_roll(frames)


def cell_frequencies(split) -> torch.Tensor:
    """(features,) the share of frames in which each cell of a piano-roll frame is on over a whole split: the
    sustain plane from the notes' lengths, the onset plane from their count. One pass over the notes, no rolls."""
    k, on = split.meta.n_keys, split.meta.onsets
    counts, frames = np.zeros(2 * k if on else k), 0
    for _, notes in split.notes():
        np.add.at(counts, notes.key.astype(np.int64), (notes.end - notes.start).astype(np.float64))
        if on:
            np.add.at(counts, k + notes.key.astype(np.int64), 1.0)
        frames += notes.n_frames
    return torch.from_numpy(counts / max(frames, 1)).float()


class RollValidation(Validation):
    """F1 and density of the frames decided at 0.5, and the NLL per frame of the sustain plane (nats; exact and
    comparable across heads and losses)."""

    def __init__(self):
        self.counts = FrameCounts()

    def add(self, model, out, logits, y, prev) -> None:
        k = model.cfg.n_keys
        decided = model.head.decide(out, model.threshold(), prev)[0]
        self.counts.add(sounding(decided, k), sounding(y, k), nll_from_logits(logits[..., :k], y[..., :k]))

    def summary(self) -> dict:
        s = self.counts.summary()
        return {k: s[k] for k in ("nll_per_frame", "f1", "density_pred", "density_true")}

    def headline(self, v: dict) -> str:
        return (f"valid NLL/frame {v['nll_per_frame']:.3f}, F1 {v['f1']:.3f}, density {v['density_pred']:.2f} "
                f"(true {v['density_true']:.2f})")


class PianoRoll(PianoRollCodec, Representation):
    width_name = "frame width (keys x planes)"
    thresholded = True

    def n_features(self, meta) -> int:
        return meta.features

    def head(self, m) -> str:
        return m.head

    def init(self, model, split) -> None:
        model.head.init_bias(cell_frequencies(split))

    def loss(self, p, meta):
        """`train.loss` (focal or plain binary cross-entropy per cell) for the independent head; the NADE heads
        always train on their exact negative log-likelihood (the mean binary cross-entropy of their logits),
        which focal weighting would no longer be."""
        if p.model.head != "independent":
            return losses.bce
        return losses.make(p.train.loss, p.train.focal_alpha, p.train.focal_gamma)

    def validation(self) -> Validation:
        return RollValidation()

    def sampler(self, g, meta, calibration, model, generator) -> Sampler:
        if g.sampling == "topk" and not model.head.factorised:
            raise ValueError("generate.sampling: topk needs a model with the independent head; models/model.pt has "
                             "a NADE head, which decides cell by cell: use threshold or bernoulli")
        threshold = calibration()["threshold"] if g.threshold == "auto" else g.threshold
        return Sampler(g.sampling, threshold, g.temperature, g.top_k, False, meta.n_keys, generator)

    def continue_notes(self, model, split, seeds, seed_frames, frames, sampler, device) -> list:
        # every sample in one batch: the decoder steps (and a NADE's cell loop) run once for all of them
        k, on = split.meta.n_keys, split.meta.onsets
        x = torch.from_numpy(np.stack([densify(n, k, 0, seed_frames, onsets=on) for n in seeds]))
        out = continue_roll(model, x.float().to(device), frames, sampler).cpu().numpy().astype(bool)
        return [roll_notes(f, k) for f in out]

    def frame_windows(self, split, seq_len, batch_size):
        from pipeline.dataset import Windows

        return DataLoader(Windows(split, seq_len, seq_len), batch_size=batch_size)

    @torch.no_grad()
    def evaluate(self, model, test, train, cal, fixed, batch_size, device):
        """next_frame (teacher-forced) and continuation (free-running), each at the fixed and the tuned
        threshold, beside the baselines; the NLL is the sustain plane's, as in the literature (exact for both
        heads: the NADE orders that plane first)."""
        from pipeline.dataset import Windows

        L, k = model.cfg.seq_len, model.cfg.n_keys
        windows = Windows(test, L, L)
        if len(windows) == 0:
            raise SystemExit(f"evaluate: no test sequence is {2 * L} frames long")
        counts, sweep = defaultdict(FrameCounts), new_sweep(model)
        freq = torch.tensor(cal["baselines"]["key_frequency"], device=device)
        model.to(device)
        for x, y in tqdm(DataLoader(windows, batch_size=batch_size), desc="evaluate (next frame, continuation)",
                         unit="batch", mininterval=1):
            x, y = x.to(device), y.to(device)
            truth = Truth(x, y, k)
            out, prev = model.states(x, y), model.previous(x, y)
            logits = model.head(out, y, prev)
            add_to_sweep(sweep, model, out, y, k, prev)
            nll = nll_from_logits(logits[..., :k], y[..., :k])
            for name, t in (("model", fixed), ("model_tuned", cal["threshold"])):
                choose = model.threshold(t)
                truth.add(counts["next_frame", name], model.head.decide(out, choose, prev)[0], nll)
                taken, free = model.free(x, y.size(1), choose, y=y)  # free's logits score the true continuation
                truth.add(counts["continuation", name], taken, nll_from_logits(free[..., :k], y[..., :k]))
            score_baselines(counts, truth, cal, freq, fixed)
        return table(counts), len(windows), pr_rows(sweep)
