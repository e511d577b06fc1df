"""Loading the trained model with a clear error when it is missing or does not fit the data."""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.model import Seq2Seq

MODEL = Path("models/model.pt")


def expected_features(meta: dict) -> int:
    return meta["vocab_size"] if meta["kind"] == "tokens" else meta["features"]


def load_model(meta: dict, path: Path = MODEL) -> Seq2Seq:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro train` first")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ckpt["config"]
    if cfg.get("kind") != meta["kind"]:
        raise ValueError(f"{path} was trained on {cfg.get('kind')} but the data is {meta['kind']} "
                         "(represent.kind changed): retrain with `dvc repro train`")
    if cfg["n_features"] != expected_features(meta):
        what = "vocabulary" if meta["kind"] == "tokens" else "frame width (keys x planes)"
        raise ValueError(f"{path} was trained with a {what} of {cfg['n_features']} but the data has "
                         f"{expected_features(meta)} (the pitch range, drums, onsets or tokenizer changed): retrain")
    return Seq2Seq.from_checkpoint(ckpt).eval()
