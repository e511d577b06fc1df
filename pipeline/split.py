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
    """Split per row, decided per group. A split fixed by the source (MAESTRO's official one) wins over the
    hash for the member's whole group (the first fixed split by row order, if members disagree).

    When the corpus is so small that the hash leaves valid or test empty, the free group(s) with the lowest
    hash move there, so every split exists; that choice is deterministic too.
    """
    fixed: dict[str, str] = {}
    for g, s in zip(groups, source_splits):
        if s and s in _SOURCE_NAMES:
            fixed.setdefault(g, _SOURCE_NAMES[s])
    by_group = {g: fixed.get(g) or by_hash(g, valid, test) for g in dict.fromkeys(groups)}
    for split in ("test", "valid"):
        if split in by_group.values() or len(by_group) < 3:
            continue
        movable = sorted((g for g, s in by_group.items() if s == "train" and g not in fixed), key=unit_hash)
        if len(movable) > 1:
            by_group[movable[0]] = split
    return [by_group[g] for g in groups]
