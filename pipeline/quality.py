"""Measures behind the quality filters, on one sequence's notes in quarter-note time."""
from __future__ import annotations

import numpy as np


def span_beats(start: np.ndarray, end: np.ndarray) -> float:
    return float(end.max() - start.min()) if len(start) else 0.0


def max_polyphony(start: np.ndarray, end: np.ndarray) -> int:
    """Most notes sounding at once (a note ending where another starts does not overlap it)."""
    if not len(start):
        return 0
    times = np.concatenate([start, end])
    deltas = np.concatenate([np.ones(len(start), np.int64), -np.ones(len(end), np.int64)])
    order = np.lexsort((deltas, times))  # at equal times, ends (-1) before starts (+1)
    return int(np.cumsum(deltas[order]).max())


def unique_pitches_per_window(start: np.ndarray, pitch: np.ndarray, window_beats: float) -> float:
    """Mean number of distinct pitches over the windows that hold an onset: low for an endless one-note riff."""
    if not len(start):
        return 0.0
    w = np.floor((start - start.min()) / window_beats).astype(np.int64)
    pairs = np.unique(w * 256 + pitch.astype(np.int64))
    return float(np.bincount(pairs // 256).sum() / len(np.unique(pairs // 256)))
