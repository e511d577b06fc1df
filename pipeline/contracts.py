"""The typed files stages hand each other: meta.json (convert -> every later stage) and calibration.json.

`Meta` is data/processed/<kind>/meta.json, written by `convert` and read by every later stage;
`read_calibration` reads what `calibrate` wrote, so no stage imports another stage to read its output.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from pipeline.paths import CALIBRATION, PROCESSED
from pipeline.pianoroll import Grid


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
