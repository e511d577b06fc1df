"""The corpus that ships inside music21, rendered to MIDI: the offline default, so a fresh clone needs no network.

Collections are music21's corpus folders (`bach`, `beethoven`, `nottingham-dataset`, `oneills1850`, ...).
ABC files there are opera of many tunes; each tune becomes its own MIDI file (`<file>#<n>`).
"""
from __future__ import annotations

import importlib.util
import os
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from pydantic import Field

from pipeline.manifest import Item, Skip
from pipeline.schema import Strict
from pipeline.sources.base import Context, Source

SCORE_SUFFIXES = frozenset({".mxl", ".xml", ".musicxml", ".krn", ".abc", ".mid", ".midi"})
LICENSE = "music21 corpus (BSD-3-Clause package; see music21 for each work's terms)"


class Music21Params(Strict):
    """data.music21: corpus collections to render, and a cap on the score files taken."""

    composers: list[str] = Field(min_length=1)
    max_files: int = Field(ge=0, description="0 takes every work")


def corpus_root() -> Path:
    """music21's corpus folder, found without importing music21 (0.65 s that every stage would pay)."""
    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("music21 is not installed: `pip install music21`, or drop music21 from data.sources")
    return Path(next(iter(spec.submodule_search_locations))) / "corpus"


@lru_cache(maxsize=1)
def corpus_collections() -> frozenset[str]:
    """Names of the corpus folders that hold at least one score."""
    root = corpus_root()
    return frozenset(
        d.name for d in root.iterdir()
        if d.is_dir() and not d.name.startswith("_") and any(_scores(d))
    )


def _scores(folder: Path) -> Iterator[Path]:
    return (p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SCORE_SUFFIXES)


def list_works(collections: list[str], max_files: int = 0) -> list[str]:
    """Corpus-relative paths of the score files to render, sorted, capped at `max_files` (0 = all)."""
    root = corpus_root()
    paths = sorted({p.relative_to(root).as_posix() for c in collections for p in _scores(root / c)})
    return paths[:max_files] if max_files else paths


def _text(value) -> str | None:
    return str(value).strip() if value not in (None, "") else None


def render(rel: str) -> list[Item | Skip]:
    """Parse one corpus file and render every score in it to MIDI bytes."""
    from music21 import converter, midi, stream

    try:
        parsed = converter.parse(corpus_root() / rel)
        scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
    except Exception as e:  # music21 raises many exception types for bad scores
        return [Skip(rel, "render_failed", f"music21 could not parse: {type(e).__name__}: {e}")]
    out: list[Item | Skip] = []
    for n, score in enumerate(scores):
        member = f"{rel}#{n}" if len(scores) > 1 else rel
        try:
            data = midi.translate.streamToMidiFile(score).writestr()
        except Exception as e:
            out.append(Skip(member, "render_failed", f"music21 could not write MIDI: {type(e).__name__}: {e}"))
            continue
        md = score.metadata
        title = (_text(md.title) or _text(md.movementName)) if md is not None else None
        composer = _text(md.composer) if md is not None else None
        out.append(Item(member, data, {
            "title": title or Path(rel).stem,
            "composer": composer or rel.split("/", 1)[0],
            "license": LICENSE,
        }))
    return out


def iter_corpus(collections: list[str], max_files: int, workers: int) -> Iterator[Item | Skip]:
    """Render in a process pool; results come back in sorted file order, so outputs are reproducible."""
    works = list_works(collections, max_files)
    if workers <= 1:
        for rel in works:
            yield from render(rel)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for items in pool.map(render, works, chunksize=4):
            yield from items


def _check(m: Music21Params) -> None:
    """Every collection exists; run only where music21 is a source, as a machine that only trains needs no music21."""
    known = corpus_collections()
    unknown = [n for n in m.composers if n not in known]
    if unknown:
        raise ValueError(f"composers: unknown music21 corpus collection(s) {unknown}; known: {sorted(known)}")


def _entries(m: Music21Params, ctx: Context) -> Iterator[Item | Skip]:
    return iter_corpus(m.composers, m.max_files, workers=os.cpu_count() or 1)


SOURCE = Source("music21", Music21Params, _entries, downloads=False, check=_check)
