"""Training windows streamed from the Parquet shards of data/processed/<kind>/.

A loader worker reads a few row groups at a time (zero-copy Arrow buffers), cuts every window from their
sequences, shuffles within that buffer and yields one window at a time: memory holds the buffer and a batch,
whatever the corpus size. Row groups are dealt to DDP ranks and loader workers, so each reads only its share.
Piano-roll windows are densified here, a window at a time; token windows are slices of the id lists.
Transposition (train only) picks, per window, a shift that keeps every note inside the pitch range.
"""
from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.pianoroll import Grid, Notes, densify

PROCESSED = Path("data/processed")


def data_dir(root: Path = PROCESSED) -> Path:
    metas = sorted(Path(root).glob("*/meta.json"))
    if not metas:
        raise FileNotFoundError(f"no {root}/<kind>/meta.json: run `dvc repro convert` first")
    return metas[0].parent


def read_meta(d: Path | None = None) -> dict:
    return json.loads(((d or data_dir()) / "meta.json").read_text())


def grid_of(meta: dict) -> Grid:
    g = meta["grid"]
    return Grid(g["steps_per_beat"], g["pitch_low"], g["pitch_high"], float(g["steps_per_second"]), g["drums"])


def tokenizer_of(d: Path):
    from pipeline import tokens

    return tokens.load(Path(d) / "tokenizer.json")


def window_starts(n: int, seq_len: int, stride: int) -> range:
    """Starts of the (seq_len in, seq_len out) windows that fit in a sequence of n steps."""
    return range(0, int(n) - 2 * seq_len + 1, stride)


def _flat(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    col = table.column(name).combine_chunks()
    offsets = col.offsets.to_numpy()
    return col.flatten().to_numpy(), offsets - offsets[0]


class Split:
    """One split's row groups (the unit of streaming) and its sequences' lengths, from one small column."""

    def __init__(self, d: Path, split: str):
        self.dir, self.split = Path(d), split
        self.meta = read_meta(self.dir)
        self.kind = self.meta["kind"]
        self.units: list[tuple[Path, int]] = []
        self.lengths: list[np.ndarray] = []  # frames (piano rolls) or tokens, per sequence, per unit
        col = "n_tokens" if self.kind == "tokens" else "n_frames"
        for path in sorted(self.dir.glob(f"{split}-*.parquet")):
            f = pq.ParquetFile(path)
            for g in range(f.num_row_groups):
                self.units.append((path, g))
                self.lengths.append(f.read_row_group(g, columns=[col]).column(0).to_numpy())

    def read(self, unit: int) -> list[tuple[str, object]]:
        """(id, sequence) for the rows of one row group: Notes for piano rolls, an id array for tokens."""
        path, g = self.units[unit]
        if self.kind == "tokens":
            t = pq.ParquetFile(path).read_row_group(g, columns=["id", "tokens"])
            ids, off = _flat(t, "tokens")
            return [(i, ids[off[k]:off[k + 1]].astype(np.int64)) for k, i in enumerate(t.column("id").to_pylist())]
        cols = ["id", "key", "start", "end"] + (["velocity"] if self.meta["velocity"] else [])
        t = pq.ParquetFile(path).read_row_group(g, columns=cols)
        flat = {c: _flat(t, c) for c in cols[1:]}
        off = flat["key"][1]
        out = []
        for k, i in enumerate(t.column("id").to_pylist()):
            a, b = off[k], off[k + 1]
            vel = flat["velocity"][0][a:b] if "velocity" in flat else None
            out.append((i, Notes(flat["key"][0][a:b], flat["start"][0][a:b], flat["end"][0][a:b], vel)))
        return out

    def __iter__(self) -> Iterator[tuple[str, object]]:
        for u in range(len(self.units)):
            yield from self.read(u)

    def notes(self) -> Iterator[tuple[str, Notes]]:
        """Every sequence as notes on the grid (token streams decoded): what frame metrics are computed on."""
        if self.kind != "tokens":
            yield from self
            return
        from pipeline import tokens

        tok, grid = self.tokenizer, grid_of(self.meta)
        for i, ids in self:
            yield i, tokens.decode(tok, ids, grid)

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
        self.meta = split.meta
        self.grid = grid_of(self.meta)
        self.onsets = bool(self.meta.get("onsets"))
        self._pitch = self._table = None
        if split.kind == "tokens" and self.transpose != (0, 0):
            from pipeline import tokens

            self._pitch, self._table = tokens.pitch_table(split.tokenizer), tokens.transposer(split.tokenizer)

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
            prepared = [self._prepare(s) for s in seqs]
            index = [(i, a) for i, s in enumerate(seqs) for a in self.starts(self._length(s))]
            if self.shuffle:
                rng.shuffle(index)
            for i, a in index:
                yield self.item(prepared[i], a, rng)

    def _length(self, seq) -> int:
        return seq.n_frames if isinstance(seq, Notes) else len(seq)

    def _prepare(self, seq):
        if isinstance(seq, Notes):  # the longest note bounds the search for notes sounding into a window
            return seq, int((seq.end - seq.start).max()) if len(seq) else 0
        return seq

    def item(self, prepared, a: int, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        L = self.seq_len
        if isinstance(prepared, tuple):
            notes, max_len = prepared
            roll = densify(notes, self.grid.n_keys, a, a + 2 * L, max_len=max_len, onsets=self.onsets)
            if self.transpose != (0, 0) and rng is not None:
                roll = self._transpose_roll(roll, rng)
            w = torch.from_numpy(roll).float()
        else:
            ids = prepared[a:a + 2 * L]
            if self._table is not None and rng is not None:
                ids = self._transpose_ids(ids, rng)
            w = torch.from_numpy(np.ascontiguousarray(ids))
        return w[:L], w[L:]

    def _shift(self, lowest: int, highest: int, top: int, rng: np.random.Generator) -> int:
        lo, hi = max(self.transpose[0], -lowest), min(self.transpose[1], top - highest)
        return int(rng.integers(lo, hi + 1)) if lo <= hi else 0

    def _transpose_roll(self, roll: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n_p, n_k = self.grid.n_pitches, self.grid.n_keys
        used = np.nonzero(roll[:, :n_p].any(0))[0]
        if not len(used):
            return roll
        k = self._shift(int(used[0]), int(used[-1]), n_p - 1, rng)
        if k:
            for base in ((0, n_k) if self.onsets else (0,)):
                roll[:, base:base + n_p] = np.roll(roll[:, base:base + n_p], k, axis=1)
        return roll

    def _transpose_ids(self, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = self._pitch[ids]
        p = p[p >= 0]
        if not len(p):
            return ids
        k = self._shift(int(p.min()) - self.grid.pitch_low, int(p.max()) - self.grid.pitch_low,
                        self.grid.n_pitches - 1, rng)
        return self._table[ids, 64 + k] if k else ids
