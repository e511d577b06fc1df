"""Training windows drawn lazily from the stored note intervals: nothing but a batch is ever dense."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import torch
from torch.utils.data import Dataset

from pipeline.pianoroll import Notes, densify

PROCESSED = Path("data/processed/pianoroll")


def read_meta(root: Path = PROCESSED) -> dict:
    return json.loads((Path(root) / "meta.json").read_text())


def _flat(table, name: str) -> tuple[np.ndarray, np.ndarray]:
    col = table.column(name).combine_chunks()
    offsets = col.offsets.to_numpy()
    return col.flatten().to_numpy(), offsets - offsets[0]


@dataclass
class Rolls:
    """The sequences of one split, as flat note arrays plus offsets (zero-copy from Arrow)."""
    ids: list[str]
    n_frames: np.ndarray
    pitch: np.ndarray
    start: np.ndarray
    end: np.ndarray
    offsets: np.ndarray
    n_pitches: int
    max_len: np.ndarray  # longest note of each sequence: bounds the note search of a window

    @classmethod
    def load(cls, split: str, root: Path = PROCESSED) -> "Rolls":
        root = Path(root)
        parts = sorted(root.glob("part-*.parquet"))
        if not parts:
            raise FileNotFoundError(f"no part-*.parquet under {root}: run `dvc repro convert` first")
        table = ds.dataset([str(p) for p in parts], format="parquet").to_table(filter=pc.field("split") == split)
        pitch, offsets = _flat(table, "pitch")
        start, _ = _flat(table, "start")
        end, _ = _flat(table, "end")
        lengths = end - start
        max_len = np.array([lengths[a:b].max() if b > a else 0 for a, b in zip(offsets[:-1], offsets[1:])],
                           dtype=np.int64)
        return cls(table.column("id").to_pylist(), table.column("n_frames").to_numpy(), pitch, start, end,
                   offsets, read_meta(root)["n_pitches"], max_len)

    def __len__(self) -> int:
        return len(self.ids)

    def notes(self, i: int) -> Notes:
        a, b = self.offsets[i], self.offsets[i + 1]
        return Notes(self.pitch[a:b], self.start[a:b], self.end[a:b])

    def window(self, i: int, a: int, b: int) -> np.ndarray:
        return densify(self.notes(i), self.n_pitches, a, b, max_len=int(self.max_len[i]))


class Windows(Dataset):
    """(input window, next window) pairs of `seq_len` frames each, starting every `stride` frames."""

    def __init__(self, rolls: Rolls, seq_len: int, stride: int):
        self.rolls, self.seq_len = rolls, seq_len
        span = 2 * seq_len
        self.index = np.array(
            [(i, a) for i, n in enumerate(rolls.n_frames) for a in range(0, int(n) - span + 1, stride)],
            dtype=np.int64,
        ).reshape(-1, 2)
        self.too_short = int((rolls.n_frames < span).sum())

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        i, a = self.index[k]
        roll = torch.from_numpy(self.rolls.window(int(i), int(a), int(a) + 2 * self.seq_len)).float()
        return roll[: self.seq_len], roll[self.seq_len:]
