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
])

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
    """A MIDI file a source hands over, with whatever metadata the source knows."""
    member: str
    data: bytes
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Skip:
    """A file a source could not take, and why."""
    member: str
    reason: str
    message: str


def make_id(source: str, member: str) -> str:
    return f"{source}/{member}"
