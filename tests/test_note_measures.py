"""prepare's note measures in C (pipeline/note_measures.c through pipeline/measures_native.py) against their numpy
references: the off-grid shares and the content hash exactly, the sequence measures exactly but where a log2 is
taken (1e-12: numpy's own log2 and the C library's can differ in the last bit), on every real file at hand and on
random sequences made to reach the edge cases; the references wherever the C code is off or its inputs lie
outside its domain."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import dedupe, measures_native, quality, smf
from pipeline.dedupe import ContentKey
from tests.test_smf_irregular import _real_files

LOGS = {"pitch_class_entropy", "chunk_divergence"}  # the measures that take a log2


@pytest.fixture(scope="module")
def native():
    if measures_native.library() is None:
        pytest.skip("no C note measures here (no C compiler, or its build failed): only the references run")


def _assert_measures(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys(), what
    for name, v in want.items():
        if v is None or name not in LOGS:
            assert got[name] == v and type(got[name]) is type(v), f"{what}: {name} {got[name]!r} != {v!r}"
        else:
            assert math.isclose(got[name], v, rel_tol=1e-12, abs_tol=1e-15), f"{what}: {name} {got[name]} != {v}"


def _check_song(song: smf.Song, what: str, window: float = 16.0) -> None:
    tpq = song.ticks_per_quarter
    onsets = [p.start for p in song.parts]
    assert np.array_equal(quality.off_grid_shares(onsets, tpq), quality.off_grid_shares_reference(onsets, tpq)), what
    for key in (ContentKey(), ContentKey(steps_per_beat=12, transpose_invariant=False)):
        tracks = [(p.on_drum_channel, p.start, p.pitch) for p in song.parts]
        assert dedupe.content_hash_of(tracks, tpq, key) == dedupe.content_hash_reference(tracks, tpq, key), what
    for parts in ([*song.parts], *([p] for p in song.parts[:4])):  # files mode, and tracks mode
        start, end = np.concatenate([p.start for p in parts]), np.concatenate([p.end for p in parts])
        pitch = np.concatenate([p.pitch for p in parts])
        pitched = np.repeat([not p.on_drum_channel for p in parts], [len(p) for p in parts])
        _assert_measures(quality.sequence_measures(start, end, pitch, pitched, tpq, window),
                         quality.sequence_measures_reference(start, end, pitch, pitched, tpq, window), what)


def test_every_real_file_measures_the_same_as_the_references(native):
    songs = 0
    for path in _real_files():
        try:
            song = smf.read(path.read_bytes())
        except Exception:  # noqa: BLE001 -- broken files have no notes to measure
            continue
        if song.parts:
            _check_song(song, str(path), window=4.0 if songs % 2 else 16.0)
            songs += 1
    assert songs >= 10


def test_random_sequences_measure_the_same_as_the_references(native):
    """Ties, unisons, drums mixed in, PPQs whose grid points fall between ticks, a single window, no pitched notes,
    long silences."""
    rng = np.random.default_rng(20261203)
    for k in range(400):
        tpq = int(rng.choice([96, 480, 97, 1000, 1]))
        n_parts = int(rng.integers(1, 5))
        parts = []
        for _ in range(n_parts):
            n = int(rng.integers(1, 60))
            start = np.sort(rng.integers(0, tpq * int(rng.choice([1, 8, 200])), n)).astype(np.int64)
            if rng.random() < 0.3:
                start[n // 2:] += tpq * 100  # a long silence
            end = start + rng.integers(0, tpq * 4, n)
            pitch = rng.integers(0, 128 if rng.random() < 0.9 else 256, n).astype(np.int16)
            parts.append((bool(rng.random() < 0.3), start, end, pitch))
        onsets = [s for _, s, _, _ in parts]
        assert np.array_equal(quality.off_grid_shares(onsets, tpq), quality.off_grid_shares_reference(onsets, tpq))
        tracks = [(d, s, p) for d, s, _, p in parts]
        key = ContentKey(steps_per_beat=int(rng.choice([4, 12])), transpose_invariant=bool(rng.random() < 0.7))
        assert dedupe.content_hash_of(tracks, tpq, key) == dedupe.content_hash_reference(tracks, tpq, key), k
        start = np.concatenate([s for _, s, _, _ in parts])
        end = np.concatenate([e for _, _, e, _ in parts])
        pitch = np.concatenate([p for _, _, _, p in parts])
        pitched = np.repeat([not d for d, _, _, _ in parts], [len(s) for _, s, _, _ in parts])
        window = float(rng.choice([0.5, 4.0, 16.0, 1e6]))
        # every one of these is inside the C code's domain: the comparisons below are C against numpy
        assert measures_native.sequence(start, end, pitch, pitched, tpq, window) is not None
        assert measures_native.content_pairs(tracks, tpq, key.steps_per_beat, key.transpose_invariant, 128) is not None
        assert measures_native.off_grid_counts(onsets, tpq, quality.GRIDS_PER_BEAT) is not None
        _assert_measures(quality.sequence_measures(start, end, pitch, pitched, tpq, window),
                         quality.sequence_measures_reference(start, end, pitch, pitched, tpq, window), f"case {k}")


def test_outside_the_c_domain_the_references_run(native):
    # a pitch past 255 (the C pairs' range), float onsets, negative onsets: the C code declines, same answers
    tracks = [(False, np.array([0, 96]), np.array([60, 300]))]
    assert measures_native.content_pairs(tracks, 96, 4, True, 128) is None
    assert dedupe.content_hash_of(tracks, 96) == dedupe.content_hash_reference(tracks, 96)
    assert measures_native.off_grid_counts([np.array([0.5, 96.0])], 96, (8, 12)) is None
    assert measures_native.off_grid_counts([np.array([-96, 96])], 96, (8, 12)) is None
    assert quality.off_grid_shares([np.array([-96, 97])], 96).tolist() == [0.5]
    negative = (np.array([0, 96]), np.array([48, 144]), np.array([-3, 62]), np.array([True, True]))
    assert measures_native.sequence(*negative, 96, 4.0) is None
    start, end = np.array([-5, 10]), np.array([20, 30])
    assert measures_native.sequence(start, end, np.array([60, 62]), np.array([True, True]), 96, 4.0) is None
    _assert_measures(quality.sequence_measures(start, end, np.array([60, 62]), np.array([True, True]), 96, 4.0),
                     quality.sequence_measures_reference(start, end, np.array([60, 62]), np.array([True, True]),
                                                         96, 4.0), "negative onset")


def test_switched_off_the_references_run(monkeypatch):
    monkeypatch.setenv("PIPELINE_MEASURES_NATIVE", "0")
    assert measures_native.library() is None
    start = np.array([0, 48, 96, 201], np.int64)
    assert quality.off_grid_shares([start], 96).tolist() == [0.25]  # 201 lies on neither grid of 96 ticks
    tracks = [(False, start, np.array([60, 64, 67, 72], np.int16))]
    assert dedupe.content_hash_of(tracks, 96) == dedupe.content_hash_reference(tracks, 96)
    got = quality.sequence_measures(start, start + 48, np.array([60, 64, 67, 72]), np.ones(4, bool), 96, 16.0)
    assert got["beats"] == 201 / 96 + 0.5 and got["chunk_divergence"] is None  # one window: too short to judge
