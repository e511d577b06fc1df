"""Objective statistics of a stretch of music (after MusPy and mgeval), to compare generated with real music.

Each takes the notes on the grid and the stretch's length in frames. Undefined cases are NaN, never a number
that looks real: a sample with no pitched notes has no pitch range or entropy (not -127 or 0), a stretch
shorter than two bars has no bar-to-bar consistency. A beat is `steps_per_beat` frames (half a second on an
absolute grid), a bar four beats: the grid keeps no time signature.
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.pianoroll import Grid, Notes, densify

NAN = math.nan
MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])  # natural minor scales are the same sets as their relative majors
NAMES = ("notes", "density", "pitch_range", "pitches_used", "pitch_classes_used", "pitch_class_entropy",
         "scale_consistency", "polyphony", "polyphony_rate", "empty_beat_rate", "groove_consistency",
         "drum_pattern_consistency")


def beat_frames(grid: Grid) -> int:
    return grid.steps_per_beat if not grid.steps_per_second else max(1, round(grid.steps_per_second / 2))


def _pitched(notes: Notes, grid: Grid) -> np.ndarray:
    return ~grid.is_drum_key(notes.key) if len(notes) else np.zeros(0, bool)


def pitch_stats(notes: Notes, grid: Grid) -> dict:
    pitches = grid.midi_pitch(notes.key[_pitched(notes, grid)])
    if not len(pitches):
        return {"pitch_range": NAN, "pitches_used": 0, "pitch_classes_used": 0, "pitch_class_entropy": NAN,
                "scale_consistency": NAN}
    pc = np.bincount(pitches % 12, minlength=12)
    p = pc[pc > 0] / pc.sum()
    in_scale = max(pc[(MAJOR + root) % 12].sum() for root in range(12))
    return {"pitch_range": int(pitches.max() - pitches.min()), "pitches_used": int(len(np.unique(pitches))),
            "pitch_classes_used": int((pc > 0).sum()), "pitch_class_entropy": float(-(p * np.log2(p)).sum()),
            "scale_consistency": float(in_scale / pc.sum())}


def polyphony_stats(notes: Notes, grid: Grid, n_frames: int) -> dict:
    """Polyphony: mean pitched notes sounding over the frames where any sounds; rate: share of all frames with
    two or more."""
    m = _pitched(notes, grid)
    sub = Notes(notes.key[m], notes.start[m], notes.end[m])
    per_frame = densify(sub, grid.n_keys, 0, n_frames).sum(1) if n_frames else np.zeros(0)
    sounding = per_frame[per_frame > 0]
    return {"polyphony": float(sounding.mean()) if len(sounding) else NAN,
            "polyphony_rate": float((per_frame >= 2).mean()) if n_frames else NAN}


def onset_grid(notes: Notes, n_frames: int, keys: np.ndarray | None = None, n_keys: int = 1) -> np.ndarray:
    """(n_frames, n_keys) booleans: where notes start (keys=None folds every note onto one column)."""
    grid = np.zeros((n_frames, n_keys), bool)
    ok = notes.start < n_frames
    grid[notes.start[ok], 0 if keys is None else keys[ok]] = True
    return grid


def rhythm_stats(notes: Notes, grid: Grid, n_frames: int) -> dict:
    beat = beat_frames(grid)
    bar = 4 * beat
    n_beats = math.ceil(n_frames / beat) if n_frames else 0
    started = np.zeros(n_beats, bool)
    started[notes.start[notes.start < n_frames] // beat] = True
    out = {"empty_beat_rate": float(1 - started.mean()) if n_beats else NAN}
    n_bars = n_frames // bar
    on = onset_grid(notes, n_bars * bar)[:, 0].reshape(n_bars, bar)
    out["groove_consistency"] = (float(1 - np.abs(np.diff(on.astype(int), axis=0)).mean())
                                 if n_bars >= 2 and on.any() else NAN)
    drums = grid.is_drum_key(notes.key) if len(notes) else np.zeros(0, bool)
    if n_bars >= 2 and drums.any():
        d = Notes(notes.key[drums], notes.start[drums], notes.end[drums])
        hits = onset_grid(d, n_bars * bar, d.key - grid.n_pitches, grid.n_keys - grid.n_pitches)
        hits = hits.reshape(n_bars, -1)
        sims = [1 - (a ^ b).sum() / (a | b).sum() for a, b in zip(hits[:-1], hits[1:]) if (a | b).any()]
        out["drum_pattern_consistency"] = float(np.mean(sims)) if sims else NAN
    else:
        out["drum_pattern_consistency"] = NAN
    return out


def describe(notes: Notes, grid: Grid, n_frames: int) -> dict:
    """Every statistic of NAMES for one stretch of `n_frames` frames."""
    density = float(densify(notes, grid.n_keys, 0, n_frames).sum(1).mean()) if n_frames else NAN
    return {"notes": int(len(notes)), "density": density, **pitch_stats(notes, grid),
            **polyphony_stats(notes, grid, n_frames), **rhythm_stats(notes, grid, n_frames)}


def finite(stats: dict) -> dict:
    """NaN as None, so JSON holds null (undefined) rather than a non-standard NaN."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in stats.items()}


def mean(stats: list[dict]) -> dict:
    """Per statistic, the mean over the stretches where it is defined (None when it is defined in none)."""
    out = {}
    for name in NAMES:
        vals = [s[name] for s in stats if s.get(name) is not None and not math.isnan(s[name])]
        out[name] = float(np.mean(vals)) if vals else None
    return out


def compare(generated: list[dict], real: list[dict]) -> dict:
    g, r = mean(generated), mean(real)
    gap = {k: (g[k] - r[k] if g[k] is not None and r[k] is not None else None) for k in NAMES}
    return {"generated": g, "real": r, "gap": gap}
