"""GRU encoder-decoder (the DeepMusician design), over piano-roll frames or token ids.

The encoder reads `seq_len` steps; its final state starts a decoder that emits the next window step by step,
each step fed the previous one (the true one under teacher forcing, else its own decision). Piano rolls go in
as multi-hot frames and come out as per-cell logits (sigmoid); tokens go in through an embedding and come out as
logits over the vocabulary (softmax).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from pipeline.gru import GRU


@dataclass(frozen=True)
class Config:
    n_features: int = 176    # frame width (keys x planes), or the vocabulary size for tokens
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2
    seq_len: int = 32
    tokens: bool = False
    kind: str = "pianoroll"  # the representation trained on: checked before evaluate/generate use the model
    n_keys: int = 88         # keys per plane (piano rolls)


class Seq2Seq(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        h, drop = cfg.hidden, (cfg.dropout if cfg.layers > 1 else 0.0)
        self.embed = nn.Embedding(cfg.n_features, h) if cfg.tokens else None
        width = h if cfg.tokens else cfg.n_features
        self.encoder = GRU(width, h, cfg.layers, batch_first=True, dropout=drop)
        self.decoder = GRU(width, h, cfg.layers, batch_first=True, dropout=drop)
        self.head = nn.Sequential(nn.Linear(h, h // 2), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(h // 2, cfg.n_features))

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x) if self.embed is not None else x

    def decide(self, logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """The step fed back in free-running mode: thresholded cells, or the most likely token."""
        if self.cfg.tokens:
            return logits.argmax(-1)
        return (torch.sigmoid(logits) > threshold).float()

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, teacher_forcing: float = 1.0,
                steps: int | None = None, threshold: float = 0.5, decide=None) -> torch.Tensor:
        """Logits (batch, steps, n_features) for the window after `x` (batch, seq_len[, n_features]).

        With `y` and teacher_forcing == 1 the whole window is decoded in one fused GRU call; otherwise step by
        step, each sample taking the true previous step with probability `teacher_forcing`, else its own
        decision (`decide(logits)`, by default `self.decide`).
        """
        decide = decide or (lambda lg: self.decide(lg, threshold))
        _, h = self.encoder(self.inputs(x))
        prev = x[:, -1:]
        if y is not None and teacher_forcing >= 1.0:
            out, _ = self.decoder(self.inputs(torch.cat([prev, y[:, :-1]], dim=1)), h)
            return self.head(out)
        steps = y.size(1) if y is not None else (steps or self.cfg.seq_len)
        logits = []
        for t in range(steps):
            out, h = self.decoder(self.inputs(prev), h)
            step = self.head(out)
            logits.append(step)
            prev = decide(step).to(x.dtype)
            if y is not None and teacher_forcing > 0:
                use_true = torch.rand(x.size(0), 1, device=x.device) < teacher_forcing
                if not self.cfg.tokens:
                    use_true = use_true.unsqueeze(-1)
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
