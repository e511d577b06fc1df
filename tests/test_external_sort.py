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


@pytest.mark.parametrize("n,run_bytes,read_rows,seed", [
    (0, 1 << 10, 4, 0), (1, 1 << 10, 4, 1), (500, 1 << 20, 64, 2),  # nothing spilled
    (3_000, 1 << 10, 1, 3), (3_000, 4_000, 7, 4), (5_000, 20_000, 256, 5), (2_000, 3_000, 3, 6)])
def test_the_same_order_as_one_stable_sort_of_all_rows(n, run_bytes, read_rows, seed):
    rows = _rows(n, seed, ids=max(n // 20, 1))
    with ExternalSort(SCHEMA, KEYS, run_bytes=run_bytes, batch_rows=37, read_rows=read_rows) as s:
        for r in rows[: n // 3]:
            s.append(r)
        if n:
            s.extend(pa.Table.from_pylist(rows[n // 3: n // 2], SCHEMA))  # a table in the middle keeps its place
        for r in rows[n // 2:]:
            s.append(r)
        out = [r for t in s.tables() for r in t.to_pylist()]
        spilled = s._runs
    assert out == _expected(rows)  # ties (same keys) keep their append order: the seq column
    if n >= 2_000:
        assert len(spilled) > 3  # the merge was exercised, not one in-memory sort


def test_tables_are_bounded_and_the_spill_closed():
    rows = _rows(4_000, 7, ids=300)
    with ExternalSort(SCHEMA, KEYS, run_bytes=16_000, batch_rows=100, read_rows=50) as s:
        for r in rows:
            s.append(r)
        sizes = [t.nbytes for t in s.tables()]
        spill = s._file
        assert not spill.closed and len(s._runs) > 5
    assert spill.closed  # the anonymous spill file, closed (its name was never left on disk)
    assert len(sizes) > 5 and max(sizes) < 3 * 16_000


def test_unknown_key_is_refused():
    with pytest.raises(ValueError, match="nope"):
        ExternalSort(SCHEMA, ["id", "nope"])
