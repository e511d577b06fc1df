"""Every path a stage reads or writes, named once; `STAGES` says which stage reads and writes which.

tests/test_contracts.py holds dvc.yaml to `STAGES` (deps, outs, metrics and plots), so the code and the DAG
cannot name different files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RAW = Path("data/raw")                      # acquire: one folder per source
PREPARED = Path("data/prepared")            # prepare: selected.parquet, rejects, groups
PREPARE_REPORT = Path("metrics/prepare.json")
PROCESSED = Path("data/processed")          # convert: <kind>/ shards, meta.json (and tokenizer.json)
MODEL = Path("models/model.pt")             # train: the best weights
LAST = Path("models/last.pt")               # train: the resumable checkpoint
TRAIN_LOG = Path("metrics/train")           # train: dvclive's metrics.json and plots
TRAIN_METRICS = TRAIN_LOG / "metrics.json"
TRAIN_PLOTS = TRAIN_LOG / "plots/metrics"
CALIBRATION = Path("models/calibration.json")
SAMPLES = Path("data/samples")              # generate: MIDI, pictures, index.json
SAMPLE_INDEX = SAMPLES / "index.json"
EVAL = Path("metrics/eval.json")
PR_CURVE = Path("metrics/pr_curve.json")
MUSIC_PNG = Path("metrics/music_distributions.png")
AUDIO = Path("data/audio")                  # render: WAV files (when FluidSynth is installed)
REPORT = Path("data/report.html")


@dataclass(frozen=True)
class Stage:
    """The data a stage reads and the files it writes (code and params are dvc.yaml's business)."""
    reads: tuple[Path, ...]
    writes: tuple[Path, ...]


STAGES = {
    "acquire": Stage((), (RAW,)),  # a foreach stage: RAW/<source> per source
    "prepare": Stage((RAW,), (PREPARED, PREPARE_REPORT)),
    "convert": Stage((RAW, PREPARED), (PROCESSED,)),
    "train": Stage((PROCESSED,), (MODEL, LAST, TRAIN_METRICS, TRAIN_PLOTS)),
    "calibrate": Stage((PROCESSED, MODEL), (CALIBRATION,)),
    "generate": Stage((PROCESSED, MODEL, CALIBRATION), (SAMPLES,)),
    "evaluate": Stage((PROCESSED, SAMPLES, MODEL, CALIBRATION), (EVAL, PR_CURVE, MUSIC_PNG)),
    "render": Stage((SAMPLES,), (AUDIO,)),
    "report": Stage((SAMPLES, AUDIO, EVAL, MUSIC_PNG), (REPORT,)),
}
