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

import time

import torch
from tqdm import tqdm

from pipeline import baselines, representations, runtime
from pipeline import params as P
from pipeline.atomic import write_json
from pipeline.checkpoint import load_model
from pipeline.cli import run_stage
from pipeline.dataset import Split, data_dir
from pipeline.metrics import Sweep, sounding, sounding_prob
from pipeline.paths import CALIBRATION
from pipeline.scoring import add_to_sweep, new_sweep


@torch.no_grad()
def calibrate(model, train: Split, valid: Split, batch_size: int, device) -> dict:
    """{"kind", "threshold" and "valid_f1" (None when the representation's steps are not thresholded),
    "baselines": the fitted baselines and the frequency baseline's best valid threshold}. Raises ValueError
    when the valid split has no sounding frame."""
    L, k, rep = model.cfg.seq_len, train.meta.n_keys, representations.of(train.meta.kind)
    fitted = baselines.fit(tqdm(rep.frame_windows(train, L, batch_size), desc="calibrate (baselines, train)",
                                unit="batch", mininterval=1), k)
    freq = torch.tensor(fitted["key_frequency"])
    model_sweep, freq_sweep = new_sweep(model), Sweep()
    model.to(device)
    for x, y in tqdm(rep.frame_windows(valid, L, batch_size), desc="calibrate (thresholds, valid)", unit="batch",
                     mininterval=1):
        true = sounding(y, k)
        freq_sweep.add(sounding_prob(freq.expand_as(y), k), true)
        if rep.thresholded:
            x, y = x.to(device), y.to(device)
            add_to_sweep(model_sweep, model, model.states(x, y), y, k, model.previous(x, y))
    if not freq_sweep.pos.sum():
        raise ValueError("calibrate: the valid split has no sounding frames to choose a threshold on")
    t, f1 = model_sweep.best() if rep.thresholded else (None, None)
    tb, fb = freq_sweep.best()
    return {"kind": train.meta.kind, "threshold": t, "valid_f1": f1,
            "baselines": {**fitted, "frequency_threshold": tb, "frequency_valid_f1": fb}}


def main() -> None:
    start = time.perf_counter()
    p = P.load()
    runtime.setup(p.seed)
    d = data_dir()
    train, valid = Split(d, "train"), Split(d, "valid")
    model = load_model(valid.meta)
    result = calibrate(model, train, valid, p.evaluate.batch_size, runtime.device(p.train.device))
    write_json(CALIBRATION, result)
    seqs = train.meta.sequences
    fitted = (f"baselines fitted on train ({seqs['train']} sequences), thresholds on valid ({seqs['valid']}), in "
              f"{time.perf_counter() - start:.0f} s")
    if result["threshold"] is None:
        print(f"calibrate: {train.meta.kind} model (no threshold); frequency baseline threshold "
              f"{result['baselines']['frequency_threshold']:.3f}; {fitted} -> {CALIBRATION}")
    else:
        print(f"calibrate: threshold {result['threshold']:.3f} maximises valid F1 ({result['valid_f1']:.3f}); "
              f"{fitted} -> {CALIBRATION}")


if __name__ == "__main__":
    run_stage(main)
