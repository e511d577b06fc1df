"""prepare's per-file note measures in compiled C (note_measures.c), built at first use by pipeline/native.py and
loaded with ctypes: the off-grid counts of quality.off_grid_shares, the pairs of dedupe.content_hash_of and the
sequence measures of quality.sequence_measures. Those functions call these and run their numpy references where
these return None: PIPELINE_MEASURES_NATIVE=0, no library (no compiler, a failed build: one warning per
process), or inputs outside the C code's domain. tests/test_note_measures.py holds them to the references.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from pipeline import native
from pipeline.native import Native

OK = 0
_P, _I64, _F64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
MEASURES = Native(
    Path(__file__).with_name("note_measures.c"), "sequence_measures", ("-O2", "-shared", "-fPIC", "-std=c99"),
    (_P, _P, _P, _P, _I64, _I64, _F64, _P, _P), "pipeline.measures_native", "the C note measures",
    "prepare measures notes with numpy, the same values, about five times slower", "PIPELINE_MEASURES_NATIVE",
    (("off_grid_counts", (_P, _P, _I64, _I64, _P, _I64, _P)),
     ("content_pairs", (_P, _P, _P, _P, _I64, _I64, _I64, _I64, _I64, _P, _P, _P, _P))), (native.RADIX_SORT,))


def library() -> ctypes.CDLL | None:
    """The library, or None where it is switched off or cannot be had."""
    return native.library(MEASURES)


def _ints(arrays: list[np.ndarray]) -> np.ndarray | None:
    """The arrays concatenated as int64, or None where they are not integers (the reference then runs)."""
    if not arrays:
        return np.empty(0, np.int64)
    a = np.concatenate(arrays)
    if a.dtype.kind not in "iu" or (a.dtype == np.uint64 and len(a) and a.max() > np.iinfo(np.int64).max):
        return None
    return a.astype(np.int64, copy=False)


def off_grid_counts(tracks: list[np.ndarray], tpq: int, grids: tuple[int, ...]) -> np.ndarray | None:
    """For each track's onsets (ticks), how many lie on none of the grids: (len(tracks),) int64; None: run the
    reference."""
    lib = library()
    onset = _ints(tracks) if lib is not None else None
    if onset is None or tpq <= 0 or min(grids, default=1) <= 0:
        return None
    lengths = np.fromiter((len(t) for t in tracks), np.int64, len(tracks))
    g = np.asarray(grids, np.int64)
    off = np.empty(len(tracks), np.int64)
    rc = lib.off_grid_counts(onset.ctypes.data, lengths.ctypes.data, len(tracks), tpq, g.ctypes.data, len(g),
                             off.ctypes.data)
    return off if rc == OK else None


def content_pairs(tracks: list[tuple[bool, np.ndarray, np.ndarray]], tpq: int, steps: int,
                  transpose_invariant: bool, drum_offset: int) -> np.ndarray | None:
    """dedupe.content_hash_of's distinct (step, pitch) pairs ascending, int64; None: run the reference."""
    lib = library()
    if lib is None or tpq <= 0:
        return None
    onset, pitch = _ints([s for _, s, _ in tracks]), _ints([p for _, _, p in tracks])
    if onset is None or pitch is None or not len(onset) or len(onset) != len(pitch):
        return None
    lengths = np.fromiter((len(p) for _, _, p in tracks), np.int64, len(tracks))
    drums = np.fromiter((bool(d) for d, _, _ in tracks), np.uint8, len(tracks))
    pairs = np.empty(max(len(onset), 1), np.int64)
    scratch = np.empty(max(len(onset), 1), np.int64)
    got = np.zeros(2, np.int64)
    rc = lib.content_pairs(onset.ctypes.data, pitch.ctypes.data, lengths.ctypes.data, drums.ctypes.data,
                           len(tracks), tpq, steps, int(transpose_invariant), drum_offset, pairs.ctypes.data,
                           scratch.ctypes.data, got.ctypes.data, got[1:].ctypes.data)
    return pairs[:int(got[0])] if rc == OK else None


def sequence(start: np.ndarray, end: np.ndarray, pitch: np.ndarray, pitched: np.ndarray, tpq: int,
             window_beats: float) -> np.ndarray | None:
    """quality.sequence_measures' values as (5,) float64 (NaN for None), from int64 ticks; None: run the
    reference."""
    lib = library()
    if lib is None or tpq <= 0 or not window_beats > 0:
        return None
    n = len(start)
    start, end, pitch = (np.ascontiguousarray(a, np.int64) for a in (start, end, pitch))
    pitched = np.ascontiguousarray(pitched, np.uint8)
    out = np.empty(5, np.float64)
    scratch = np.empty(5 * n + 256, np.int64)
    rc = lib.sequence_measures(start.ctypes.data, end.ctypes.data, pitch.ctypes.data, pitched.ctypes.data, n, tpq,
                               float(window_beats), out.ctypes.data, scratch.ctypes.data)
    return out if rc == OK else None
