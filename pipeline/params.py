"""Typed, validated view of params.yaml.

Every stage calls `load()` first, so a typo or an impossible value fails before any work is done, with the
dotted key and the reason in the message.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from pipeline import gm

PARAMS_FILE = Path("params.yaml")
SOURCES = ("music21", "local", "maestro", "lakh", "bitmidi")
USER_AGENT = "midi-pipeline/0.1 (research data pipeline; contact: see the project README)"


class ParamsError(ValueError):
    """params.yaml is invalid; the message names the key and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Music21Params(_Strict):
    composers: list[str] = Field(default_factory=lambda: ["bach"], min_length=1)
    max_files: int = Field(0, ge=0, description="0 takes every work")


class LocalParams(_Strict):
    path: Union[str, None] = None


def _checksum(value: str | None) -> str | None:
    if value is not None:
        from pipeline.http import parse_checksum

        parse_checksum(value)  # raises naming the expected form
    return value


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


class HttpParams(_Strict):
    user_agent: str = Field(USER_AGENT, min_length=1)
    timeout_s: float = Field(60, gt=0)
    retries: int = Field(5, ge=0)
    backoff_s: float = Field(1.0, ge=0)


class ArchiveSourceParams(_Strict):
    url: str
    checksum: Union[str, None]

    _url = field_validator("url")(classmethod(lambda cls, v: _http_url(v)))
    _sum = field_validator("checksum")(classmethod(lambda cls, v: _checksum(v)))


class MaestroParams(ArchiveSourceParams):
    url: str = "https://storage.googleapis.com/magentadata/datasets/maestro/v3.0.0/maestro-v3.0.0-midi.zip"
    checksum: Union[str, None] = "sha256:70470ee253295c8d2c71e6d9d4a815189e35c89624b76d22fce5a019d5dde12c"


class LakhParams(ArchiveSourceParams):
    url: str = "http://hog.ee.columbia.edu/craffel/lmd/lmd_full.tar.gz"
    checksum: Union[str, None] = "md5:2536ce3fd2cede53ddaa264f731859ab"


class BitmidiParams(_Strict):
    base_url: str = "https://bitmidi.com"
    max_files: int = Field(100, ge=0, description="0 takes every file the site lists")
    page_size: int = Field(50, ge=1, le=50)
    requests_per_second: float = Field(1.0, gt=0, le=10)
    user_agent: str = Field(USER_AGENT, min_length=1)
    respect_robots: bool = True

    _url = field_validator("base_url")(classmethod(lambda cls, v: _http_url(v)))


class DataParams(_Strict):
    sources: list[str] = Field(default_factory=lambda: ["music21"], min_length=1)
    max_file_mb: float = Field(16, gt=0)
    http: HttpParams = HttpParams()
    music21: Music21Params = Music21Params()
    local: LocalParams = LocalParams()
    maestro: MaestroParams = MaestroParams()
    lakh: LakhParams = LakhParams()
    bitmidi: BitmidiParams = BitmidiParams()

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, sources: list[str]) -> list[str]:
        unknown = [s for s in sources if s not in SOURCES]
        if unknown:
            raise ValueError(f"unknown source(s) {unknown}; known: {list(SOURCES)}")
        if len(set(sources)) != len(sources):
            raise ValueError("sources are listed more than once")
        return sources

    @field_validator("music21")
    @classmethod
    def _known_collections(cls, m: Music21Params, info: ValidationInfo) -> Music21Params:
        """Checked only where music21 is a source: a machine that only trains needs no music21 installed."""
        if "music21" not in (info.data.get("sources") or []):
            return m
        from pipeline.sources.music21_corpus import corpus_collections

        known = corpus_collections()
        unknown = [n for n in m.composers if n not in known]
        if unknown:
            raise ValueError(f"composers: unknown music21 corpus collection(s) {unknown}; known: {sorted(known)}")
        return m

    @model_validator(mode="after")
    def _local_needs_path(self) -> "DataParams":
        if "local" in self.sources and not self.local.path:
            raise ValueError("data.local.path must be set when 'local' is in data.sources")
        return self


class FilterParams(_Strict):
    instruments: list[Union[str, int]] = Field(default_factory=lambda: ["pitched"], min_length=1)
    mode: Literal["files", "tracks"] = "files"
    min_notes: int = Field(1, ge=1)
    min_beats: float = Field(0, ge=0, description="0 disables")
    min_unique_pitches: float = Field(0, ge=0, description="0 disables")
    unique_window_beats: float = Field(16, gt=0)
    max_polyphony: int = Field(0, ge=0, description="0 disables")

    @field_validator("instruments")
    @classmethod
    def _known_instruments(cls, items: list) -> list:
        gm.programs_for(items)  # raises ValueError naming the bad entry
        return items


class PrepareParams(_Strict):
    workers: int = Field(0, ge=0, description="0 uses every core")
    timeout_s: float = Field(30, gt=0)
    max_beats: float = Field(50_000, gt=0)
    max_tempo_events: int = Field(20_000, ge=1)
    max_bpm: float = Field(1000, gt=0, description="a tempo faster than this (or of 0 microseconds) rejects the file")


class DedupeParams(_Strict):
    content: bool = True
    transpose_invariant: bool = True
    steps_per_beat: int = Field(4, ge=1, le=96)
    by_title: bool = True


class SplitParams(_Strict):
    valid: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _leaves_train(self) -> "SplitParams":
        if self.valid + self.test >= 1:
            raise ValueError("split.valid + split.test must leave a train share (sum < 1)")
        return self


class RepresentParams(_Strict):
    kind: Literal["pianoroll", "tokens"] = "pianoroll"
    steps_per_beat: int = Field(4, ge=1, le=96)
    steps_per_second: int = Field(0, ge=0, le=1000, description="> 0: an absolute grid in seconds instead")
    pitch_low: int = Field(21, ge=0, le=127)
    pitch_high: int = Field(108, ge=0, le=127)
    onsets: bool = True
    velocity: bool = False
    tokenizer: Literal["REMI", "TSD", "MIDILike"] = "REMI"
    max_shift_beats: int = Field(8, ge=1, le=64)
    sustain: bool = True  # hold notes while the sustain pedal (CC64) is down, until it lifts or the key is struck
    transpose: tuple[int, int] = (-3, 3)

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


class ModelParams(_Strict):
    hidden: int = Field(256, ge=2)
    layers: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    # piano rolls' output head: independent (a sigmoid per cell) | nade (the cells of a frame jointly); token
    # models always predict one token with a softmax
    head: Literal["independent", "nade"] = "nade"
    nade_hidden: int = Field(64, ge=1, description="hidden units of the NADE head")


class TrainParams(_Strict):
    seq_len: int = Field(32, ge=1)
    stride: int = Field(16, ge=1)
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    teacher_forcing: float = Field(1.0, ge=0, le=1)
    teacher_forcing_decay: float = Field(1.0, gt=0, le=1, description="per-epoch multiplier of teacher_forcing")
    lr_schedule: Literal["constant", "cosine", "plateau"] = "plateau"
    loss: Literal["bce", "focal"] = "focal"
    focal_alpha: float = Field(0.75, gt=0, lt=1)
    focal_gamma: float = Field(2.0, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    patience: int = Field(5, ge=0, description="0 disables early stopping")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, description="0 uses every core")
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes; 0 loads in the main process")
    processes: int = Field(1, ge=1, description="> 1: DDP over this many local processes, through torchrun")
    amp: bool = True       # mixed precision (CUDA only)
    compile: bool = False  # torch.compile the model (CUDA only)
    resume: bool = True    # resume from models/last.pt when it matches params and data


class EvaluateParams(_Strict):
    threshold: float = Field(0.5, gt=0, lt=1, description="fixed decision threshold (beside the tuned one)")
    batch_size: int = Field(256, ge=1)


class GenerateParams(_Strict):
    n_samples: int = Field(32, ge=1)
    prime: Literal["test", "empty"] = "test"  # seed from a real test window, or from silence
    length: float = Field(16, gt=0)
    unit: Literal["beats", "seconds"] = "beats"
    sampling: Literal["threshold", "bernoulli", "topk"] = "bernoulli"
    threshold: Union[Literal["auto"], float] = "auto"  # auto: the threshold that maximises valid F1
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(8, ge=1, description="cells (tokens) per frame (step) that topk sampling draws from")

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, v):
        if v == "auto" or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1):
            return v
        raise ValueError(f"must be 'auto' or a number in (0, 1), got {v!r}")


class RenderParams(_Strict):
    soundfont: str = "/usr/share/sounds/sf2/FluidR3_GM.sf2"  # Debian's fluid-soundfont-gm
    sample_rate: int = Field(22050, ge=8000, le=96000)


class Params(_Strict):
    seed: int = Field(42, ge=0)
    data: DataParams = DataParams()
    filter: FilterParams = FilterParams()
    prepare: PrepareParams = PrepareParams()
    dedupe: DedupeParams = DedupeParams()
    split: SplitParams = SplitParams()
    represent: RepresentParams = RepresentParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    generate: GenerateParams = GenerateParams()
    render: RenderParams = RenderParams()

    @model_validator(mode="after")
    def _head_fits(self) -> "Params":
        if self.model.head == "nade" and self.represent.kind == "pianoroll" and self.generate.sampling == "topk":
            raise ValueError("generate.sampling: topk needs the independent head (model.head: independent); "
                             "the nade head chooses cell by cell: use threshold or bernoulli")
        return self


def _format(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid params"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def parse(raw: dict, origin: str = "params") -> Params:
    """Validate a params mapping; raise ParamsError naming every bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{origin}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format(err, origin)) from None


def load(path: Path | str = PARAMS_FILE) -> Params:
    path = Path(path)
    try:
        with path.open() as f:
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    return parse(raw, str(path))
