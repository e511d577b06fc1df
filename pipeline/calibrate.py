"""Stage `calibrate`: fit what evaluation and generation need beyond the weights, on train and valid only.

- the decision threshold that maximises valid F1 (teacher-forced next frame; for a NADE head, of the frames it
  decodes cell by cell at each threshold of a grid), used by `generate` when
  `generate.threshold: auto` and reported by `evaluate` beside the fixed one: a focal-loss model's
  probabilities are not calibrated, so 0.5 is an arbitrary cut;
- the baselines: repeat-the-last-frame error rates and per-key frequencies of the training frames, and the
  frequency baseline's own best valid threshold (at 0.5 it would predict silence).
The test split is never read here, so choosing thresholds cannot leak test information.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import baselines
from pipeline import params as P
from pipeline import runtime
from pipeline.atomic import write_json
from pipeline.checkpoint import load_model
from pipeline.cli import run_stage
from pipeline.dataset import Split, Windows, data_dir
from pipeline.metrics import Sweep, ThresholdGrid, sounding, sounding_prob

OUT = Path("models/calibration.json")


def frame_windows(split: Split, L: int, batch_size: int):
    """Frame windows of a split: the dataset's own for piano rolls, decoded ones for tokens."""
    if split.meta["kind"] == "tokens":
        return baselines.FrameWindows(split, L)
    return DataLoader(Windows(split, L, L), batch_size=batch_size)


def new_sweep(model) -> Sweep | ThresholdGrid:
    """Where a model's precision-recall trade-off is counted: every threshold at once for a factorised head,
    a grid of decoded thresholds otherwise."""
    return Sweep() if model.head.factorised else ThresholdGrid()


def add_to_sweep(sweep: Sweep | ThresholdGrid, model, out: torch.Tensor, y: torch.Tensor, k: int) -> None:
    """Count the model's teacher-forced next-frame decisions on one batch at every threshold of `sweep`
    (`out`: the decoder states, model.states(x, y))."""
    true = sounding(y, k)
    if isinstance(sweep, Sweep):
        sweep.add(sounding_prob(torch.sigmoid(model.head(out, y)), k), true)
        return
    for i, t in enumerate(sweep.THRESHOLDS):
        sweep.add(i, sounding(model.head.decide(out, model.threshold(float(t)))[0], k), true)


@torch.no_grad()
def calibrate(model, train: Split, valid: Split, batch_size: int, device) -> dict:
    L, k = model.cfg.seq_len, train.meta["n_keys"]
    fitted = baselines.fit(frame_windows(train, L, batch_size), k)
    freq = torch.tensor(fitted["key_frequency"])
    tokens = train.meta["kind"] == "tokens"
    model_sweep, freq_sweep = new_sweep(model), Sweep()
    model.to(device)
    for x, y in tqdm(frame_windows(valid, L, batch_size), desc="calibrate", unit="batch", leave=False):
        true = sounding(y, k)
        freq_sweep.add(sounding_prob(freq.expand_as(y), k), true)
        if not tokens:
            x, y = x.to(device), y.to(device)
            add_to_sweep(model_sweep, model, model.states(x, y), y, k)
    if not freq_sweep.pos.sum():
        raise ValueError("calibrate: the valid split has no sounding frames to choose a threshold on")
    t, f1 = model_sweep.best() if not tokens else (None, None)
    tb, fb = freq_sweep.best()
    return {"kind": train.meta["kind"], "threshold": t, "valid_f1": f1,
            "baselines": {**fitted, "frequency_threshold": tb, "frequency_valid_f1": fb}}


def load(path: Path = OUT) -> dict:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro calibrate` first")
    return json.loads(Path(path).read_text())


def main() -> None:
    p = P.load()
    runtime.setup(p.seed)
    d = data_dir()
    train, valid = Split(d, "train"), Split(d, "valid")
    model = load_model(valid.meta)
    result = calibrate(model, train, valid, p.evaluate.batch_size, runtime.device(p.train.device))
    write_json(OUT, result)
    if result["threshold"] is None:
        print(f"calibrate: token model (no threshold); frequency baseline threshold "
              f"{result['baselines']['frequency_threshold']:.3f} -> {OUT}")
    else:
        print(f"calibrate: threshold {result['threshold']:.3f} maximises valid F1 ({result['valid_f1']:.3f}) -> {OUT}")


if __name__ == "__main__":
    run_stage(main)
