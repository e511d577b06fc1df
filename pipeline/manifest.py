"""Schemas of the acquire outputs: one manifest row per MIDI file, one skip row per file not taken."""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

MANIFEST = pa.schema([
    ("id", pa.string()),         # unique across sources: "<source>/<member>"
    ("source", pa.string()),
    ("artifact", pa.string()),   # file inside data/raw/<source>/ that holds the bytes
    ("member", pa.string()),     # path of the file inside the artifact / the original collection
    ("md5", pa.string()),
    ("bytes", pa.int64()),
    ("title", pa.string()),
    ("composer", pa.string()),
    ("license", pa.string()),
    ("split", pa.string()),      # a split fixed by the source itself (e.g. MAESTRO), else null
    ("source_id", pa.string()),  # the source's own key: LMD md5 name, MSD track id, bitmidi id, MAESTRO file
    ("year", pa.int32()),
    ("duration", pa.float64()),  # seconds, where the source states it
    ("url", pa.string()),        # where a person can see the file (bitmidi page)
])
META_COLUMNS = ("title", "composer", "license", "split", "source_id", "year", "duration", "url")

SKIPPED = pa.schema([
    ("id", pa.string()),
    ("source", pa.string()),
    ("member", pa.string()),
    ("stage", pa.string()),
    ("reason", pa.string()),     # machine-readable, e.g. too_large, unsafe_path, link, render_failed
    ("message", pa.string()),    # for people
])


@dataclass(frozen=True)
class Item:
    """A MIDI file a source hands over, with whatever metadata the source knows.

    `artifact` names the file in data/raw/<source>/ that already holds the bytes (a downloaded zip or tar);
    without it acquire stores the bytes in its Parquet shards. `data` is None for a file known only by its
    metadata (a site whose robots.txt forbids downloading it).
    """
    member: str
    data: bytes | None
    meta: dict = field(default_factory=dict)
    artifact: str | None = None


@dataclass(frozen=True)
class Skip:
    """A file a source could not take, and why."""
    member: str
    reason: str
    message: str


def make_id(source: str, member: str) -> str:
    return f"{source}/{member}"
