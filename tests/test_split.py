from collections import Counter

from pipeline import split as S


def test_split_depends_only_on_the_group_and_is_stable():
    groups = [f"g{i}" for i in range(2000)]
    a = S.assign(groups, [None] * len(groups), 0.1, 0.1)
    b = S.assign(list(reversed(groups)), [None] * len(groups), 0.1, 0.1)
    assert a == list(reversed(b))
    c = Counter(a)
    assert 150 < c["test"] < 250 and 150 < c["valid"] < 250


def test_rows_of_one_group_share_a_split():
    groups = ["x", "y", "x", "z", "y", "x"] * 10
    out = S.assign(groups, [None] * len(groups), 0.3, 0.3)
    assert all(len({s for g2, s in zip(groups, out) if g2 == g}) == 1 for g in set(groups))


def test_source_split_wins_and_validation_maps_to_valid():
    out = S.assign(["a", "b", "c"], ["validation", "test", None], 0.0001, 0.0001)
    assert out[:2] == ["valid", "test"]


def test_tiny_corpora_still_get_every_split():
    groups = [f"piece{i}" for i in range(6)]
    out = S.assign(groups, [None] * 6, 0.01, 0.01)
    assert set(out) == {"train", "valid", "test"}
    assert out == S.assign(groups, [None] * 6, 0.01, 0.01)
