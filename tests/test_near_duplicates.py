"""The near-duplicate level: MinHash LSH over melodic shingles joins versions of one song, whatever their key,
tempo, PPQ or instrumentation, and keeps different songs apart; prepare records and (optionally) drops them."""
import numpy as np
import pytest
from symusic import Note, Score, Tempo, Track

from pipeline import gm, prepare, smf
from pipeline import params as P
from pipeline.instruments import infer
from pipeline.near_duplicates import MIN_SHINGLES, NearIndex, NearKey, shingles, signatures, top_line
from tests.test_prepare import _acquire, _params, _run

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
    runs = [prepare.run(_params(prepare={"workers": w})) for w in (1, 2)]
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
