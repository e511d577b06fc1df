import os
import pickle
import shutil
import signal
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import params as P
from pipeline import prepare
from pipeline.acquire import store
from pipeline.sources.local import iter_local

BEATLES = "lakh/beatles"
AHDN = "03_-_A_Hard_Day's_Night/01_-_A_Hard_Day's_Night_v0.mid"
GOOD_NIGHT = "10CD2_-_The_Beatles/CD2_-_13_-_Good_Night_v1.mid"


def _acquire(root, tmp_path, monkeypatch):
    """Lay out data/raw/local/ in a temp working directory, as acquire@local would."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "data" / "raw" / "local"
    out.mkdir(parents=True)
    manifest, skipped = store("local", iter_local(root, 1 << 24), out, 1 << 24)
    pq.write_table(manifest, out / "manifest.parquet")
    pq.write_table(skipped, out / "skipped.parquet")


def _params(filter_=None, **top):
    return P.parse({"data": {"sources": ["local"], "local": {"path": "x"}}, "prepare": {"workers": 2},
                    **({"filter": filter_} if filter_ else {}), **top})


def run_tables(p, out="data/prepared"):
    """prepare.run into `out` (under the working directory): (selected, rejects, near) as read back, report."""
    report = prepare.run(p, Path(out))
    return (*(pq.read_table(Path(out) / f"{name}.parquet") for name in ("selected", "rejects", "near")), report)


def _run(p):
    selected, rejects, _, report = run_tables(p)
    return selected.to_pylist(), rejects.to_pylist(), report


def _cfg(**filter_):
    return prepare.Config.from_params(_params(filter_ or None))


def test_fixtures_reasons_duplicates_and_selection(midi_folder, tmp_path, monkeypatch):
    _acquire(midi_folder, tmp_path, monkeypatch)
    selected, rejects, report = _run(_params())
    sel = {r["id"]: r for r in selected}
    rej = {(r["id"], r["track"]): r for r in rejects}
    assert rej[("local/broken/jazz-soft__test-not-a-midi-file.mid", None)]["reason"] == "not_midi"
    assert rej[("local/broken/jazz-soft__test-corrupt-file-missing-byte.mid", None)]["reason"] == "truncated"
    assert rej[("local/broken/jazz-soft__test-empty-file.mid", None)]["reason"] == "empty_file"
    assert rej[("local/broken/muspy__empty.mid", None)]["reason"] == "no_notes"
    dup = rej[("local/piano/fur-elise_copy.mid", None)]
    assert dup["reason"] == "duplicate_md5" and dup["duplicate_of"] == "local/piano/fur-elise.mid"
    assert "local/piano/fur-elise.mid" in sel and "local/folk/AprilWaltz.MIDI" in sel
    pop = sel["local/pop/pypianoroll_sample2.mid"]
    assert not any(pop["is_drum"]) and "drums" not in pop["families"]  # default `pitched` drops the drums...
    drum_rejects = [r for (i, t), r in rej.items() if i == pop["id"] and t is not None]
    assert drum_rejects and all(r["reason"] == "instrument_filtered" for r in drum_rejects)
    assert report["files"] == {"acquired": 10, "selected": len(sel), "rejected": 5}
    assert [r["id"] for r in selected] == sorted(sel)
    # the exact copy is dropped but stays in its original's group
    assert sel["local/piano/fur-elise.mid"]["group"] == "local/piano/fur-elise.mid"


def test_tracks_mode_makes_one_sequence_per_matching_track(midi_folder, tmp_path, monkeypatch):
    _acquire(midi_folder, tmp_path, monkeypatch)
    selected, _, _ = _run(_params({"instruments": ["all"], "mode": "tracks"}))
    pop = [r for r in selected if r["file"] == "local/pop/pypianoroll_sample2.mid"]
    assert len(pop) > 2 and all(r["id"] == f"{r['file']}#{r['tracks'][0]}" and len(r["tracks"]) == 1 for r in pop)
    assert len({r["group"] for r in pop}) == 1  # tracks of one file never straddle splits


def test_quality_filters(midi_folder, tmp_path, monkeypatch):
    _acquire(midi_folder, tmp_path, monkeypatch)
    _, rejects, _ = _run(_params({"max_polyphony": 1}))
    assert "too_polyphonic" in {r["reason"] for r in rejects}
    _, rejects, _ = _run(_params({"min_beats": 10_000}))
    assert {r["reason"] for r in rejects if r["track"] is None} >= {"too_short"}
    selected, rejects, _ = _run(_params({"min_unique_pitches": 50}))
    assert not selected
    assert "repetitive" in {r["reason"] for r in rejects}


def test_a_worker_killed_mid_file_loses_that_file_only(midi_folder, tmp_path, monkeypatch):
    """What the OOM killer does to a worker: the file it was on is recorded as worker_died, the stage goes on."""
    _acquire(midi_folder, tmp_path, monkeypatch)
    victim = "local/folk/AprilWaltz.MIDI"
    real = prepare._inspect

    def dies_on_victim(item, cfg):  # forked workers inherit this
        if item[0] == victim:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(item, cfg)

    monkeypatch.setattr(prepare, "_inspect", dies_on_victim)
    selected, rejects, report = _run(_params())
    monkeypatch.setattr(prepare, "_inspect", real)
    baseline, _, _ = _run(_params())
    died = [r for r in rejects if r["reason"] == "worker_died"]
    assert [r["id"] for r in died] == [victim]
    assert {r["id"] for r in selected} == {r["id"] for r in baseline} - {victim}
    assert report["by_reason"]["worker_died"] == 1


def test_guards_turn_pathological_files_into_rejects(fixtures):
    data = (fixtures / "pop" / "pypianoroll_sample2.mid").read_bytes()
    cfg = _cfg()
    import dataclasses
    assert prepare.inspect(("x", data), dataclasses.replace(cfg, max_beats=4))["reason"] == "too_long"
    assert prepare.inspect(("x", data), dataclasses.replace(cfg, timeout_s=1e-6))["reason"] == "timeout"
    assert "reason" not in prepare.inspect(("x", data), cfg)


def test_inspect_classifies_without_raising(fixtures):
    cfg = _cfg(instruments=["all"])
    for path in sorted((fixtures / "broken").iterdir()):
        res = prepare.inspect((path.name, path.read_bytes()), cfg)
        assert res["reason"] in {"not_midi", "truncated", "empty_file", "no_notes"}


def test_every_shared_broken_file_is_rejected_or_parsed_never_crashes(shared_midi, tmp_path, monkeypatch):
    root = tmp_path / "broken"
    shutil.copytree(shared_midi / "broken", root)
    _acquire(root, tmp_path, monkeypatch)
    selected, rejects, _ = _run(_params({"instruments": ["all"]}))
    file_rejects = {r["id"]: r["reason"] for r in rejects if r["track"] is None}
    n = len(list((shared_midi / "broken").iterdir()))
    assert len({r["file"] for r in selected}) + len(file_rejects) == n
    assert "parse_error" not in file_rejects.values()  # every failure gets a specific reason
    assert file_rejects["local/symusic__Issue104_Bizarre_Love_Triangle2.mid"] == "invalid_event"
    assert file_rejects["local/muspy__negative-ticks-per-beat.mid"] == "smpte_division"


def test_fur_elise_pair_is_one_group(shared_midi, tmp_path, monkeypatch):
    root = tmp_path / "piano"
    shutil.copytree(shared_midi / "misc" / "piano", root)
    _acquire(root, tmp_path, monkeypatch)
    selected, rejects, _ = _run(_params())
    dups = {r["id"]: r["duplicate_of"] for r in rejects if r["reason"] == "duplicate_md5"}
    assert dups == {"local/fur-elise_copy.mid": "local/fur-elise.mid"}
    groups = {r["id"]: r["group"] for r in selected}
    # fur_elise_2 is the same piece encoded differently: the same title joins it to the group
    assert groups["local/fur-elise.mid"] == groups["local/fur_elise_2.mid"]


@pytest.fixture
def beatles(shared_midi, tmp_path, monkeypatch):
    root = tmp_path / "beatles"
    for album in ("03_-_A_Hard_Day's_Night", "10CD2_-_The_Beatles"):
        shutil.copytree(shared_midi / BEATLES / album, root / album)
    _acquire(root, tmp_path, monkeypatch)
    return root


def test_mislabelled_good_night_is_the_same_music_as_a_hard_days_night(beatles):
    selected, rejects, _ = _run(_params())
    gn = next(r for r in rejects if r["id"] == f"local/{GOOD_NIGHT}" and r["track"] is None)
    assert gn["reason"] == "duplicate_content" and gn["duplicate_of"] == f"local/{AHDN}"
    ahdn = next(r for r in selected if r["id"] == f"local/{AHDN}")
    assert ahdn["group"] == f"local/{AHDN}"


def test_beatles_versions_are_grouped_by_content_or_title(beatles):
    selected, rejects, report = _run(_params())
    by_song = {}
    for r in selected:
        by_song.setdefault(r["song"], set()).add(r["group"])
    several = [s for s in by_song if sum(r["song"] == s for r in selected) > 1]
    assert len(several) >= 5
    assert all(len(by_song[s]) == 1 for s in by_song)  # every version of a song lands in one group
    assert report["groups"]["with_several_sequences"] >= len(several)
    # without title grouping, content alone still joins some versions, but fewer groups are merged
    selected2, _, report2 = _run(_params(dedupe={"by_title": False}))
    assert report2["groups"]["total"] > report["groups"]["total"]


def test_drums_only_keeps_only_drum_tracks_including_named_ones_off_channel_10(shared_midi, tmp_path, monkeypatch):
    root = tmp_path / "drums"
    root.mkdir()
    misery = shared_midi / BEATLES / "01_-_Please_Please_Me" / "02_-_Misery_v0.mid"
    shutil.copy(misery, root / misery.name)
    shutil.copy(shared_midi / "pop_multitrack" / "pypianoroll_sample2.mid", root / "pop.mid")
    _acquire(root, tmp_path, monkeypatch)
    selected, rejects, report = _run(_params({"instruments": ["drums"], "mode": "tracks"}))
    assert selected and all(r["families"] == ["drums"] and r["is_drum"] == [True] for r in selected)
    named = [r for r in selected if r["inferred"] == ["name"]]
    assert [r["id"] for r in named] == ["local/02_-_Misery_v0.mid#5"]  # 'Drums' on program 117, not channel 10
    assert report["tracks_inferred_by"]["name"] == 1
    assert all(r["reason"] == "instrument_filtered" for r in rejects if r["track"] is not None)


def test_the_report_counts_groups_shared_by_every_pair_of_sources():
    import pyarrow as pa

    from pipeline.dedupe import UnionFind
    ids = ["lakh/a", "lakh/b", "maestro/c", "local/d", "local/e", "maestro/f"]
    groups = UnionFind(len(ids))
    groups.union(0, 2)  # one group across lakh and maestro...
    groups.union(2, 3)  # ...and local: three pairs of sources share it
    groups.union(1, 4)
    sources = pa.array([i.split("/")[0] for i in ids])
    songs = pa.array(["x", None, "x", "y", None, "y"]).dictionary_encode()
    reasons = {"duplicate_md5": 1, "near_duplicate": 1}
    report = prepare.dedupe_report(sources, groups.labels(), songs, reasons, prepare.no_near(len(ids)))
    assert report["groups_across_sources"] == {"lakh+local": 2, "lakh+maestro": 1, "local+maestro": 1}
    assert report["title"] == {"files_sharing_a_song": 4}
    assert report["md5"] == {"dropped": 1} and report["near"]["pairs"] == 0


# ---- the bookkeeping by file number (numpy arrays and Arrow columns, no Python object per file) -----------------

def test_a_digest_ending_in_zero_bytes_keeps_them():
    import hashlib

    import numpy as np
    digest = hashlib.sha1(b"x").digest()[:17] + b"\0\0\0"
    held = np.zeros(1, "S20")
    held[0] = digest
    assert held[0] != digest  # numpy strips the trailing zeros when it hands the value out...
    assert prepare.digest_hex(held[0]) == digest.hex()  # ...and they are put back


def test_manifests_load_in_source_order_then_id_with_their_skips(tmp_path, monkeypatch):
    import pyarrow as pa
    monkeypatch.chdir(tmp_path)
    for source, ids in (("b", ["b/z", "b/a", "b/m"]), ("a", [])):
        d = tmp_path / "data" / "raw" / source
        d.mkdir(parents=True)
        cols = {c: pa.array([f"{i}-{c}" if c != "id" else i for i in ids], pa.string())
                for c in prepare.ROW_COLUMNS}
        pq.write_table(pa.table(cols), d / "manifest.parquet")
    pq.write_table(pa.table({"id": ["b/q"], "source": ["b"], "reason": ["too_big"], "message": ["big"]}),
                   tmp_path / "data" / "raw" / "b" / "skipped.parquet")
    files, skipped = prepare.load_manifests(["b", "a"])
    assert files.column("id").to_pylist() == ["b/a", "b/m", "b/z"]  # sorted by id, though written unsorted
    assert files.column("md5").to_pylist() == ["b/a-md5", "b/m-md5", "b/z-md5"]  # rows kept whole
    assert skipped.schema == prepare.REJECTS and skipped.to_pylist()[0]["reason"] == "too_big"
    assert skipped.to_pylist()[0]["track"] is None
    (tmp_path / "data" / "raw" / "a" / "manifest.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="acquire@a"):
        prepare.load_manifests(["b", "a"])


def test_the_spill_gives_back_each_result_by_file_number(tmp_path):
    spill = prepare.Spill(5)
    try:
        spill.put(3, pickle.dumps({"id": "c", "notes": [1, 2]}))  # as workers pickle them (Inspected.rest)
        spill.put(0, pickle.dumps({"id": "a"}))
        assert spill.holds().tolist() == [True, False, False, True, False]
        assert spill.get(3) == {"id": "c", "notes": [1, 2]} and spill.get(0) == {"id": "a"}
        spill.put(1, pickle.dumps({"id": "b"}))  # a put after a get appends, never overwrites
        assert spill.get(3)["id"] == "c" and spill.get(1) == {"id": "b"}
    finally:
        spill.close()


def test_outputs_merged_from_runs_on_disk_are_the_outputs_sorted_whole(midi_folder, tmp_path, monkeypatch):
    """Outputs sorts selected and rejects rows on disk (ExternalSort) in runs of prepare.RUN_BYTES: runs of a
    few hundred bytes gathered 3 rows at a time and read back 2 at a time, so every output is merged from many, give
    the same tables and report as one run in memory."""
    _acquire(midi_folder, tmp_path, monkeypatch)
    p = _params({"instruments": ["all"], "mode": "tracks"})
    whole = run_tables(p, "whole")
    monkeypatch.setattr(prepare, "RUN_BYTES", 400)
    monkeypatch.setattr(prepare, "ExternalSort", partial(prepare.ExternalSort, batch_rows=3, read_rows=2))
    merged = run_tables(p, "merged")
    assert pq.ParquetFile("merged/selected.parquet").num_row_groups > 2  # a table per RUN_BYTES: the merge ran
    assert pq.ParquetFile("merged/rejects.parquet").num_row_groups > 1
    assert whole[0].num_rows > 10 and whole[1].num_rows > 3
    for one, two in zip(whole[:3], merged[:3]):
        assert one.equals(two)
    assert whole[3] == merged[3]
