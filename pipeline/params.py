"""Typed, validated view of params.yaml.

Every stage calls `load()` first, so a typo, a missing key or an impossible value fails before any work is done,
with the dotted key and the reason in the message. params.yaml is the one place a default value is written: the
models here and in pipeline/sources/ hold none, so every key is required of a params file. Code and tests that
set only a few keys call `parse()`, which lays them over the project's params.yaml (`defaults()`).
"""
from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Literal, Union

import yaml
from pydantic import Field, ValidationError, ValidationInfo, create_model, field_validator, model_validator

from pipeline import gm
from pipeline.near_duplicates import MIN_DISTINCT
from pipeline.schema import Strict
from pipeline.sources.base import HttpParams
from pipeline.sources.registry import REGISTRY

PARAMS_FILE = Path("params.yaml")  # a stage's params, relative to the repository it runs in
PROJECT_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"  # the defaults, beside this package


class ParamsError(ValueError):
    """params.yaml is invalid; the message names the key and the reason."""


class _DataBase(Strict):
    """data: the keys every source shares; `DataParams` adds data.<name> for each registered source."""

    sources: list[str] = Field(min_length=1)
    max_file_mb: float = Field(gt=0)
    http: HttpParams

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, sources: list[str]) -> list[str]:
        unknown = [s for s in sources if s not in REGISTRY]
        if unknown:
            raise ValueError(f"unknown source(s) {unknown}; known: {list(REGISTRY)}")
        if len(set(sources)) != len(sources):
            raise ValueError("sources are listed more than once")
        return sources

    @field_validator("*")
    @classmethod
    def _check_selected(cls, value, info: ValidationInfo):
        """A source's own `check`, only where it is in data.sources (a machine that only trains needs no music21)."""
        source = REGISTRY.get(info.field_name)
        if source is not None and source.check is not None and source.name in (info.data.get("sources") or []):
            source.check(value)
        return value


_clash = set(REGISTRY) & set(_DataBase.model_fields)
if _clash:  # create_model would silently let the source's model replace the shared key
    raise RuntimeError(f"source name(s) {sorted(_clash)} clash with data keys {list(_DataBase.model_fields)}")

DataParams = create_model("DataParams", __base__=_DataBase, __module__=__name__,
                          **{name: (source.params, ...) for name, source in REGISTRY.items()})


class FilterParams(Strict):
    instruments: list[Union[str, int]] = Field(min_length=1)
    mode: Literal["files", "tracks"]
    min_notes: int = Field(ge=1)
    min_beats: float = Field(ge=0, description="0 disables")
    timing: Literal["any", "quantized", "expressive"]
    min_unique_pitches: float = Field(ge=0, description="0 disables")
    window_beats: float = Field(gt=0)
    max_polyphony: int = Field(ge=0, description="0 disables")
    min_pitch_class_entropy: float = Field(ge=0, le=3.6, description="bits (at most log2 12 = 3.58); 0 disables")
    max_silence_beats: float = Field(ge=0, description="0 disables")
    max_notes_per_beat: float = Field(ge=0, description="0 disables")
    min_chunk_divergence: float = Field(ge=0, le=1, description="bits; 0 disables")
    max_instruments: int = Field(ge=0, description="0 disables")

    @field_validator("instruments")
    @classmethod
    def _known_instruments(cls, items: list) -> list:
        gm.programs_for(items)  # raises ValueError naming the bad entry
        return items


class PrepareParams(Strict):
    workers: int = Field(ge=0, description="0 uses every core")
    timeout_s: float = Field(gt=0)
    max_beats: float = Field(gt=0)
    max_tempo_events: int = Field(ge=1)
    max_bpm: float = Field(gt=0, description="a tempo faster than this (or of 0 microseconds) rejects the file")


class NearParams(Strict):
    threshold: float = Field(ge=0, lt=1, description="estimated Jaccard of the best pair of parts; 0 disables")
    drop_above: float = Field(ge=0, le=1, description="drop the later file of a pair this similar; 0 keeps all")
    intervals: int = Field(ge=MIN_DISTINCT, le=32, description="pitch intervals per shingle (a shingle needs "
                                                                 f"{MIN_DISTINCT} distinct ones to count)")
    num_perm: int = Field(ge=16, le=1024, description="MinHash permutations")

    @model_validator(mode="after")
    def _drop_above_threshold(self) -> "NearParams":
        if self.drop_above and (not self.threshold or self.drop_above < self.threshold):
            raise ValueError(f"drop_above={self.drop_above} needs the level on and at or above threshold="
                             f"{self.threshold} (0 keeps every near-copy)")
        return self


class DedupeParams(Strict):
    content: bool
    transpose_invariant: bool
    steps_per_beat: int = Field(ge=1, le=96)
    by_title: bool
    near: NearParams


class SplitParams(Strict):
    valid: float = Field(ge=0, lt=1)
    test: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _leaves_train(self) -> "SplitParams":
        if self.valid + self.test >= 1:
            raise ValueError("split.valid + split.test must leave a train share (sum < 1)")
        return self


class RepresentParams(Strict):
    kind: Literal["pianoroll", "tokens"]
    steps_per_beat: int = Field(ge=1, le=96)
    steps_per_second: int = Field(ge=0, le=1000, description="> 0: an absolute grid in seconds instead")
    pitch_low: int = Field(ge=0, le=127)
    pitch_high: int = Field(ge=0, le=127)
    onsets: bool
    velocity: bool
    tokenizer: Literal["REMI", "TSD", "MIDILike"]
    max_shift_beats: int = Field(ge=1, le=64)
    sustain: bool  # hold notes while the sustain pedal (CC64) is down, until it lifts or the key is struck
    transpose: tuple[int, int]

    @model_validator(mode="after")
    def _range(self) -> "RepresentParams":
        if self.pitch_low >= self.pitch_high:
            raise ValueError(f"represent.pitch_low ({self.pitch_low}) must be below pitch_high ({self.pitch_high})")
        lo, hi = self.transpose
        if not -12 <= lo <= 0 <= hi <= 12:
            raise ValueError(f"represent.transpose {list(self.transpose)} must be [low, high] with -12 <= low <= 0 "
                             "<= high <= 12 ([0, 0] disables)")
        return self

    @property
    def n_pitches(self) -> int:
        return self.pitch_high - self.pitch_low + 1


class ModelParams(Strict):
    hidden: int = Field(ge=2)
    layers: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    # piano rolls' output head: independent (a sigmoid per cell) | nade (the cells of a frame jointly) |
    # hold_nade (a hold gate, then the NADE); token models always predict one token with a softmax
    head: Literal["independent", "nade", "hold_nade"]
    nade_hidden: int = Field(ge=1, description="hidden units of the NADE head")


class TrainParams(Strict):
    seq_len: int = Field(ge=1)
    stride: int = Field(ge=1)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    teacher_forcing: float = Field(ge=0, le=1)
    teacher_forcing_decay: float = Field(gt=0, le=1, description="per-epoch multiplier of teacher_forcing")
    lr_schedule: Literal["constant", "cosine", "plateau"]
    loss: Literal["bce", "focal"]
    focal_alpha: float = Field(gt=0, lt=1)
    focal_gamma: float = Field(ge=0)
    grad_clip: float = Field(ge=0, description="0 disables clipping")
    patience: int = Field(ge=0, description="0 disables early stopping")
    device: Literal["auto", "cpu", "cuda"]
    threads: int = Field(ge=0, description="0 uses every core")
    loader_workers: int = Field(ge=0, description="DataLoader worker processes; 0 loads in the main process")
    processes: int = Field(ge=1, description="> 1: DDP over this many local processes, through torchrun")
    amp: bool  # mixed precision (CUDA only)
    compile: bool  # torch.compile the model (CUDA only)
    resume: bool  # resume from models/last.pt when it matches params and data


class EvaluateParams(Strict):
    threshold: float = Field(gt=0, lt=1, description="fixed decision threshold (beside the tuned one)")
    batch_size: int = Field(ge=1)


class GenerateParams(Strict):
    n_samples: int = Field(ge=1)
    prime: Literal["test", "empty"]  # seed from a real test window, or from silence
    length: float = Field(gt=0)
    unit: Literal["beats", "seconds"]
    sampling: Literal["threshold", "bernoulli", "topk"]
    threshold: Union[Literal["auto"], float]  # auto: the threshold that maximises valid F1
    temperature: float = Field(gt=0)
    top_k: int = Field(ge=1, description="cells (tokens) per frame (step) that topk sampling draws from")

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, v):
        if v == "auto" or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1):
            return v
        raise ValueError(f"must be 'auto' or a number in (0, 1), got {v!r}")


class RenderParams(Strict):
    soundfont: str  # a General MIDI .sf2 file
    sample_rate: int = Field(ge=8000, le=96000)


class Params(Strict):
    seed: int = Field(ge=0)
    data: DataParams
    filter: FilterParams
    prepare: PrepareParams
    dedupe: DedupeParams
    split: SplitParams
    represent: RepresentParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams
    generate: GenerateParams
    render: RenderParams

    @model_validator(mode="after")
    def _head_fits(self) -> "Params":
        if self.model.head != "independent" and self.represent.kind == "pianoroll" and self.generate.sampling == "topk":
            raise ValueError("generate.sampling: topk needs the independent head (model.head: independent); "
                             f"the {self.model.head} head chooses cell by cell: use threshold or bernoulli")
        return self


def _format(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid params"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "missing key (the project's params.yaml has every key, with its default)"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def validate(raw: dict, origin: str = "params") -> Params:
    """Validate a complete params mapping; raise ParamsError naming every unknown, missing or bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{origin}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format(err, origin)) from None


def _read(path: Path) -> object:
    """The YAML document at `path` ({} when empty); ParamsError when it is not YAML."""
    try:
        with path.open() as f:
            return yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None


@lru_cache(maxsize=1)
def _project() -> object:
    return _read(PROJECT_PARAMS)


def defaults() -> dict:
    """The project's params.yaml as a fresh nested dict: the default of every key, written nowhere else."""
    return copy.deepcopy(_project())


def overlay(base: dict, over: dict) -> dict:
    """`over` laid on `base`, as a new dict: a mapping merges key by key, any other value (a list too) replaces.
    How `parse` lays a few keys on params.yaml's values (and the tests their params on a repository's)."""
    out = dict(base)
    for key, value in over.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = overlay(base[key], value) if nested else value
    return out


def parse(raw: dict, origin: str = "params") -> Params:
    """Validate the keys `raw` sets, laid over `defaults()`; raise ParamsError naming every bad key.

    For code and tests that change a few keys; a stage reads its whole params file with `load`.
    """
    if not isinstance(raw, dict):
        raise ParamsError(f"{origin}: expected a mapping at the top level, got {type(raw).__name__}")
    return validate(overlay(defaults(), raw), origin)


def load(path: Path | str = PARAMS_FILE) -> Params:
    """The params file at `path` (by default params.yaml where the stage runs), which must hold every key."""
    path = Path(path)
    return validate(_read(path), str(path))
