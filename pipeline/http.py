"""One HTTP layer for every source: polite, retrying, resumable and verified.

- a requests.Session with timeouts and a descriptive User-Agent;
- retries with exponential backoff on connection errors and 5xx; 429 waits for Retry-After;
- a rate limit per host, shared by every client in the process;
- downloads go to `<dest>.part`, resume with `Range` after an interruption, and become `<dest>` by an atomic
  rename only once the checksum matches. A mismatch is an error naming both sums; the bad bytes are deleted.
"""
from __future__ import annotations

import email.utils
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import requests
import urllib3
from tqdm import tqdm

CHUNK = 1 << 20
READ = 1 << 16  # small reads: a broken connection loses at most this much
MAX_RETRY_AFTER_S = 600.0
ALGORITHMS = ("md5", "sha1", "sha256", "sha512")


class HttpError(RuntimeError):
    pass


class ChecksumError(HttpError):
    pass


@dataclass(frozen=True)
class HttpConfig:
    user_agent: str
    timeout_s: float = 30.0
    retries: int = 5
    backoff_s: float = 1.0
    requests_per_second: float = 0.0  # 0: no limit


class _HostLimiter:
    """At most one request per `interval` to each host, across every client in this process."""

    def __init__(self) -> None:
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str, interval: float, sleep: Callable[[float], None]) -> None:
        if interval <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + interval
        if start > now:
            sleep(start - now)


LIMITER = _HostLimiter()


def parse_checksum(spec: str) -> tuple[str, str]:
    algo, _, digest = spec.partition(":")
    algo = algo.lower()
    if algo not in ALGORITHMS or not digest or any(c not in "0123456789abcdef" for c in digest.lower()):
        raise ValueError(f"checksum {spec!r} is not of the form <algo>:<hex> with algo one of {ALGORITHMS}")
    return algo, digest.lower()


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


class Client:
    def __init__(self, cfg: HttpConfig, sleep: Callable[[float], None] = time.sleep):
        self.cfg, self.sleep = cfg, sleep
        self.session = requests.Session()
        self.session.headers["User-Agent"] = cfg.user_agent
        self.interval = 1.0 / cfg.requests_per_second if cfg.requests_per_second > 0 else 0.0

    def _backoff(self, attempt: int) -> float:
        return self.cfg.backoff_s * 2**attempt

    def request(self, url: str, headers: dict | None = None, stream: bool = False) -> requests.Response:
        """GET with retries; returns the first response that is neither 429 nor 5xx."""
        last = "no attempt"
        for attempt in range(self.cfg.retries + 1):
            LIMITER.wait(urlsplit(url).netloc, self.interval, self.sleep)
            try:
                r = self.session.get(url, headers=headers, stream=stream, timeout=self.cfg.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as e:
                last = f"{type(e).__name__}: {e}"
                self.sleep(self._backoff(attempt))
                continue
            if r.status_code == 429 or r.status_code >= 500:
                wait = retry_after(r.headers.get("Retry-After")) if r.status_code in (429, 503) else None
                last = f"HTTP {r.status_code}"
                r.close()
                self.sleep(min(wait if wait is not None else self._backoff(attempt), MAX_RETRY_AFTER_S))
                continue
            return r
        raise HttpError(f"GET {url}: gave up after {self.cfg.retries + 1} attempts (last: {last})")

    def get(self, url: str) -> requests.Response:
        """A small response, read whole; 4xx raise HttpError."""
        r = self.request(url)
        if r.status_code >= 400:
            raise HttpError(f"GET {url}: HTTP {r.status_code}")
        return r

    def download(self, url: str, dest: Path, checksum: str | None, desc: str | None = None) -> bool:
        """Fetch url into dest unless a verified copy is already there. Returns True if bytes were fetched."""
        dest = Path(dest)
        algo, expected = parse_checksum(checksum) if checksum else (None, None)
        if dest.exists() and (algo is None or file_digest(dest, algo) == expected):
            return False
        dest.unlink(missing_ok=True)
        part = dest.with_name(dest.name + ".part")
        for attempt in range(self.cfg.retries + 1):
            have = part.stat().st_size if part.exists() else 0
            r = self.request(url, headers={"Range": f"bytes={have}-"} if have else None, stream=True)
            with r:
                if r.status_code == 416 and have:  # nothing left to send: the part is whole
                    break
                if r.status_code == 206 and _range_start(r) == have:
                    mode = "ab"
                elif r.status_code == 200:
                    mode, have = "wb", 0
                elif r.status_code == 206:  # a range we did not ask for: start over
                    part.unlink()
                    continue
                else:
                    raise HttpError(f"GET {url}: HTTP {r.status_code}")
                length = r.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                try:
                    with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                      desc=desc or dest.name, mininterval=1) as bar:
                        # raw bytes: a .tar.gz sent with Content-Encoding: gzip must not be unpacked on the way
                        for block in r.raw.stream(READ, decode_content=False):
                            f.write(block)
                            bar.update(len(block))
                except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError):
                    self.sleep(self._backoff(attempt))
                    continue
                if total is not None and part.stat().st_size < total:
                    self.sleep(self._backoff(attempt))
                    continue
                break
        else:
            raise HttpError(f"GET {url}: download still incomplete after {self.cfg.retries + 1} attempts")
        if algo is not None:
            actual = file_digest(part, algo)
            if actual != expected:
                part.unlink()
                raise ChecksumError(f"{url}: checksum mismatch: expected {algo}:{expected}, got {algo}:{actual} "
                                    f"({dest.name} was not kept)")
        os.replace(part, dest)
        return True


def _range_start(r: requests.Response) -> int | None:
    """The first byte of a 206 body, from `Content-Range: bytes START-END/TOTAL`."""
    value = r.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None
