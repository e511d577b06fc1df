import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import params as P
from pipeline.acquire import store
from pipeline.artifacts import iter_bytes
from pipeline.manifest import Item, Skip
from pipeline.sources.local import LocalSourceError, iter_local
from pipeline.sources.music21_corpus import corpus_collections, list_works, render
from pipeline.sources.registry import MODULES, REGISTRY
from tests.conftest import ROOT


def test_local_store_writes_shards_and_a_manifest_with_verified_bytes(midi_folder, tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    manifest, skipped = store("local", iter_local(midi_folder, 1 << 20), out, 1 << 20)
    rows = manifest.to_pylist()
    assert {r["member"] for r in rows} >= {"folk/AprilWaltz.MIDI", "piano/fur-elise.mid", "broken/muspy__empty.mid"}
    assert all(r["id"] == f"local/{r['member']}" and r["source"] == "local" for r in rows)
    assert [p.name for p in out.iterdir()] == ["midi-00000.parquet"]  # a few large artifacts, not a file per MIDI
    got = dict(iter_bytes(out, rows))
    for r in rows:
        original = (midi_folder / r["member"]).read_bytes()
        assert got[r["id"]] == original
        assert r["md5"] == hashlib.md5(original).hexdigest() and r["bytes"] == len(original)
    assert skipped.num_rows == 0


def test_store_records_skips_and_enforces_the_size_cap(tmp_path):
    entries = [Item("a.mid", b"x" * 10), Item("b.mid", b"x" * 100), Skip("c.mid", "link", "no links")]
    manifest, skipped = store("local", entries, tmp_path, max_bytes=50)
    assert manifest.column("member").to_pylist() == ["a.mid"]
    assert {r["member"]: r["reason"] for r in skipped.to_pylist()} == {"b.mid": "too_large", "c.mid": "link"}


def test_shards_roll_over_at_the_size_limit(tmp_path):
    from pipeline.shards import ShardWriter

    with ShardWriter(tmp_path, max_bytes=100) as w:
        names = [w.add(f"id{i}", bytes([i]) * 60) for i in range(5)]
    assert names == ["midi-00000.parquet", "midi-00000.parquet", "midi-00001.parquet", "midi-00001.parquet",
                     "midi-00002.parquet"]
    assert sum(pq.read_metadata(p).num_rows for p in tmp_path.glob("*.parquet")) == 5


def test_local_errors_are_clear(tmp_path):
    with pytest.raises(LocalSourceError, match="does not exist"):
        list(iter_local(tmp_path / "nope", 100))
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(LocalSourceError, match="holds no .mid"):
        list(iter_local(tmp_path, 100))


def test_music21_corpus_renders_deterministic_midi_with_metadata():
    assert {"bach", "nottingham-dataset"} <= corpus_collections()
    works = list_works(["bach"], max_files=3)
    assert works == sorted(works) and len(works) == 3 and all(w.startswith("bach/") for w in works)
    first, again = render(works[0]), render(works[0])
    assert len(first) == 1 and isinstance(first[0], Item)
    assert first[0].data[:4] == b"MThd" and first[0].data == again[0].data
    assert first[0].meta["composer"] and first[0].meta["title"]


def test_music21_abc_opus_becomes_one_file_per_tune():
    (rel,) = list_works(["nottingham-dataset"], max_files=1)
    items = render(rel)
    assert len(items) > 1
    assert [i.member for i in items] == [f"{rel}#{n}" for n in range(len(items))]


def test_batches_name_where_files_lie_and_read_back_exactly_the_wanted_ones(tmp_path):
    """Shard batches are row groups (only those holding a wanted file), zip batches are member slices, tar
    batches carry bytes; each read in any process gives back the wanted files, in order."""
    import io
    import tarfile
    import zipfile

    from pipeline.artifacts import BATCH_FILES, iter_batches, read_batch
    from pipeline.shards import ROWS_PER_GROUP, ShardWriter

    n = 2 * ROWS_PER_GROUP + 10
    blobs = {f"f{i:04d}.mid": hashlib.md5(str(i).encode()).digest() * 3 for i in range(n)}
    with ShardWriter(tmp_path) as w:
        for m, b in blobs.items():
            w.add(f"local/{m}", b)
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf, tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tf:
        for m, b in blobs.items():
            zf.writestr(m, b)
            info = tarfile.TarInfo(m)
            info.size = len(b)
            tf.addfile(info, io.BytesIO(b))
    # a third of the first row group, all of the second, none of the third
    wanted = [m for i, m in enumerate(blobs) if (i < ROWS_PER_GROUP and i % 3 == 0) or
              ROWS_PER_GROUP <= i < 2 * ROWS_PER_GROUP]
    for artifact in ("midi-00000.parquet", "a.zip", "a.tar.gz"):
        rows = [{"id": f"local/{m}", "artifact": artifact, "member": m} for m in wanted]
        batches = list(iter_batches(tmp_path, rows))
        got = [pair for b in batches for pair in read_batch(b)]
        assert got == [(f"local/{m}", blobs[m]) for m in wanted], artifact
        assert all(len(b) <= BATCH_FILES for b in batches)
        assert all(rows[n]["id"] == i for b in batches for i, n in zip(b.ids, b.rows, strict=True))
        if artifact.endswith("parquet"):
            assert [b.row_group for b in batches] == [0, 1]  # the third row group holds nothing wanted
            assert not any(b.blobs for b in batches)
        elif artifact.endswith("zip"):
            assert not any(b.blobs for b in batches) and all(b.members for b in batches)
        else:
            assert all(len(b.blobs) == len(b) for b in batches)
    # several artifacts and rows without one, in no order: each batch's row numbers still name its files
    mixed = [{"id": f"local/{m}", "artifact": a, "member": m} for k, m in enumerate(wanted)
             for a in [("a.zip", "midi-00000.parquet", None, "")[k % 4]]]
    batches = list(iter_batches(tmp_path, mixed[::-1]))
    numbered = [(mixed[::-1][n]["id"], i) for b in batches for i, n in zip(b.ids, b.rows, strict=True)]
    assert all(a == b for a, b in numbered)
    assert sorted(i for _, i in numbered) == sorted(r["id"] for r in mixed if r["artifact"])
    # chosen rows only (prepare's files to parse), by their row numbers in the whole table; artifacts in name
    # order, each artifact's members in name order
    chosen = np.array([n for n, r in enumerate(mixed[::-1]) if r["artifact"] and n % 5 != 1])
    batches = list(iter_batches(tmp_path, pa.Table.from_pylist(mixed[::-1]), chosen))
    assert sorted(n for b in batches for n in b.rows) == chosen.tolist()
    assert all(mixed[::-1][n]["id"] == i for b in batches for i, n in zip(b.ids, b.rows, strict=True))
    assert [Path(b.path).name for b in batches] == sorted(Path(b.path).name for b in batches)
    for b in batches:
        assert list(b.ids) == sorted(b.ids)
    for bad in (chosen[::-1], np.r_[chosen, chosen[-1]], np.ones(len(mixed), bool), np.array([len(mixed)])):
        with pytest.raises(ValueError, match="ascending row numbers"):
            list(iter_batches(tmp_path, pa.Table.from_pylist(mixed[::-1]), bad))


def test_the_registry_lists_every_source_and_params_yaml_has_a_section_for_each():
    defines_a_source = {p.stem for p in (ROOT / "pipeline" / "sources").glob("*.py") if "\nSOURCE = " in p.read_text()}
    assert defines_a_source == {m.__name__.rsplit(".", 1)[1] for m in MODULES}
    assert list(REGISTRY) == ["music21", "local", "maestro", "lakh", "bitmidi"]
    assert {name for name, s in REGISTRY.items() if s.downloads} == {"maestro", "lakh", "bitmidi"}
    assert set(P.defaults()["data"]) == {"sources", "max_file_mb", "http", *REGISTRY}


EXTRA_SOURCE = '''"""A source made up by a test: `n` small files, made in memory \
(acquire stores bytes, it does not parse them)."""
from __future__ import annotations

from pydantic import Field

from pipeline.manifest import Item
from pipeline.schema import Strict
from pipeline.sources.base import Source


class TinyParams(Strict):
    n: int = Field(ge=1)


def _entries(p, ctx):
    for i in range(p.n):
        yield Item(f"tune{i}.mid", f"MThd tune {i}".encode(), {"title": f"tune {i}"})


SOURCE = Source("tiny", TinyParams, _entries, downloads=False)
'''


def test_a_new_source_is_one_module_and_its_registry_entry(tmp_path):
    """In a copy of the package: params validation and acquire take the new source with no other edit than its
    module and its entry in registry.py (the import and the MODULES line)."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "pipeline", repo / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "pipeline" / "sources" / "tiny.py").write_text(EXTRA_SOURCE)
    registry = repo / "pipeline" / "sources" / "registry.py"
    line, imports = "    bitmidi,\n", "from pipeline.sources import bitmidi, lakh, local, maestro, music21_corpus\n"
    text = registry.read_text()
    assert text.count(line) == 1 and text.count(imports) == 1
    registry.write_text(text.replace(line, line + "    tiny,\n")
                        .replace(imports, imports + "from pipeline.sources import tiny\n"))

    def acquire(data: dict) -> subprocess.CompletedProcess:
        params = P.defaults()
        params["data"].update(data)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        return subprocess.run([sys.executable, "-m", "pipeline.acquire", "tiny"], cwd=repo, capture_output=True,
                              text=True)

    for data, error in [({"sources": ["tiny"]}, "  data.tiny: missing key"),
                        ({"sources": ["tiny"], "tiny": {"n": 0}}, "  data.tiny.n: Input should be greater than"),
                        ({"sources": ["tiny"], "tiny": {"n": 2, "m": 1}}, "  data.tiny.m: unknown key")]:
        proc = acquire(data)
        assert proc.returncode != 0 and error in proc.stderr, proc.stderr
    assert not (repo / "data").exists()  # refused before any work

    proc = acquire({"sources": ["tiny"], "tiny": {"n": 3}})
    assert proc.returncode == 0, proc.stderr
    rows = pq.read_table(repo / "data" / "raw" / "tiny" / "manifest.parquet").to_pylist()
    assert [(r["id"], r["title"]) for r in rows] == [(f"tiny/tune{i}.mid", f"tune {i}") for i in range(3)]
