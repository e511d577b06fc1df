"""smf.read's speed per file with its event pass in C (pipeline/smf_events.c) and in Python (the reference loop),
on the same files in one run.

Usage: python benchmarks/smf_read_speed.py [MIDI_DIR] [--runs N]
Default MIDI_DIR is ../shared/data/midi/lakh (every .mid below it). Each path reads every file once per run; the
figures are the median of N runs (default 5), single process, so per core:
- read: the whole of smf.read per file, in microseconds (the event pass, then the grouping into parts, the
  programs and the pedals, the same code on both paths);
- event pass: smf._events_native (the C call, and its programs and pedals turned into the lists the rest of read
  takes) against smf._events_python, per file, and in events per second: every event of every track chunk,
  counted once here (delta time and its event, metas and sysex included).
Pedal-heavy piano performances (../shared/data/midi/maestro) gain less: there the lists of CC64 events and
smf._pedals, Python on both paths, cost more than the C pass.
Prints figures; it is not a test (tests/test_smf_native.py checks that both paths give the same Songs).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from pipeline import smf, smf_native


def _vlq(data: bytes, i: int, end: int) -> tuple[int, int]:
    """A variable-length quantity at data[i]: (its value, the index past it)."""
    value = 0
    while i < end:
        c = data[i]
        i += 1
        value = (value << 7) | (c & 0x7F)
        if not c & 0x80:
            break
    return value, i


def count_events(data: bytes) -> int:
    """The events of a file's track chunks, by a plain walk (running status applied; a cut final event counts)."""
    data = smf.unwrap(data)
    pos, n = 8 + int.from_bytes(data[4:8], "big"), 0
    while pos + 8 <= len(data):
        is_track, size = data[pos:pos + 4] == b"MTrk", int.from_bytes(data[pos + 4:pos + 8], "big")
        i, end, status = pos + 8, min(pos + 8 + size, len(data)), 0
        while is_track and i < end:
            _, i = _vlq(data, i, end)  # the delta time
            if i >= end:
                break
            c = data[i]
            if c >= 0xF0:  # meta (FF type length data) or sysex (F0/F7 length data)
                length, i = _vlq(data, i + (2 if c == 0xFF else 1), end)
                i += length
            else:
                if c & 0x80:
                    status, i = c, i + 1
                i += 1 if status & 0xE0 == 0xC0 else 2  # program change and channel pressure: one data byte
            n += 1
        pos = end
    return n


def median_seconds(fn, blobs: list[bytes], runs: int) -> float:
    """The median over `runs` of the time to call fn on every blob once, in seconds."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        for b in blobs:
            fn(b)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def events_pass(native: bool):
    def run(data: bytes):
        os.environ["PIPELINE_SMF_NATIVE"] = "1"  # read_with(False) turns it off; the Python loop ignores it
        data = smf.unwrap(data)
        pos = 8 + int.from_bytes(data[4:8], "big")
        return smf._events_native(data, pos) if native else smf._events_python(data, pos)
    return run


def read_with(native: bool):
    env = "1" if native else "0"

    def run(data: bytes):
        os.environ["PIPELINE_SMF_NATIVE"] = env
        return smf.read(data)
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/data/midi/lakh"))
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    blobs = []
    for p in sorted(Path(args.root).rglob("*.mid")):
        data = p.read_bytes()
        try:
            smf.read(data)
        except Exception:  # noqa: BLE001 -- time the files read() accepts
            continue
        blobs.append(data)
    if smf_native.library() is None:
        raise SystemExit("no C event reader on this machine (see the warning above): nothing to compare")
    if any(events_pass(True)(b) is None for b in blobs):
        print("note: some files take the Python loop even on the C path (ticks past int64)")
    events = sum(count_events(b) for b in blobs)
    n = len(blobs)
    print(f"{n} files, {sum(map(len, blobs)) / 1e6:.2f} MB, {events / n:,.0f} events per file; "
          f"median of {args.runs} runs, one process")
    figures = {}
    for native in (False, True):
        name = "C" if native else "Python"
        ev = median_seconds(events_pass(native), blobs, args.runs)
        rd = median_seconds(read_with(native), blobs, args.runs)
        figures[name] = ev, rd
        print(f"{name:>7}: read {rd / n * 1e6:8.0f} us/file   event pass {ev / n * 1e6:8.0f} us/file, "
              f"{events / ev / 1e6:7.2f} M events/s")
    (pe, pr), (ce, cr) = figures["Python"], figures["C"]
    print(f"C over Python: read {pr / cr:.1f}x faster, the event pass {pe / ce:.0f}x; the event pass was "
          f"{pe / pr:.0%} of read in Python, is {ce / cr:.0%} with C")


if __name__ == "__main__":
    main()
