"""bitmidi.com, scraped politely: its JSON API for the list, robots.txt (read at run time) for what may be fetched.

Listing: `GET /api/midi/all?page=N&pageSize=K` page by page; when the API answers 404, `/sitemap.xml` and each
file's HTML page (`<a download=... href="/uploads/<id>.mid">`). Every API page and parsed HTML page is cached
under `state/` as it arrives, so an interrupted scrape resumes where it stopped. Files are downloaded only where
robots.txt allows it; the downloaded bytes go into Parquet parts of PART_FILES files, each written atomically, so
finished parts are never fetched again. Where robots.txt forbids the downloads, the manifest holds the metadata
alone and the run says so.
"""
from __future__ import annotations

import json
import shutil
import urllib.robotparser
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urljoin, urlsplit
from xml.etree import ElementTree

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, field_validator
from tqdm import tqdm

from pipeline.atomic import atomic_path, write_json
from pipeline.manifest import Item, Skip
from pipeline.schema import Strict
from pipeline.shards import SCHEMA as SHARD_SCHEMA
from pipeline.shards import iter_shard
from pipeline.sources.base import Context, Source, http_url

# requests (pipeline.http) and bs4 are imported where a scrape needs them: params.py imports this module
if TYPE_CHECKING:
    from pipeline.http import Client

PART_FILES = 64
LICENSE = "unknown: uploaded by bitmidi.com users"


class BitmidiParams(Strict):
    """data.bitmidi: the site, how much of it to take, and how politely (requests per second, robots.txt)."""

    base_url: str
    max_files: int = Field(ge=0, description="0 takes every file the site lists")
    page_size: int = Field(ge=1, le=50)
    requests_per_second: float = Field(gt=0, le=10)
    user_agent: str = Field(min_length=1)
    respect_robots: bool

    _url = field_validator("base_url")(classmethod(lambda cls, v: http_url(v)))


@dataclass(frozen=True)
class BitmidiConfig:
    base_url: str
    max_files: int
    page_size: int
    respect_robots: bool
    user_agent: str


def robots(http: Client, base: str) -> urllib.robotparser.RobotFileParser:
    rp = urllib.robotparser.RobotFileParser(f"{base}/robots.txt")
    r = http.request(f"{base}/robots.txt")
    with r:
        if r.status_code in (401, 403):
            rp.disallow_all = True
        elif r.status_code >= 400:
            rp.allow_all = True
        else:
            rp.parse(r.text.splitlines())
    return rp


def split_name(name: str) -> tuple[str | None, str]:
    """'Toto - Africa.mid' -> ('Toto', 'Africa'): bitmidi names are often '<artist> - <title>'."""
    stem = name[:-4] if name.lower().endswith((".mid", ".kar")) else name
    artist, sep, title = stem.partition(" - ")
    return (artist.strip() or None, title.strip()) if sep and title.strip() else (None, stem.strip())


def _cached(path: Path, fetch):
    if path.exists():
        return json.loads(path.read_text())
    value = fetch()
    write_json(path, value)
    return value


def list_api(http: Client, cfg: BitmidiConfig, state: Path, allowed) -> list[dict] | None:
    """Records from the JSON API, or None when the API is not there (404)."""
    from pipeline.http import HttpError

    base, records, page = cfg.base_url, [], 0
    bar = tqdm(desc="bitmidi api pages", unit="page", mininterval=1)
    while True:
        url = f"{base}/api/midi/all?page={page}&pageSize={cfg.page_size}"
        if not allowed(url):
            raise HttpError(f"robots.txt at {base} forbids the listing API ({url})")

        def fetch(url=url):
            r = http.request(url)
            with r:
                if r.status_code == 404:
                    return None
                if r.status_code >= 400:
                    raise HttpError(f"GET {url}: HTTP {r.status_code}")
                return r.json()["result"]
        result = _cached(state / f"api-page-{page:05d}.json", fetch)
        if result is None:
            if page == 0:
                return None
            break
        records += result["results"]
        bar.update()
        page += 1
        total = result.get("pageTotal")
        if not result["results"] or (total is not None and page >= int(total)):
            break
        if cfg.max_files and len(records) >= cfg.max_files:
            break
    bar.close()
    return records


def _sitemap_urls(http: Client, url: str, depth: int = 0) -> list[str]:
    root = ElementTree.fromstring(http.get(url).content)
    ns = "{http://www.sitemaps.org/schemas/sitemap/0.9}"
    locs = [e.text.strip() for e in root.iter(f"{ns}loc") if e.text]
    if root.tag == f"{ns}sitemapindex" and depth < 2:
        return [u for child in locs for u in _sitemap_urls(http, child, depth + 1)]
    return locs


def parse_page(html: str, slug: str) -> dict | None:
    """A record from a file's HTML page: its download link gives the id, the link's download attribute the name."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    link = soup.find("a", href=lambda h: h and h.startswith("/uploads/") and h.endswith(".mid"), download=True)
    if link is None:
        return None
    file_id = link["href"].rsplit("/", 1)[1][:-4]
    name = link.get("download") or (soup.title.string or "").removesuffix(" - Free MIDI")
    return {"id": int(file_id) if file_id.isdigit() else file_id, "name": name, "slug": slug}


def list_sitemap(http: Client, cfg: BitmidiConfig, state: Path, allowed) -> list[dict]:
    base = cfg.base_url
    host = urlsplit(base).netloc
    pages = [u for u in _sitemap_urls(http, f"{base}/sitemap.xml")
             if urlsplit(u).netloc in ("", host) and urlsplit(u).path.strip("/")
             and "/" not in urlsplit(u).path.strip("/")]
    records = []
    for url in tqdm(pages, desc="bitmidi pages", unit="page", mininterval=1):
        if cfg.max_files and len(records) >= cfg.max_files:
            break
        slug = urlsplit(url).path.strip("/")
        if not allowed(urljoin(base + "/", slug)):
            continue

        def fetch(slug=slug):
            r = http.request(urljoin(base + "/", slug))
            with r:
                return parse_page(r.text, slug) if r.status_code == 200 else None
        record = _cached(state / "pages" / f"{slug}.json", fetch)
        if record is not None:
            records.append(record)
    return records


def _parts(out_dir: Path) -> dict[str, str]:
    """id -> part file, for the parts already on disk."""
    done = {}
    for part in sorted(out_dir.glob("midi-*.parquet")):
        for id_ in pq.read_table(part, columns=["id"]).column("id").to_pylist():
            done[id_] = part.name
    return done


def _write_part(out_dir: Path, index: int, rows: list[tuple[str, bytes]]) -> str:
    name = f"midi-{index:05d}.parquet"
    ids, blobs = zip(*rows)
    with atomic_path(out_dir / name) as tmp:
        pq.write_table(pa.table([pa.array(ids), pa.array(blobs, pa.binary())], schema=SHARD_SCHEMA), tmp,
                       compression="zstd")
    return name


def iter_bitmidi(cfg: BitmidiConfig, http: Client, out_dir: Path, max_bytes: int) -> Iterator[Item | Skip]:
    from pipeline.http import HttpError

    base = cfg.base_url.rstrip("/")
    cfg = BitmidiConfig(base, cfg.max_files, cfg.page_size, cfg.respect_robots, cfg.user_agent)
    state = out_dir / "state"
    rp = robots(http, base)

    def allowed(url: str) -> bool:
        return not cfg.respect_robots or rp.can_fetch(cfg.user_agent, url)

    records = list_api(http, cfg, state, allowed)
    if records is None:
        print(f"bitmidi: {base}/api/midi/all answered 404; listing through {base}/sitemap.xml and the pages")
        records = list_sitemap(http, cfg, state, allowed)
    records = records[: cfg.max_files] if cfg.max_files else records
    members = {str(r["id"]): f"uploads/{r['id']}.mid" for r in records}

    done = _parts(out_dir)
    todo = [r for r in records if f"bitmidi/{members[str(r['id'])]}" not in done
            and allowed(f"{base}/{members[str(r['id'])]}")]
    forbidden = sum(not allowed(f"{base}/{m}") for m in members.values())
    if forbidden:
        print(f"bitmidi: robots.txt at {base}/robots.txt forbids downloading {forbidden} of {len(records)} files "
              f"for user agent {cfg.user_agent!r}; those are kept as metadata only (data.bitmidi.respect_robots)")
    failed: dict[str, Skip] = {}
    buffer: list[tuple[str, bytes]] = []
    index = len(list(out_dir.glob("midi-*.parquet")))
    for r in tqdm(todo, desc="bitmidi downloads", unit="file", mininterval=1):
        member = members[str(r["id"])]
        try:
            resp = http.get(f"{base}/{member}")
        except HttpError as e:
            failed[member] = Skip(member, "download_failed", str(e))
            continue
        if len(resp.content) > max_bytes:
            failed[member] = Skip(member, "too_large", f"{len(resp.content)} bytes is over data.max_file_mb")
            continue
        buffer.append((f"bitmidi/{member}", resp.content))
        if len(buffer) == PART_FILES:
            _write_part(out_dir, index, buffer)
            index, buffer = index + 1, []
    if buffer:
        _write_part(out_dir, index, buffer)
    done = _parts(out_dir)

    def meta(r: dict) -> dict:
        artist, title = split_name(r.get("name") or "")
        return {"title": title, "composer": artist, "source_id": str(r["id"]), "license": LICENSE,
                "url": f"{base}/{r['slug']}" if r.get("slug") else None}

    wanted = {f"bitmidi/{members[str(r['id'])]}": r for r in records}
    emitted = set()
    for part in sorted(set(done.values())):  # stream the bytes back part by part
        for id_, blob in iter_shard(out_dir / part, set(wanted)):
            emitted.add(id_)
            yield Item(id_.removeprefix("bitmidi/"), blob, meta(wanted[id_]), artifact=part)
    for id_, r in wanted.items():
        member = members[str(r["id"])]
        if id_ not in emitted:
            yield failed.get(member) or Item(member, None, meta(r))
    shutil.rmtree(state, ignore_errors=True)


def _entries(b: BitmidiParams, ctx: Context) -> Iterator[Item | Skip]:
    """The site's own User-Agent and rate limit; timeouts and retries from data.http."""
    polite = ctx.http.client(b.user_agent, b.requests_per_second)
    cfg = BitmidiConfig(b.base_url, b.max_files, b.page_size, b.respect_robots, b.user_agent)
    return iter_bitmidi(cfg, polite, ctx.out_dir, ctx.max_bytes)


SOURCE = Source("bitmidi", BitmidiParams, _entries, downloads=True)
