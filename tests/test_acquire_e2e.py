"""`dvc repro` over MAESTRO, Lakh and bitmidi look-alikes on loopback: built once, never fetched twice, and a
download killed with SIGKILL finishes on the next run without fetching its finished bytes again."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from tests.conftest import real_files
from tests.dvcrepo import TINY, dvc, env, make_repo, overlay, set_params
from tests.fakesite import Bitmidi, Site, lmd_tar, maestro_zip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def remote():
    site = Site().start()
    site.files["/maestro/maestro-v3.0.0-midi.zip"] = maestro_zip(real_files("maestro", limit=6))
    site.files["/lmd/lmd_full.tar.gz"] = lmd_tar([d for _, d in real_files("lakh/hashed", "pop_multitrack", limit=6)])
    site.bitmidi = Bitmidi([(f"Band {i} - Song {i}.mid", d) for i, (_, d) in enumerate(real_files("misc/nottingham",
                                                                                                  limit=6))])
    yield site
    site.stop()


def _sum(algo, data):
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


@pytest.fixture
def repo(remote, tmp_path):
    """A fresh repository per test (a copy of files, no run), so that no test sees another's downloads."""
    f = remote.files
    params = overlay(TINY, {"data": {
        "sources": ["maestro", "lakh", "bitmidi"],
        "http": {"backoff_s": 0.01},
        "maestro": {"url": remote.url("/maestro/maestro-v3.0.0-midi.zip"),
                    "checksum": _sum("sha256", f["/maestro/maestro-v3.0.0-midi.zip"])},
        "lakh": {"url": remote.url("/lmd/lmd_full.tar.gz"), "checksum": _sum("md5", f["/lmd/lmd_full.tar.gz"])},
        "bitmidi": {"base_url": remote.base, "max_files": 0, "requests_per_second": 10.0},
    }})
    return make_repo(tmp_path / "repo", params)


def test_all_remote_sources_build_the_pipeline_and_a_second_run_fetches_nothing(remote, repo):
    out = dvc(repo, "repro").stdout
    for stage in ("acquire@maestro", "acquire@lakh", "acquire@bitmidi", "prepare", "convert", "train", "evaluate"):
        assert f"Running stage '{stage}'" in out
    maestro = pq.read_table(repo / "data/raw/maestro/manifest.parquet").to_pylist()
    assert {r["split"] for r in maestro} == {"train", "validation", "test"}
    assert sorted(p.name for p in (repo / "data/raw/maestro").iterdir()) == [
        "maestro-v3.0.0-midi.zip", "manifest.parquet", "skipped.parquet"]
    lakh = pq.read_table(repo / "data/raw/lakh/manifest.parquet").to_pylist()
    assert all(r["source_id"] == r["md5"] for r in lakh)
    bitmidi = pq.read_table(repo / "data/raw/bitmidi/manifest.parquet").to_pylist()
    assert (len(bitmidi) == len(remote.bitmidi.records) and all(r["artifact"] for r in bitmidi)
            and not (repo / "data/raw/bitmidi/state").exists())

    # MAESTRO's official split survives into the processed data
    processed = [r for f in sorted((repo / "data/processed/pianoroll").glob("*.parquet"))
                 for r in pq.read_table(f, columns=["id", "source", "split"]).to_pylist()]
    official = {f"maestro/{r['member']}": {"validation": "valid"}.get(r["split"], r["split"]) for r in maestro}
    assert all(row["split"] == official[row["id"]] for row in processed if row["source"] == "maestro")

    remote.log.clear()
    again = dvc(repo, "repro").stdout
    assert "Running stage" not in again and remote.log == []
    remote.log.clear()
    forced = dvc(repo, "repro", "-f", "-s", "acquire@maestro").stdout  # rerun, but the verified zip stays
    assert "Running stage 'acquire@maestro'" in forced and remote.log == []


def test_a_download_killed_midway_finishes_on_the_next_repro_without_refetching(remote, repo):
    dvc(repo, "repro", "acquire@lakh")  # the first URL's archive, which the new URL's must replace
    assert (repo / "data/raw/lakh/lmd_full.tar.gz").is_file()
    big = lmd_tar([d for _, d in real_files("lakh/hashed", limit=2)] + [os.urandom(3 << 20)])
    remote.files["/lmd/big.tar.gz"] = big
    remote.rate["/lmd/big.tar.gz"] = 600_000  # bytes/s: slow enough to kill it mid-body
    set_params(repo, {"data": {"lakh": {"url": remote.url("/lmd/big.tar.gz"), "checksum": _sum("md5", big)}}})
    part = repo / "data/raw/lakh/big.tar.gz.part"
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "acquire@lakh"], cwd=repo, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size > 600_000):
            assert time.monotonic() < deadline and proc.poll() is None, "the download never got going"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    kept = part.stat().st_size
    assert 0 < kept < len(big)
    remote.rate.pop("/lmd/big.tar.gz")
    out = dvc(repo, "repro", "acquire@lakh").stdout
    assert "Running stage 'acquire@lakh'" in out
    first, second = remote.hits("/lmd/big.tar.gz")
    assert first.range is None and second.range == f"bytes={kept}-" and second.status == 206
    assert second.sent == len(big) - kept  # only the missing bytes were fetched
    assert (repo / "data/raw/lakh/big.tar.gz").read_bytes() == big and not part.exists()
    assert not (repo / "data/raw/lakh/lmd_full.tar.gz").exists()  # the old URL's archive was pruned
