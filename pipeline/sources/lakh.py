"""The Lakh MIDI Dataset: LMD-full, LMD-matched or clean_midi tarballs, kept whole and streamed, never extracted.

The layout tells what a member is: `lmd_full/<h>/<md5>.mid` (named by the md5 of its bytes),
`lmd_matched/<A>/<B>/<C>/<MSD track id>/<md5>.mid`, or `clean_midi/<Artist>/<Title>[.N].mid`, which gives
artist and title (`.N` numbers further versions of one song).
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Iterator

from pipeline.archive import iter_tar
from pipeline.manifest import Item, Skip
from pipeline.sources.base import ArchiveParams, Source, archive_entries

if TYPE_CHECKING:  # only a download needs requests (see pipeline/sources/base.py)
    from pipeline.http import Client

LICENSE = "CC BY 4.0"
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_MSD = re.compile(r"^TR[A-Z0-9]{16}$")
_VERSION = re.compile(r"\.\d+$")


def describe(member: str) -> dict:
    """Metadata that the member's path gives."""
    p = PurePosixPath(member)
    parts = p.parts
    stem = p.stem
    meta: dict = {"license": LICENSE}
    if len(parts) >= 3 and "clean_midi" in parts[:-2]:
        meta["composer"] = parts[-2]
        meta["title"] = _VERSION.sub("", stem)
        meta["source_id"] = f"{parts[-2]}/{stem}"
    elif _MD5.match(stem):
        msd = parts[-2] if len(parts) >= 2 and _MSD.match(parts[-2]) else None
        meta["source_id"] = f"{msd}/{stem}" if msd else stem
    return meta


def iter_lakh(url: str, checksum: str | None, http: Client, out_dir: Path, max_bytes: int) -> Iterator[Item | Skip]:
    artifact = PurePosixPath(url.split("?")[0]).name or "lmd.tar.gz"
    http.download(url, out_dir / artifact, checksum, desc=f"lakh {artifact}")
    for entry in iter_tar(out_dir / artifact, max_bytes):
        if isinstance(entry, Skip):
            yield entry
        else:
            yield Item(entry.member, entry.data, describe(entry.member), artifact=artifact)


SOURCE = Source("lakh", ArchiveParams, archive_entries(iter_lakh), downloads=True)
