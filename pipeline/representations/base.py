"""The interface every representation implements: what differs between piano rolls and token streams.

A representation owns, for its kind: the Parquet columns `convert` stores and how a sequence is encoded into
them; how the stored sequences are read, cut into training windows and transposed; the model's input width
(frame width or vocabulary), its output head and loss; how a step is decided or sampled; how the model's output
decodes back to notes; and the evaluation protocols that apply to it. Stages hold one instance (from
`representations.of(kind)`) and call these methods; they never test the kind's name.

Shapes: a piano-roll step is a frame (features,) of 0/1 cells; a token step is one id. A window pair (x, y) is
(seq_len[, features]) each.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Callable, ClassVar

from pipeline.codecs import Codec

if TYPE_CHECKING:
    import torch

    from pipeline import params as P
    from pipeline.contracts import Meta
    from pipeline.dataset import Split
    from pipeline.model import Config, Seq2Seq
    from pipeline.pianoroll import Notes
    from pipeline.sampling import Sampler


class Representation(Codec):
    """A codec (how the kind is stored and read) plus everything the model-facing stages need of it."""
    width_name: ClassVar[str]      # what n_features measures, for error messages
    thresholded: ClassVar[bool]    # steps are cells decided against a threshold (calibrate fits one)

    # --- the model --------------------------------------------------------------------------------------------
    @abstractmethod
    def n_features(self, meta: "Meta") -> int:
        """The model's input and output width: frame width, or vocabulary size."""

    embeds: ClassVar[bool] = False  # steps are ids the model embeds (else multi-hot frames fed as they are)

    @abstractmethod
    def head(self, m: "P.ModelParams") -> str:
        """The output head (pipeline/heads.py) this kind trains under `model.*` params."""

    def model_config(self, meta: "Meta", m: "P.ModelParams", seq_len: int) -> "Config":
        """The model for this data under `model.*` params."""
        from pipeline.model import Config

        return Config(n_features=self.n_features(meta), hidden=m.hidden, layers=m.layers, dropout=m.dropout,
                      seq_len=seq_len, tokens=self.embeds, kind=self.kind, n_keys=meta.n_keys, head=self.head(m),
                      nade_hidden=m.nade_hidden)

    def init(self, model: "Seq2Seq", split: "Split") -> None:
        """Set what training starts from the training split (default: nothing)."""

    @abstractmethod
    def loss(self, p: "P.Params", meta: "Meta") -> Callable:
        """fn(logits, y) -> the training loss of a batch (a scalar tensor)."""

    @abstractmethod
    def validation(self) -> "Validation":
        """An accumulator of the valid figures logged each epoch."""

    # --- deciding, generating, evaluating ---------------------------------------------------------------------
    @abstractmethod
    def sampler(self, g: "P.GenerateParams", meta: "Meta", calibration: Callable[[], dict], model: "Seq2Seq",
                generator: "torch.Generator") -> "Sampler":
        """How `generate` picks each step (`calibration` reads calibrate's output when a threshold is needed).
        Raises ValueError for a mode the model cannot use."""

    @abstractmethod
    def continue_notes(self, model: "Seq2Seq", split: "Split", seeds: list["Notes"], seed_frames: int,
                       frames: int, sampler: "Sampler", device) -> list["Notes"]:
        """Per seed (notes in frames [0, seed_frames)), the notes the model writes in the next `frames`
        frames, shifted to start at 0."""

    @abstractmethod
    def frame_windows(self, split: "Split", seq_len: int, batch_size: int):
        """Batches (x, y) of piano-roll frame windows of a split (decoded for tokens): what frame baselines and
        thresholds are fitted on."""

    @abstractmethod
    def evaluate(self, model: "Seq2Seq", test: "Split", train: "Split", cal: dict, fixed: float, batch_size: int,
                 device) -> tuple[dict, int, list[dict]]:
        """The test protocols for this kind: (figures per protocol and predictor, windows scored, the
        precision-recall curve's rows (empty when steps are not thresholded))."""


class Validation(ABC):
    """Valid figures of one epoch, accumulated batch by batch."""

    @abstractmethod
    def add(self, model: "Seq2Seq", out: "torch.Tensor", logits: "torch.Tensor", y: "torch.Tensor",
            prev: "torch.Tensor") -> None:
        """One batch: decoder states `out`, teacher-forced `logits` scoring `y`, `prev` the step before each."""

    @abstractmethod
    def summary(self) -> dict:
        """The figures (floats), keyed by the names dvclive logs under valid/."""

    @abstractmethod
    def headline(self, v: dict) -> str:
        """The epoch line's words for the figures `v`."""
