"""Near-duplicates: the same song in another transcription, found without names by MinHash LSH.

Each pitched part of a file becomes a set of shingles, n-grams of the pitch intervals along its top line (the
highest note at each onset). Intervals are blind to transposition; leaving time out makes them blind to tempo,
PPQ and how a transcriber quantised the rhythm; one set per part makes them blind to instrumentation and to
parts added, dropped or split differently. A MinHash signature (datasketch) estimates the Jaccard similarity of
two parts' sets (Broder, 1997); locality-sensitive hashing over bands of the signatures (Indyk & Motwani, 1998;
Leskovec, Rajaraman & Ullman, Mining of Massive Datasets, ch. 3) finds the candidate pairs without comparing all
pairs, and each candidate is checked on its whole signature. Two files are near-duplicates when their most
similar pair of parts reaches the threshold.

Why these choices (measured on the shared Lakh Beatles files, benchmarks/near_duplicates.py and
docs/benchmarks.md): per-part sets recall twice the same-song pairs whole-file sets do at the same precision;
interval-only shingles beat (interval, onset gap) ones, which differ wherever two transcriptions quantise
differently; shingles with fewer than MIN_DISTINCT distinct intervals (repeated notes, scales, arpeggios: figures
that many songs share) are left out, which is most of the gain in precision.

The signatures are computed in C (near_signatures.c, built at first use by pipeline/native.py, as the event
reader is): about 31 µs a file on the shared Lakh files against 355 µs by numpy and datasketch, 11 to 12 times
faster (benchmarks/near_signatures_speed.py, one core, 2026-12-01), the same values bit for bit. The numpy and
datasketch path (`signatures_reference`) stays the reference the tests hold the C pass to, and the fallback: where
PIPELINE_NEAR_NATIVE=0, where the C pass cannot be built (no compiler: one warning a process), and for inputs
outside its domain (onsets that are not integers, pitches outside 0..255).

The index keeps its signatures in a temporary file while the files stream in (4 bytes a part in memory: its
file's number), then writes every band's keys to another with plain writes (1 KB and 680 bytes a part on disk,
at 256 permutations and 85 bands, where Python's tempfile puts them: $TMPDIR) and takes one band at a time: read
its keys, sort them, pair the parts that share one, merge those candidates into the sorted set of distinct ones
so far. A bucket of up to ALL_PAIRS_UP_TO parts gives all its pairs; a larger one (a song in many versions) a
star round its earliest file's part, so candidates stay linear in the parts. Each distinct candidate is then
checked once on its whole signatures, read through a mapping whose pages are dropped after each chunk, and only
the best pair of parts of each passing pair of files is kept. On a large corpus a band is taken in partitions
by key value (PARTITION_PARTS parts each: a bucket never straddles two) and the candidates are held in as many
slabs, so a band's sort and a merge hold one partition's or slab's arrays, not the whole band's: memory is
about 45 bytes a part (a band's keys and their partition order, 18; the distinct candidates, 8 bytes each and
some 3 a part) plus one partition's transients (datasketch's MinHashLSH keeps every band of every key in Python
dicts: some hundreds of bytes per part per band).
"""
from __future__ import annotations

import array
import ctypes
import functools
import mmap
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import native
from pipeline.quality import sorted_unique

MIN_DISTINCT = 4     # distinct intervals a shingle needs to count (see the module docstring)
MIN_SHINGLES = 5     # a part with fewer shingles is too short to judge: it gets no signature
MAX_BUCKET = 1_000   # a band value shared by more parts than this is a figure common to many songs: skipped
ALL_PAIRS_UP_TO = 16  # a bucket of more parts gives a star of candidates, not all its pairs (see _collisions)
# LSH band sizes chosen by datasketch with a false negative weighted 9 times a false positive: every candidate is
# checked on its whole signature, so a false candidate costs one comparison and a missed one a missed pair
LSH_WEIGHTS = (0.1, 0.9)
_P, _I64 = ctypes.c_void_p, ctypes.c_int64
# the C signature pass; -O3: GCC 12 vectorises its MinHash loop at -O3, not at -O2 (the C call a third of -O2's time)
NEAR_SIGNATURES = native.Native(
    Path(__file__).with_name("near_signatures.c"), "near_signatures", ("-O3", "-shared", "-fPIC", "-std=c99"),
    (_P, _P, _I64, _P, _I64, _I64, _I64, _I64, _P, _P, _I64, _P, _I64, _P), "pipeline.near_duplicates",
    "the C near-duplicate signature pass",
    "near_duplicates.signatures runs numpy and datasketch, the same signatures, about eleven times slower",
    "PIPELINE_NEAR_NATIVE")
CHUNK = 2_048        # parts (or pairs) read from disk at a time: 2 MB of signatures each
# parts of one band taken at a time (NearIndex.pairs): what the banding holds beyond about 45 bytes a part stays
# that of this many parts however large the corpus (docs/benchmarks.md, "Prepare at scale")
PARTITION_PARTS = 1 << 15


@dataclass(frozen=True)
class NearKey:
    """What makes two files near-duplicates: shingles of `intervals` pitch intervals, `num_perm` MinHash
    permutations (seeded: the same signatures on every machine), and the `threshold` on the estimated Jaccard
    similarity of the best pair of parts."""
    intervals: int
    num_perm: int
    threshold: float
    seed: int = 1


def top_line(start: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """The highest pitch at each distinct onset, in onset order ((n,) onsets in any unit, (n,) pitches -> (m,))."""
    return _top_lines(np.zeros(len(start), np.int64), start, pitch)[1]


def _top_lines(part: np.ndarray, start: np.ndarray, pitch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every part's top line at once: (part, pitch) of the highest note at each distinct (part, onset), in part
    then onset order."""
    pitch = pitch.astype(np.int64)
    if (len(start) and np.issubdtype(start.dtype, np.integer) and 0 <= start.min() and start.max() < 1 << 40
            and part.max() < 1 << 15):
        # one argsort of a packed key where the values fit their bits (as good as always): 4x the lexsort's speed
        order = np.argsort((part << 48) | (start.astype(np.int64) << 8) | (255 - pitch), kind="stable")
    else:
        order = np.lexsort((-pitch, start, part))
    part, start = part[order], start[order]
    first = np.ones(len(start), bool)
    first[1:] = (start[1:] != start[:-1]) | (part[1:] != part[:-1])
    return part[first], pitch[order][first]


def _shingle_sets(parts: list[tuple[np.ndarray, np.ndarray]], intervals: int) -> tuple[np.ndarray, np.ndarray]:
    """The shingle sets of all of a file's parts ((onsets, pitches) each), computed together (one pass of numpy
    calls per file, not per part): (part index, shingle) pairs, sorted and unique; shingles are uint32 values."""
    lengths = [len(p) for _, p in parts]
    part = np.repeat(np.arange(len(parts), dtype=np.int64), lengths)
    start = np.concatenate([s for s, _ in parts]) if parts else np.empty(0, np.int64)
    pitch = np.concatenate([p for _, p in parts]) if parts else np.empty(0, np.int64)
    part, line = _top_lines(part, start, pitch)
    steps = np.diff(line)
    if len(steps) < intervals:
        return np.empty(0, np.int64), np.empty(0, np.uint32)
    runs = np.lib.stride_tricks.sliding_window_view(steps, intervals)
    # a run counts only inside one part: the part at its first note is the part at its last
    owner = part[:len(runs)]
    inside = owner == part[intervals:]
    ordered = np.sort(runs, axis=1)
    keep = inside & (1 + (ordered[:, 1:] != ordered[:, :-1]).sum(1) >= MIN_DISTINCT)
    runs, owner = runs[keep], owner[keep]
    h = np.zeros(len(runs), np.uint64)
    for k in range(intervals):  # a polynomial hash of the run (intervals lie in -127..127), wrapping mod 2^64
        h = h * np.uint64(1_000_003) + (runs[:, k] + 128).astype(np.uint64)
    h = (h ^ (h >> np.uint64(32))) & np.uint64(0xFFFF_FFFF)
    pairs = sorted_unique((owner.astype(np.uint64) << np.uint64(32)) | h)
    return (pairs >> np.uint64(32)).astype(np.int64), (pairs & np.uint64(0xFFFF_FFFF)).astype(np.uint32)


def shingles(start: np.ndarray, pitch: np.ndarray, intervals: int) -> np.ndarray:
    """The part's shingle set: each run of `intervals` successive pitch intervals of its top line with at least
    MIN_DISTINCT distinct values, hashed to 32 bits. Sorted unique uint32, (k,)."""
    return _shingle_sets([(start, pitch)], intervals)[1]


@functools.cache
def _permutations(num_perm: int, seed: int) -> np.ndarray:
    """datasketch's "affine32" permutations for (num_perm, seed), (2, num_perm) uint32 rows a, b: its draws
    (datasketch 2.0, MinHash._init_permutations) from numpy's RandomState(seed), a odd in [1, 2^32), then b in
    [0, 2^32). Drawn here rather than asked of datasketch, whose import loads scipy (0.4 s): prepare's workers need
    these and are forked before datasketch is wanted (tests/test_near_duplicates.py holds them to datasketch's)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return np.array([a, b])


@functools.cache
def _permutation_arrays(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """datasketch's affine32 permutations as the C pass takes them: (a, b, a's address, b's address), (num_perm,)
    uint32 each, contiguous; cached, so the addresses stay valid for the process's life."""
    a, b = (np.ascontiguousarray(x, np.uint32) for x in _permutations(num_perm, seed))
    return a, b, a.ctypes.data, b.ctypes.data


def signatures(parts: list[tuple[np.ndarray, np.ndarray]], key: NearKey) -> np.ndarray:
    """One MinHash signature per part ((onsets, pitches) each, of equal lengths) with at least MIN_SHINGLES
    shingles: (k, num_perm) uint32, k <= len(parts), in part order. datasketch's 32-bit affine scheme on the
    shingle hashes. Raises ValueError where a part's onsets and pitches differ in length.

    Computed in C (near_signatures.c, through native.load(NEAR_SIGNATURES)) where it can be, else by
    `signatures_reference` (numpy and datasketch): the same values bit for bit (tests/test_near_duplicates.py).
    PIPELINE_NEAR_NATIVE=0 takes the reference, as does a machine without a C compiler (one warning)."""
    for k, (start, pitch) in enumerate(parts):
        if len(start) != len(pitch):
            raise ValueError(f"near-duplicate signatures: part {k} has {len(start)} onsets but {len(pitch)} "
                             "pitches")
    lib = native.library(NEAR_SIGNATURES)
    if lib is not None:
        out = _signatures_native(lib, parts, key)
        if out is not None:
            return out
    return signatures_reference(parts, key)


NEAR_OK, NEAR_BAD_SIZE, NEAR_NO_MEMORY, NEAR_PITCH_RANGE = 0, 1, 2, 3  # near_signatures.c's return codes


def _signatures_native(lib, parts: list[tuple[np.ndarray, np.ndarray]], key: NearKey) -> np.ndarray | None:
    """`signatures` through near_signatures.c, or None where its inputs lie outside the C pass's domain and the
    reference must run: onsets not of an integer dtype (or uint64 past int64) once concatenated, a pitch outside
    0..255 once cast to int64 (the reference's packed sort key assumes it), intervals or num_perm under 1."""
    if key.intervals < 1 or key.num_perm < 1:
        return None
    if not parts:
        return np.empty((0, key.num_perm), np.uint32)
    # concatenated as the reference does, so that the dtypes promote the same way
    start = np.concatenate([s for s, _ in parts])
    pitch = np.concatenate([p for _, p in parts]).astype(np.int64)
    if start.dtype.kind not in "iu" or start.ndim != 1 or pitch.ndim != 1:
        return None
    if start.dtype == np.uint64 and len(start) and start.max() > np.iinfo(np.int64).max:
        return None
    start = start.astype(np.int64, copy=False)
    lengths = np.fromiter((len(p) for _, p in parts), np.int64, len(parts))
    a, b, a_at, b_at = _permutation_arrays(key.num_perm, key.seed)
    out = np.empty((len(parts), key.num_perm), np.uint32)
    kept = np.zeros(1, np.int64)
    rc = lib.near_signatures(start.ctypes.data, pitch.ctypes.data, len(pitch), lengths.ctypes.data, len(parts),
                             key.intervals, MIN_DISTINCT, MIN_SHINGLES, a_at, b_at, key.num_perm, out.ctypes.data,
                             len(out), kept.ctypes.data)
    if rc == NEAR_PITCH_RANGE:
        return None
    if rc == NEAR_NO_MEMORY:
        raise MemoryError(f"near_signatures.c: no scratch memory for parts of up to {lengths.max()} notes")
    if rc != NEAR_OK:
        raise RuntimeError(f"near_signatures.c refused the sizes given it (code {rc}): a bug, they are checked here")
    k = int(kept[0])
    return out if k == len(out) else out[:k].copy()


def signatures_reference(parts: list[tuple[np.ndarray, np.ndarray]], key: NearKey) -> np.ndarray:
    """`signatures` by numpy (_shingle_sets) and datasketch's MinHash: the reference the C pass is held to, and
    its fallback."""
    from datasketch import MinHash
    perms = _permutations(key.num_perm, key.seed)
    owner, values = _shingle_sets(parts, key.intervals)
    cuts = np.searchsorted(owner, np.arange(len(parts) + 1))
    out = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        if hi - lo < MIN_SHINGLES:
            continue
        m = MinHash(num_perm=key.num_perm, seed=key.seed, hashfunc=int, permutations=perms, scheme="affine32")
        m.update_batch(values[lo:hi].tolist())
        out.append(m.hashvalues.astype(np.uint32))
    return np.asarray(out, np.uint32).reshape(-1, key.num_perm)


@functools.cache
def bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(b bands, r rows each), b * r <= num_perm, for LSH at `threshold`: the pair that minimises LSH_WEIGHTS'
    weighted sum of the false positive and false negative areas, the integrals over the similarity s of the
    candidate probability 1 - (1 - s^r)^b below the threshold and of its complement above it (Leskovec,
    Rajaraman & Ullman, Mining of Massive Datasets, 3.4), the first such pair in (b, r) order. That is how
    datasketch's MinHashLSH chooses them; it integrates with scipy's quad, this with composite Gauss-Legendre
    (64 panels of 16 nodes each side: the same choice on every threshold from 0.05 to 0.95 by 0.05 at 16 to 512
    permutations, tests/test_near_duplicates.py), r by r: s^r once for every b it pairs with, 15 ms at 256
    permutations and no datasketch and scipy import (0.4 s) in prepare's main process."""
    x, w = np.polynomial.legendre.leggauss(16)

    def nodes(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        edges = np.linspace(lo, hi, 65)
        half = (edges[1:] - edges[:-1])[:, None] / 2
        return (((edges[:-1] + edges[1:])[:, None] / 2) + half * x).ravel(), (half * w).ravel()

    (s_lo, w_lo), (s_hi, w_hi) = nodes(0.0, threshold), nodes(threshold, 1.0)
    error = {}
    for r in range(1, num_perm + 1):
        b = np.arange(1, num_perm // r + 1, dtype=np.float64)[:, None]
        p_lo, p_hi = s_lo ** float(r), s_hi ** float(r)  # a band's chance to match, for every b at once
        false_positive = (1 - (1 - p_lo) ** b) @ w_lo
        false_negative = ((1 - p_hi) ** b) @ w_hi
        for k, e in enumerate((LSH_WEIGHTS[0] * false_positive + LSH_WEIGHTS[1] * false_negative).tolist(), 1):
            error[k, r] = e
    return min(sorted(error), key=error.__getitem__)  # the first least in (b, r) order, as datasketch scans


class NearIndex:
    """Part signatures of many files, on disk; `pairs` finds the file pairs whose best parts reach the threshold.

    Files are numbered by the caller (0, 1, ...); add each file's signatures once."""

    def __init__(self, key: NearKey) -> None:
        self.key = key
        # the permutations and the C signature pass, done here, before prepare's pool forks its workers, so that
        # they inherit them instead of each paying for them (neither imports datasketch: its import loads scipy)
        _permutation_arrays(key.num_perm, key.seed)
        native.library(NEAR_SIGNATURES)  # the C signatures built or loaded (where switched on)
        self._file = tempfile.TemporaryFile()
        self._owner = array.array("i")  # the file number of each part, in the order added: 4 bytes a part
        self.parts = 0

    def add(self, file_no: int, sigs: np.ndarray) -> None:
        if len(sigs):
            self._file.write(np.ascontiguousarray(sigs, np.uint32).tobytes())
            self._owner.extend([file_no] * len(sigs))
            self.parts += len(sigs)

    def close(self) -> None:
        self._file.close()

    def pairs(self, live: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """File pairs (a < b, both with live[a], live[b] true) whose most similar parts' estimated Jaccard reaches
        the threshold: (a, b, similarity) sorted by (a, b), and the number of crowded band values skipped
        (MAX_BUCKET). One pass over the signatures writes every band's keys to disk; then each band's keys are
        read back alone and their candidates merged; then each distinct candidate is checked once."""
        empty = np.empty(0, np.int64)
        if not self.parts:
            return empty, empty, np.empty(0), 0
        self._file.flush()
        owner = np.frombuffer(self._owner, np.int32)
        # the live parts in file order, so that a large bucket's star centres on its earliest file (the one that
        # dedupe.near.drop_above keeps), whatever order the files were read in
        keep = np.flatnonzero(live[owner])
        keep = keep[np.argsort(owner[keep], kind="stable")]
        b, r = bands(self.key.threshold, self.key.num_perm)
        n = np.int64(self.parts)
        slabs = -(-len(keep) // PARTITION_PARTS)  # a band's keys, and the candidates, taken in this many pieces
        seen, skipped = _Candidates(self.parts, slabs), 0
        with _Signatures(self._file, self.parts, self.key.num_perm) as sigs, tempfile.TemporaryFile() as keys:
            fetched = np.empty((2, CHUNK, self.key.num_perm), np.uint32)  # two chunks' rows, reused
            for lo in range(0, len(keep), CHUNK):
                part = keep[lo:lo + CHUNK]
                rows = sigs.rows(part, fetched[0, :len(part)])
                folded = np.zeros((len(rows), b), np.uint64)
                for c in range(r):  # the band's r values folded into one 64-bit key (wrapping), from strided views
                    folded *= np.uint64(0x9E37_79B9_7F4A_7C15)
                    folded += rows[:, c:b * r:r]
                for band in range(b):  # each band's keys contiguous in the file, written with plain writes
                    keys.seek((band * len(keep) + lo) * 8)
                    keys.write(np.ascontiguousarray(folded[:, band]).tobytes())
            for band in tqdm(range(b), desc="near-duplicates", unit="band", mininterval=1):
                keys.seek(band * len(keep) * 8)
                for part_keys, part_rows in _partitions(np.fromfile(keys, np.uint64, len(keep)), keep, slabs):
                    i, j, crowded = _collisions(part_keys, part_rows, owner)
                    skipped += crowded
                    seen.add(i * n + j)
                seen.merge()
            files = np.int64(owner.max()) + 1
            found = []  # each chunk's passing pairs of files, the best pair of parts each: memory in the pairs
            for codes in seen.chunks(CHUNK):  # each candidate checked once, in code order
                i, j = codes // n, codes % n
                x = (sigs.rows(i, fetched[0, :len(i)]) == sigs.rows(j, fetched[1, :len(j)])).mean(1)
                ok = x >= self.key.threshold
                found.append(_best(_file_pairs(owner[i[ok]], owner[j[ok]], files), x[ok]))
            del seen
        if not found:
            return empty, empty, np.empty(0), skipped
        pair, sim = (np.concatenate(c) for c in zip(*found))
        del found
        pair, sim = _best(pair, sim)  # the best pair of parts per pair of files, over the chunks
        return pair // files, pair % files, sim, skipped


def _file_pairs(fi: np.ndarray, fj: np.ndarray, files: np.int64) -> np.ndarray:
    """Pairs of file numbers ((m,) each, fi != fj) as codes a * files + b with a < b: (m,) int64, whose order is
    that of (a, b)."""
    return np.minimum(fi, fj).astype(np.int64) * files + np.maximum(fi, fj)


def _best(pair: np.ndarray, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct code of `pair` once, in ascending order, with its highest similarity: ((k,) int64, (k,))."""
    order = np.lexsort((-sim, pair))
    pair, sim = pair[order], sim[order]
    first = np.ones(len(pair), bool)
    first[1:] = pair[1:] != pair[:-1]
    return pair[first], sim[first]


def _partitions(keys: np.ndarray, rows: np.ndarray, pieces: int):
    """One band's keys ((m,) uint64, keys[k] that of part rows[k]) in `pieces` partitions by key value, each as
    (keys, rows) in the order given: every part sharing a key lies in one partition, with the others of its
    bucket in their order, so _collisions finds the same candidates partition by partition as over the whole band,
    holding a partition's transients, not the band's."""
    if pieces <= 1:
        yield keys, rows
        return
    piece = (keys % np.uint64(pieces)).astype(np.uint16 if pieces <= 1 << 16 else np.uint32)
    order = np.argsort(piece, kind="stable")  # a radix sort for 16-bit values; stable: the given order kept
    cuts = np.r_[0, np.cumsum(np.bincount(piece, minlength=pieces))]
    del piece
    for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        if hi > lo:
            at = order[lo:hi]
            yield keys[at], rows[at]


class _Candidates:
    """The distinct candidate pairs of parts, as sorted codes i * n + j (i < j < n parts), in `slabs` slabs by i:
    codes are added a partition at a time and merged into the slabs once a band (`merge`), slab by slab, so a
    merge holds one slab's codes twice, not all of them, and each slab is merged once a band, not once a partition
    (every partition has codes in nearly every slab: merged a partition at a time, a band would cost the pieces
    times the candidates, 1.1 s against 0.06 at 2 million parts).

    Merged by sorting (np.union1d's hash-based unique is 100x slower on millions of codes), with timsort: a slab
    and the sorted new codes are two runs it merges in linear time, where the default sort starts over (24 ms
    against 3 ms a band at 360,000 candidates; 2 s of 11 at 20,000 distinct files)."""

    def __init__(self, n: int, slabs: int) -> None:
        slabs = max(1, min(slabs, n))
        width = -(-n // slabs)  # parts i of a slab
        self.bounds = np.arange(1, slabs, dtype=np.int64) * width * np.int64(n)  # the codes that start slabs 1..
        self.slabs = [np.empty(0, np.int64) for _ in range(slabs)]
        self._added: list[list[np.ndarray]] = [[] for _ in range(slabs)]  # each slab's codes not yet merged

    def add(self, codes: np.ndarray) -> None:
        """Codes ((m,) int64, any order, repeats allowed), held by slab until `merge`."""
        if not len(codes):
            return
        codes = np.sort(codes, kind="stable")  # timsort: _collisions gives its pairs in sorted runs
        cuts = [0, *np.searchsorted(codes, self.bounds).tolist(), len(codes)]
        for s, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:])):
            if hi > lo:
                self._added[s].append(codes[lo:hi])

    def merge(self) -> None:
        """The codes added since the last merge, merged into their slabs."""
        for s, added in enumerate(self._added):
            if added:
                self.slabs[s] = sorted_unique(np.concatenate([self.slabs[s], *added]), runs=True)
                added.clear()

    def chunks(self, size: int):
        """The merged codes in ascending order, `size` at a time."""
        for slab in self.slabs:
            for lo in range(0, len(slab), size):
                yield slab[lo:lo + size]


class _Signatures:
    """The signature file mapped read-only, rows fetched by index. Each fetch copies its rows out and then drops
    the mapped pages from this process (madvise MADV_DONTNEED: read again from the file, or the page cache, when
    needed), so the mapping never counts towards the resident memory: only the rows asked for do."""

    def __init__(self, file, parts: int, num_perm: int) -> None:
        self._map = mmap.mmap(file.fileno(), parts * num_perm * 4, prot=mmap.PROT_READ)
        self._shape = (parts, num_perm)

    def rows(self, index: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The rows `index` ((m,) ints, each below the number of parts) as (m, num_perm) uint32, copied into
        `out` ((m, num_perm) uint32, contiguous) and returned: a buffer the caller reuses, as a fresh array of
        2 MB is a fresh mapping whose pages fault in on every fetch (0.3 s of the checks' 0.5 s at 20,000
        distinct files, docs/benchmarks.md)."""
        view = np.frombuffer(self._map, np.uint32).reshape(self._shape)
        # mode="clip" writes straight into `out` (numpy buffers `out` under the default "raise"); the indices are
        # the index's own part numbers, never out of range
        np.take(view, index, axis=0, out=out, mode="clip")
        del view  # no export left, so the map can be advised and closed
        if hasattr(mmap, "MADV_DONTNEED"):  # POSIX; elsewhere the pages stay mapped (correct, just resident)
            self._map.madvise(mmap.MADV_DONTNEED)
        return out

    def __enter__(self) -> "_Signatures":
        return self

    def __exit__(self, *exc) -> None:
        self._map.close()


def _collisions(keys: np.ndarray, rows: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Candidate pairs of parts (i, j: part indices, i < j, of different files) from one band, and how many keys
    were shared by more than MAX_BUCKET parts (skipped). `keys[k]` is part `rows[k]`'s key.

    A bucket of parts that share a key gives all its pairs up to ALL_PAIRS_UP_TO parts; a larger one (a song in
    many versions) gives a star, each member with the bucket's first part in `rows` order (NearIndex.pairs
    passes the parts in file order: the earliest file's): m - 1 candidates instead of m(m - 1)/2, the same in
    every band it recurs in, so the work and the pairs recorded stay linear in the parts. Members join each other
    through the centre where their checks against it pass."""
    order = np.argsort(keys, kind="stable")
    k, rows = keys[order], rows[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    sizes = np.diff(np.r_[starts, len(k)])
    crowded = sizes > MAX_BUCKET
    small, star = (sizes > 1) & (sizes <= ALL_PAIRS_UP_TO), (sizes > ALL_PAIRS_UP_TO) & ~crowded
    pairs_a, pairs_b = [], []
    # all pairs of the small buckets: step d pairs each part with the one d places after it in its bucket
    stop = np.repeat(np.where(small, starts + sizes, starts), sizes)  # one past each part's bucket (or none)
    at = np.flatnonzero(stop - np.arange(len(k)) > 1)
    d = 1
    while len(at):
        pairs_a.append(rows[at])
        pairs_b.append(rows[at + d])
        d += 1
        at = at[stop[at] - at > d]
    # stars of the large ones
    member = np.flatnonzero(np.repeat(star, sizes))
    pairs_a.append(rows[np.repeat(starts[star], sizes[star])])
    pairs_b.append(rows[member])
    a, b = np.concatenate(pairs_a), np.concatenate(pairs_b)
    other = owner[a] != owner[b]
    a, b = a[other], b[other]
    return np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64), int(crowded.sum())
