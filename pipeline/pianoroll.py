"""Binary piano rolls, stored as note intervals on the frame grid and densified a window at a time.

A sequence is three aligned arrays (pitch index, start frame, end frame), sorted by start: the run-length
form of the roll's active cells. It is exact at the grid resolution and about 9 bytes per note before
compression, where a dense uint8 roll costs n_pitches bytes per frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.midi import TrackNotes


@dataclass(frozen=True)
class Grid:
    steps_per_beat: int
    pitch_low: int
    pitch_high: int

    @property
    def n_pitches(self) -> int:
        return self.pitch_high - self.pitch_low + 1


@dataclass(frozen=True)
class Notes:
    pitch: np.ndarray  # uint8, index into the pitch range
    start: np.ndarray  # int32 frame
    end: np.ndarray    # int32 frame, exclusive, > start

    @property
    def n_frames(self) -> int:
        return int(self.end.max()) if len(self.end) else 0

    def __len__(self) -> int:
        return len(self.pitch)


def quantize(tracks: list[TrackNotes], grid: Grid) -> tuple[Notes, int]:
    """Merge tracks onto the grid; return the notes and how many fell outside the pitch range."""
    pitch = np.concatenate([t.pitch for t in tracks]) if tracks else np.zeros(0, np.int16)
    start = np.concatenate([t.start for t in tracks]) if tracks else np.zeros(0)
    end = np.concatenate([t.end for t in tracks]) if tracks else np.zeros(0)
    inside = (pitch >= grid.pitch_low) & (pitch <= grid.pitch_high)
    s = np.rint(start[inside] * grid.steps_per_beat).astype(np.int64)
    e = np.maximum(np.rint(end[inside] * grid.steps_per_beat).astype(np.int64), s + 1)
    p = (pitch[inside] - grid.pitch_low).astype(np.int64)
    # one note per (pitch, start): unisons across tracks collapse, the longest wins
    order = np.lexsort((-e, p, s))
    s, p, e = s[order], p[order], e[order]
    first = np.ones(len(s), bool)
    first[1:] = (s[1:] != s[:-1]) | (p[1:] != p[:-1])
    notes = Notes(p[first].astype(np.uint8), s[first].astype(np.int32), e[first].astype(np.int32))
    return notes, int((~inside).sum())


def densify(notes: Notes, n_pitches: int, a: int = 0, b: int | None = None, max_len: int | None = None) -> np.ndarray:
    """The (b - a, n_pitches) boolean roll of frames [a, b). `max_len` (the longest note) bounds the search."""
    b = notes.n_frames if b is None else b
    roll = np.zeros((max(b - a, 0), n_pitches), dtype=bool)
    hi = np.searchsorted(notes.start, b, side="left")
    lo = 0 if max_len is None else np.searchsorted(notes.start, a - max_len, side="left")
    for p, s, e in zip(notes.pitch[lo:hi], notes.start[lo:hi], notes.end[lo:hi]):
        if e > a:
            roll[max(s, a) - a:min(e, b) - a, p] = True
    return roll


def from_roll(roll: np.ndarray) -> Notes:
    """Notes from a boolean roll: each maximal run of active frames in one pitch is one note."""
    r = np.asarray(roll, dtype=np.int8)
    padded = np.pad(r, ((1, 1), (0, 0)))
    diff = np.diff(padded, axis=0)
    on_t, on_p = np.nonzero(diff == 1)
    off_t, off_p = np.nonzero(diff == -1)
    on = np.lexsort((on_t, on_p))
    off = np.lexsort((off_t, off_p))
    pitch, start, end = on_p[on], on_t[on], off_t[off]
    order = np.lexsort((pitch, start))
    return Notes(pitch[order].astype(np.uint8), start[order].astype(np.int32), end[order].astype(np.int32))
