"""GRU encoder-decoder over piano-roll frames (the DeepMusician design).

The encoder reads `seq_len` frames; its final state starts a decoder that emits the next window frame by
frame, each step fed the previous frame (the true one under teacher forcing, else its own prediction).
The head returns logits; `torch.sigmoid` gives note probabilities.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Config:
    n_pitches: int = 88
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2
    seq_len: int = 32


class Seq2Seq(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        gru_dropout = cfg.dropout if cfg.layers > 1 else 0.0
        self.encoder = nn.GRU(cfg.n_pitches, cfg.hidden, cfg.layers, batch_first=True, dropout=gru_dropout)
        self.decoder = nn.GRU(cfg.n_pitches, cfg.hidden, cfg.layers, batch_first=True, dropout=gru_dropout)
        self.head = nn.Sequential(
            nn.Linear(cfg.hidden, cfg.hidden // 2), nn.ReLU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden // 2, cfg.n_pitches),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, teacher_forcing: float = 1.0,
                steps: int | None = None, threshold: float = 0.5) -> torch.Tensor:
        """Logits (batch, steps, n_pitches) for the window after `x` (batch, seq_len, n_pitches).

        With `y` and teacher_forcing == 1 the whole window is decoded in one fused GRU call; otherwise step by
        step, each sample taking the true previous frame with probability `teacher_forcing`, else its own
        thresholded prediction.
        """
        _, h = self.encoder(x)
        prev = x[:, -1:]
        if y is not None and teacher_forcing >= 1.0:
            out, _ = self.decoder(torch.cat([prev, y[:, :-1]], dim=1), h)
            return self.head(out)
        steps = y.size(1) if y is not None else (steps or self.cfg.seq_len)
        logits = []
        for t in range(steps):
            out, h = self.decoder(prev, h)
            step = self.head(out)
            logits.append(step)
            prev = (torch.sigmoid(step) > threshold).to(x.dtype)
            if y is not None and teacher_forcing > 0:
                use_true = torch.rand(x.size(0), 1, 1, device=x.device) < teacher_forcing
                prev = torch.where(use_true, y[:, t:t + 1], prev)
        return torch.cat(logits, dim=1)

    def checkpoint(self) -> dict:
        """Everything needed to rebuild the model; loadable with torch.load(..., weights_only=True)."""
        return {"config": asdict(self.cfg), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "Seq2Seq":
        model = cls(Config(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        return model
