"""Duplicates at three levels, and the groups they form.

1. exact bytes: the md5 of the file;
2. same music: a hash of the quantised note content, blind to tempo, PPQ, track order, programs, leading silence
   and (optionally) transposition;
3. same song: normalised artist + title from the source's metadata or the file name (pipeline/titles.py, which
   acquire reads file names with too, without this module's C measures).

Levels 1 and 2 drop the later copy (recorded with `duplicate_of`); all three join files into groups, and
convert splits by group, so no group straddles train and test, across corpora too.
"""
from __future__ import annotations

import array
import hashlib
from dataclasses import dataclass

import numpy as np

from pipeline import measures_native
from pipeline.quality import sorted_unique

DRUM_OFFSET = 128  # drum notes keep their own key space: never transposed, never equal to a pitched note


@dataclass(frozen=True)
class ContentKey:
    steps_per_beat: int = 4
    transpose_invariant: bool = True


def content_hash_of(tracks: list[tuple[bool, np.ndarray, np.ndarray]], tpq: int,
                    key: ContentKey = ContentKey()) -> str | None:
    """sha1 of the sorted set of (onset step, pitch) over a file's parts, given as (is_drum, onset ticks,
    pitches) each; None for a file without notes. prepare passes its own drum decision for each part.

    The pairs come from C (measures_native.content_pairs) where they can, else from content_hash_reference:
    the same pairs, so the same hash."""
    if not tracks:
        return None
    pairs = measures_native.content_pairs(tracks, tpq, key.steps_per_beat, key.transpose_invariant, DRUM_OFFSET)
    if pairs is None:
        return content_hash_reference(tracks, tpq, key)
    return _digest(pairs)


def _digest(pairs: np.ndarray) -> str:
    # 4 bytes a pair whenever they fit (all but absurdly long files): half the bytes to hash; the choice
    # depends only on the pairs, so the same music always hashes the same
    width = "<u4" if pairs[-1] < 1 << 32 else "<i8"
    return hashlib.sha1(pairs.astype(width).tobytes()).hexdigest()


def content_hash_reference(tracks: list[tuple[bool, np.ndarray, np.ndarray]], tpq: int,
                           key: ContentKey = ContentKey()) -> str | None:
    """content_hash_of in numpy: the rule note_measures.c's pairs are held to."""
    if not tracks:
        return None
    t = np.concatenate([s for _, s, _ in tracks]).astype(np.float64)
    # the step nearest t * steps / tpq: t * steps is exact in float64 and the one division is correctly
    # rounded, so equal ratios (the same music at another PPQ) give equal steps
    t = np.rint(t * key.steps_per_beat / tpq)
    t -= t.min()
    # pitches shift per track: drums into their own key space, the rest down to the lowest pitched note
    pitched = [p.min() for d, _, p in tracks if not d]
    low = int(min(pitched)) if pitched and key.transpose_invariant else 0
    shift = np.repeat(np.array([DRUM_OFFSET if d else -low for d, _, _ in tracks], np.int32),
                      [len(p) for _, _, p in tracks])
    p = np.concatenate([p for _, _, p in tracks]).astype(np.int32) + shift
    small = t.max() < 1 << 22  # step * 512 + pitch fits in int32: sorts twice as fast
    # a set: unisons and repeats collapse. Parts come in onset order, so the pairs are sorted runs
    return _digest(sorted_unique(t.astype(np.int32 if small else np.int64) * 512 + p, runs=True))


def first_of_each(keys: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """For each item, the first item (smallest number) with its key: (n,) int64, -1 where `valid` ((n,) bool, all
    where None) is false. keys: (n,) array of any sortable dtype. An item is the first of its key when
    first[k] == k; the others are its copies."""
    items = np.arange(len(keys)) if valid is None else np.flatnonzero(valid)
    order = items[np.argsort(keys[items], kind="stable")]  # stable: equal keys stay in item order
    k = keys[order]
    starts = np.ones(len(order), bool)
    starts[1:] = k[1:] != k[:-1]
    first = np.full(len(keys), -1, np.int64)
    first[order] = order[np.flatnonzero(starts)[np.cumsum(starts) - 1]]
    return first


class UnionFind:
    """Union-find over the items 0..n-1 (Tarjan, 1975; path halving): 4 bytes an item, so grouping a web-scale
    corpus costs a few MB. Which item becomes a root is arbitrary; `labels` names each component by its root and
    callers name groups by something independent of the order of unions (prepare: the smallest id)."""

    def __init__(self, n: int) -> None:
        self.parent = array.array("i", range(n))

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = p[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def union_pairs(self, a: np.ndarray, b: np.ndarray) -> None:
        """Union a[k] with b[k] for every k ((m,) integer arrays)."""
        for x, y in zip(a.tolist(), b.tolist()):
            self.union(x, y)

    def join_by(self, keys: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Union every pair of items that share a key ((n,) array of any sortable dtype; `valid`: (n,) bool, the
        items whose key counts, all where None)."""
        first = first_of_each(keys, valid)
        later = np.flatnonzero(first >= 0)
        later = later[first[later] != later]
        self.union_pairs(first[later], later)

    def labels(self) -> np.ndarray:
        """Each item's root: (n,) int32; items share a label exactly when they are in one component."""
        p = np.array(self.parent, np.int32)
        while True:  # pointer jumping: every chain halves each round
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q


def smallest_member(labels: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each item, the item of its component with the smallest rank ((n,) labels from UnionFind.labels, (n,)
    distinct ranks such as each id's place in id order) -> (n,) int64 item numbers: a group's name is then
    independent of the order in which its members were joined."""
    least = np.full(len(labels), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(least, labels, rank.astype(np.int64))
    by_rank = np.empty(len(rank), np.int64)
    by_rank[rank] = np.arange(len(rank))
    return by_rank[least[labels]]
