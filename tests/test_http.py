"""The HTTP layer against a real loopback server: resume, retries, 429, checksums, rate limits."""
import hashlib
import time

import pytest

from pipeline.http import ChecksumError, Client, HttpConfig, HttpError, retry_after

BODY = bytes(range(256)) * 4096  # 1 MiB
SHA = "sha256:" + hashlib.sha256(BODY).hexdigest()


def client(sleeps=None, rps=0.0, retries=4):
    sleep = (lambda s: sleeps.append(s)) if sleeps is not None else time.sleep
    return Client(HttpConfig("midi-pipeline-tests/1.0", timeout_s=10, retries=retries, backoff_s=0.01,
                             requests_per_second=rps), sleep=sleep)


def test_download_verifies_and_a_second_call_fetches_nothing(site, tmp_path):
    site.files["/a.bin"] = BODY
    dest = tmp_path / "a.bin"
    assert client().download(site.url("/a.bin"), dest, SHA) is True
    assert dest.read_bytes() == BODY and not (tmp_path / "a.bin.part").exists()
    assert client().download(site.url("/a.bin"), dest, SHA) is False
    assert len(site.hits("/a.bin")) == 1


def test_a_dropped_connection_resumes_with_range(site, tmp_path):
    site.files["/a.bin"] = BODY
    site.faults["/a.bin"].append(("drop", 300_000))
    dest = tmp_path / "a.bin"
    client().download(site.url("/a.bin"), dest, SHA)
    assert dest.read_bytes() == BODY
    first, second = site.hits("/a.bin")
    assert first.range is None and first.sent == 300_000
    assert second.range.startswith("bytes=") and int(second.range[6:].split("-")[0]) >= 300_000
    assert first.sent + second.sent == len(BODY)  # no byte fetched twice


def test_a_part_left_by_a_killed_run_is_continued_not_restarted(site, tmp_path):
    site.files["/a.bin"] = BODY
    (tmp_path / "a.bin.part").write_bytes(BODY[:700_000])
    client().download(site.url("/a.bin"), tmp_path / "a.bin", SHA)
    (hit,) = site.hits("/a.bin")
    assert hit.range == "bytes=700000-" and hit.status == 206 and hit.sent == len(BODY) - 700_000
    assert (tmp_path / "a.bin").read_bytes() == BODY


def test_429_honours_retry_after_and_503_is_retried(site, tmp_path):
    site.files["/a.bin"] = BODY
    site.faults["/a.bin"].extend([("status", 429, 7), ("status", 503, None)])
    sleeps = []
    client(sleeps).download(site.url("/a.bin"), tmp_path / "a.bin", SHA)
    assert [h.status for h in site.hits("/a.bin")] == [429, 503, 200]
    assert sleeps[0] == 7.0 and 0 < sleeps[1] < 1


def test_wrong_checksum_names_both_sums_and_keeps_nothing(site, tmp_path):
    site.files["/a.bin"] = BODY
    wrong = "sha256:" + "0" * 64
    with pytest.raises(ChecksumError) as err:
        client().download(site.url("/a.bin"), tmp_path / "a.bin", wrong)
    assert wrong in str(err.value) and SHA in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_errors_that_do_not_heal(site, tmp_path):
    with pytest.raises(HttpError, match="HTTP 404"):
        client().download(site.url("/missing.bin"), tmp_path / "m.bin", None)
    site.files["/a.bin"] = BODY
    site.faults["/a.bin"].extend([("status", 500, None)] * 3)
    with pytest.raises(HttpError, match=r"gave up after 3 attempts \(last: HTTP 500\)"):
        client(retries=2).download(site.url("/a.bin"), tmp_path / "a.bin", SHA)


def test_rate_limit_is_kept_per_host(site):
    site.files["/x"] = b"x"
    c = client(rps=5.0)
    for _ in range(11):
        c.get(site.url("/x"))
    times = [h.time for h in site.hits("/x")]
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate <= 5.0 * 1.02, rate


def test_retry_after_forms():
    assert retry_after("120") == 120.0
    assert retry_after(None) is None and retry_after("soon") is None
    assert 0 <= retry_after("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.0 + 1e-9
