"""The notes of a Standard MIDI File as the MIDI standard defines them, from its events.

symusic (pipeline/midi.py) parses and classifies broken files, but three of its choices lose or misplace notes
that this pipeline must keep (all seen in real files; see ../shared/data/midi/reported/):
- a note-on that never gets a note-off is dropped, silently (common in drum parts);
- a program change applies only to the track chunk it is in, where MIDI 1.0 gives each of the 16 channels one
  program shared by every track of a type-1 file (a conductor track often sets them all);
- ticks are int32 and saturate or wrap near 2^31, so an end time can read as small.

So the notes are read here, one pass over the events with running status, ticks exact:
- notes pair FIFO per (track, channel, key), as symusic and most parsers do; a note-on left without a note-off
  is recovered (General MIDI practice, as in pretty_midi's and note_seq's readers): it ends at the next onset
  of the same key in its track, or at the end of its track. Drum hits are one grid step long downstream
  whatever their duration, so the same rule serves them. Each recovery is counted, never silent;
- each note's program is its channel's program at its onset (the last program change at or before it, in any
  track of a type-0/1 file; in its own track in a type-2 file, whose tracks are independent songs);
- the sustain pedal (CC64) is kept per channel, for `sustained`.

Notes come out grouped into parts, one per (track chunk, channel, program) with notes, in that order: the same
grouping and order as symusic's tracks, so a part index is what a track index was before.

The event pass runs in C (smf_events.c, built at first use and loaded by pipeline/smf_native.py): on Lakh files
about 50 times faster than the Python loop, which makes read about 15 times faster (benchmarks/smf_read_speed.py).
The Python loop (_events_python) is its reference, gives the same Song byte for byte (tests/test_smf_native.py),
and runs instead where no C compiler is found, where PIPELINE_SMF_NATIVE=0, and for a file whose ticks pass int64
(its ticks are Python integers, exact whatever their size).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from pipeline import smf_native
from pipeline.midi import MidiError

DRUM_CHANNEL = 9  # channel 10 counted from 1: General MIDI's percussion channel
DEFAULT_TEMPO = 500_000  # microseconds per quarter note before the first tempo event: 120 bpm (MIDI 1.0)

# What the MIDI 1.0 file format (SMF 1.0) does not allow but `read` reads on through by this module's rules, and
# what symusic is seen to mishandle (F7 escapes), as bits of Song.irregular (the same in smf_events.c). A file
# with none of them is one a strict parser (symusic) accepts; prepare asks symusic for its verdict only on the
# others (tests/test_smf_irregular.py checks this on damaged copies of real files and on random event streams).
IRREGULAR_CHUNK_PAST_END = 1      # a chunk's length runs past the end of the file
IRREGULAR_FOREIGN_CHUNK = 2       # a chunk that is not MTrk, or bytes after the last chunk
IRREGULAR_CUT_EVENT = 4           # a track chunk ends inside an event, or a meta or sysex runs past it
IRREGULAR_UNKNOWN_STATUS = 8      # a status byte 0xF1-0xF6 or 0xF8-0xFE
IRREGULAR_DATA_OVER_127 = 16      # a data byte of a channel message with its top bit set
IRREGULAR_STATUS_AFTER_META = 32  # running status carried over a meta or sysex event (SMF 1.0: they cancel it)
IRREGULAR_LONG_NUMBER = 64        # a variable-length number of more than 4 bytes
IRREGULAR_HEADER = 128            # a header chunk not 6 bytes long, a format past 2, or a track count that differs
IRREGULAR_ESCAPE = 256            # an F7 escape or sysex continuation: legal, but symusic 0.6 does not skip it by
#                                   its length and can lose its place after one


def unwrap(data: bytes) -> bytes:
    """The Standard MIDI File inside a RIFF RMID container (Microsoft's .rmi: 'RIFF', size, 'RMID', then a
    'data' chunk holding the SMF); any other bytes unchanged. Raises MidiError(truncated) for a RIFF RMID file
    without a whole data chunk."""
    if data[:4] != b"RIFF" or data[8:12] != b"RMID":
        return data
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if cid == b"data":
            if pos + 8 + size > len(data):
                raise MidiError("truncated", "RIFF RMID: the data chunk is cut short")
            return data[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)  # RIFF chunks are padded to an even size
    raise MidiError("truncated", "RIFF RMID without a data chunk")


@dataclass(slots=True)
class Part:
    """The notes one track chunk plays on one channel with one program: times in ticks (int64)."""
    track: int
    channel: int   # 0..15; 9 is General MIDI's drum channel
    program: int   # 0..127, the channel's program at each of these notes' onsets
    name: str      # the track chunk's name (its last track-name meta event, as symusic takes it)
    start: np.ndarray     # int64 ticks
    end: np.ndarray       # int64 ticks, >= start
    pitch: np.ndarray     # int16
    velocity: np.ndarray  # int16

    def __len__(self) -> int:
        return len(self.pitch)

    @property
    def on_drum_channel(self) -> bool:
        return self.channel == DRUM_CHANNEL


@dataclass(frozen=True)
class Song:
    """What a Standard MIDI File holds, as this pipeline reads it."""
    ticks_per_quarter: int
    parts: list[Part]
    end_tick: int                 # the last event's tick, exact (an int, whatever its size)
    tempos: np.ndarray            # (n, 2) int64: tick, microseconds per quarter note
    time_signatures: np.ndarray   # (n, 3) int64: tick, numerator, denominator exponent (2 -> quarter)
    pedal_events: np.ndarray = field(default_factory=lambda: np.empty((0, 4), np.int64))
    # ^ (n, 4) int64 CC64 events: tick, track, channel, down (0/1); none for a type-2 file, whose tracks are
    #   separate songs (their pedals do not mix)
    note_ons: int = 0             # note-on events (velocity > 0) in the file
    recovered: int = 0            # of those, notes without a note-off, ended by the rule above
    irregular: int = 0            # IRREGULAR_* bits: what the standard forbids and read() read on through; 0: none

    @property
    def n_notes(self) -> int:
        return sum(len(p) for p in self.parts)

    @functools.cached_property
    def pedals(self) -> dict[int, np.ndarray]:
        """Per channel, the sustain pedal's (down tick, up tick) intervals, (n, 2) int64: worked out when first
        asked for (only what applies the pedal needs them; prepare does not)."""
        return _pedals(self.pedal_events)


def read(data: bytes) -> Song:
    """A file's notes, programs, pedals and timing values, per the rules in this module's docstring.

    Raises MidiError(not_midi | truncated | smpte_division | bad_division | invalid_event | too_long: an event
    that matters past tick 2^63 - 1; the end tick alone may pass it: it is a Python int)."""
    data = unwrap(data)
    if data[:4] != b"MThd" or len(data) < 14:
        raise MidiError("not_midi", "no MThd header")
    fmt = int.from_bytes(data[8:10], "big")
    division = int.from_bytes(data[12:14], "big")
    if division & 0x8000:
        raise MidiError("smpte_division", "SMPTE time division (frames per second), not ticks per quarter note")
    if division == 0:
        raise MidiError("bad_division", "ticks per quarter is 0")
    pos = 8 + int.from_bytes(data[4:8], "big")
    ev = _events_native(data, pos) or _events_python(data, pos)
    if not ev.names:
        raise MidiError("truncated", "no track chunk")
    header_size, n_tracks = int.from_bytes(data[4:8], "big"), int.from_bytes(data[10:12], "big")
    irregular = ev.irregular
    if header_size != 6 or fmt > 2 or n_tracks != len(ev.names):
        irregular |= IRREGULAR_HEADER
    try:
        parts = _parts(ev.notes, ev.programs, ev.names, independent_tracks=fmt == 2)
        return Song(division, parts, ev.end_tick,
                    np.asarray(ev.tempos, np.int64).reshape(-1, 2), np.asarray(ev.sigs, np.int64).reshape(-1, 3),
                    np.asarray(ev.pedals if fmt != 2 else [], np.int64).reshape(-1, 4), ev.note_ons,
                    ev.recovered, irregular)
    except OverflowError:  # only a delta of over 4 bytes gets there: 2^63 ticks of 4-byte deltas is 2^35 events
        raise MidiError("too_long", "a note, tempo or pedal event past tick 2^63 - 1") from None


@dataclass(slots=True)
class _Events:
    """What one pass over a file's track chunks finds, in event order (file order; recovered notes at the end of
    their track). notes, tempos and sigs: lists of tuples from the Python loop, (n, k) int64 arrays from the C
    pass, which the rest of `read` takes alike; programs and pedals: lists of rows either way."""
    notes: list | np.ndarray     # (track, channel, pitch, start tick, end tick, velocity)
    programs: list | np.ndarray  # (tick, track, channel, program)
    pedals: list | np.ndarray    # CC64 events: (tick, track, channel, down)
    tempos: list | np.ndarray    # (tick, microseconds per quarter note)
    sigs: list | np.ndarray      # (tick, numerator, denominator exponent)
    names: list[str]             # each track chunk's name ("" for none): one per track chunk
    note_ons: int
    recovered: int
    end_tick: int
    irregular: int               # IRREGULAR_* bits


def _invalid_event(byte: int) -> MidiError:
    return MidiError("invalid_event", f"a data byte {byte:#04x} where a status byte is needed")


def warm() -> None:
    """Build or load the C event reader now (a no-op where it is off or cannot be had): a process that forks
    workers calls this first, so they inherit it instead of each building it inside its first file's work. (The
    near-duplicate signatures' library is loaded by NearIndex, which prepare makes before its pool.)"""
    if smf_native.enabled():
        smf_native.library()


def _events_native(data: bytes, pos: int) -> _Events | None:
    """The event pass in C (pipeline/smf_native.py), or None where it does not run: then _events_python.
    Raises MidiError(invalid_event) as _events_python does."""
    scan = smf_native.scan(data, pos)
    if scan is None:
        return None
    if scan.bad_byte is not None:
        raise _invalid_event(scan.bad_byte)
    names = [data[at:at + n].decode("latin-1") if at >= 0 else "" for at, n in scan.names.tolist()]
    return _Events(scan.notes, scan.programs, scan.pedals.copy(), scan.tempos, scan.sigs, names,
                   scan.note_ons, scan.recovered, scan.end_tick, scan.irregular)


def _events_python(data: bytes, pos: int) -> _Events:
    """The event pass in Python: the reference for smf_events.c, and its fallback. The chunks of `data` from
    byte `pos` (just past the header chunk). Raises MidiError(invalid_event)."""
    notes: list[tuple] = []      # (track, channel, pitch, start, end, velocity)
    programs: list[tuple] = []   # (tick, track, channel, program)
    pedal_events: list[tuple] = []  # (tick, track, channel, down)
    tempos, sigs, names = [], [], []
    note_ons = recovered = 0
    end_tick = irregular = 0
    track = 0
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "big")
        pos += 8
        end = min(pos + size, len(data))
        if size > len(data) - pos:
            irregular |= IRREGULAR_CHUNK_PAST_END
        if cid != b"MTrk":
            irregular |= IRREGULAR_FOREIGN_CHUNK
            pos = end
            continue
        open_: dict[int, list] = {}  # channel << 7 | key -> onsets waiting for their note-off, FIFO
        name, last = "", 0
        # One pass over the chunk's events, running status applied; a truncated final event ends the track.
        # Inlined (no per-event function call or generator): this loop is most of prepare's time per file.
        tick = status = 0
        after_meta = False
        i = pos
        while i < end:
            c = data[i]
            i += 1
            delta = c & 0x7F
            n_bytes = 1
            while c & 0x80 and i < end:
                c = data[i]
                i += 1
                n_bytes += 1
                delta = (delta << 7) | (c & 0x7F)
            if n_bytes > 4:
                irregular |= IRREGULAR_LONG_NUMBER
            tick += delta
            if i >= end:
                irregular |= IRREGULAR_CUT_EVENT
                break
            c = data[i]
            if c >= 0xF0:  # meta (FF type len data) or sysex (F0/F7 len data): skipped but for a few metas
                if c not in (0xFF, 0xF0, 0xF7):
                    irregular |= IRREGULAR_UNKNOWN_STATUS
                if c == 0xF7:
                    irregular |= IRREGULAR_ESCAPE
                i += 1
                kind = -1
                if c == 0xFF:
                    if i >= end:
                        irregular |= IRREGULAR_CUT_EVENT
                        break
                    kind = data[i]
                    i += 1
                size = n_bytes = 0
                ended = False
                while i < end:
                    c = data[i]
                    i += 1
                    n_bytes += 1
                    size = (size << 7) | (c & 0x7F)
                    if not c & 0x80:
                        ended = True
                        break
                if n_bytes > 4:
                    irregular |= IRREGULAR_LONG_NUMBER
                if not ended or size > end - i:
                    irregular |= IRREGULAR_CUT_EVENT
                after_meta = True
                if kind == 0x03:
                    name = data[i:i + size].decode("latin-1")  # the last name wins, as in symusic
                elif kind == 0x51 and size == 3:
                    tempos.append((tick, int.from_bytes(data[i:i + 3], "big")))
                elif kind == 0x58 and size >= 2 and i + 1 < end:
                    sigs.append((tick, data[i], data[i + 1]))
                i += size
                last = tick
                continue
            if c >= 0x80:
                status = c
                i += 1
            elif not status:
                raise _invalid_event(c)
            elif after_meta:
                irregular |= IRREGULAR_STATUS_AFTER_META
            after_meta = False
            hi = status & 0xF0
            if hi == 0xC0 or hi == 0xD0:
                if i >= end:
                    irregular |= IRREGULAR_CUT_EVENT
                    break
                if data[i] & 0x80:
                    irregular |= IRREGULAR_DATA_OVER_127
                if hi == 0xC0:
                    programs.append((tick, track, status & 0x0F, data[i]))
                i += 1
                last = tick
                continue
            if i + 1 >= end:
                irregular |= IRREGULAR_CUT_EVENT
                break
            a, b = data[i], data[i + 1]
            if (a | b) & 0x80:
                irregular |= IRREGULAR_DATA_OVER_127
            i += 2
            last = tick
            if hi == 0x90 and b:
                note_ons += 1
                key = (status & 0x0F) << 7 | a
                waiting = open_.get(key)
                if waiting is None:
                    open_[key] = [(tick, b)]
                else:
                    waiting.append((tick, b))
            elif hi == 0x80 or hi == 0x90:
                waiting = open_.get((status & 0x0F) << 7 | a)
                if waiting:
                    t0, v = waiting.pop(0)
                    notes.append((track, status & 0x0F, a, t0, tick, v))
            elif hi == 0xB0 and a == 64:
                pedal_events.append((tick, track, status & 0x0F, b >= 64))
        for key, waiting in open_.items():  # note-ons never released: end at the key's next onset, or the end
            for j, (t0, v) in enumerate(waiting):
                stop = waiting[j + 1][0] if j + 1 < len(waiting) else last
                notes.append((track, key >> 7, key & 0x7F, t0, stop, v))
                recovered += 1
        names.append(name)
        end_tick = max(end_tick, last)
        track += 1
        pos = end
    if pos < len(data):
        irregular |= IRREGULAR_FOREIGN_CHUNK
    return _Events(notes, programs, pedal_events, tempos, sigs, names, note_ons, recovered, end_tick, irregular)


def _parts(notes: list[tuple] | np.ndarray, programs: list[tuple] | np.ndarray, names: list[str],
           independent_tracks: bool) -> list[Part]:
    """The notes as parts, one per (track, channel, program), each note's program its channel's at its onset
    (_programs_at), in (track, channel, program) order, each part's notes by (start, pitch), ties in file order.
    In C where the event pass ran in C (smf_native.parts), else the numpy reference below."""
    if not len(notes):
        return []
    got = smf_native.parts(notes, programs, independent_tracks) if isinstance(notes, np.ndarray) else None
    if got is None:
        return _parts_reference(notes, programs, names, independent_tracks)
    (track, ch, prog, pitch, start, end, vel), bounds = got
    pitch, vel = pitch.astype(np.int16), vel.astype(np.int16)
    b = bounds.tolist()
    return [Part(int(track[lo]), int(ch[lo]), int(prog[lo]), names[int(track[lo])], start[lo:hi], end[lo:hi],
                 pitch[lo:hi], vel[lo:hi])
            for lo, hi in zip(b[:-1], b[1:])]


def _parts_reference(notes: list[tuple] | np.ndarray, programs: list[tuple] | np.ndarray, names: list[str],
                     independent_tracks: bool) -> list[Part]:
    """_parts in numpy: the reference for smf_parts in smf_events.c, and its fallback."""
    a = np.asarray(notes, np.int64)
    track, ch, pitch, start = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
    prog = _programs_at(track, ch, start, np.asarray(programs, np.int64).reshape(-1, 4), independent_tracks)
    order = _part_order(track, ch, prog, start, pitch)
    cols = a[order].T.copy()  # one gather of the rows, then each column contiguous
    track, ch, pitch, start, end, vel = cols
    prog = prog[order]
    pitch, vel = pitch.astype(np.int16), vel.astype(np.int16)
    cut = np.flatnonzero((np.diff(track) != 0) | (np.diff(ch) != 0) | (np.diff(prog) != 0)) + 1
    bounds = [0, *cut.tolist(), len(start)]
    return [Part(int(track[lo]), int(ch[lo]), int(prog[lo]), names[int(track[lo])], start[lo:hi], end[lo:hi],
                 pitch[lo:hi], vel[lo:hi])
            for lo, hi in zip(bounds[:-1], bounds[1:])]


def _programs_at(track: np.ndarray, ch: np.ndarray, start: np.ndarray, programs: np.ndarray,
                 independent_tracks: bool) -> np.ndarray:
    """Each note's program: its channel's program at its onset, the last change at or before it in tick order
    (ties in file order), program 0 before any (General MIDI's default); the channel's state is shared by every
    track of a type-0/1 file and kept per track in a type-2 file. Notes (n,) int64 each; programs (m, 4) int64
    rows of (tick, track, channel, program). Returns (n,) int64."""
    prog = np.zeros(len(start), np.int64)
    if not len(programs):
        return prog
    at, p_track, p_ch, value = programs.T
    p_key = (p_track if independent_tracks else np.zeros_like(p_track)) * 16 + p_ch
    n_key = (track if independent_tracks else np.zeros_like(track)) * 16 + ch
    by = np.argsort(at, kind="stable")
    for key in np.unique(p_key).tolist():
        mine = by[p_key[by] == key]
        m = n_key == key
        prog[m] = np.concatenate([[0], value[mine]])[np.searchsorted(at[mine], start[m], side="right")]
    return prog


def _part_order(track, ch, prog, start, pitch) -> np.ndarray:
    """The notes' order by (track, channel, program, start, pitch), ties in their given order: one stable
    argsort of a packed int64 key where every value fits its bits (all but pathological files: about 4x faster
    than the five-key lexsort, which is the rule and the fallback). int64 arrays (n,) each."""
    if len(start) and track.max() < 1 << 11 and 0 <= start.min() and start.max() < 1 << 32 and pitch.max() < 256:
        key = (((track << 12) | (ch << 8) | prog) << 40) | (start << 8) | pitch
        return np.argsort(key, kind="stable")
    return np.lexsort((pitch, start, prog, ch, track))


def _pedals(events: np.ndarray) -> dict[int, np.ndarray]:
    """Per channel, the (down tick, up tick) intervals of the sustain pedal (CC64 >= 64 is down, MIDI 1.0), from
    the CC64 events as (n, 4) int64 rows of (tick, track, channel, down)."""
    out: dict[int, np.ndarray] = {}
    by_channel: dict[int, list] = {}
    for tick, _, ch, down in sorted(events.tolist(), key=lambda e: e[0]):
        by_channel.setdefault(ch, []).append((tick, down))
    for ch, evs in by_channel.items():
        spans, since = [], None
        for tick, down in evs:
            if down and since is None:
                since = tick
            elif not down and since is not None:
                spans.append((since, tick))
                since = None
        if since is not None:  # never lifted: held to the last event
            spans.append((since, max(t for t, _ in evs)))
        out[ch] = np.asarray(spans, np.int64).reshape(-1, 2)
    return out


def sustained(part: Part, pedals: dict[int, np.ndarray]) -> np.ndarray:
    """Note ends with the sustain pedal applied: a note released while its channel's pedal is down sounds until
    the pedal lifts, or until the same key is struck again if that comes first (as the field's piano pipelines
    do for performances, e.g. note_seq's apply_sustain_control_changes for MAESTRO). int64 ticks, (n,)."""
    spans = pedals.get(part.channel)
    end = part.end
    if spans is None or not len(spans) or not len(end):
        return end
    i = np.searchsorted(spans[:, 0], end, side="right") - 1  # the last pedal press at or before each release
    held = (i >= 0) & (end < spans[np.maximum(i, 0), 1])
    new_end = np.where(held, spans[np.maximum(i, 0), 1], end)
    # a key struck again while it sounds on the pedal ends there: the next onset of the same key
    order = np.lexsort((part.start, part.pitch))
    nxt = np.full(len(end), np.iinfo(np.int64).max)
    same = part.pitch[order][1:] == part.pitch[order][:-1]
    nxt[order[:-1][same]] = part.start[order][1:][same]
    return np.where(held, np.maximum(end, np.minimum(new_end, nxt)), end)



def seconds(ticks: np.ndarray, song: Song) -> np.ndarray:
    """Ticks -> seconds through the tempo map (each tempo holds from its tick to the next). float64, same shape.
    The tempos must be valid (> 0 microseconds per quarter): prepare rejects files with others."""
    tempos = song.tempos[np.argsort(song.tempos[:, 0], kind="stable")] if len(song.tempos) else song.tempos
    at = np.concatenate([[0], tempos[:, 0]]).astype(np.int64)
    us = np.concatenate([[DEFAULT_TEMPO], tempos[:, 1]]).astype(np.float64)
    # at equal ticks the later event wins: keep the last of each run of equal ticks
    keep = np.append(at[1:] != at[:-1], True)
    at, us = at[keep], us[keep]
    per_tick = us / 1e6 / song.ticks_per_quarter
    elapsed = np.concatenate([[0.0], np.cumsum(np.diff(at) * per_tick[:-1])])
    ticks = np.asarray(ticks, np.int64)
    i = np.searchsorted(at, ticks, side="right") - 1
    return elapsed[i] + (ticks - at[i]) * per_tick[i]
