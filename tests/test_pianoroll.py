import numpy as np
import pytest

from pipeline import gm, smf, tokens
from pipeline.generate import TICKS_PER_FRAME, to_midi
from pipeline.midi import parse, part_notes
from pipeline.pianoroll import Grid, Notes, densify, from_roll, quantize
from pipeline.representations.pianoroll import roll_notes
from tests.conftest import real_files

GRID = Grid(steps_per_beat=4, pitch_low=21, pitch_high=108)
DRUM_GRID = Grid(steps_per_beat=4, pitch_low=21, pitch_high=108, drums=True)


def _random_notes(rng, n=200, frames=300, keys=88):
    s = rng.integers(0, frames, n)
    e = s + rng.integers(1, 20, n)
    p = rng.integers(0, keys, n)
    order = np.lexsort((p, s))
    return Notes(p[order].astype(np.uint8), s[order].astype(np.int32), e[order].astype(np.int32))


def test_window_densify_equals_a_slice_of_the_whole_roll():
    rng = np.random.default_rng(0)
    notes = _random_notes(rng)
    max_len = int((notes.end - notes.start).max())
    for onsets in (False, True):
        full = densify(notes, 88, onsets=onsets)
        for a, b in [(0, 64), (13, 77), (250, 330), (300, 310)]:
            np.testing.assert_array_equal(densify(notes, 88, a, b, max_len=max_len, onsets=onsets),
                                          np.pad(full, ((0, 400), (0, 0)))[a:b])


def test_onset_plane_marks_only_notes_that_start_in_the_window():
    notes = Notes(np.array([5, 5], np.uint8), np.array([2, 10], np.int32), np.array([10, 14], np.int32))
    roll = densify(notes, 12, 4, 14, onsets=True)
    assert roll[:, 5].all()  # one unbroken sustain...
    assert np.nonzero(roll[:, 12 + 5])[0].tolist() == [6]  # ...but the second note's onset is marked


def test_roll_round_trip_is_exact_for_runs():
    rng = np.random.default_rng(1)
    roll = rng.random((120, 88)) < 0.05
    np.testing.assert_array_equal(densify(from_roll(roll), 88, 0, 120), roll)


def test_repeated_notes_survive_the_roll_with_onsets_but_merge_without():
    notes = Notes(np.array([3, 3, 3], np.uint8), np.array([0, 4, 8], np.int32), np.array([4, 8, 12], np.int32))
    both = densify(notes, 12, onsets=True)
    back = from_roll(both[:, :12], both[:, 12:])
    assert back.start.tolist() == [0, 4, 8] and back.end.tolist() == [4, 8, 12]
    assert len(from_roll(densify(notes, 12))) == 1


def test_random_rolls_with_onsets_round_trip_every_onset():
    rng = np.random.default_rng(2)
    notes = _random_notes(rng, keys=97)
    roll = densify(notes, 97, onsets=True)
    back = from_roll(roll[:, :97], roll[:, 97:])
    assert set(zip(back.key.tolist(), back.start.tolist())) == set(zip(notes.key.tolist(), notes.start.tolist()))
    np.testing.assert_array_equal(densify(back, 97, 0, len(roll), onsets=True), roll)


def test_real_file_keeps_every_onset_and_pitch_on_the_grid(fixtures):
    song = smf.read((fixtures / "folk" / "AlnwickCastle.mid").read_bytes())
    tracks = [part_notes(song, i) for i in range(len(song.parts))]
    notes, outside = quantize(tracks, GRID)
    assert outside == 0
    expected = {(int(p) - 21, int(round(s * 4))) for t in tracks for p, s in zip(t.pitch, t.start)}
    assert set(zip(notes.key.tolist(), notes.start.tolist())) == expected
    assert np.all(np.diff(notes.start) >= 0) and np.all(notes.end > notes.start)


def test_out_of_range_notes_are_counted_not_kept(fixtures):
    song = smf.read((fixtures / "folk" / "AlnwickCastle.mid").read_bytes())
    tracks = [part_notes(song, i) for i in range(len(song.parts))]
    notes, outside = quantize(tracks, Grid(4, 60, 72))
    total = sum(len(t.pitch) for t in tracks)
    assert outside > 0 and len(notes) <= total - outside
    assert notes.key.max() <= 12


def test_drums_become_one_frame_hits_on_class_keys_or_are_counted_out(fixtures):
    song = smf.read((fixtures / "pop" / "pypianoroll_sample2.mid").read_bytes())
    drums = [part_notes(song, i) for i, p in enumerate(song.parts) if p.on_drum_channel]
    assert drums
    notes, outside = quantize(drums, DRUM_GRID)
    assert len(notes) and (notes.key >= 88).all() and (notes.end - notes.start == 1).all()
    unmapped = sum(int(gm.DRUM_CLASS_OF[p] < 0) for t in drums for p in t.pitch)
    assert outside == unmapped
    _, all_out = quantize(drums, GRID)  # a grid without drum keys places none
    assert all_out == sum(len(t.pitch) for t in drums)


def test_absolute_grid_follows_the_tempo_map(fixtures):
    data = (fixtures / "piano" / "fur-elise.mid").read_bytes()
    sec = parse(data).to("second")  # symusic's own tempo map as the reference
    song = smf.read(data)
    grid = Grid(4, 21, 108, steps_per_second=10)
    notes, _ = quantize([part_notes(song, i, seconds=True) for i in range(len(song.parts))], grid)
    seconds = sec.end() - min(t.start() for t in sec.tracks if t.note_num())
    assert abs(notes.n_frames - seconds * 10) <= 2


def _expected(song, grid):
    """(MIDI pitch written back, onset frame) for every note of the file that the grid can hold."""
    out = set()
    for i in range(len(song.parts)):
        tn = part_notes(song, i)
        for p, s in zip(tn.pitch.tolist(), np.rint(tn.start * grid.steps).astype(int).tolist()):
            if tn.is_drum:
                c = gm.DRUM_CLASS_OF[p]
                if c >= 0:
                    out.add((gm.DRUM_CLASS_PITCH[c], s, True))
            elif grid.pitch_low <= p <= grid.pitch_high:
                out.add((p, s, False))
    return out


def _midi_notes(data: bytes):
    score = parse(data)
    return {(int(n.pitch), n.time // TICKS_PER_FRAME, t.is_drum) for t in score.tracks for n in t.notes}


def _round_trip_files():
    files = real_files("pop_multitrack", "lakh", limit=6)
    return [(n, d) for n, d in files if any(t.is_drum and t.note_num() for t in parse(d).tracks)][:3]


@pytest.mark.parametrize("name,data", _round_trip_files())
def test_midi_to_roll_to_midi_keeps_every_pitch_and_onset_drums_included(name, data):
    song = smf.read(data)
    notes, _ = quantize([part_notes(song, i) for i in range(len(song.parts))], DRUM_GRID)
    start = min(int(np.rint(part_notes(song, i).start.min() * 4)) for i in range(len(song.parts)))
    roll = densify(notes, DRUM_GRID.n_keys, onsets=True)
    back = roll_notes(roll, DRUM_GRID.n_keys)
    got = _midi_notes(to_midi([("x", back, 0)], DRUM_GRID, program=0))
    assert got == {(p, s - min(start, 0), d) for p, s, d in _expected(song, DRUM_GRID)}


@pytest.mark.parametrize("tokenizer", ["REMI", "TSD", "MIDILike"])
@pytest.mark.parametrize("name,data", _round_trip_files()[:2])
def test_midi_to_tokens_to_midi_keeps_every_pitch_and_onset_drums_included(tokenizer, name, data):
    song = smf.read(data)
    notes, _ = quantize([part_notes(song, i) for i in range(len(song.parts))], DRUM_GRID)
    tok = tokens.make(tokenizer, DRUM_GRID, velocity=False, max_beats=8)
    ids = tokens.encode(tok, notes, DRUM_GRID)
    back = tokens.decode(tok, ids, DRUM_GRID)
    assert set(zip(back.key.tolist(), back.start.tolist())) == set(zip(notes.key.tolist(), notes.start.tolist()))
    got = _midi_notes(to_midi([("x", back, 0)], DRUM_GRID, program=0))
    start = min(int(np.rint(part_notes(song, i).start.min() * 4)) for i in range(len(song.parts)))
    assert got == {(p, s - min(start, 0), d) for p, s, d in _expected(song, DRUM_GRID)}


@pytest.mark.parametrize("grid", [GRID, DRUM_GRID], ids=["pitched", "drums"])
def test_garbage_tokens_decode_to_well_formed_notes(grid):
    """A model's free output is any id sequence: what decodes from it must still be notes that densify, sort and
    write. REMI with no time signature tokens: 4/4 bars of 16 frames; the stream starts in bar 0 (a leading Bar
    opens it) and each Bar moves at most one bar on, so with b Bars every note starts before frame 16 (b + 1);
    no duration exceeds max_beats (8 beats = 32 frames)."""
    tok = tokens.make("REMI", grid, velocity=False, max_beats=8)
    bar = tok.vocab["Bar_None"]
    rng = np.random.default_rng(0)
    decoded = 0
    for _ in range(20):
        ids = rng.integers(0, len(tok), 64)
        notes = tokens.decode(tok, ids, grid)
        k, s, e = notes.key.astype(np.int64), notes.start.astype(np.int64), notes.end.astype(np.int64)
        assert len(k) == len(s) == len(e) == len(notes.velocity)
        assert (k < grid.n_keys).all() and (s >= 0).all() and (e > s).all()
        assert (e - s <= 8 * grid.steps_per_beat).all()
        assert (s < 16 * (1 + int((ids == bar).sum()))).all()
        assert (np.diff(s) >= 0).all()  # sorted by start, as densify's search needs
        drums = k >= grid.n_pitches
        assert (e[drums] - s[drums] == 1).all()  # a kit has no sustain
        assert grid.drums or not drums.any()
        decoded += len(k)
    assert decoded > 100  # garbage mostly decodes to something: the checks above are not checks of nothing


def test_a_garbage_sequence_decodes_to_its_two_well_formed_notes():
    """Every kind of garbage a model can emit, each with its known effect on what decodes."""
    tok = tokens.make("REMI", GRID, velocity=False, max_beats=8)
    seq = ["PAD_None", "BOS_None",           # specials are dropped wherever they are
           "Bar_None", "Position_4", "Pitch_60", "Duration_1.0.4",  # bar 0, frame 4, one beat: key 60 - 21 = 39
           "Pitch_109", "Duration_0.1.4",    # a pitch in the vocabulary but above the grid (108): dropped
           "Pitch_64", "Position_2",         # a pitch with no duration: no note
           "Duration_2.0.4",                 # a duration with no pitch: nothing
           "Bar_None", "Bar_None", "Position_0",  # two bars on: frame 32
           "Pitch_21", "Duration_8.0.4",     # the lowest key for the longest duration, 8 beats: frames 32..64
           "Pitch_72", "EOS_None"]           # cut off before its duration: no note
    notes = tokens.decode(tok, [tok.vocab[t] for t in seq], GRID)
    assert notes.key.tolist() == [39, 0]
    assert notes.start.tolist() == [4, 32] and notes.end.tolist() == [8, 64]
    assert tokens.decode(tok, [tok.vocab[t] for t in ["PAD_None", "Duration_1.0.4", "Pitch_60", "EOS_None"]],
                         GRID).key.tolist() == []  # nothing well-formed: no notes, and no error


@pytest.mark.parametrize("tokenizer", ["REMI", "TSD"])
def test_tokens_on_an_absolute_grid_round_trip_every_onset(fixtures, tokenizer):
    song = smf.read((fixtures / "piano" / "fur-elise.mid").read_bytes())
    grid = Grid(4, 21, 108, steps_per_second=20)
    notes, _ = quantize([part_notes(song, i, seconds=True) for i in range(len(song.parts))], grid)
    tok = tokens.make(tokenizer, grid, velocity=True, max_beats=8)
    back = tokens.decode(tok, tokens.encode(tok, notes, grid), grid)
    assert set(zip(back.key.tolist(), back.start.tolist())) == set(zip(notes.key.tolist(), notes.start.tolist()))
