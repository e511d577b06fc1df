"""The quality filters: the measures behind them, on one sequence's notes in quarter-note time (ticks for the
timing class), and the table that turns them into reject reasons."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline import measures_native


def sorted_unique(a: np.ndarray, runs: bool = False) -> np.ndarray:
    """np.unique for integer arrays by sort-and-compare: several times faster than its hash path here.

    `runs`: `a` is made of long sorted runs (notes in part order, each part by onset); then numpy's timsort,
    which merges runs in near-linear time (on the 4,000 notes of a Lakh file: 22 us against 45 us with the
    default sort for int32, 87 us for int64), else the default sort (3x faster than timsort on shuffled values).
    Equal integers are indistinguishable, so both give the same result."""
    a = np.sort(a, kind="stable" if runs else None)
    if len(a) < 2:
        return a
    keep = np.empty(len(a), bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def span_beats(start: np.ndarray, end: np.ndarray) -> float:
    return float(end.max() - start.min()) if len(start) else 0.0


def max_polyphony(start: np.ndarray, end: np.ndarray) -> int:
    """Most notes sounding at once (a note ending where another starts does not overlap it)."""
    if not len(start):
        return 0
    starts, ends = np.sort(start), np.sort(end)
    # at each onset: notes begun by then, minus notes already over (ending exactly then counts as over)
    return int((np.searchsorted(starts, starts, "right") - np.searchsorted(ends, starts, "right")).max())


def unique_pitches_per_window(start: np.ndarray, pitch: np.ndarray, window_beats: float) -> float:
    """Mean number of distinct pitches over the windows that hold an onset: low for an endless one-note riff."""
    if not len(start):
        return 0.0
    w = np.floor((start - start.min()) / window_beats).astype(np.int64)
    pairs = sorted_unique(w * 256 + pitch.astype(np.int64))
    return float(len(pairs) / len(sorted_unique(pairs // 256)))


def pitch_class_entropy(pitch: np.ndarray) -> float | None:
    """Shannon entropy, in bits, of the pitch-class histogram of the notes (one count per note): 0 for a single
    pitch class, log2(12) = 3.58 for all twelve equally often; None without notes. As MusPy's
    `pitch_class_entropy` and the corpus filters of GigaMIDI (Lee et al., 2025) measure it. Give it pitched notes
    only: drum keys are not pitches."""
    if not len(pitch):
        return None
    counts = np.bincount(pitch.astype(np.int64) % 12, minlength=12)
    p = counts[counts > 0] / len(pitch)
    return float((p * np.log2(1 / p)).sum())


def longest_silence(start: np.ndarray, end: np.ndarray) -> float:
    """The longest stretch, in beats, between the first onset and the last release in which no note sounds
    (notes given in beats, (n,) each). A note ending where the next starts leaves no silence."""
    if not len(start):
        return 0.0
    order = np.argsort(start, kind="stable")
    reach = np.maximum.accumulate(end[order])  # the latest release among the notes begun so far
    gaps = start[order][1:] - reach[:-1]
    return float(max(gaps.max(initial=0.0), 0.0))


def max_notes_per_beat(start: np.ndarray, window_beats: float) -> float:
    """Onsets per beat in the densest window of `window_beats` (windows counted from the first onset): the
    note-density measure of the corpus filters, high for the thousands-of-notes-a-second 'black MIDI' files."""
    if not len(start):
        return 0.0
    w = np.floor((start - start.min()) / window_beats).astype(np.int64)
    return float(np.bincount(w).max() / window_beats)


def chunk_divergence(start: np.ndarray, pitch: np.ndarray, window_beats: float) -> float | None:
    """How much a sequence changes: the mean Jensen-Shannon divergence (bits, 0..1) between the pitch
    distributions (one count per onset, 128 keys) of each window of `window_beats` that holds notes and the next
    one that does. 0 for one bar looped throughout; None for a sequence with fewer than two such windows (too short
    to judge). The repetitiveness measure of issue "Near-duplicates and quality at web scale"; JSD as in Lin, 1991."""
    if not len(start):
        return None
    w = np.floor((start - start.min()) / window_beats).astype(np.int64)
    # each window's rank among the windows that hold notes: a bincount over the window numbers, which are few,
    # instead of np.unique's sort (its inverse alone was half this function's time)
    held = np.bincount(w) > 0
    n_used = int(held.sum())
    if n_used < 2:
        return None
    w = (np.cumsum(held) - 1)[w]
    hist = np.bincount(w * 128 + (pitch.astype(np.int64) & 127), minlength=n_used * 128).reshape(-1, 128)
    hist = hist / hist.sum(1, keepdims=True)
    p, q = hist[:-1], hist[1:]
    m = (p + q) / 2

    def kl(a: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log2(a / m), 0.0).sum(1)

    return float(((kl(p) + kl(q)) / 2).mean())


SEQUENCE_MEASURES = ("beats", "pitch_class_entropy", "longest_silence", "notes_per_beat", "chunk_divergence")


def sequence_measures(start: np.ndarray, end: np.ndarray, pitch: np.ndarray, pitched: np.ndarray,
                      ticks_per_quarter: int, window_beats: float) -> dict[str, float | None]:
    """One sequence's measures by name (SEQUENCE_MEASURES): its span in beats, and pitch_class_entropy,
    longest_silence, max_notes_per_beat (as notes_per_beat) and chunk_divergence above, the entropy and the
    divergence over its pitched notes. Notes as int64 ticks (onsets, releases) and pitches, (n,) each; `pitched`
    (n,) bool, False for a drum note. Computed in one C pass over the notes sorted by onset (measures_native)
    where it can be, else by sequence_measures_reference; the values agree to 1e-12 (bit for bit but where
    numpy's log2 and the C library's differ in the last bit)."""
    got = measures_native.sequence(start, end, pitch, pitched, ticks_per_quarter, window_beats)
    if got is None:
        return sequence_measures_reference(start, end, pitch, pitched, ticks_per_quarter, window_beats)
    return {name: None if np.isnan(v) else v for name, v in zip(SEQUENCE_MEASURES, got.tolist())}


def sequence_measures_reference(start: np.ndarray, end: np.ndarray, pitch: np.ndarray, pitched: np.ndarray,
                                ticks_per_quarter: int, window_beats: float) -> dict[str, float | None]:
    """sequence_measures by the functions above, in numpy: the rule note_measures.c is held to."""
    beats, ends = start.astype(np.float64) / ticks_per_quarter, end.astype(np.float64) / ticks_per_quarter
    pitched = np.asarray(pitched, bool)
    return {"beats": span_beats(beats, ends), "pitch_class_entropy": pitch_class_entropy(pitch[pitched]),
            "longest_silence": longest_silence(beats, ends), "notes_per_beat": max_notes_per_beat(beats, window_beats),
            "chunk_divergence": chunk_divergence(beats[pitched], pitch[pitched], window_beats)}


GRIDS_PER_BEAT = (8, 12)  # 32nd notes and 32nd-note triplets: the finest values score-based MIDI files use


def off_grid_share(onsets: np.ndarray, ticks_per_quarter: int) -> float:
    """The share of a track's onsets (ticks, (n,)) that lie on neither grid of GRIDS_PER_BEAT, each grid point
    rounded to the nearest tick: near 0 for a quantised (sequenced, score-based) track, near 1 for a performance
    recorded without quantisation (a grid point then catches only the few onsets that land on it by chance).
    The idea of GigaMIDI's onset-based expressive-performance heuristics (Lee et al., 2025, their NOMML: the
    metrical level of each onset), reduced to one share; 0.0 for no onsets."""
    return float(off_grid_shares([onsets], ticks_per_quarter)[0])


def off_grid_shares(tracks: list[np.ndarray], ticks_per_quarter: int) -> np.ndarray:
    """off_grid_share of each track's onsets, computed together: (len(tracks),) float64. Counted in C
    (measures_native) where it can be, else by off_grid_shares_reference: the same values."""
    counts = np.array([len(t) for t in tracks], np.int64)
    if not counts.sum():
        return np.zeros(len(tracks))
    off = measures_native.off_grid_counts(tracks, ticks_per_quarter, GRIDS_PER_BEAT)
    if off is None:
        return off_grid_shares_reference(tracks, ticks_per_quarter)
    return np.divide(off.astype(np.float64), counts, out=np.zeros(len(tracks)), where=counts > 0)


def off_grid_shares_reference(tracks: list[np.ndarray], ticks_per_quarter: int) -> np.ndarray:
    """off_grid_shares in numpy: the rule note_measures.c is held to."""
    counts = np.array([len(t) for t in tracks], np.int64)
    if not counts.sum():
        return np.zeros(len(tracks))
    t = np.concatenate(tracks).astype(np.int64)
    on = np.zeros(len(t), bool)
    for g in GRIDS_PER_BEAT:
        nearest = np.rint(np.rint(t * g / ticks_per_quarter) * ticks_per_quarter / g).astype(np.int64)
        on |= nearest == t
    track = np.repeat(np.arange(len(tracks)), counts)
    off = np.bincount(track, weights=~on, minlength=len(tracks))
    return np.divide(off, counts, out=np.zeros(len(tracks)), where=counts > 0)


EXPRESSIVE_ABOVE = 0.5  # off-grid share; the shared files' tracks cluster below 0.2 and above 0.65 (see data-quality)


def timing_class(off_grid: float) -> str:
    """'expressive' (performed, not quantised) when more than EXPRESSIVE_ABOVE of the onsets are off the grid,
    else 'quantized'."""
    return "expressive" if off_grid > EXPRESSIVE_ABOVE else "quantized"


@dataclass(frozen=True)
class Filter:
    """One quality filter: `filter.<param>` bounds the sequence's measure `column` from below (`minimum`) or
    above; a sequence past it is rejected with `reason`. 0 turns a filter off; a measure of None (one that cannot
    judge the sequence: no pitched notes, fewer than two windows) passes."""
    param: str
    column: str
    reason: str
    minimum: bool
    what: str  # the measure in words, for the reject message


FILTERS = (
    Filter("min_notes", "n_notes", "too_few_notes", True, "notes"),
    Filter("min_beats", "beats", "too_short", True, "beats long"),
    Filter("min_unique_pitches", "unique_pitches", "repetitive", True, "distinct pitches per window"),
    Filter("max_polyphony", "max_polyphony", "too_polyphonic", False, "notes at once"),
    Filter("min_pitch_class_entropy", "pitch_class_entropy", "low_pitch_class_entropy", True,
           "bits of pitch-class entropy"),
    Filter("max_silence_beats", "longest_silence", "long_silence", False, "beats with nothing sounding"),
    Filter("max_notes_per_beat", "notes_per_beat", "too_dense", False, "onsets per beat in the densest window"),
    Filter("max_instruments", "instruments", "too_many_instruments", False, "instruments"),
    Filter("min_chunk_divergence", "chunk_divergence", "repetitive_chunks", True,
           "bits of Jensen-Shannon divergence between successive windows' pitches"),
)


def reject_reason(measures: dict, limits: dict[str, float]) -> tuple[str, str] | None:
    """(reason, message) of the first filter in FILTERS that a sequence's `measures` (by column) fail under
    `limits` (filter param -> value); None when it passes them all."""
    for f in FILTERS:
        limit, value = limits[f.param], measures[f.column]
        if not limit or value is None:
            continue
        if value < limit if f.minimum else value > limit:
            side = "under" if f.minimum else "over"
            return f.reason, f"{value:.6g} {f.what}, {side} filter.{f.param}={limit:g}"
    return None
