"""Loading the trained model with a clear error when it is missing or does not fit the data."""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline import representations
from pipeline.contracts import Meta
from pipeline.model import Seq2Seq
from pipeline.paths import MODEL


def load_model(meta: Meta, path: Path = MODEL) -> Seq2Seq:
    """The model at `path`, in eval mode. Raises FileNotFoundError when it is missing and ValueError when it
    was trained on another representation or width than the data `meta` describes."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro train` first")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ckpt["config"]
    if cfg.get("kind") != meta.kind:
        raise ValueError(f"{path} was trained on {cfg.get('kind')} but the data is {meta.kind} "
                         "(represent.kind changed): retrain with `dvc repro train`")
    rep = representations.of(meta.kind)
    if cfg["n_features"] != rep.n_features(meta):
        raise ValueError(f"{path} was trained with a {rep.width_name} of {cfg['n_features']} but the data has "
                         f"{rep.n_features(meta)} (the pitch range, drums, onsets or tokenizer changed): retrain")
    return Seq2Seq.from_checkpoint(ckpt).eval()
