"""What stages hand each other: every path a stage reads or writes, and the typed files between them.

`STAGES` names, per stage of dvc.yaml, the data it reads and the files it writes; tests/test_contracts.py holds
dvc.yaml to it (deps, outs, metrics and plots), so the code and the DAG cannot name different files. `Meta` is
data/processed/<kind>/meta.json, written by `convert` and read by every later stage; `read_calibration` reads
what `calibrate` wrote, so no stage imports another stage to read its output.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from pipeline.pianoroll import Grid

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


def grid_to_dict(grid: Grid) -> dict:
    """The grid as meta.json holds it (`represent.steps_per_second` is a whole number of frames a second)."""
    return {"steps_per_beat": grid.steps_per_beat, "steps_per_second": int(grid.steps_per_second),
            "pitch_low": grid.pitch_low, "pitch_high": grid.pitch_high, "drums": grid.drums}


def grid_from_dict(d: dict) -> Grid:
    return Grid(d["steps_per_beat"], d["pitch_low"], d["pitch_high"], float(d["steps_per_second"]), d["drums"])


@dataclass(frozen=True)
class Meta:
    """data/processed/<kind>/meta.json: what `convert` made, as every later stage needs to know it.

    Counts are per split ({"train": n, "valid": n, "test": n}). `features` (piano rolls: keys x planes) or
    `vocab_size`/`pad_id`/`tokenizer`/`tokens` (token streams) are set by the representation; the others are
    None and absent from the file.
    """
    kind: str
    format_version: int
    parts: list[str]
    grid: Grid
    n_pitches: int
    n_keys: int
    drum_classes: list[str]
    onsets: bool
    velocity: bool
    program: int                # the GM program most used by the pitched parts: what generated MIDI plays on
    sequences: dict[str, int]
    frames: dict[str, int]
    notes: dict[str, int]
    notes_outside_range: int
    notes_merged_unison: int
    empty_after_range: list[str]
    features: int | None = None
    tokens: dict[str, int] | None = None
    tokenizer: str | None = None
    vocab_size: int | None = None
    pad_id: int | None = None

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["grid"] = grid_to_dict(self.grid)
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> "Meta":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"meta.json has unknown keys {sorted(unknown)}: made by another version of convert; "
                             "rerun `dvc repro convert`")
        return cls(**{**d, "grid": grid_from_dict(d["grid"])})

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, d: Path) -> "Meta":
        """The meta.json of a processed folder `d`. Raises FileNotFoundError naming the stage to run."""
        path = Path(d) / "meta.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `dvc repro convert` first")
        return cls.from_dict(json.loads(path.read_text()))


def processed_dir(root: Path = PROCESSED) -> Path:
    """The folder `convert` wrote (data/processed/<kind>). Raises FileNotFoundError when there is none."""
    metas = sorted(Path(root).glob("*/meta.json"))
    if not metas:
        raise FileNotFoundError(f"no {root}/<kind>/meta.json: run `dvc repro convert` first")
    return metas[0].parent


def read_calibration(path: Path = CALIBRATION) -> dict:
    """What `calibrate` chose on train and valid: {"kind", "threshold", "valid_f1", "baselines": {...}}."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro calibrate` first")
    return json.loads(Path(path).read_text())
