import numpy as np
import pytest

from pipeline.midi import parse, track_notes
from pipeline.pianoroll import Grid, Notes, densify, from_roll, quantize

GRID = Grid(steps_per_beat=4, pitch_low=21, pitch_high=108)


def _random_notes(rng, n=200, frames=300, pitches=88):
    s = rng.integers(0, frames, n)
    e = s + rng.integers(1, 20, n)
    p = rng.integers(0, pitches, n)
    order = np.lexsort((p, s))
    return Notes(p[order].astype(np.uint8), s[order].astype(np.int32), e[order].astype(np.int32))


def test_window_densify_equals_a_slice_of_the_whole_roll():
    rng = np.random.default_rng(0)
    notes = _random_notes(rng)
    full = densify(notes, 88)
    max_len = int((notes.end - notes.start).max())
    for a, b in [(0, 64), (13, 77), (250, 330), (300, 310)]:
        np.testing.assert_array_equal(densify(notes, 88, a, b, max_len=max_len), np.pad(full, ((0, 400), (0, 0)))[a:b])


def test_roll_round_trip_is_exact_for_runs():
    rng = np.random.default_rng(1)
    roll = rng.random((120, 88)) < 0.05
    np.testing.assert_array_equal(densify(from_roll(roll), 88, 0, 120), roll)


def test_real_file_keeps_every_onset_and_pitch_on_the_grid(fixtures):
    score = parse((fixtures / "folk" / "AlnwickCastle.mid").read_bytes())
    tracks = [track_notes(score, i) for i in range(len(score.tracks)) if score.tracks[i].note_num()]
    notes, outside = quantize(tracks, GRID)
    assert outside == 0
    expected = {(int(p) - 21, int(round(s * 4))) for t in tracks for p, s in zip(t.pitch, t.start)}
    assert set(zip(notes.pitch.tolist(), notes.start.tolist())) == expected
    assert np.all(np.diff(notes.start) >= 0) and np.all(notes.end > notes.start)
    roll = densify(notes, GRID.n_pitches)
    assert roll.shape == (notes.n_frames, 88) and roll.sum() >= len(notes)


def test_out_of_range_notes_are_counted_not_kept(fixtures):
    score = parse((fixtures / "folk" / "AlnwickCastle.mid").read_bytes())
    tracks = [track_notes(score, i) for i in range(len(score.tracks))]
    narrow = Grid(4, 60, 72)
    notes, outside = quantize(tracks, narrow)
    total = sum(len(t.pitch) for t in tracks)
    assert outside > 0 and len(notes) <= total - outside
    assert notes.pitch.max() <= 12
