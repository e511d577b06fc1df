"""How a free-running model turns a step's logits into the step it feeds back: the generation modes.

- threshold: a cell is on when its probability passes the threshold (a token model takes the most likely token);
- bernoulli: every cell is drawn on with its probability (a token model draws from its softmax);
- topk: as bernoulli, among the `top_k` most likely cells of each plane (sustain, onset) or tokens.
The temperature divides the logits first: below 1 sharpens, above 1 flattens. Draws come from a seeded
generator, so a sample is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Sampler:
    mode: str = "threshold"
    threshold: float = 0.5
    temperature: float = 1.0
    top_k: int = 8
    tokens: bool = False
    n_keys: int = 0  # width of one plane of a piano-roll frame (topk keeps top_k per plane)
    generator: torch.Generator | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        z = logits.float() / self.temperature
        return self._token(z) if self.tokens else self._cells(z)

    def _token(self, z: torch.Tensor) -> torch.Tensor:
        if self.mode == "threshold":
            return z.argmax(-1)
        if self.mode == "topk":
            kth = z.topk(min(self.top_k, z.size(-1)), dim=-1).values[..., -1:]
            z = z.masked_fill(z < kth, float("-inf"))
        probs = z.softmax(-1).reshape(-1, z.size(-1))
        return torch.multinomial(probs, 1, generator=self.generator).reshape(z.shape[:-1])

    def _cells(self, z: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(z)
        if self.mode == "threshold":
            return (p > self.threshold).float()
        if self.mode == "topk":
            width = self.n_keys or p.size(-1)
            planes = []
            for plane in p.split(width, dim=-1):
                kth = plane.topk(min(self.top_k, plane.size(-1)), dim=-1).values[..., -1:]
                planes.append(plane.masked_fill(plane < kth, 0.0))
            p = torch.cat(planes, dim=-1)
        draw = torch.rand(p.shape, generator=self.generator, device=p.device)
        return (draw < p).float()

