import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.external_sort import ExternalSort

SCHEMA = pa.schema([("id", pa.string()), ("track", pa.int32()), ("reason", pa.string()), ("seq", pa.int64())])
KEYS = ["id", "track", "reason"]


def _rows(n: int, seed: int, ids: int) -> list[dict]:
    """Rows with many ties and nulls, in an order with sorted stretches (as prepare appends them) and random
    ones, non-ASCII ids included (Arrow sorts UTF-8 bytes, Python code points)."""
    rng = np.random.default_rng(seed)
    names = sorted({f"{rng.choice(['a', 'b', 'é', 'z', '日'])}{rng.integers(0, ids)}" for _ in range(ids)})
    rows = []
    for k in range(n):
        i = k * len(names) // n if rng.random() < 0.5 else int(rng.integers(0, len(names)))
        rows.append({"id": names[i], "track": None if rng.random() < 0.3 else int(rng.integers(0, 4)),
                     "reason": str(rng.choice(["x", "y", "duplicate_md5"])), "seq": k})
    return rows


def _expected(rows: list[dict]) -> list[dict]:
    t = pa.Table.from_pylist(rows, SCHEMA)
    return t.take(pc.sort_indices(t, [(k, "ascending", "at_start") for k in KEYS])).to_pylist()


@pytest.mark.parametrize("n,run_bytes,read_rows,fan_in,seed", [
    (0, 1 << 10, 4, 64, 0), (1, 1 << 10, 4, 64, 1), (500, 1 << 20, 64, 64, 2),  # nothing spilled
    (3_000, 1 << 10, 1, 64, 3), (3_000, 4_000, 7, 64, 4), (5_000, 20_000, 256, 64, 5), (2_000, 3_000, 3, 64, 6),
    (3_000, 1 << 10, 5, 2, 7), (4_000, 2_000, 3, 3, 8)])  # merged in several passes
def test_the_same_order_as_one_stable_sort_of_all_rows(n, run_bytes, read_rows, fan_in, seed):
    rows = _rows(n, seed, ids=max(n // 20, 1))
    with ExternalSort(SCHEMA, KEYS, run_bytes=run_bytes, batch_rows=37, read_rows=read_rows, fan_in=fan_in) as s:
        for r in rows[: n // 3]:
            s.append(r)
        if n:
            s.extend(pa.Table.from_pylist(rows[n // 3: n // 2], SCHEMA))  # a table in the middle keeps its place
        for r in rows[n // 2:]:
            s.append(r)
        out = [r for t in s.tables() for r in t.to_pylist()]
    assert out == _expected(rows)  # ties (same keys) keep their append order: the seq column
    if n >= 2_000:
        assert s.runs_spilled > 3 * fan_in or fan_in == 64 and s.runs_spilled > 3  # merged, not sorted in memory


def test_tables_are_bounded_and_the_spill_closed():
    rows = _rows(4_000, 7, ids=300)
    with ExternalSort(SCHEMA, KEYS, run_bytes=16_000, batch_rows=100, read_rows=50) as s:
        for r in rows:
            s.append(r)
        sizes = [t.nbytes for t in s.tables()]
        spill = s._file
        assert not spill.closed and s.runs_spilled > 5
    assert spill.closed  # the anonymous spill file, closed (its name was never left on disk)
    assert len(sizes) > 5 and max(sizes) < 3 * 16_000


def test_unknown_key_is_refused():
    with pytest.raises(ValueError, match="nope"):
        ExternalSort(SCHEMA, ["id", "nope"])


def test_nan_and_null_float_keys_in_arrow_order():
    """Arrow puts nulls first, then NaN, then numbers; Python's < is false for every comparison with NaN, so the
    merge maps each to its place."""
    schema = pa.schema([("f", pa.float64()), ("seq", pa.int64())])
    rng = np.random.default_rng(9)
    values = [None, float("nan"), float("-inf"), -0.0, 0.0, 1.5, float("inf")]
    rows = [{"f": values[int(rng.integers(0, len(values)))], "seq": k} for k in range(600)]
    with ExternalSort(schema, ["f"], run_bytes=200, batch_rows=5, read_rows=2, fan_in=4) as s:
        for r in rows:
            s.append(r)
        out = pa.concat_tables(list(s.tables()))
    t = pa.Table.from_pylist(rows, schema)
    want = t.take(pc.sort_indices(t, [("f", "ascending", "at_start")]))
    assert s.runs_spilled > 4 and out.column("seq").to_pylist() == want.column("seq").to_pylist()


def test_extend_takes_columns_in_any_order_and_skips_empty_tables():
    rows = _rows(300, 10, ids=40)
    t = pa.Table.from_pylist(rows, SCHEMA)
    with ExternalSort(SCHEMA, KEYS, run_bytes=2_000, batch_rows=7, read_rows=3) as s:
        s.extend(SCHEMA.empty_table())
        assert list(s.tables()) == []  # nothing appended: no table, not an empty one
    with ExternalSort(SCHEMA, KEYS, run_bytes=2_000, batch_rows=7, read_rows=3) as s:
        s.extend(t.select(["seq", "reason", "id", "track"]))
        assert [r for x in s.tables() for r in x.to_pylist()] == _expected(rows)


def test_dictionary_columns_and_a_fan_in_under_two_are_refused():
    with pytest.raises(ValueError, match="dictionary-encoded columns \\['d'\\]"):
        ExternalSort(pa.schema([("id", pa.string()), ("d", pa.dictionary(pa.int32(), pa.string()))]), ["id"])
    with pytest.raises(ValueError, match="fan_in"):
        ExternalSort(SCHEMA, ["id"], fan_in=1)
