"""Training windows streamed from the Parquet shards of data/processed/<kind>/.

A loader worker reads a few row groups at a time (zero-copy Arrow buffers), cuts every window from their
sequences, shuffles within that buffer and yields one window at a time: memory holds the buffer and a batch,
whatever the corpus size. Row groups are dealt to DDP ranks and loader workers, so each reads only its share.
Piano-roll windows are densified here, a window at a time; token windows are slices of the id lists.
Transposition (train only) picks, per window, a shift that keeps every note inside the pitch range.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.codecs import codec_of
from pipeline.contracts import Meta, processed_dir
from pipeline.pianoroll import Notes


def data_dir() -> Path:
    """The folder `convert` wrote (data/processed/<kind>)."""
    return processed_dir()


def tokenizer_of(d: Path):
    from pipeline import tokens

    return tokens.load(Path(d) / "tokenizer.json")


def window_starts(n: int, seq_len: int, stride: int) -> range:
    """Starts of the (seq_len in, seq_len out) windows that fit in a sequence of n steps."""
    return range(0, int(n) - 2 * seq_len + 1, stride)


class Split:
    """One split's row groups (the unit of streaming) and its sequences' lengths, from one small column."""

    def __init__(self, d: Path, split: str):
        self.dir, self.split = Path(d), split
        self.meta = Meta.read(self.dir)
        self.codec = codec_of(self.meta.kind)
        self.units: list[tuple[Path, int]] = []
        self.lengths: list[np.ndarray] = []  # steps (frames or tokens) per sequence, per unit
        for path in sorted(self.dir.glob(f"{split}-*.parquet")):
            f = pq.ParquetFile(path)
            for g in range(f.num_row_groups):
                self.units.append((path, g))
                self.lengths.append(f.read_row_group(g, columns=[self.codec.length_column]).column(0).to_numpy())

    def read(self, unit: int) -> list[tuple[str, object]]:
        """(id, sequence) for the rows of one row group: Notes for piano rolls, an id array for tokens."""
        path, g = self.units[unit]
        return self.codec.read(path, g, self.meta)

    def __iter__(self) -> Iterator[tuple[str, object]]:
        for u in range(len(self.units)):
            yield from self.read(u)

    def notes(self) -> Iterator[tuple[str, Notes]]:
        """Every sequence as notes on the grid (token streams decoded): what frame metrics are computed on."""
        return self.codec.notes(self)

    @cached_property
    def tokenizer(self):
        return tokenizer_of(self.dir)


class Windows(IterableDataset):
    """(input, target) pairs of `seq_len` steps each (frames or tokens), starting every `stride` steps."""

    def __init__(self, split: Split, seq_len: int, stride: int, shuffle: bool = False, seed: int = 0,
                 transpose: tuple[int, int] = (0, 0), buffer_groups: int = 8, rank: int = 0, world: int = 1):
        self.split, self.seq_len, self.stride = split, seq_len, stride
        self.shuffle, self.seed, self.transpose = shuffle, seed, tuple(transpose)
        self.buffer_groups, self.rank, self.world = buffer_groups, rank, world
        self.epoch = 0
        self.meta, self.codec = split.meta, split.codec
        self._move = self.codec.transposer(split, self.transpose)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def starts(self, n: int) -> range:
        return window_starts(n, self.seq_len, self.stride)

    def _order(self) -> list[int]:
        """This epoch's order of row groups: shuffled with (seed, epoch) when training."""
        units = list(range(len(self.split.units)))
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch]).shuffle(units)
        return units

    def count(self, rank: int | None = None) -> int:
        """Windows a rank (all its loader workers together) yields this epoch: DDP ranks step in lockstep, so
        each runs as many batches as the smallest share allows."""
        r = self.rank if rank is None else rank
        return sum(len(self.starts(n)) for u in self._order()[r::self.world] for n in self.split.lengths[u])

    def __len__(self) -> int:
        return self.count()

    @property
    def too_short(self) -> int:
        return int(sum((lengths < 2 * self.seq_len).sum() for lengths in self.split.lengths))

    def __iter__(self):
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info else (0, 1)
        mine = self._order()[self.rank::self.world][w::n]  # rows groups dealt to ranks, then to workers
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, w])
        for k in range(0, len(mine), self.buffer_groups):
            seqs = [s for u in mine[k:k + self.buffer_groups] for _, s in self.split.read(u)]
            prepared = [self.codec.prepare(s) for s in seqs]
            index = [(i, a) for i, s in enumerate(seqs) for a in self.starts(self.codec.length(s))]
            if self.shuffle:
                rng.shuffle(index)
            for i, a in index:
                yield self.item(prepared[i], a, rng)

    def item(self, prepared, a: int, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The (input, target) pair starting at step `a`; transposed when training with `rng`."""
        L = self.seq_len
        w = self.codec.window(prepared, a, a + 2 * L, self.meta)
        if self._move is not None and rng is not None:
            w = self._move(w, rng)
        t = torch.from_numpy(w)
        return t[:L], t[L:]
