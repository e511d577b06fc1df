"""A user's own MIDI collection: a folder, zip or tar, searched recursively for .mid/.midi/.kar/.rmi in any case."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

from pipeline.archive import iter_path
from pipeline.manifest import Item, Skip
from pipeline.schema import Strict
from pipeline.sources.base import Context, Source
from pipeline.titles import title_from_filename


class LocalParams(Strict):
    """data.local: a folder, .zip or .tar(.gz) of the user's MIDI files; may be null while local is not a source."""

    path: Optional[str]


class LocalSourceError(RuntimeError):
    pass


def iter_local(path: str | Path, max_bytes: int) -> Iterator[Item | Skip]:
    path = Path(path).expanduser()
    if not path.exists():
        raise LocalSourceError(f"data.local.path: {path} does not exist")
    found = False
    for entry in iter_path(path, max_bytes):
        found = True
        if isinstance(entry, Item):  # the file name is the only title a local file has
            entry = Item(entry.member, entry.data, {"title": title_from_filename(entry.member)})
        yield entry
    if not found:
        raise LocalSourceError(f"data.local.path: {path} holds no .mid, .midi, .kar or .rmi file")


def _check(m: LocalParams) -> None:
    if not m.path:
        raise ValueError("data.local.path must be set when 'local' is in data.sources")


def _entries(m: LocalParams, ctx: Context) -> Iterator[Item | Skip]:
    return iter_local(m.path, ctx.max_bytes)


SOURCE = Source("local", LocalParams, _entries, downloads=False, check=_check)
