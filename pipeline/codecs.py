"""How each representation is stored and read back: the Parquet columns `convert` writes, and how the data
loader turns a stored sequence into windows of steps (frames or token ids), transposed when training.

One `Codec` per kind; `codec_of(kind)` is the only place that maps a name to one. This is the half of a
representation that `convert` and the data loader need, kept apart from the model-facing half
(pipeline/representations/), so that a change to the model does not invalidate the converted dataset.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, ClassVar, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.pianoroll import Notes, densify

if TYPE_CHECKING:
    from pipeline import params as P
    from pipeline.contracts import Meta
    from pipeline.dataset import Split
    from pipeline.pianoroll import Grid


def transpose_shift(lowest: int, highest: int, top: int, bounds: tuple[int, int], rng: np.random.Generator) -> int:
    """A random shift in `bounds` (semitones, inclusive) that keeps keys lowest..highest inside 0..top; 0 when
    no shift fits. One draw from `rng` whenever some shift fits."""
    lo, hi = max(bounds[0], -lowest), min(bounds[1], top - highest)
    return int(rng.integers(lo, hi + 1)) if lo <= hi else 0


def flat_column(t: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A list column's values and offsets (from 0), zero-copy where Arrow allows."""
    col = t.column(name).combine_chunks()
    offsets = col.offsets.to_numpy()
    return col.flatten().to_numpy(), offsets - offsets[0]


class Codec(ABC):
    """How one kind of representation is stored and read: what `convert` writes and the data loader cuts."""
    kind: ClassVar[str]
    unit: ClassVar[str]            # what one step is: "frames" or "tokens"
    length_column: ClassVar[str]   # the Parquet column with each sequence's length in steps
    counted: ClassVar[tuple[str, ...]] = ()  # extra per-split totals in meta.json (row column n_<name>)

    # --- convert ---------------------------------------------------------------------------------------------
    @abstractmethod
    def columns(self, velocity: bool) -> list[tuple[str, "pa.DataType"]]:
        """The Parquet columns holding a sequence, after the common ones."""

    @abstractmethod
    def encode(self, notes: "Notes", grid: "Grid", r: "P.RepresentParams") -> dict | None:
        """A sequence's values for `columns` (and n_<counted>), or None when it encodes to nothing."""

    @abstractmethod
    def finish(self, r: "P.RepresentParams", grid: "Grid", out_dir) -> dict:
        """Meta fields this representation adds (and files it writes beside the shards, e.g. a tokenizer)."""

    # --- reading and training windows ------------------------------------------------------------------------
    @abstractmethod
    def read(self, path, group: int, meta: "Meta") -> list[tuple[str, object]]:
        """(id, sequence) for the rows of one row group of a shard."""

    @abstractmethod
    def notes(self, split: "Split") -> Iterator[tuple[str, "Notes"]]:
        """Every sequence of a split as notes on the grid: what frame metrics and music statistics use."""

    @abstractmethod
    def length(self, seq) -> int:
        """A sequence's length in steps."""

    def prepare(self, seq):
        """What `window` cuts from (computed once per sequence)."""
        return seq

    @abstractmethod
    def window(self, prepared, a: int, b: int, meta: "Meta") -> np.ndarray:
        """Steps [a, b) of a prepared sequence: (b - a, features) booleans or (b - a,) ids."""

    @abstractmethod
    def transposer(self, split: "Split", bounds: tuple[int, int]) -> Callable | None:
        """fn(window, rng) -> the window moved by a random shift in `bounds` semitones that keeps every pitch in
        range, or None when `bounds` is (0, 0)."""


class PianoRollCodec(Codec):
    """Note intervals (key, start, end[, velocity]) per sequence, densified into frames a window at a time: the
    sustain plane (keys low to high, then drum classes) and, with `represent.onsets`, the onset plane."""
    kind = "pianoroll"
    unit = "frames"
    length_column = "n_frames"

    def columns(self, velocity: bool) -> list:
        return [("key", pa.list_(pa.uint8())), ("start", pa.list_(pa.int32())), ("end", pa.list_(pa.int32()))] + (
            [("velocity", pa.list_(pa.uint8()))] if velocity else [])

    def encode(self, notes, grid, r) -> dict:
        out = {"key": notes.key, "start": notes.start, "end": notes.end}
        if r.velocity:
            out["velocity"] = notes.velocity
        return out

    def finish(self, r, grid, out_dir) -> dict:
        return {"features": grid.n_keys * (2 if r.onsets else 1)}

    def read(self, path, group, meta) -> list:
        cols = ["id", "key", "start", "end"] + (["velocity"] if meta.velocity else [])
        t = pq.ParquetFile(path).read_row_group(group, columns=cols)
        flat = {c: flat_column(t, c) for c in cols[1:]}
        off = flat["key"][1]
        out = []
        for k, i in enumerate(t.column("id").to_pylist()):
            a, b = off[k], off[k + 1]
            vel = flat["velocity"][0][a:b] if "velocity" in flat else None
            out.append((i, Notes(flat["key"][0][a:b], flat["start"][0][a:b], flat["end"][0][a:b], vel)))
        return out

    def notes(self, split) -> Iterator:
        yield from split

    def length(self, seq) -> int:
        return seq.n_frames

    def prepare(self, seq):
        # the longest note bounds the search for notes sounding into a window
        return seq, int((seq.end - seq.start).max()) if len(seq) else 0

    def window(self, prepared, a, b, meta) -> np.ndarray:
        notes, max_len = prepared
        return densify(notes, meta.n_keys, a, b, max_len=max_len, onsets=meta.onsets).astype(np.float32)

    def transposer(self, split, bounds):
        if tuple(bounds) == (0, 0):
            return None
        meta = split.meta
        n_p, planes = meta.n_pitches, (0, meta.n_keys) if meta.onsets else (0,)

        def move(roll: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            used = np.nonzero(roll[:, :n_p].any(0))[0]
            if not len(used):
                return roll
            k = transpose_shift(int(used[0]), int(used[-1]), n_p - 1, bounds, rng)
            if k:
                for base in planes:
                    roll[:, base:base + n_p] = np.roll(roll[:, base:base + n_p], k, axis=1)
            return roll
        return move


@lru_cache(maxsize=2)
def _tokenizer(r, grid):
    """The tokenizer for `represent.*` on `grid`: made once per process (convert's workers encode many files)."""
    from pipeline import tokens

    return tokens.make(r.tokenizer, grid, r.velocity, r.max_shift_beats)


class TokenCodec(Codec):
    """MidiTok token ids per sequence (pipeline/tokens.py); a window is a slice of the ids."""
    kind = "tokens"
    unit = "tokens"
    length_column = "n_tokens"
    counted = ("tokens",)

    def columns(self, velocity: bool) -> list:
        return [("n_tokens", pa.int32()), ("tokens", pa.list_(pa.uint16()))]

    def encode(self, notes, grid, r) -> dict | None:
        from pipeline import tokens

        ids = tokens.encode(_tokenizer(r, grid), notes, grid).astype(np.uint16)
        return {"n_tokens": len(ids), "tokens": ids} if len(ids) else None

    def finish(self, r, grid, out_dir) -> dict:
        tok = _tokenizer(r, grid)
        tok.save(out_dir / "tokenizer.json")
        return {"tokenizer": r.tokenizer, "vocab_size": len(tok), "pad_id": int(tok.pad_token_id)}

    def read(self, path, group, meta) -> list:
        t = pq.ParquetFile(path).read_row_group(group, columns=["id", "tokens"])
        ids, off = flat_column(t, "tokens")
        return [(i, ids[off[k]:off[k + 1]].astype(np.int64)) for k, i in enumerate(t.column("id").to_pylist())]

    def notes(self, split) -> Iterator:
        from pipeline import tokens

        tok, grid = split.tokenizer, split.meta.grid
        for i, ids in split:
            yield i, tokens.decode(tok, ids, grid)

    def length(self, seq) -> int:
        return len(seq)

    def window(self, prepared, a, b, meta) -> np.ndarray:
        return np.ascontiguousarray(prepared[a:b])

    def transposer(self, split, bounds):
        if tuple(bounds) == (0, 0):
            return None
        from pipeline import tokens

        pitch, shifted = tokens.pitch_table(split.tokenizer), tokens.transposer(split.tokenizer)
        grid = split.meta.grid

        def move(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            p = pitch[ids]
            p = p[p >= 0]
            if not len(p):
                return ids
            k = transpose_shift(int(p.min()) - grid.pitch_low, int(p.max()) - grid.pitch_low, grid.n_pitches - 1,
                                bounds, rng)
            return shifted[ids, 64 + k] if k else ids
        return move


CODECS: dict[str, type[Codec]] = {"pianoroll": PianoRollCodec, "tokens": TokenCodec}


def codec_of(kind: str) -> Codec:
    """The codec of representation `kind`. Raises ValueError for an unknown name."""
    if kind not in CODECS:
        raise ValueError(f"unknown representation {kind!r}: one of {', '.join(CODECS)}")
    return CODECS[kind]()
