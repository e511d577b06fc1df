"""Loading the trained model with a clear error when it is missing or does not fit the data."""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.model import Seq2Seq

MODEL = Path("models/model.pt")


def load_model(meta: dict, path: Path = MODEL) -> Seq2Seq:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro train` first")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt["config"]["n_pitches"] != meta["n_pitches"]:
        raise ValueError(f"{path} was trained on {ckpt['config']['n_pitches']} pitches but the data has "
                         f"{meta['n_pitches']} (represent.pitch_low..pitch_high changed): retrain")
    return Seq2Seq.from_checkpoint(ckpt).eval()
