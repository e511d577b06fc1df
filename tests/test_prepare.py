import shutil

import pyarrow.parquet as pq
import pytest

from pipeline import gm
from pipeline import params as P
from pipeline import prepare
from pipeline.acquire import store
from pipeline.sources.local import iter_local


def _acquire(root, tmp_path, monkeypatch):
    """Lay out data/raw/local/ in a temp working directory, as acquire@local would."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "data" / "raw" / "local"
    out.mkdir(parents=True)
    manifest, skipped = store("local", iter_local(root, 1 << 24), out, 1 << 24)
    pq.write_table(manifest, out / "manifest.parquet")
    pq.write_table(skipped, out / "skipped.parquet")


def _params(**filter_):
    return P.parse({"data": {"sources": ["local"], "local": {"path": "x"}}, "prepare": {"workers": 2},
                    **({"filter": filter_} if filter_ else {})})


def test_fixtures_reasons_duplicates_and_selection(midi_folder, tmp_path, monkeypatch):
    _acquire(midi_folder, tmp_path, monkeypatch)
    selected, rejects, report = prepare.run(_params())
    sel = {r["id"]: r for r in selected.to_pylist()}
    rej = {(r["id"], r["track"]): r for r in rejects.to_pylist()}
    assert rej[("local/broken/jazz-soft__test-not-a-midi-file.mid", None)]["reason"] == "not_midi"
    assert rej[("local/broken/jazz-soft__test-corrupt-file-missing-byte.mid", None)]["reason"] == "truncated"
    assert rej[("local/broken/jazz-soft__test-empty-file.mid", None)]["reason"] == "empty_file"
    assert rej[("local/broken/muspy__empty.mid", None)]["reason"] == "no_notes"
    dup = rej[("local/piano/fur-elise_copy.mid", None)]
    assert dup["reason"] == "duplicate_md5" and dup["duplicate_of"] == "local/piano/fur-elise.mid"
    assert "local/piano/fur-elise.mid" in sel and "local/folk/AprilWaltz.MIDI" in sel
    pop = sel["local/pop/pypianoroll_sample2.mid"]
    assert not any(pop["is_drum"])  # default `pitched` drops the drums...
    drum_rejects = [r for (i, t), r in rej.items() if i == pop["id"] and t is not None]
    assert drum_rejects and all(r["reason"] == "instrument_filtered" for r in drum_rejects)
    assert report["files"] == {"acquired": 10, "selected": len(sel), "rejected": 5}
    assert selected.column("id").to_pylist() == sorted(sel)


def test_drums_only_keeps_only_drum_tracks(midi_folder, tmp_path, monkeypatch):
    _acquire(midi_folder, tmp_path, monkeypatch)
    selected, rejects, _ = prepare.run(_params(instruments=["drums"]))
    rows = selected.to_pylist()
    assert [r["id"] for r in rows] == ["local/pop/pypianoroll_sample2.mid"]
    assert all(rows[0]["is_drum"]) and rows[0]["families"] == ["drums"]
    assert {r["reason"] for r in rejects.to_pylist() if r["id"] == "local/piano/fur-elise.mid"} == {
        "instrument_filtered", "no_matching_tracks"}


def test_inspect_classifies_without_raising(fixtures):
    keys = gm.programs_for(["all"])
    for path in sorted((fixtures / "broken").iterdir()):
        res = prepare.inspect((path.name, path.read_bytes()), keys, 1)
        assert res["reason"] in {"not_midi", "truncated", "empty_file", "no_notes"}


def test_every_shared_broken_file_is_rejected_or_parsed_never_crashes(shared_midi, tmp_path, monkeypatch):
    root = tmp_path / "broken"
    shutil.copytree(shared_midi / "broken", root)
    _acquire(root, tmp_path, monkeypatch)
    selected, rejects, report = prepare.run(_params(instruments=["all"]))
    file_rejects = {r["id"]: r["reason"] for r in rejects.to_pylist() if r["track"] is None}
    n = len(list((shared_midi / "broken").iterdir()))
    assert selected.num_rows + len(file_rejects) == n
    assert "parse_error" not in file_rejects.values()  # every failure gets a specific reason
    assert file_rejects["local/symusic__Issue104_Bizarre_Love_Triangle2.mid"] == "invalid_event"
    assert file_rejects["local/muspy__negative-ticks-per-beat.mid"] == "smpte_division"


def test_shared_duplicates_across_the_corpus(shared_midi, tmp_path, monkeypatch):
    root = tmp_path / "piano"
    shutil.copytree(shared_midi / "misc" / "piano", root)
    _acquire(root, tmp_path, monkeypatch)
    _, rejects, _ = prepare.run(_params())
    dups = {r["id"]: r["duplicate_of"] for r in rejects.to_pylist() if r["reason"] == "duplicate_md5"}
    assert dups == {"local/fur-elise_copy.mid": "local/fur-elise.mid"}
