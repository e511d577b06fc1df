"""GRU encoder-decoder (the DeepMusician design), over piano-roll frames or token ids.

The encoder reads `seq_len` steps; its final state starts a decoder that emits the next window step by step,
each step fed the previous one (the true one under teacher forcing, else its own decision). Piano rolls go in
as multi-hot frames; tokens go in through an embedding. The output head (pipeline/heads.py) turns each decoder
state into the step's distribution: one sigmoid per cell, a NADE over the frame's cells, or a softmax over tokens.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch
from torch import nn

from pipeline import heads
from pipeline.gru import GRU
from pipeline.sampling import Sampler


@dataclass(frozen=True)
class Config:
    """The model's shape. The pipeline fills it from `model.*` and `train.seq_len` (params.yaml holds their
    defaults: none are restated here) and from the data (widths); a checkpoint stores it."""
    n_features: int          # frame width (keys x planes), or the vocabulary size for tokens
    hidden: int
    layers: int
    dropout: float
    seq_len: int
    tokens: bool = False
    kind: str = "pianoroll"  # the representation trained on: checked before evaluate/generate use the model
    n_keys: int | None = None  # keys per plane of a piano-roll frame; None: the frame is one plane
    head: str = "independent"  # independent (a sigmoid per cell; for tokens, the softmax) | nade | hold_nade
    nade_hidden: int | None = None  # hidden units of a NADE head (nade, hold_nade)


class Seq2Seq(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        h, drop = cfg.hidden, (cfg.dropout if cfg.layers > 1 else 0.0)
        self.embed = nn.Embedding(cfg.n_features, h) if cfg.tokens else None
        width = h if cfg.tokens else cfg.n_features
        self.encoder = GRU(width, h, cfg.layers, batch_first=True, dropout=drop)
        self.decoder = GRU(width, h, cfg.layers, batch_first=True, dropout=drop)
        self.head = heads.make(cfg.head, h, cfg.n_features, cfg.dropout, cfg.nade_hidden, cfg.n_keys)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x) if self.embed is not None else x

    def threshold(self, threshold: float = 0.5) -> Sampler:
        """The default way a step is chosen: cells over `threshold`, or the most likely token."""
        return Sampler("threshold", threshold, tokens=self.cfg.tokens)

    @staticmethod
    def previous(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The step before each step of `y` (batch, steps[, n_features]): the last of `x`, then `y` shifted: what
        the decoder is fed at each step, and what a head's hold gate would repeat."""
        return torch.cat([x[:, -1:], y[:, :-1]], dim=1)

    def states(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Decoder states (batch, steps, hidden) for the window `y` after `x`, each step fed the true one before
        it (teacher forcing), in one fused GRU call."""
        _, h = self.encoder(self.inputs(x))
        out, _ = self.decoder(self.inputs(self.previous(x, y)), h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor, fed: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (batch, steps, n_features) scoring the window `y` (batch, steps[, n_features])
        after `x` (batch, seq_len[, n_features]): their summed (binary) cross-entropy against `y` is -log p(y).
        `fed`: the steps fed to the decoder instead of `y` (scheduled sampling); `y` is still what is scored."""
        fed = y if fed is None else fed
        return self.head(self.states(x, fed), y, self.previous(x, fed))

    def decode(self, x: torch.Tensor, y: torch.Tensor, choose=None) -> torch.Tensor:
        """The steps the model takes (batch, steps[, n_features]) when it has seen the true steps before each:
        the next-step decisions of the teacher-forced protocol. `choose`: default `threshold()`."""
        return self.head.decide(self.states(x, y), choose or self.threshold(), self.previous(x, y))[0]

    def free(self, x: torch.Tensor, steps: int, choose=None, y: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Free-running continuation of `x`: each step fed the one the model took before it.

        Returns (steps taken (batch, steps[, n_features]), logits (batch, steps, n_features)). The logits score
        `y` (the true continuation, when given: its likelihood given the model's own past), else the steps
        taken. `choose`: default `threshold()`."""
        choose = choose or self.threshold()
        _, h = self.encoder(self.inputs(x))
        prev, taken, logits = x[:, -1:], [], []
        for t in range(steps):
            out, h = self.decoder(self.inputs(prev), h)
            step, own = self.head.decide(out, choose, prev)
            logits.append(own if y is None else self.head(out, y[:, t:t + 1], prev))
            prev = step.to(x.dtype)
            taken.append(prev)
        return torch.cat(taken, dim=1), torch.cat(logits, dim=1)

    def checkpoint(self) -> dict:
        """Everything needed to rebuild the model; loadable with torch.load(..., weights_only=True)."""
        return {"config": asdict(self.cfg), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "Seq2Seq":
        """The model a `checkpoint()` describes. Checkpoints from before the heads (no `head` in the config, the
        MLP's weights at `head.0`, `head.3`) load as the independent head they are, and so do token models
        saved with `model.head: nade` in their config (their head was always the softmax)."""
        state, cfg = ckpt["state_dict"], dict(ckpt["config"])
        if "head" not in cfg:
            state = {re.sub(r"^head\.(\d+)\.", r"head.net.\1.", k): v for k, v in state.items()}
        if cfg.get("tokens"):
            cfg["head"] = "independent"
        model = cls(Config(**cfg))
        model.load_state_dict(state)
        return model
