"""The quality filters and the timing class, each on a file it must reject and one it must keep (a real tune),
through prepare; every filter off keeps them all."""
import numpy as np
import pytest
from symusic import Note, Score, Track

from pipeline import quality
from tests.test_prepare import _acquire, _params, _run
from tests.test_reported import smf_bytes

TPQ = 96


@pytest.fixture
def tune(fixtures) -> Score:
    return Score.from_midi((fixtures / "folk" / "AlnwickCastle.mid").read_bytes()).resample(TPQ)


def _score(notes: list[tuple[float, int]]) -> bytes:
    """A MIDI file of (onset in beats, pitch) quarter notes on a piano."""
    s = Score(TPQ)
    t = Track("piano", 0, False)
    for beat, pitch in notes:
        t.notes.append(Note(round(beat * TPQ), TPQ, pitch, 80))
    s.tracks.append(t)
    return s.dumps_midi()


def _orchestra(tune: Score, instruments: int) -> bytes:
    """The tune's melody, four notes on each of `instruments` programs in turn, on one channel (a MIDI channel
    plays one program at a time, so more than 16 instruments in a file take program changes like these)."""
    events, melody = [], [p for _, p in _melody(tune)]
    for k in range(instruments):
        events.append((0, bytes([0xC0, k])))
        for p in (melody * instruments)[4 * k:4 * k + 4]:
            events += [(0, bytes([0x90, p, 80])), (TPQ, bytes([0x80, p, 0]))]
    return smf_bytes([events], TPQ)


def _melody(score: Score) -> list[tuple[float, int]]:
    return [(n.time / TPQ, n.pitch) for n in score.tracks[0].notes]


def _performed(score: Score) -> Score:
    """The score's melody at 480 PPQ with every onset moved 3 to 9 ticks early or late, as in a recorded
    performance: off every point of the 32nd-note and 32nd-triplet grids (60 and 40 ticks apart). (The melody
    alone: with its chords it would be the same music as the score on the dedupe grid.)"""
    out = score.resample(480)
    out.tracks = out.tracks[:1]
    rng = np.random.default_rng(0)
    for t in out.tracks:
        for n in t.notes:
            n.time = n.time + int(rng.integers(3, 10)) * int(rng.choice([-1, 1])) + 480
    return out


FILES = {
    # file name: (what builds it from the tune, the reason it must be rejected with by default)
    "one_pitch.mid": (lambda tune: _score([(b, 60) for b in range(64)]), "low_pitch_class_entropy"),
    "gap.mid": (lambda tune: _score(_melody(tune) + [(b + 300, p) for b, p in _melody(tune)]), "long_silence"),
    "black.mid": (lambda tune: _score([(k / 100, 40 + k % 48) for k in range(1600)]), "too_dense"),
    "loop.mid": (lambda tune: _score([(4 * bar + b / 2, p) for bar in range(32)
                                      for b, p in enumerate([60, 64, 67, 72, 71, 67, 64, 62])]), "repetitive_chunks"),
    "orchestra.mid": (lambda tune: _orchestra(tune, 30), "too_many_instruments"),
}


@pytest.fixture
def folder(tune, tmp_path, monkeypatch):
    root = tmp_path / "files"
    root.mkdir()
    (root / "tune.mid").write_bytes(tune.dumps_midi())
    (root / "performed.mid").write_bytes(_performed(tune).dumps_midi())
    for name, (build, _) in FILES.items():
        (root / name).write_bytes(build(tune))
    _acquire(root, tmp_path, monkeypatch)
    return root


def _file_reasons(rejects: list[dict]) -> dict[str, str]:
    return {r["id"].removeprefix("local/"): r["reason"] for r in rejects if r["track"] is None}


def test_each_default_filter_rejects_its_junk_and_keeps_the_tune(folder):
    selected, rejects, report = _run(_params())
    assert _file_reasons(rejects) == {name: reason for name, (_, reason) in FILES.items()}
    kept = {r["id"].removeprefix("local/"): r for r in selected}
    assert set(kept) == {"tune.mid", "performed.mid"}
    tune = kept["tune.mid"]
    assert 1.0 < tune["pitch_class_entropy"] < 3.6 and tune["longest_silence"] < 8
    assert tune["notes_per_beat"] < 8 and tune["chunk_divergence"] > 0.02 and tune["instruments"] == 1
    assert report["filters"]["max_instruments"] == {"value": 24, "rejected": 1}


def test_every_filter_off_keeps_every_file(folder):
    off = {"min_pitch_class_entropy": 0, "max_silence_beats": 0, "max_notes_per_beat": 0,
           "min_chunk_divergence": 0, "max_instruments": 0}
    selected, rejects, _ = _run(_params(off))
    assert _file_reasons(rejects) == {}
    assert len(selected) == len(FILES) + 2
    assert all(r["pitch_class_entropy"] is None and r["chunk_divergence"] is None for r in selected)


@pytest.mark.parametrize("keep", ["quantized", "expressive"])
def test_the_timing_filter_keeps_one_class_of_tracks(folder, keep):
    selected, rejects, _ = _run(_params({"timing": keep}))
    kept = {r["id"].removeprefix("local/"): r for r in selected}
    ours, theirs = ("tune.mid", "performed.mid") if keep == "quantized" else ("performed.mid", "tune.mid")
    assert ours in kept and theirs not in kept
    assert set(kept[ours]["timing"]) == {keep}
    dropped = [r for r in rejects if r["id"] == f"local/{theirs}" and r["track"] is not None]
    assert dropped and all(r["reason"] == "timing_filtered" for r in dropped)
    assert _file_reasons(rejects)[theirs] == "no_matching_tracks"


def test_off_grid_share_of_quantised_and_performed_onsets():
    assert quality.off_grid_share(np.array([0, 48, 96, 120, 128, 160]), 96) == 0.0  # 8ths, 32nds, triplets
    assert quality.off_grid_share(np.array([5, 101, 197, 293]), 96) == 1.0
    assert quality.off_grid_share(np.array([0, 25]), 100) == 0.0  # 12.5 ticks a 32nd: rounded to the tick


def test_measures_on_small_cases():
    assert quality.pitch_class_entropy(np.array([60, 72, 48])) == 0.0
    assert quality.pitch_class_entropy(np.arange(12) + 60) == pytest.approx(np.log2(12))
    assert quality.pitch_class_entropy(np.array([], np.int16)) is None
    start, end = np.array([0.0, 1.0, 10.0]), np.array([2.0, 1.5, 11.0])
    assert quality.longest_silence(start, end) == 8.0  # the first note still sounds when the second ends
    assert quality.max_notes_per_beat(np.array([0.0, 0.5, 1.0, 9.0]), 4) == 0.75
    assert quality.chunk_divergence(np.array([0.0, 1.0]), np.array([60, 62]), 16) is None  # one window
    loop = np.tile([60, 64, 67], 8)
    assert quality.chunk_divergence(np.arange(24) * 2.0, loop, 6) == 0.0
    assert quality.chunk_divergence(np.array([0.0, 20.0]), np.array([60, 61]), 16) == 1.0  # disjoint: 1 bit
