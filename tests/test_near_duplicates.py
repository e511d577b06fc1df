"""The near-duplicate level: MinHash LSH over melodic shingles joins versions of one song, whatever their key,
tempo, PPQ or instrumentation, and keeps different songs apart; prepare records and (optionally) drops them.
The signatures' C pass (pipeline/near_signatures.c) gives the reference's (numpy and datasketch) values bit for
bit on every real file at hand, on edge cases and on random parts, reads and writes nothing outside its arrays,
and gives way to the reference where it is switched off or cannot be built."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from symusic import Note, Score, Tempo, Track

from pipeline import gm, native, prepare, smf
from pipeline import near_duplicates as N
from pipeline import params as P
from pipeline.instruments import infer
from pipeline.near_duplicates import MIN_SHINGLES, NearIndex, NearKey, shingles, signatures, top_line
from tests.test_prepare import _acquire, _params, _run, run_tables

KEY = prepare.Config.from_params(P.parse({})).near  # params.yaml's


@pytest.fixture
def tune(fixtures) -> Score:
    return Score.from_midi((fixtures / "folk" / "AlnwickCastle.mid").read_bytes())


@pytest.fixture
def other_tune(fixtures) -> Score:
    """Another reel in the same key (G major), tempo (120 bpm) and PPQ (24) as `tune`, with the same two parts."""
    return Score.from_midi((fixtures / "folk" / "AprilWaltz.mid").read_bytes())


@pytest.fixture
def third_tune(fixtures) -> Score:
    return Score.from_midi((fixtures / "folk" / "BarrenRocksofAden.mid").read_bytes())


def transposed(score: Score, semitones: int) -> Score:
    out = score.copy()
    for t in out.tracks:
        if not t.is_drum:
            t.shift_pitch(semitones, inplace=True)
    return out


def track_removed(score: Score, index: int) -> Score:
    out = score.copy()
    out.tracks = [t for k, t in enumerate(out.tracks) if k != index]
    return out


def track_added(score: Score, donor: Score) -> Score:
    out = score.copy()
    out.tracks.append(donor.tracks[0].copy())
    return out


def retimed(score: Score, tpq: int, bpm: float) -> Score:
    out = score.resample(tpq)
    out.tempos = [Tempo(0, bpm)]
    return out


def _signatures(score: Score) -> np.ndarray:
    """What prepare computes for a file: one signature per pitched part."""
    song = smf.read(score.dumps_midi())
    return signatures([(p.start, p.pitch) for p in song.parts
                       if infer(p.program, p.on_drum_channel, p.name, False).family != gm.DRUMS], KEY)


def _pairs(scores: list[Score], key: NearKey = KEY) -> dict[tuple[int, int], float]:
    index = NearIndex(key)
    try:
        for k, s in enumerate(scores):
            index.add(k, _signatures(s))
        a, b, sim, _ = index.pairs(np.ones(len(scores), bool))
    finally:
        index.close()
    return {(int(i), int(j)): float(x) for i, j, x in zip(a, b, sim)}


def test_top_line_takes_the_highest_note_of_each_onset():
    start = np.array([0, 0, 10, 20, 20, 20])
    pitch = np.array([60, 67, 62, 55, 71, 64])
    assert top_line(start, pitch).tolist() == [67, 62, 71]
    assert top_line(start + (1 << 41), pitch).tolist() == [67, 62, 71]  # past the packed sort's range
    assert top_line(start / 7, pitch).tolist() == [67, 62, 71]  # onsets in beats, not ticks


def test_shingles_drop_runs_of_few_distinct_intervals():
    onsets = np.arange(40)
    assert len(shingles(onsets, np.full(40, 60), 6)) == 0  # one repeated note: every interval 0
    scale = 60 + np.arange(40) % 12  # a rising scale: intervals 1 (and -11 once an octave): under 4 distinct
    assert len(shingles(onsets, scale, 6)) == 0
    tune = np.array([60, 64, 62, 67, 65, 69, 60, 72, 71, 59] * 4)
    assert len(shingles(onsets, tune, 6)) >= MIN_SHINGLES


def test_versions_of_one_tune_are_joined_and_another_tune_is_not(tune, other_tune):
    versions = [tune,
                transposed(tune, 5),
                track_removed(tune, 1),
                track_added(tune, other_tune),
                retimed(tune, 480, 90.0),
                transposed(retimed(track_removed(tune, 1), 960, 150.0), -3)]
    pairs = _pairs(versions + [other_tune])
    n = len(versions)
    for i in range(n):
        for j in range(i + 1, n):
            assert pairs.get((i, j), 0) >= KEY.threshold, (i, j)
    # the other reel (same key, tempo and PPQ) joins none of them; a version with its melody added joins it
    assert {(i, j) for i, j in pairs if n in (i, j)} == {(3, n)}


def test_the_same_music_gets_the_same_signatures(tune):
    assert np.array_equal(_signatures(tune), _signatures(tune.copy()))
    assert _signatures(tune).dtype == np.uint32 and _signatures(tune).shape == (2, KEY.num_perm)


def test_prepare_joins_records_and_optionally_drops_near_copies(tune, other_tune, third_tune, tmp_path,
                                                                monkeypatch):
    root = tmp_path / "songs"
    root.mkdir()
    # neither copy is the same music as the original (a part added or removed), so only the near level joins them
    (root / "a.mid").write_bytes(tune.dumps_midi())
    (root / "b.mid").write_bytes(transposed(track_added(tune, third_tune), 2).dumps_midi())
    (root / "c.mid").write_bytes(retimed(track_removed(tune, 1), 96, 100.0).dumps_midi())
    (root / "d.mid").write_bytes(other_tune.dumps_midi())
    _acquire(root, tmp_path, monkeypatch)
    selected, rejects, report = _run(_params())
    sel = {r["id"].removeprefix("local/"): r for r in selected}
    versions = ("a.mid", "b.mid", "c.mid")
    assert {sel[f]["group"] for f in versions} == {"local/a.mid"}
    assert sel["d.mid"]["group"] == "local/d.mid" and sel["d.mid"]["near_duplicate_of"] is None
    assert len({sel[f]["content_hash"] for f in versions}) == 3
    for f in versions:
        assert sel[f]["near_duplicate_of"] in {"local/a.mid", "local/b.mid", "local/c.mid"} - {f"local/{f}"}
        assert sel[f]["near_similarity"] >= KEY.threshold
    assert report["dedupe"]["near"]["pairs"] >= 2 and report["dedupe"]["near"]["dropped"] == 0
    assert not any(r["reason"] == "near_duplicate" for r in rejects)

    selected, rejects, report = _run(_params(dedupe={"near": {"drop_above": 0.9}}))
    dropped = {r["id"]: r for r in rejects if r["reason"] == "near_duplicate"}
    assert set(dropped) == {"local/b.mid", "local/c.mid"}  # identical melodies: estimated Jaccard 1
    assert all(r["duplicate_of"] == "local/a.mid" and r["notes"] > 0 for r in dropped.values())
    assert report["dedupe"]["near"]["dropped"] == 2
    assert {r["id"] for r in selected} == {"local/a.mid", "local/d.mid"}


def test_a_part_too_short_to_judge_gets_no_signature():
    score = Score(96)
    t = Track("x", 0, False)
    riff = [60, 64, 62, 67, 65, 69, 60, 72, 71, 59]  # 9 intervals: 4 shingles of 6, each with 4+ distinct ones
    for k, p in enumerate(riff):
        t.notes.append(Note(k * 96, 96, p, 80))
    score.tracks.append(t)
    song = smf.read(score.dumps_midi())
    assert 0 < len(shingles(song.parts[0].start, song.parts[0].pitch, KEY.intervals)) < MIN_SHINGLES
    assert _signatures(score).shape == (0, KEY.num_perm)
    longer = score.copy()
    for k, p in enumerate(riff * 3):
        longer.tracks[0].notes.append(Note((len(riff) + k) * 96, 96, p + k % 5, 80))
    assert _signatures(longer).shape == (1, KEY.num_perm)


def test_band_collisions_small_buckets_pair_fully_large_ones_as_stars_crowded_ones_skipped(monkeypatch):
    from pipeline import near_duplicates as N
    keys = np.array([7, 3, 7, 7, 3, 9], np.uint64)  # a bucket of 3 parts, one of 2, a part alone
    rows, owner = np.arange(6), np.arange(6)

    def pairs():
        i, j, crowded = N._collisions(keys, rows, owner)
        return sorted(zip(i.tolist(), j.tolist())), crowded

    assert pairs() == ([(0, 2), (0, 3), (1, 4), (2, 3)], 0)
    i, j, _ = N._collisions(keys, rows, np.array([0, 1, 0, 3, 1, 5]))  # parts of one file never pair
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 3), (2, 3)]
    monkeypatch.setattr(N, "ALL_PAIRS_UP_TO", 2)  # the bucket of 3 becomes a star round its first part
    assert pairs() == ([(0, 2), (0, 3), (1, 4)], 0)
    monkeypatch.setattr(N, "MAX_BUCKET", 2)
    assert pairs() == ([(1, 4)], 1)


def _folder(tmp_path, files: dict[str, bytes]):
    root = tmp_path / "songs"
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def test_only_files_that_are_kept_join_or_cause_a_drop(tune, third_tune, tmp_path, monkeypatch):
    strings = tune.copy()
    for t in strings.tracks:
        t.program = 48  # string ensemble
    piano = transposed(track_added(tune, third_tune), 4)
    exact = transposed(tune, 7)  # the same music as the string version: dropped at the content level
    for t in exact.tracks:
        t.program = 48
    root = _folder(tmp_path, {"a_strings.mid": strings.dumps_midi(), "b_piano.mid": piano.dumps_midi(),
                              "c_exact.mid": exact.dumps_midi()})
    _acquire(root, tmp_path, monkeypatch)
    # the string version is rejected (no piano part): the piano version is neither dropped for it nor joined to it
    selected, rejects, report = _run(_params({"instruments": ["piano"]}, dedupe={"near": {"drop_above": 0.5}}))
    assert [r["id"] for r in selected] == ["local/b_piano.mid"]
    assert selected[0]["near_duplicate_of"] is None and report["dedupe"]["near"]["pairs"] == 0
    reasons = {r["id"]: r["reason"] for r in rejects if r["track"] is None}
    assert reasons == {"local/a_strings.mid": "no_matching_tracks", "local/c_exact.mid": "duplicate_content"}
    # with every file kept, the content copy still never enters the near level: one pair, a with b
    selected, _, report = _run(_params(dedupe={"near": {"drop_above": 0}}))
    assert report["dedupe"]["near"]["pairs"] == 1
    assert {r["id"]: r["near_duplicate_of"] for r in selected} == {"local/a_strings.mid": "local/b_piano.mid",
                                                                  "local/b_piano.mid": "local/a_strings.mid"}


def test_the_outputs_do_not_depend_on_the_worker_count(tune, other_tune, third_tune, tmp_path, monkeypatch):
    files = {f"v{k}.mid": transposed(track_added(tune, third_tune) if k % 2 else tune, k).dumps_midi()
             for k in range(1, 7)}
    files |= {"other.mid": other_tune.dumps_midi(), "third.mid": third_tune.dumps_midi()}
    _acquire(_folder(tmp_path, files), tmp_path, monkeypatch)
    runs = [run_tables(_params(prepare={"workers": w}), f"out{w}") for w in (1, 2)]
    for one, two in zip(runs[0][:3], runs[1][:3]):
        assert one.equals(two)
    assert runs[0][2].num_rows > 0 and runs[0][3] == runs[1][3]


def test_a_large_bucket_centres_on_its_earliest_file_whatever_the_reading_order(tune):
    sig = _signatures(tune)
    n = 18  # more than ALL_PAIRS_UP_TO parts share every band value: a star
    index = NearIndex(KEY)
    try:
        for k in reversed(range(n)):  # the last file read first, as an archive's own order may have it
            index.add(k, sig)
        a, b, sim, _ = index.pairs(np.ones(n, bool))
    finally:
        index.close()
    assert set(a.tolist()) == {0} and sorted(b.tolist()) == list(range(1, n)) and (sim == 1.0).all()


def test_the_banding_taken_in_partitions_finds_the_pairs_it_finds_whole(monkeypatch):
    """A large corpus's bands and candidates are taken in pieces (PARTITION_PARTS): the same pairs, similarities
    and crowded count as in one piece, with small buckets, stars (one song in 24 versions) and unrelated parts."""
    rng = np.random.default_rng(7)
    songs = rng.integers(0, 1 << 32, (30, KEY.num_perm), dtype=np.uint32)
    index = NearIndex(KEY)
    try:
        for f in range(150):
            song = songs[0] if f % 6 == 0 else songs[f % 30]  # song 0: 25 versions, a star in every band
            version = song.copy()
            changed = rng.random(KEY.num_perm) < rng.uniform(0.05, 0.6)  # some versions below the threshold
            version[changed] = rng.integers(0, 1 << 32, int(changed.sum()), dtype=np.uint32)
            unrelated = rng.integers(0, 1 << 32, (int(rng.integers(0, 3)), KEY.num_perm), dtype=np.uint32)
            index.add(f, np.vstack([version, unrelated]))
        live = rng.random(150) < 0.9
        whole = index.pairs(live)
        monkeypatch.setattr(N, "PARTITION_PARTS", 17)  # about 15 pieces
        pieces = index.pairs(live)
    finally:
        index.close()
    assert len(whole[0]) > 100 and (whole[1] > whole[0]).all()
    for one, other in zip(whole[:3], pieces[:3]):
        assert np.array_equal(one, other)
    assert whole[3] == pieces[3]


# ---- the signatures in C (near_signatures.c) against the reference (numpy and datasketch) ----------------------

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "midi"
FIXTURE_TREE = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def near_lib():
    """The C signature pass; the test is skipped (with the reason) where this machine cannot build it."""
    lib = native.load(N.NEAR_SIGNATURES)
    if lib is None:
        pytest.skip("no C signature pass here (no C compiler, or its build failed): only the reference runs")
    return lib


def _assert_paths_agree(lib, parts: list, key: NearKey = KEY, in_domain: bool = True) -> np.ndarray:
    """The C pass (where the inputs are in its domain; else it declines) and `signatures` give the reference's
    signatures: the same dtype, shape and values. Returns them."""
    want = N.signatures_reference(parts, key)
    got = N._signatures_native(lib, parts, key)
    assert (got is not None) == in_domain
    for out in ([got] if in_domain else []) + [signatures(parts, key)]:
        assert out.dtype == want.dtype == np.uint32 and out.shape == want.shape
        assert out.flags.c_contiguous
        np.testing.assert_array_equal(out, want)
    return want


def _song_parts(path: Path) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Every part of the file (drums too: the signatures take whatever parts they are given), None where
    smf.read rejects it."""
    try:
        song = smf.read(path.read_bytes())
    except Exception:  # noqa: BLE001 -- unreadable files are not this test's
        return None
    return [(p.start, p.pitch) for p in song.parts]


def _shuffled(parts: list, rng: np.random.Generator) -> list:
    """Each part's notes in a random order: the same top lines, so the same signatures."""
    out = []
    for start, pitch in parts:
        order = rng.permutation(len(start))
        out.append((start[order], pitch[order]))
    return out


def _assert_files_agree(lib, paths: list[Path]) -> tuple[int, int]:
    """Both paths agree on every readable file of `paths`, as read and with its notes shuffled (the C pass's
    sorting path): (files compared, signatures compared)."""
    rng = np.random.default_rng(11)
    files = sigs = 0
    for path in paths:
        parts = _song_parts(path)
        if parts is None:
            continue
        try:
            want = _assert_paths_agree(lib, parts)
            np.testing.assert_array_equal(_assert_paths_agree(lib, _shuffled(parts, rng)), want)
        except AssertionError as e:
            raise AssertionError(f"the paths differ on {path}") from e
        files, sigs = files + 1, sigs + len(want)
    return files, sigs


def test_the_c_pass_gives_the_reference_signatures_on_every_fixture(near_lib):
    files, sigs = _assert_files_agree(near_lib, sorted(p for p in FIXTURE_TREE.rglob("*") if p.is_file()))
    assert files >= 15 and sigs >= 15


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"no shared MIDI collection at {SHARED} (beside the checkout)")
def test_the_c_pass_gives_the_reference_signatures_on_every_shared_file(near_lib):
    files, sigs = _assert_files_agree(near_lib, sorted(p for p in SHARED.rglob("*") if p.is_file()))
    assert files > 300 and sigs > 1_500


def _melody(n: int, rng: np.random.Generator, low: int = 40, high: int = 90) -> np.ndarray:
    """n pitches of a random walk (steps of up to a fifth) kept inside low..high."""
    return np.clip(low + (high - low) // 2 + np.cumsum(rng.integers(-7, 8, n)), low, high).astype(np.int16)


def _part(pitch, start=None, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    pitch = np.asarray(pitch)
    return (np.arange(len(pitch), dtype=dtype) * 24 if start is None else np.asarray(start, dtype)), pitch


RIFF = [60, 64, 62, 67, 65, 69, 60, 72, 71, 59, 66]  # 10 intervals: 5 runs of 6, each with 4+ distinct ones


def _edge_cases() -> dict[str, tuple[list, NearKey, bool]]:
    """name -> (parts, key, whether the C pass takes them)."""
    rng = np.random.default_rng(5)
    tune = _melody(400, rng)
    empty = (np.empty(0, np.int64), np.empty(0, np.int16))
    chords = np.repeat(np.arange(200) * 12, 4)  # four notes at each onset, the top one a melody
    chord_pitch = (np.repeat(_melody(200, rng), 4) - np.tile([12, 7, 3, 0], 200)).astype(np.int16)
    shuffle = rng.permutation(len(chords))
    wide = [(np.arange(300), rng.integers(0, 128, 300))]
    cases = {
        "no parts": ([], KEY, True),
        "empty parts": ([empty] * 3, KEY, True),
        "parts shorter than the n-gram": ([_part(RIFF[:k]) for k in range(KEY.intervals + 2)], KEY, True),
        "exactly MIN_SHINGLES shingles": ([_part(RIFF)], KEY, True),
        "one shingle short of MIN_SHINGLES": ([_part(RIFF[:-1])], KEY, True),
        "a long part among empty ones": ([empty, _part(tune), empty, _part(tune[:30])], KEY, True),
        "huge pitch jumps": ([_part(np.tile([0, 127, 1, 126, 60, 3, 125], 30)),
                              _part(rng.integers(0, 256, 500)), _part(np.tile([0, 255, 128, 7, 200], 40))],
                             KEY, True),
        "many parts": ([_part(_melody(int(n), rng)) for n in rng.integers(0, 80, 400)], KEY, True),
        "unsorted onsets": ([(rng.permutation(300) * 10, _melody(300, rng))], KEY, True),
        "only the first two onsets swapped": ([_part(RIFF * 3, np.r_[1, 0, np.arange(2, 33)])], KEY, True),
        "only the last two onsets swapped": ([_part(RIFF * 3, np.r_[np.arange(31), 32, 31])], KEY, True),
        "equal onsets (chords)": ([(chords, chord_pitch), (chords[shuffle], chord_pitch[shuffle])], KEY, True),
        "every note at one onset": ([(np.zeros(50, np.int64), _melody(50, rng))], KEY, True),
        "equal onsets, shuffled, ties in pitch": ([(np.repeat(np.arange(100), 3)[rng.permutation(300)],
                                                    rng.integers(50, 54, 300))], KEY, True),
        # the reference's lexsort path: onsets past its packed key's 40 bits, negative ones, 2^15 parts or more
        "onsets past 2^40": ([_part(tune, np.arange(400) * (1 << 35))], KEY, True),
        "negative onsets": ([_part(tune, np.arange(400) - 200)], KEY, True),
        "int64 extremes": ([_part(RIFF * 3, np.r_[np.iinfo(np.int64).min, np.arange(31),
                                                  np.iinfo(np.int64).max])], KEY, True),
        "2^15 parts and more": ([_part(RIFF[:k % 13]) for k in range(33_000)] + [_part(tune)], KEY, True),
        # dtypes: whatever np.concatenate makes of them, as the reference takes them
        "int32 onsets, int8 pitches": ([_part(tune.astype(np.int8), dtype=np.int32)], KEY, True),
        "uint16 onsets, uint8 pitches": ([_part(tune.astype(np.uint8), dtype=np.uint16)], KEY, True),
        "uint64 onsets within int64": ([_part(tune, dtype=np.uint64)], KEY, True),
        "float pitches (cast as the reference does)": ([_part(tune + 0.7)], KEY, True),
        # outside the C pass's domain: the reference runs
        "float onsets": ([_part(tune, np.arange(400) / 7, np.float64)], KEY, False),
        "int64 and uint64 onsets (promoted to float)": ([_part(tune), _part(tune, dtype=np.uint64)], KEY, False),
        "uint64 onsets past int64": ([_part(tune, np.arange(400, dtype=np.uint64) + np.uint64(2 ** 63),
                                           np.uint64)], KEY, False),
        "a negative pitch": ([_part(np.r_[tune, -1])], KEY, False),
        "a pitch over 255": ([_part(np.r_[tune, 256])], KEY, False),
        "pitches far over 255": ([_part(tune.astype(np.int64) * 40)], KEY, False),
        # other keys: the runs' length, the permutations' number (with a remainder past the loop's 4) and seed
        "1-interval runs": (wide, NearKey(1, 256, 0.3), True),
        "4-interval runs": (wide, NearKey(4, 64, 0.3), True),
        "9-interval runs": (wide, NearKey(9, 128, 0.3, seed=3), True),
        "one permutation": (wide, NearKey(6, 1, 0.3), True),
        "seven permutations": (wide, NearKey(6, 7, 0.3, seed=7), True),
        "130 permutations": (wide, NearKey(6, 130, 0.3, seed=2), True),
    }
    return cases


EDGE_CASES = _edge_cases()


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_cases_give_the_reference_signatures(name, near_lib):
    parts, key, in_domain = EDGE_CASES[name]
    _assert_paths_agree(near_lib, parts, key, in_domain)


def test_the_edge_cases_are_what_they_claim():
    parts = lambda name: EDGE_CASES[name][0]  # noqa: E731
    assert len(shingles(*parts("exactly MIN_SHINGLES shingles")[0], KEY.intervals)) == MIN_SHINGLES
    assert N.signatures_reference(parts("exactly MIN_SHINGLES shingles"), KEY).shape == (1, KEY.num_perm)
    assert N.signatures_reference(parts("one shingle short of MIN_SHINGLES"), KEY).shape == (0, KEY.num_perm)
    assert N.signatures_reference(parts("parts shorter than the n-gram"), KEY).shape == (0, KEY.num_perm)
    assert len(N.signatures_reference(parts("many parts"), KEY)) > 200
    assert len(N.signatures_reference(parts("2^15 parts and more"), KEY)) > 2_000
    assert len(N.signatures_reference(parts("huge pitch jumps"), KEY)) == 3
    # the chords' top line is the melody: the same signature however the notes are ordered
    a, b = N.signatures_reference(parts("equal onsets (chords)"), KEY)
    assert (a == b).all()


def test_random_parts_give_the_reference_signatures(near_lib):
    rng = np.random.default_rng(20261202)
    keys = [KEY, NearKey(5, 32, 0.3, seed=9), NearKey(7, 100, 0.3)]
    kept = 0
    for case in range(300):
        parts = []
        for _ in range(rng.integers(0, 9)):
            n = int(rng.integers(0, 200))
            start = np.sort(rng.integers(0, n // 2 + 1, n)) * int(rng.choice([1, 480, 1 << 38]))
            if rng.random() < 0.3:
                start = rng.permutation(start)
            pitch = _melody(n, rng, 0, 127) if rng.random() < 0.7 else rng.integers(0, 256, n)
            parts.append((start, pitch))
        try:
            kept += len(_assert_paths_agree(near_lib, parts, keys[case % 3]))
        except AssertionError as e:
            raise AssertionError(f"case {case}") from e
    assert kept > 300  # most random parts get a signature: the comparison is not of empties


def test_a_part_whose_onsets_and_pitches_differ_in_length_is_an_error():
    with pytest.raises(ValueError, match="part 1 has 3 onsets but 2 pitches"):
        signatures([_part(RIFF), (np.arange(3), np.array([60, 62]))], KEY)


GUARDED = """
import ctypes, sys
import numpy as np
from pipeline import native, near_duplicates as N, smf
from tests.test_smf_native import _guarded
lib = native.load(N.NEAR_SIGNATURES)
KEY = N.NearKey(int(sys.argv[1]), int(sys.argv[2]), 0.3, int(sys.argv[3]))
a, b, _, _ = N._permutation_arrays(KEY.num_perm, KEY.seed)
keep = []


def guarded(arr):
    # a copy of arr ending where an inaccessible page begins (reading or writing past it is a segfault)
    m, address = _guarded(np.ascontiguousarray(arr).tobytes())
    keep.append(m)
    return address


def call(parts, out_rows, total=None):
    start = np.concatenate([s for s, _ in parts]).astype(np.int64)
    pitch = np.concatenate([p for _, p in parts]).astype(np.int64)
    lengths = np.array([len(p) for _, p in parts], np.int64)
    out_at = guarded(np.zeros((out_rows, KEY.num_perm), np.uint32))
    kept = np.zeros(1, np.int64)
    rc = lib.near_signatures(guarded(start), guarded(pitch), len(pitch) if total is None else total,
                             guarded(lengths), len(parts), KEY.intervals, N.MIN_DISTINCT, N.MIN_SHINGLES,
                             guarded(a), guarded(b), KEY.num_perm, out_at, out_rows, kept.ctypes.data)
    out = np.frombuffer(ctypes.string_at(out_at, out_rows * KEY.num_perm * 4), np.uint32)
    return rc, int(kept[0]), out.reshape(out_rows, KEY.num_perm)


n = 0
for path in sys.argv[4:]:
    parts = [(p.start, p.pitch) for p in smf.read(open(path, "rb").read()).parts]
    want = N.signatures_reference(parts, KEY)
    rc, kept, out = call(parts, len(want))  # the output exactly as large as the signatures: no row to spare
    assert rc == N.NEAR_OK and kept == len(want) and (out == want).all(), path
    if len(want):
        rc, kept, out = call(parts, len(want) - 1)  # one row short: refused, the rows before it written
        assert rc == N.NEAR_BAD_SIZE and kept == len(want) - 1 and (out == want[:-1]).all(), path
    rc, _, _ = call(parts, len(parts), total=sum(len(p) for _, p in parts) + 1)  # lengths not the total
    assert rc == N.NEAR_BAD_SIZE, path
    n += 1
rc, _, _ = call([(np.arange(3), np.array([60, 300, 62]))], 1)
assert rc == N.NEAR_PITCH_RANGE
print("OK", n)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="guard pages through mprotect: Linux only here")
def test_the_c_pass_reads_and_writes_nothing_outside_its_arrays(near_lib):
    # in a child process: a read or write past an array's end is a segfault, which would take pytest down with it
    paths = [str(p) for p in sorted(FIXTURE_TREE.rglob("*")) if _song_parts(p)]
    key = [str(x) for x in (KEY.intervals, KEY.num_perm, KEY.seed)]
    out = subprocess.run([sys.executable, "-c", GUARDED, *key, *paths], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("OK"), (out.returncode, out.stderr[-2000:])
    assert int(out.stdout.split()[1]) >= 10


# ---- the fallback: PIPELINE_NEAR_NATIVE=0, or no compiler ----------------------------------------------------

SIGN_TWICE = """
import hashlib, sys, warnings
warnings.simplefilter("default")
from pipeline import smf
from pipeline.near_duplicates import NearKey, signatures, signatures_reference
song = smf.read(open(sys.argv[1], "rb").read())
parts = [(p.start, p.pitch) for p in song.parts]
key = NearKey(6, 256, 0.3)
a, b, want = signatures(parts, key), signatures(parts, key), signatures_reference(parts, key)
print(len(want), *(hashlib.sha1(x.tobytes()).hexdigest() == hashlib.sha1(want.tobytes()).hexdigest()
                   for x in (a, b)))
"""
SAMPLE = FIXTURE_TREE / "midi" / "folk" / "AprilWaltz.mid"


def _sign_in_child(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """SIGN_TWICE in a fresh process, its build cache in tmp_path/cache."""
    base = {k: v for k, v in os.environ.items() if k not in ("CC", "PIPELINE_SMF_NATIVE", "PIPELINE_NEAR_NATIVE")}
    return subprocess.run([sys.executable, "-c", SIGN_TWICE, str(SAMPLE)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**base, "XDG_CACHE_HOME": str(tmp_path / "cache"), **env})


def _built(tmp_path: Path, stem: str) -> list[Path]:
    return sorted((tmp_path / "cache" / "midi-pipeline").glob(f"{stem}_*.so"))


def test_the_c_pass_is_built_at_first_use_and_gives_the_reference(tmp_path, near_lib):
    out = _sign_in_child(tmp_path)
    assert out.returncode == 0 and "unavailable" not in out.stderr, out.stderr
    assert out.stdout.split() == ["2", "True", "True"]
    (lib,) = _built(tmp_path, "near_signatures")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        spec = N.NEAR_SIGNATURES
        source, cc = native.source_text(spec), native.compiler()
        assert native.library_path(source, cc, spec.stem, spec.flags) == lib
        assert native.library_path(source, cc, spec.stem, ("-O2", *spec.flags[1:])) != lib  # flags count


def test_pipeline_near_native_0_runs_the_reference_and_builds_nothing(tmp_path):
    out = _sign_in_child(tmp_path, PIPELINE_NEAR_NATIVE="0")
    assert out.returncode == 0 and "near-duplicate" not in out.stderr, out.stderr
    assert out.stdout.split() == ["2", "True", "True"]
    assert not _built(tmp_path, "near_signatures")


def test_without_a_compiler_the_reference_runs_with_one_warning(tmp_path):
    out = _sign_in_child(tmp_path, CC=str(tmp_path / "no-such-cc"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "True", "True"]
    assert out.stderr.count("pipeline.near_duplicates: the C near-duplicate signature pass is unavailable") == 1, \
        out.stderr
    assert not [f for f in (tmp_path / "cache").rglob("*") if f.is_file()]  # no temporary file left behind


@pytest.mark.parametrize("num_perm, seed", [(256, 1), (7, 7), (130, 2), (1, 0), (256, 12345)])
def test_the_permutations_are_datasketchs(num_perm, seed):
    """near_duplicates draws datasketch's affine32 permutations itself (no datasketch import before prepare's
    pool forks); they must stay datasketch's, or the C signatures would part from the reference's."""
    from datasketch import MinHash

    want = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    got = N._permutations(num_perm, seed)
    assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)


def test_the_bands_are_the_ones_datasketch_chooses():
    """near_duplicates.bands integrates the false positive and negative areas itself (no datasketch import in
    prepare's main process): the same (b, r) as datasketch's MinHashLSH over thresholds and permutation counts."""
    from datasketch import MinHashLSH

    for num_perm in (16, 64, 128, 256, 512):
        for threshold in np.round(np.arange(0.05, 0.96, 0.05), 2):
            lsh = MinHashLSH(threshold=float(threshold), num_perm=num_perm, weights=N.LSH_WEIGHTS)
            assert N.bands(float(threshold), num_perm) == (lsh.b, lsh.r), (threshold, num_perm)
