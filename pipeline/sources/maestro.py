"""MAESTRO v3 (MIDI-only zip): the zip itself is the artifact; members are read straight from it.

The manifest carries the official metadata from the CSV (or JSON) inside the zip: canonical composer and
title, split (train/validation/test, chosen by MAESTRO so that no composition straddles two splits), year
and duration. Downstream splitting honours that split.
"""
from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Iterator

from pipeline.archive import iter_zip
from pipeline.manifest import Item, Skip
from pipeline.sources.base import ArchiveParams, Source, archive_entries

if TYPE_CHECKING:  # only a download needs requests (see pipeline/sources/base.py)
    from pipeline.http import Client

LICENSE = "CC BY-NC-SA 4.0"


class MaestroError(RuntimeError):
    pass


def _metadata(zf: zipfile.ZipFile) -> dict[str, dict]:
    """midi path inside the zip -> metadata row, from the CSV (preferred) or the column-oriented JSON."""
    names = zf.namelist()
    csvs = [n for n in names if n.lower().endswith(".csv") and "maestro" in PurePosixPath(n).name.lower()]
    jsons = [n for n in names if n.lower().endswith(".json") and "maestro" in PurePosixPath(n).name.lower()]
    if csvs:
        meta_name = csvs[0]
        rows = list(csv.DictReader(io.TextIOWrapper(zf.open(meta_name), encoding="utf-8")))
    elif jsons:
        meta_name = jsons[0]
        cols = json.loads(zf.read(meta_name))
        keys = sorted(cols["midi_filename"], key=int)
        rows = [{c: cols[c][k] for c in cols} for k in keys]
    else:
        raise MaestroError("no maestro-*.csv or .json metadata inside the zip: is this the MAESTRO MIDI zip?")
    base = PurePosixPath(meta_name).parent
    return {str(base / r["midi_filename"]): r for r in rows}


def _year(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _duration(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def iter_maestro(url: str, checksum: str | None, http: Client, out_dir: Path, max_bytes: int) -> Iterator[Item | Skip]:
    artifact = PurePosixPath(url.split("?")[0]).name or "maestro.zip"
    http.download(url, out_dir / artifact, checksum, desc=f"maestro {artifact}")
    with zipfile.ZipFile(out_dir / artifact) as zf:
        meta = _metadata(zf)
    for entry in iter_zip(out_dir / artifact, max_bytes):
        if isinstance(entry, Skip):
            yield entry
            continue
        row = meta.get(entry.member, {})
        yield Item(entry.member, entry.data, {
            "title": row.get("canonical_title"), "composer": row.get("canonical_composer"),
            "split": row.get("split"), "year": _year(row.get("year")), "duration": _duration(row.get("duration")),
            "source_id": row.get("midi_filename"), "license": LICENSE,
        }, artifact=artifact)


SOURCE = Source("maestro", ArchiveParams, archive_entries(iter_maestro), downloads=True)
