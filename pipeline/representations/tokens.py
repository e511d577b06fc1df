"""Token streams: MidiTok tokens (pipeline/tokens.py) of the same quantised notes, one id per step.

The model embeds ids and predicts a softmax over the vocabulary; a step is the most likely token or a draw, so
there is no threshold to calibrate. Frame figures are computed on the decoded notes, so they mean the same as a
piano roll's; next_token (NLL and accuracy beside the unigram model of the training tokens) is its own protocol.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.codecs import TokenCodec
from pipeline.metrics import FrameCounts
from pipeline.pianoroll import densify
from pipeline.representations.base import Representation, Validation
from pipeline.rollout import continue_tokens, window_notes
from pipeline.sampling import Sampler
from pipeline.scoring import Truth, score_baselines, table

# Decoded frame windows the frame baselines of a token model are fitted on: decoding is slow (MidiTok, a
# sequence at a time), and per-key frequencies and repeat rates settle long before 2,000 windows (64,000 frames).
FRAME_WINDOWS_FITTED = 2000


class FrameWindows:
    """Frame windows (x, y) of a token split's decoded sequences, one window per batch, the first `limit` of
    them: what frame baselines are fitted on."""

    def __init__(self, split, L: int, onsets: bool = True, limit: int = FRAME_WINDOWS_FITTED):
        self.split, self.L, self.onsets, self.limit = split, L, onsets, limit

    def __iter__(self):
        from pipeline.dataset import window_starts

        k, n = self.split.meta.n_keys, 0
        for _, notes in self.split.notes():
            for a in window_starts(notes.n_frames, self.L, self.L):
                w = torch.from_numpy(densify(notes, k, a, a + 2 * self.L, onsets=self.onsets)).float()[None]
                yield w[:, :self.L], w[:, self.L:]
                n += 1
                if n >= self.limit:
                    return


class TokenValidation(Validation):
    """The share of valid tokens the model ranks first."""

    def __init__(self):
        self.right, self.steps = 0, 0

    def add(self, model, out, logits, y, prev) -> None:
        self.right += int((logits.argmax(-1) == y).sum())
        self.steps += y.numel()

    def summary(self) -> dict:
        return {"accuracy": self.right / max(self.steps, 1)}

    def headline(self, v: dict) -> str:
        return f"valid accuracy {v['accuracy']:.3f}"


class Tokens(TokenCodec, Representation):
    width_name = "vocabulary"
    thresholded = False

    def n_features(self, meta) -> int:
        return meta.vocab_size

    embeds = True

    def head(self, m) -> str:
        # a softmax over the vocabulary: one logit per token, the "independent" head's shape
        return "independent"

    def loss(self, p, meta):
        """Cross-entropy over the vocabulary, padding ignored."""
        pad = meta.pad_id
        return lambda logits, y: F.cross_entropy(logits.transpose(1, 2), y, ignore_index=pad)

    def validation(self) -> Validation:
        return TokenValidation()

    def sampler(self, g, meta, calibration, model, generator) -> Sampler:
        threshold = 0.5 if g.threshold == "auto" else g.threshold  # unused: a token is taken, not thresholded
        return Sampler(g.sampling, threshold, g.temperature, g.top_k, True, meta.n_keys, generator)

    def continue_notes(self, model, split, seeds, seed_frames, frames, sampler, device) -> list:
        return continue_tokens(model, split.tokenizer, split.meta.grid, seeds, seed_frames, frames,
                               split.meta.pad_id, device, sampler=sampler)

    def frame_windows(self, split, seq_len, batch_size):
        return FrameWindows(split, seq_len)

    @torch.no_grad()
    def evaluate(self, model, test, train, cal, fixed, batch_size, device):
        """next_token (teacher-forced, beside the unigram model of the training tokens) and continuation (the
        model's tokens decoded to frames, beside the frame baselines)."""
        from pipeline.dataset import Windows, window_starts

        L, grid, k = model.cfg.seq_len, test.meta.grid, test.meta.n_keys
        model.to(device)
        freq = np.bincount(np.concatenate([ids for _, ids in train]), minlength=model.cfg.n_features).astype(float)
        pad = test.meta.pad_id
        freq[pad] = 0
        logp = torch.tensor(np.log(np.maximum(freq / freq.sum(), 1e-12)), dtype=torch.float32)
        nll = {"model": 0.0, "unigram": 0.0}
        right = {"model": 0, "unigram": 0}
        n = 0
        for x, y in tqdm(DataLoader(Windows(test, L, L), batch_size=batch_size), desc="evaluate (next token)",
                         unit="batch", mininterval=1):
            x, y = x.to(device), y.to(device)
            logits = model(x, y).log_softmax(-1)
            nll["model"] -= float(logits.gather(-1, y.unsqueeze(-1)).sum())
            right["model"] += int((logits.argmax(-1) == y).sum())
            nll["unigram"] -= float(logp[y.cpu()].sum())
            right["unigram"] += int((y.cpu() == int(logp.argmax())).sum())
            n += y.numel()
        next_token = {who: {"nll_per_token": nll[who] / max(n, 1), "accuracy": right[who] / max(n, 1)}
                      for who in ("model", "unigram")}
        counts: dict = defaultdict(FrameCounts)
        key_freq = torch.tensor(cal["baselines"]["key_frequency"])
        batch: list = []

        def flush():
            seeds = [window_notes(notes, a, a + L) for notes, a in batch]
            gens = continue_tokens(model, test.tokenizer, grid, seeds, L, L, pad, device)
            for (notes, a), gen in zip(batch, gens):
                w = torch.from_numpy(densify(notes, k, a, a + 2 * L, onsets=True)).float()[None]
                x, y = w[:, :L], w[:, L:]
                pred = torch.from_numpy(densify(gen, k, 0, L, onsets=True)).float()[None]
                truth = Truth(x, y, k)
                truth.add(counts["continuation", "model"], pred)
                score_baselines(counts, truth, cal, key_freq, fixed, ("continuation",))
            batch.clear()

        for _, notes in tqdm(test.notes(), total=sum(map(len, test.lengths)), desc="evaluate (continuation)",
                             unit="sequence", mininterval=1):
            for a in window_starts(notes.n_frames, L, L):
                batch.append((notes, a))
                if len(batch) == batch_size:
                    flush()
        if batch:
            flush()
        result = table(counts)
        result["continuation"]["model"]["nll_per_frame"] = None  # a token model gives no per-cell probability
        return {"next_token": next_token, **result}, counts["continuation", "model"].frames // L, []
