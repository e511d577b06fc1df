import numpy as np
import pytest
from symusic import Score, Tempo

from pipeline import smf
from pipeline.dedupe import ContentKey, UnionFind, content_hash_of, first_of_each, smallest_member
from pipeline.instruments import infer
from pipeline.split import assign
from pipeline.titles import normalize, song_key, title_from_filename


@pytest.fixture
def score(fixtures):
    return Score.from_midi((fixtures / "pop" / "pypianoroll_sample2.mid").read_bytes())


DEFAULT_KEY = ContentKey()


def _hash(score: Score, key: ContentKey = DEFAULT_KEY) -> str | None:
    """The content hash of a score as the MIDI file it writes, drums by channel 10."""
    song = smf.read(score.dumps_midi())
    return content_hash_of([(p.on_drum_channel, p.start, p.pitch) for p in song.parts], song.ticks_per_quarter, key)


def test_content_hash_ignores_tempo_ppq_track_order_programs_and_transposition(score):
    h = _hash(score)
    assert h is not None
    retimed = score.copy()
    retimed.tempos.append(Tempo(0, 61.0))
    resampled = score.resample(960)
    reordered = score.copy()
    reordered.tracks = list(reversed(list(score.tracks)))
    reprogrammed = score.copy()
    for t in reprogrammed.tracks:
        if not t.is_drum:
            t.program = (t.program + 5) % 128
    transposed = score.copy()
    for t in transposed.tracks:
        if not t.is_drum:
            t.shift_pitch(3, inplace=True)
    for variant in (retimed, resampled, reordered, reprogrammed, transposed):
        assert _hash(variant) == h


def test_content_hash_sees_different_music(score):
    h = _hash(score)
    changed = score.copy()
    track = next(t for t in changed.tracks if not t.is_drum and t.note_num() > 3)
    track.notes[2].pitch += 1
    assert _hash(changed) != h
    transposed = score.copy()
    for t in transposed.tracks:
        if not t.is_drum:
            t.shift_pitch(2, inplace=True)
    assert (_hash(transposed, ContentKey(transpose_invariant=False))
            != _hash(score, ContentKey(transpose_invariant=False)))
    drums_moved = score.copy()
    for t in drums_moved.tracks:
        if t.is_drum:
            t.shift_pitch(3, inplace=True)
    assert _hash(drums_moved) != h  # drum keys are instruments, never transposed


def test_content_hash_of_a_very_long_file_keeps_its_invariances(score):
    """Past 2**22 steps the pairs no longer fit in int32 and the hash takes the int64 path."""
    far = score.resample(8)  # a coarse PPQ keeps 5 M steps within a MIDI delta time (at most 2**28 - 1 ticks)
    track = next(t for t in far.tracks if not t.is_drum and t.note_num())
    track.notes[-1].time = 5_000_000 * far.ticks_per_quarter // 4  # 5 M steps in
    h = _hash(far)
    assert _hash(far.resample(far.ticks_per_quarter * 2)) == h
    nearer = far.copy()
    next(t for t in nearer.tracks if not t.is_drum and t.note_num()).notes[-1].time -= far.ticks_per_quarter
    assert _hash(nearer) != h != _hash(score)


def test_titles_and_song_keys():
    assert title_from_filename("CD2_-_13_-_Good_Night_v1.mid") == "Good Night"
    assert title_from_filename("Help!.1.mid") == "Help!"
    assert normalize("Für Elise (live)") == "fur elise"
    assert song_key("The Beatles", "Help!") == song_key("beatles", "HELP") == "beatles|help"
    assert song_key("x", "") is None


def test_groups_are_named_by_their_smallest_member_whatever_the_order():
    ids = np.array(["z", "y", "b", "q"])
    rank = np.argsort(np.argsort(ids))  # each id's place in id order
    names = []
    for pairs in ([(0, 1), (1, 2)], [(2, 1), (0, 2)]):
        g = UnionFind(len(ids))
        for x, y in pairs:
            g.union(x, y)
        names.append(ids[smallest_member(g.labels(), rank)].tolist())
    assert names[0] == names[1] == ["b", "b", "b", "q"]
    g = UnionFind(4)
    g.join_by(np.array([1, 7, 1, 2]), valid=np.array([True, False, True, True]))
    labels = g.labels()
    assert labels[0] == labels[2] and len({labels[0], labels[1], labels[3]}) == 3


def test_union_find_agrees_with_a_breadth_first_search_on_random_graphs():
    rng = np.random.default_rng(0)
    for n, m in ((1, 0), (50, 10), (400, 300), (2000, 1990)):
        a, b = rng.integers(0, n, m), rng.integers(0, n, m)
        g = UnionFind(n)
        g.union_pairs(a, b)
        labels = g.labels()
        adjacent = [[] for _ in range(n)]
        for x, y in zip(a.tolist(), b.tolist()):
            adjacent[x].append(y)
            adjacent[y].append(x)
        seen = np.full(n, -1)
        for s in range(n):
            if seen[s] < 0:
                seen[s], todo = s, [s]
                while todo:
                    for y in adjacent[todo.pop()]:
                        if seen[y] < 0:
                            seen[y] = s
                            todo.append(y)
        # the same partition: equal labels exactly where the search found one component
        assert (np.equal.outer(labels, labels) == np.equal.outer(seen, seen)).all()


def test_a_fixed_split_carries_its_whole_group():
    groups = ["g1", "g1", "g2", "g2"]
    out = assign(groups, ["test", None, None, "validation"], 0.0001, 0.0001)
    assert out == ["test", "test", "valid", "valid"]


@pytest.mark.parametrize("program, is_drum, name, family, by", [
    (0, True, "", "drums", "channel"),
    (117, False, "Drums", "drums", "name"),
    (0, False, "bassdrum", "drums", "name"),
    (0, False, "Bass Guitar", "bass", "name"),
    (0, False, "Lead Gtr", "guitar", "name"),
    (0, False, "ENG.HORN", "reed", "name"),
    (0, False, "Piano", "piano", "program"),
    (33, False, "Piano", "bass", "program"),  # an explicit program is trusted over a non-drum name
    (48, False, "", "ensemble", "program"),
])
def test_instrument_inference(program, is_drum, name, family, by):
    inst = infer(program, is_drum, name)
    assert (inst.family, inst.inferred) == (family, by)


def test_in_a_choral_file_bass_is_a_voice():
    from pipeline.instruments import is_choral

    names = ["Soprano", "Alto", "Tenor", "Bass"]
    assert is_choral(names) and not is_choral(["Lead Gtr", "Bass", "Drums"])
    assert {infer(0, False, n, choral=True).family for n in names} == {"ensemble"}
    assert infer(0, False, "Bass", choral=False).family == "bass"
    assert infer(33, False, "Bass", choral=True).family == "bass"  # an explicit program still wins


def test_first_of_each_points_every_item_at_the_first_with_its_key():
    keys = np.array([b"k1", b"k2\0", b"k1", b"k2\0", b"k3"], "S20")  # digests, a trailing zero included
    valid = np.array([True, True, True, True, False])
    assert first_of_each(keys, valid).tolist() == [0, 1, 0, 1, -1]
    assert first_of_each(np.array([5, 3, 5, 3, 5])).tolist() == [0, 1, 0, 1, 0]
    assert first_of_each(np.array([], np.int64)).tolist() == []
