"""MAESTRO, Lakh and bitmidi acquisition against loopback look-alikes of the real sites."""
import hashlib
import math

import pytest

from pipeline.acquire import store
from pipeline.archive import ArchiveError
from pipeline.artifacts import iter_bytes
from pipeline.http import ChecksumError, Client, HttpConfig, HttpError
from pipeline.sources import bitmidi as B
from pipeline.sources.lakh import iter_lakh
from pipeline.sources.maestro import iter_maestro
from tests.conftest import real_files
from tests.fakesite import Bitmidi, lmd_tar, maestro_zip

UA = "midi-pipeline-tests/1.0"


def http(rps=0.0):
    return Client(HttpConfig(UA, timeout_s=10, retries=3, backoff_s=0.01, requests_per_second=rps))


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def test_maestro_zip_keeps_official_metadata_and_refuses_escapes(site, tmp_path):
    files = real_files("maestro", limit=6)
    good = files[0][1]
    archive = maestro_zip(files, extra=[("../../evil.mid", good)])
    site.files["/maestro/v3.0.0/maestro-v3.0.0-midi.zip"] = archive
    url = site.url("/maestro/v3.0.0/maestro-v3.0.0-midi.zip")
    manifest, skipped = store("maestro", iter_maestro(url, sha256(archive), http(), tmp_path, 1 << 24),
                              tmp_path, 1 << 24)
    rows = manifest.to_pylist()
    assert len(rows) == len(files)
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    r0 = next(r for r in rows if r["title"] == "Piece 0")
    assert r0["composer"] == "Composer 0" and r0["year"] == 2004 and r0["duration"] == 60.0
    assert r0["member"].startswith("maestro-v3.0.0/2004/") and r0["member"].endswith(".midi")
    assert r0["artifact"] == "maestro-v3.0.0-midi.zip" and r0["license"] == "CC BY-NC-SA 4.0"
    assert skipped.to_pylist()[0]["reason"] == "unsafe_path"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maestro-v3.0.0-midi.zip"]  # no shards, no extraction
    back = dict(iter_bytes(tmp_path, rows))
    assert {hashlib.md5(b).hexdigest() for b in back.values()} == {hashlib.md5(d).hexdigest() for _, d in files}


def test_lakh_tarball_is_streamed_and_ids_are_the_md5_names(site, tmp_path):
    files = [d for _, d in real_files("lakh/hashed", "lakh/beatles/01_-_Please_Please_Me", limit=8)]
    archive = lmd_tar(files)
    site.files["/lmd/lmd_full.tar.gz"] = archive
    md5 = "md5:" + hashlib.md5(archive).hexdigest()
    manifest, _ = store("lakh", iter_lakh(site.url("/lmd/lmd_full.tar.gz"), md5, http(), tmp_path, 1 << 24),
                        tmp_path, 1 << 24)
    rows = manifest.to_pylist()
    assert len(rows) == len(files)
    for r in rows:
        assert r["source_id"] == r["md5"] and r["member"] == f"lmd_full/{r['md5'][0]}/{r['md5']}.mid"
        assert r["license"] == "CC BY 4.0"
    back = dict(iter_bytes(tmp_path, rows))
    assert all(hashlib.md5(back[r["id"]]).hexdigest() == r["md5"] for r in rows)


def test_clean_midi_names_give_artist_and_title(site, tmp_path):
    files = [d for _, d in real_files(limit=3)]
    names = ["The Beatles/Help!.mid", "The Beatles/Help!.1.mid", "ABBA/Waterloo.mid"]
    site.files["/clean_midi.tar.gz"] = lmd_tar(files, layout="clean_midi", names=names)
    manifest, _ = store("lakh", iter_lakh(site.url("/clean_midi.tar.gz"), None, http(), tmp_path, 1 << 24),
                        tmp_path, 1 << 24)
    got = {(r["composer"], r["title"]) for r in manifest.to_pylist()}
    assert got == {("The Beatles", "Help!"), ("ABBA", "Waterloo")}


def test_truncated_archive_is_caught_by_checksum_or_by_the_reader(site, tmp_path):
    archive = lmd_tar([d for _, d in real_files(limit=4)])
    site.files["/lmd.tar.gz"] = archive[: len(archive) // 2]
    with pytest.raises(ChecksumError):
        list(iter_lakh(site.url("/lmd.tar.gz"), "md5:" + hashlib.md5(archive).hexdigest(), http(), tmp_path, 1 << 24))
    assert not (tmp_path / "lmd.tar.gz").exists()
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        list(iter_lakh(site.url("/lmd.tar.gz"), None, http(), tmp_path, 1 << 24))


def _cfg(site, **kw):
    return B.BitmidiConfig(site.base, kw.get("max_files", 0), kw.get("page_size", 3), kw.get("respect_robots", True),
                           UA)


def test_bitmidi_api_walk_downloads_and_records_metadata(site, tmp_path, monkeypatch):
    monkeypatch.setattr(B, "PART_FILES", 4)
    files = real_files("pop_multitrack", limit=7)
    files = [(f"Artist {i} - Song {i}.mid", d) for i, (_, d) in enumerate(files)]
    site.bitmidi = Bitmidi(files)
    manifest, skipped = store("bitmidi", B.iter_bitmidi(_cfg(site), http(rps=20), tmp_path, 1 << 24),
                              tmp_path, 1 << 24)
    rows = manifest.to_pylist()
    assert len(rows) == len(files) >= 5 and skipped.num_rows == 0
    r = next(r for r in rows if r["source_id"] == "1002")
    assert (r["composer"], r["title"]) == ("Artist 2", "Song 2")
    assert r["url"] == f"{site.base}/{site.bitmidi.records[2]['slug']}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["midi-00000.parquet", "midi-00001.parquet"]
    back = dict(iter_bytes(tmp_path, rows))
    assert sorted(back.values()) == sorted(d for _, d in files)
    pages = sorted(int(h.query["page"][0]) for h in site.hits("/api/midi/all"))
    assert pages == list(range(math.ceil(len(files) / 3)))  # every page once, none past the last
    assert all(h.query["pageSize"] == ["3"] for h in site.hits("/api/midi/all"))


def test_bitmidi_robots_forbidding_uploads_gives_a_metadata_only_manifest(site, tmp_path, capsys):
    site.bitmidi = Bitmidi([(f"Song {i}.mid", d) for i, (_, d) in enumerate(real_files(limit=3))],
                           robots="User-agent: *\nDisallow: /uploads/\n")
    manifest, _ = store("bitmidi", B.iter_bitmidi(_cfg(site), http(), tmp_path, 1 << 24), tmp_path, 1 << 24)
    rows = manifest.to_pylist()
    assert len(rows) == 3 and all(r["artifact"] is None and r["md5"] is None for r in rows)
    assert not [h for h in site.log if h.path.startswith("/uploads/")]
    out = capsys.readouterr().out
    assert "robots.txt" in out and "forbids downloading 3 of 3" in out


def test_bitmidi_falls_back_to_sitemap_and_pages_when_the_api_is_gone(site, tmp_path):
    site.bitmidi = Bitmidi([(f"Tune {i}.mid", d) for i, (_, d) in enumerate(real_files(limit=3))], api=False)
    manifest, _ = store("bitmidi", B.iter_bitmidi(_cfg(site), http(), tmp_path, 1 << 24), tmp_path, 1 << 24)
    rows = manifest.to_pylist()
    assert sorted(r["title"] for r in rows) == ["Tune 0", "Tune 1", "Tune 2"]
    assert all(r["artifact"] for r in rows)
    assert site.hits("/sitemap.xml") and len([h for h in site.log if h.path.startswith("/tune-")]) == 3


def test_bitmidi_interrupted_scrape_resumes_from_the_page_it_stopped_at(site, tmp_path):
    site.bitmidi = Bitmidi([(f"S{i}.mid", d) for i, (_, d) in enumerate(real_files(limit=8))])
    # pages 0 and 1 are served, then page 2 fails on every attempt: the scrape stops with an error
    site.faults["/api/midi/all"].extend([("pass",), ("pass",)] + [("status", 503, 0)] * 4)
    with pytest.raises(HttpError, match="HTTP 503"):
        list(B.iter_bitmidi(_cfg(site, page_size=2), http(), tmp_path, 1 << 24))
    assert [h.status for h in site.hits("/api/midi/all")] == [200, 200, 503, 503, 503, 503]
    site.log.clear()
    manifest, _ = store("bitmidi", B.iter_bitmidi(_cfg(site, page_size=2), http(), tmp_path, 1 << 24),
                        tmp_path, 1 << 24)
    assert [h.query["page"] for h in site.hits("/api/midi/all")] == [["2"]]  # pages 0 and 1 came from the cache
    assert manifest.num_rows == len(site.bitmidi.records) >= 5 and not (tmp_path / "state").exists()


def test_bitmidi_requests_stay_under_the_rate_limit(site, tmp_path):
    site.bitmidi = Bitmidi([(f"S{i}.mid", d) for i, (_, d) in enumerate(real_files(limit=6))])
    list(B.iter_bitmidi(_cfg(site), http(rps=4.0), tmp_path, 1 << 24))
    times = sorted(h.time for h in site.log)
    assert len(times) >= 8  # robots, 2 api pages, 5 downloads
    assert (len(times) - 1) / (times[-1] - times[0]) <= 4.0 * 1.02
