"""Device, threads and seeding, in one place so every stage runs the same way on CPU and CUDA."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def device(name: str = "auto") -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def setup(seed: int, threads: int = 0) -> None:
    torch.set_num_threads(threads if threads > 0 else (os.cpu_count() or 1))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
