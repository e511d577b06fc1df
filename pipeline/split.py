"""Leak-free splits: a piece's split is a function of its group id alone, so a group never straddles splits."""
from __future__ import annotations

import hashlib

SPLITS = ("train", "valid", "test")
_SOURCE_NAMES = {"train": "train", "validation": "valid", "valid": "valid", "test": "test"}


def unit_hash(group: str) -> float:
    """A stable number in [0, 1) for a group id (sha256, not Python's salted hash())."""
    return int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "big") / 2**64


def by_hash(group: str, valid: float, test: float) -> str:
    u = unit_hash(group)
    return "test" if u < test else "valid" if u < test + valid else "train"


def assign(groups: list[str], source_splits: list[str | None], valid: float, test: float) -> list[str]:
    """Split per row. A split given by the source (MAESTRO's official one) wins over the hash.

    When the corpus is so small that the hash leaves valid or test empty, the train group(s) with the
    lowest hash move there, so every split exists; that choice is deterministic too.
    """
    out = [_SOURCE_NAMES.get(s or "", None) or by_hash(g, valid, test) for g, s in zip(groups, source_splits)]
    for split in ("test", "valid"):
        if split in out or len(set(groups)) < 3:
            continue
        movable = sorted({g for g, s, src in zip(groups, out, source_splits) if s == "train" and not src},
                         key=unit_hash)
        if len(movable) > 1:
            out = [split if g == movable[0] else s for g, s in zip(groups, out)]
    return out
