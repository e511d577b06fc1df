"""The piano-roll picture of a sample: the keys the training data uses, named, on a time axis of beats and bars.

Rows are grid keys: the pitches from the lowest to the highest the data (or the sample) sounds, contiguous so
intervals keep their size, named in scientific pitch notation (MIDI 60 = C4, A4 = 69 = 440 Hz, as the
Acoustical Society of America's convention and music21/pretty_midi name them); above them, the drum classes the
data uses (pipeline/gm.py's grouping of the GM percussion keys), named. A drums-only corpus gets drum rows
alone. The seed is blue on a tinted background, the continuation red, a black line between them. The same input
gives the same bytes (Agg, no Software or date metadata).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import gm
from pipeline.atomic import atomic_path
from pipeline.pianoroll import Grid, Notes

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
BLACK_KEYS = frozenset({1, 3, 6, 8, 10})
# gm.DRUM_CLASSES names spelt as drummers say them; each class gathers GM percussion keys (kick: 35 and 36,
# snare: 38 and 40, closed hi-hat: 42 and 44, open hi-hat: 46, crash: 49 and 57, ride: 51 and 59, ...)
DRUM_LABELS = {"kick": "kick", "snare": "snare", "closed_hihat": "closed hi-hat", "open_hihat": "open hi-hat",
               "low_tom": "low tom", "mid_tom": "mid tom", "high_tom": "high tom", "crash": "crash", "ride": "ride"}
ALL_LABELLED = 24      # up to this many pitch rows, every row is named; above it, every C
BEATS_PER_BAR = 4      # the grid keeps no time signature (as pipeline/music.py assumes)
MOST_LINES = 256       # more beats (or bars) than this and their lines would fill the plot: left out
SEED, GENERATED = "#3b6fb6", "#d9472b"  # the blue and red of evaluate's histograms (pipeline/music_plot.py)
SEED_BACKGROUND = "#e8eef8"


def note_name(pitch: int) -> str:
    """MIDI pitch 0..127 -> its name in scientific pitch notation: 60 -> 'C4', 61 -> 'C#4', 21 -> 'A0'.
    Raises ValueError outside 0..127."""
    if not 0 <= pitch <= 127:
        raise ValueError(f"MIDI pitch {pitch} is outside 0..127")
    return f"{PITCH_CLASSES[pitch % 12]}{pitch // 12 - 1}"


@dataclass(frozen=True)
class Rows:
    """The picture's rows, bottom to top: grid keys, each row's tick label ('' for none), and how many of them
    are pitches (the drum classes come after)."""
    keys: tuple[int, ...]
    labels: tuple[str, ...]
    n_pitched: int


def rows(grid: Grid, used: np.ndarray) -> Rows:
    """The rows for keys `used` ((grid.n_keys,) booleans): the pitches from the lowest used to the highest, then
    the used drum classes in gm.DRUM_CLASSES order (kick at the bottom). Pitch rows are named every row up to
    ALL_LABELLED rows, else on every C; drum rows always, by class. Raises ValueError when no key is used or
    `used` does not fit the grid."""
    used = np.asarray(used, dtype=bool)
    if used.shape != (grid.n_keys,):
        raise ValueError(f"expected {grid.n_keys} keys (the grid's), got shape {used.shape}")
    if not used.any():
        raise ValueError("no key is used: nothing to draw rows for")
    pitched = np.nonzero(used[:grid.n_pitches])[0]
    keys = list(range(int(pitched[0]), int(pitched[-1]) + 1)) if len(pitched) else []
    pitches = [int(grid.midi_pitch(k)) for k in keys]
    every = len(keys) <= ALL_LABELLED
    labels = [note_name(p) if every or p % 12 == 0 else "" for p in pitches]
    drums = [grid.n_pitches + int(c) for c in np.nonzero(used[grid.n_pitches:])[0]]
    keys += drums
    labels += [DRUM_LABELS[gm.DRUM_CLASS_NAMES[k - grid.n_pitches]] for k in drums]
    return Rows(tuple(keys), tuple(labels), len(pitches))


def keys_of(grid: Grid, *notes: Notes) -> np.ndarray:
    """(grid.n_keys,) booleans: the keys any of `notes` plays."""
    used = np.zeros(grid.n_keys, bool)
    for n in notes:
        used[n.key.astype(np.int64)] = True
    return used


def _height(r: Rows) -> float:
    """Figure height in inches: room for each named row's label, less for the unnamed ones."""
    return min(10.0, max(3.0, 1.5 + sum(0.13 if label else 0.05 for label in r.labels)))


def _boxes(x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray) -> np.ndarray:
    """(n, 4, 2) rectangle corners, for one PolyCollection: a patch per note would cost 5 ms each to add."""
    return np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1), np.stack([x1, y1], -1),
                     np.stack([x0, y1], -1)], 1)


def _notes(ax, notes: Notes, offset: int, row_of: np.ndarray, frames_per_beat: float, colour: str) -> None:
    from matplotlib.collections import PolyCollection

    if not len(notes):
        return
    row = row_of[notes.key.astype(np.int64)].astype(float)
    x0, x1 = ((t.astype(float) + offset) / frames_per_beat for t in (notes.start, notes.end))
    ax.add_collection(PolyCollection(_boxes(x0, x1, row - 0.4, row + 0.4), facecolors=colour, edgecolors="#222222",
                                     linewidths=0.3, zorder=3), autolim=False)


def _time_axis(ax, total_beats: float, absolute: bool, grid: Grid) -> None:
    """Beat lines (thin), bar lines (thicker), ticks at the bars: bar numbers, or seconds on an absolute grid."""
    import matplotlib.ticker as ticker

    beats, bars = math.ceil(total_beats), math.ceil(total_beats / BEATS_PER_BAR)
    if beats <= MOST_LINES:
        ax.vlines(range(beats + 1), 0, 1, transform=ax.get_xaxis_transform(), colors="#cccccc", linewidth=0.5,
                  zorder=1)
    if bars <= MOST_LINES:
        ax.vlines([BEATS_PER_BAR * b for b in range(bars + 1)], 0, 1, transform=ax.get_xaxis_transform(),
                  colors="#999999", linewidth=0.9, zorder=1)
    step = BEATS_PER_BAR * max(1, math.ceil(bars / 16))
    ax.xaxis.set_major_locator(ticker.MultipleLocator(step))
    if absolute:
        ax.set_xlabel(f"second (a frame is 1/{grid.steps_per_second:g} s; thin lines: seconds, thick: every "
                      f"{BEATS_PER_BAR} s)")
    else:
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{int(round(x)) // BEATS_PER_BAR + 1}"))
        ax.set_xlabel(f"bar ({BEATS_PER_BAR} beats of {grid.steps_per_beat} frames; thin lines: beats; the grid "
                      "keeps no time signature)")


def figure(seed: Notes, gen: Notes, seed_frames: int, gen_frames: int, grid: Grid, trained: np.ndarray,
           frames_per_beat: float, title: str):
    """The sample's piano roll as a matplotlib (figure, axes): `seed` over frames [0, seed_frames), `gen` after
    it (its frames counted from its own start), on the rows of `trained` ((grid.n_keys,) booleans: the keys the
    training data uses) and any key the sample plays. x is in beats (`frames_per_beat` frames each; on an
    absolute grid the samples are written at 60 bpm, so a beat is a second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection
    from matplotlib.transforms import blended_transform_factory

    r = rows(grid, np.asarray(trained, bool) | keys_of(grid, seed, gen))
    row_of = np.full(grid.n_keys, -1)
    row_of[list(r.keys)] = np.arange(len(r.keys))
    seed_beats, total_beats = seed_frames / frames_per_beat, (seed_frames + gen_frames) / frames_per_beat
    fig, ax = plt.subplots(figsize=(10, _height(r)), dpi=100)
    ax.axvspan(0, seed_beats, color=SEED_BACKGROUND, zorder=0, linewidth=0)
    black = np.array([i for i, key in enumerate(r.keys[:r.n_pitched])
                      if int(grid.midi_pitch(key)) % 12 in BLACK_KEYS], dtype=float)
    if len(black):  # the black keys' rows shaded, as on a keyboard
        ax.add_collection(PolyCollection(_boxes(np.zeros_like(black), np.full_like(black, total_beats), black - 0.5,
                                                black + 0.5), facecolors="#000000", alpha=0.05, linewidths=0,
                                         zorder=0), autolim=False)
    _time_axis(ax, total_beats, bool(grid.steps_per_second), grid)
    _notes(ax, seed, 0, row_of, frames_per_beat, SEED)
    _notes(ax, gen, seed_frames, row_of, frames_per_beat, GENERATED)
    ax.axvline(seed_beats, color="black", linewidth=1.2, zorder=4)
    if 0 < r.n_pitched < len(r.keys):
        ax.axhline(r.n_pitched - 0.5, color="#555555", linewidth=0.8, zorder=4)
    for spine in ax.spines.values():  # the frame over the notes, so the plot area's edges always show
        spine.set_zorder(5)
    ax.set_xlim(0, total_beats)
    ax.set_ylim(-0.5, len(r.keys) - 0.5)
    named = [i for i, label in enumerate(r.labels) if label]
    ax.set_yticks(named, [r.labels[i] for i in named], fontsize=7)
    ax.set_yticks(range(len(r.keys)), minor=True)
    ax.tick_params(axis="y", which="minor", length=2)
    ax.set_ylabel("pitch" if r.n_pitched == len(r.keys) else "drum" if not r.n_pitched else "pitch | drum")
    top = blended_transform_factory(ax.transData, ax.transAxes)
    if seed_beats > 0:
        ax.text(seed_beats / 2, 1.01, "seed", transform=top, ha="center", va="bottom", color=SEED, fontsize=9)
    ax.text((seed_beats + total_beats) / 2, 1.01, "generated", transform=top, ha="center", va="bottom",
            color=GENERATED, fontsize=9)
    ax.set_title(title, pad=16)
    fig.tight_layout()
    return fig, ax


def plot_area(ax) -> dict[str, float]:
    """Where the axes' plot area lies in the saved PNG, as fractions of its width and height from its top-left
    corner: {"left", "top", "right", "bottom"}, rounded to 1e-5 (a tenth of a pixel at 10,000 px). Valid for a
    figure saved without bbox_inches (the PNG is exactly the figure)."""
    box = ax.get_position()
    return {"left": round(float(box.x0), 5), "top": round(float(1 - box.y1), 5), "right": round(float(box.x1), 5),
            "bottom": round(float(1 - box.y0), 5)}


def save(fig, ax, path: Path) -> dict[str, float]:
    """Write the figure as a PNG at `path`, atomically, and close it; return its `plot_area`."""
    import matplotlib.pyplot as plt

    area = plot_area(ax)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    return area
