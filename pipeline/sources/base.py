"""What a source declares (`Source`), what acquire hands it (`Context`), and the params pieces sources share.

A source module defines one `SOURCE = Source(...)` and is named in `pipeline/sources/registry.py`; params.py
validates `data.<name>` with its model and acquire calls its `entries`. Module-level imports here and in every
source module stay light (no requests, no bs4): params.py imports all of them, and every stage imports params.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from pydantic import Field, field_validator

from pipeline.schema import Strict

if TYPE_CHECKING:
    from pipeline.http import Client
    from pipeline.manifest import Item, Skip


def http_url(value: str) -> str:
    """The value unchanged; ValueError unless it starts with http:// or https://."""
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def checksum(value: str | None) -> str | None:
    """The value unchanged (None: not checked); ValueError naming the expected `<algo>:<hex>` form otherwise."""
    if value is not None:
        from pipeline.http import parse_checksum

        parse_checksum(value)
    return value


class HttpParams(Strict):
    """data.http: how every download talks to a server. Seconds for times; retries count the repeats."""

    user_agent: str = Field(min_length=1)
    timeout_s: float = Field(gt=0)
    retries: int = Field(ge=0)
    backoff_s: float = Field(ge=0)

    def client(self, user_agent: str | None = None, requests_per_second: float = 0.0) -> Client:
        """A Client with these settings; a source may send its own User-Agent and rate limit (0: none)."""
        from pipeline.http import Client, HttpConfig

        return Client(HttpConfig(user_agent or self.user_agent, self.timeout_s, self.retries, self.backoff_s,
                                 requests_per_second))


class ArchiveParams(Strict):
    """data.<name> of a source that is one downloaded archive: its URL and checksum (`<algo>:<hex>` or null)."""

    url: str
    checksum: Optional[str]

    _url = field_validator("url")(classmethod(lambda cls, v: http_url(v)))
    _sum = field_validator("checksum")(classmethod(lambda cls, v: checksum(v)))


def archive_entries(iterate: Callable[..., Iterable[Item | Skip]]) -> Callable[[ArchiveParams, Context], Iterable]:
    """`Source.entries` of a one-archive source from `iterate(url, checksum, client, out_dir, max_bytes)`."""
    def entries(a: ArchiveParams, ctx: Context) -> Iterable[Item | Skip]:
        return iterate(a.url, a.checksum, ctx.http.client(), ctx.out_dir, ctx.max_bytes)
    return entries


@dataclass(frozen=True)
class Context:
    """What acquire hands a source: the folder its artifacts go in, the per-file cap in bytes, data.http."""

    out_dir: Path
    max_bytes: int
    http: HttpParams


@dataclass(frozen=True)
class Source:
    """One corpus source.

    name: its entry in data.sources, its params key data.<name>, its folder data/raw/<name>.
    params: the pydantic model (on `Strict`) of data.<name>.
    entries: (validated data.<name>, Context) -> the source's `Item`s and `Skip`s, in a reproducible order.
    downloads: True keeps data/raw/<name> between runs (a killed download resumes, a verified archive is never
        fetched twice) and only rewrites the manifest; False rebuilds the folder and swaps it in whole.
    check: validation that applies only where the source is in data.sources (a missing path, say); it raises
        ValueError, which is reported under data.<name>.
    """

    name: str
    params: type[Strict]
    entries: Callable[[Strict, Context], Iterable[Item | Skip]]
    downloads: bool
    check: Optional[Callable[[Strict], None]] = None
