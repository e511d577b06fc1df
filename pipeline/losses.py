"""Losses over note logits. Focal loss keeps the ~95% silent cells from drowning the few active ones."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target)


def focal(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.75, gamma: float = 2.0) -> torch.Tensor:
    """Lin et al. (2017): BCE scaled by (1 - p_t)^gamma, positives weighted alpha and negatives 1 - alpha."""
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * (1 - p_t) ** gamma * ce).mean()


def make(name: str, alpha: float = 0.75, gamma: float = 2.0):
    if name == "bce":
        return bce
    if name == "focal":
        return lambda logits, target: focal(logits, target, alpha, gamma)
    raise ValueError(f"unknown loss {name!r}")
