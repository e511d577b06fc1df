"""The event pass of pipeline.smf.read in compiled C (smf_events.c), built at first use by pipeline/native.py and
loaded with ctypes (`-O2 -shared -fPIC -std=c99`).

The fallback: `scan` returns None, and smf.read runs its Python loop (the reference, same results), where
PIPELINE_SMF_NATIVE=0, where the library cannot be had (no compiler, a failed build: one warning per process),
and for a file whose ticks pass int64 (the Python loop's ticks are exact integers).
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline import native
from pipeline.native import Native

SOURCE = Path(__file__).with_name("smf_events.c")
FLAGS = ("-O2", "-shared", "-fPIC", "-std=c99")

# smf_events.c's tables (rows of this many int64 values each, in this order in the arena) and results
WIDTHS = (6, 4, 4, 2, 3, 2, 3)  # notes, programs, pedals, tempos, sigs, names, pending note-ons (scratch)
N_COUNTS = 11                  # rows per table but pending, note-ons, recovered, end tick, bad byte, irregular
OK, INVALID_EVENT, RANGE = 0, 1, 2


class Scan(NamedTuple):
    """What smf_events.c found in a file's track chunks: int64 arrays of rows, in the Python loop's order."""
    notes: np.ndarray     # (n, 6): track, channel, pitch, start tick, end tick, velocity
    programs: np.ndarray  # (n, 4): tick, track, channel, program
    pedals: np.ndarray    # (n, 4): CC64 events: tick, track, channel, down (0/1)
    tempos: np.ndarray    # (n, 2): tick, microseconds per quarter note
    sigs: np.ndarray      # (n, 3): tick, numerator, denominator exponent
    names: np.ndarray     # (tracks, 2): each track chunk's last name as (offset in the data, length); -1: none
    note_ons: int
    recovered: int
    end_tick: int
    bad_byte: int | None  # the data byte found where a status byte is needed (the file is invalid), else None
    irregular: int        # smf.IRREGULAR_* bits


_P, _I64 = ctypes.c_void_p, ctypes.c_int64
SMF_EVENTS = Native(SOURCE, "smf_events", FLAGS, (_P, _I64, _I64, _P, _P, _P), "pipeline.smf_native",
                    "the C event reader", "smf.read runs its Python loop, same results, about seven times slower",
                    "PIPELINE_SMF_NATIVE", (("smf_parts", (_P, _I64, _P, _I64, _I64, _P, _P, _P, _P)),),
                    (native.RADIX_SORT,))


def library() -> ctypes.CDLL | None:
    """The event reader (smf_events.c), as native.load gives it."""
    return native.load(SMF_EVENTS)


def enabled() -> bool:
    """False where PIPELINE_SMF_NATIVE=0: smf.read then runs its Python loop."""
    return native.enabled(SMF_EVENTS)


def capacities(n: int) -> np.ndarray:
    """Upper bounds on each table's rows for n bytes of file, from the fewest bytes each row's event takes
    (a delta byte and the event's own): a note-on or pedal event 3, a program change 2, a tempo or time
    signature 4, a track chunk's header 8. int64, one per table."""
    return np.array([n // 3, n // 2, n // 3, n // 4, n // 4, n // 8, n // 3], np.int64) + 1


def scan(data: bytes, pos: int) -> Scan | None:
    """The events of `data`'s chunks from byte `pos` on (just past the header chunk), or None: run the Python
    loop instead (disabled, no library, or ticks past int64)."""
    lib = native.library(SMF_EVENTS)
    if lib is None:
        return None
    buf = np.frombuffer(data, np.uint8)  # no copy; alive (so the address valid) until the call returns
    return scan_at(lib, buf.ctypes.data, len(buf), pos)


def first_capacities(n: int) -> np.ndarray:
    """The tables' rows tried first; a file that fills a table is read again with the bounds. An eighth of the
    bounds (about 8 bytes of arena per byte of file instead of 63, so a 16 MB file asks for 128 MB, not 1 GB),
    but for the notes and the pending note-ons of a file up to 4 MB: n // 6, as a note whose note-off comes takes
    at least 6 bytes (two events of a delta byte and two data bytes). An eighth of their bounds was too few for
    most Lakh files (about 8 bytes a note), each then read twice, the second time into a fresh 2 MB arena: two
    thirds of the event pass's time. Up to 4 MB this asks for about 17 bytes of arena per byte of file."""
    caps = capacities(n) // 8 + 64
    if n <= 4 << 20:
        caps[0] = caps[6] = n // 6 + 64
    return caps


def scan_at(lib: ctypes.CDLL, address: int, n: int, pos: int) -> Scan | None:
    """smf_events.c on the n bytes at `address`, as `scan` (which see); the caller keeps them alive."""
    for caps in (first_capacities(n), capacities(n)):
        arena = np.empty(int(np.dot(caps, WIDTHS)), np.int64)
        counts = np.zeros(N_COUNTS, np.int64)
        rc = lib.smf_events(address, n, pos, arena.ctypes.data, caps.ctypes.data, counts.ctypes.data)
        if rc != RANGE:
            break
    else:  # RANGE with the bounds too: ticks past int64
        return None
    got = counts.tolist()
    tables, at = [], 0
    for rows, cap, width in zip(got[:6], caps.tolist(), WIDTHS):
        tables.append(arena[at:at + rows * width].reshape(rows, width))
        at += cap * width
    notes, programs, pedals, tempos, sigs, names = tables
    # copies of the small tables that the Song keeps: a view would keep the whole arena alive
    return Scan(notes, programs, pedals, tempos.copy(), sigs.copy(), names, got[6], got[7], got[8],
                got[9] if rc == INVALID_EVENT else None, got[10])


def parts(notes: np.ndarray, programs: np.ndarray, independent_tracks: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """smf.read's grouping of notes into parts, in C (smf_parts in smf_events.c; smf._parts_reference is its
    reference): notes (n, 6) int64 rows as Scan.notes, programs (m, 4) int64 rows as Scan.programs. Returns
    (cols, bounds): cols (7, n) int64, the notes in part order as rows track, channel, program, pitch, start,
    end, velocity; bounds (parts + 1,) int64, each part's first note, then n. None where the C pass is off or
    missing, or a value does not fit its packed sort key: run the reference."""
    lib = native.library(SMF_EVENTS)
    if lib is None:
        return None
    notes = np.ascontiguousarray(notes, np.int64)
    programs = np.ascontiguousarray(programs, np.int64)
    n, m = len(notes), len(programs)
    cols = np.empty((7, n), np.int64)
    bounds = np.empty(n + 1, np.int64)
    scratch = np.empty(4 * max(n, m, 1), np.int64)
    count = np.zeros(1, np.int64)
    rc = lib.smf_parts(notes.ctypes.data, n, programs.ctypes.data, m, int(independent_tracks), cols.ctypes.data,
                       bounds.ctypes.data, scratch.ctypes.data, count.ctypes.data)
    if rc != OK:
        return None
    return cols, bounds[:int(count[0]) + 1]
