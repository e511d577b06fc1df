"""Binary piano rolls, stored as note intervals on a time grid and densified a window at a time.

A sequence is aligned arrays (key, start frame, end frame[, velocity]) sorted by start: the run-length form of
the roll's active cells, exact at the grid resolution and about 9 bytes per note before compression, where a
dense uint8 roll costs a byte per key per frame. Keys are the pitches pitch_low..pitch_high, then (when the data
has drums) one key per GM drum class. Densified rolls carry an onset plane beside the sustain plane, so a
repeated note is two notes and not one long one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from symusic import Note, Track

from pipeline import gm

if TYPE_CHECKING:  # a type only: the stages after convert do not depend on how files are parsed
    from pipeline.midi import TrackNotes


@dataclass(frozen=True)
class Grid:
    steps_per_beat: int = 4
    pitch_low: int = 21
    pitch_high: int = 108
    steps_per_second: float = 0.0  # > 0: an absolute grid, in seconds (expressive performances)
    drums: bool = False            # add the drum-class keys after the pitches

    @property
    def n_pitches(self) -> int:
        return self.pitch_high - self.pitch_low + 1

    @property
    def n_keys(self) -> int:
        return self.n_pitches + (len(gm.DRUM_CLASSES) if self.drums else 0)

    @property
    def steps(self) -> float:
        """Frames per time unit of the notes: per beat, or per second on an absolute grid."""
        return self.steps_per_second or self.steps_per_beat

    def midi_pitch(self, key: np.ndarray) -> np.ndarray:
        """Key index -> MIDI pitch (a drum class -> its first GM pitch)."""
        key = np.asarray(key, dtype=np.int64)
        drum_pitch = np.asarray(gm.DRUM_CLASS_PITCH)[np.clip(key - self.n_pitches, 0, len(gm.DRUM_CLASSES) - 1)]
        return np.where(key < self.n_pitches, key + self.pitch_low, drum_pitch)

    def is_drum_key(self, key: np.ndarray) -> np.ndarray:
        return np.asarray(key) >= self.n_pitches


@dataclass(frozen=True)
class Notes:
    key: np.ndarray                     # uint8, index into the grid's keys
    start: np.ndarray                   # int32 frame
    end: np.ndarray                     # int32 frame, exclusive, > start
    velocity: np.ndarray | None = None  # uint8, when kept

    @property
    def n_frames(self) -> int:
        return int(self.end.max()) if len(self.end) else 0

    def __len__(self) -> int:
        return len(self.key)


_DRUM_CLASS_OF = np.asarray(gm.DRUM_CLASS_OF, dtype=np.int64)


def quantize(tracks: list[TrackNotes], grid: Grid, velocity: bool = False) -> tuple[Notes, int]:
    """Merge tracks onto the grid; return the notes and how many could not be placed (a pitch outside the
    range, or drums outside the GM kit or on a grid without drum keys).

    Drum hits last one frame: a kit has no sustain. Unisons (same key and start, across tracks too) collapse
    into one note, the longest.
    """
    keys, starts, ends, vels, outside = [], [], [], [], 0
    for t in tracks:
        s = np.rint(t.start * grid.steps).astype(np.int64)
        if t.is_drum:
            k = _DRUM_CLASS_OF[t.pitch.astype(np.int64)] if grid.drums else np.full(len(s), -1)
            ok = k >= 0
            k, s, e = k[ok] + grid.n_pitches, s[ok], s[ok] + 1
        else:
            ok = (t.pitch >= grid.pitch_low) & (t.pitch <= grid.pitch_high)
            k, s = t.pitch[ok].astype(np.int64) - grid.pitch_low, s[ok]
            e = np.maximum(np.rint(t.end[ok] * grid.steps).astype(np.int64), s + 1)
        outside += int((~ok).sum())
        keys.append(k), starts.append(s), ends.append(e), vels.append(t.velocity[ok])
    if not keys:
        empty = np.zeros(0, np.int64)
        keys, starts, ends, vels = [empty], [empty], [empty], [empty]
    k, s, e, v = (np.concatenate(a) for a in (keys, starts, ends, vels))
    s0 = min(int(s.min()), 0) if len(s) else 0  # negative times (a pickup before 0) shift the sequence
    s, e = s - s0, e - s0
    order = np.lexsort((-e, k, s))
    k, s, e, v = k[order], s[order], e[order], v[order]
    first = np.ones(len(s), bool)
    first[1:] = (s[1:] != s[:-1]) | (k[1:] != k[:-1])
    notes = Notes(k[first].astype(np.uint8), s[first].astype(np.int32), e[first].astype(np.int32),
                  v[first].astype(np.uint8) if velocity else None)
    return notes, outside


def densify(notes: Notes, n_keys: int, a: int = 0, b: int | None = None, max_len: int | None = None,
            onsets: bool = False) -> np.ndarray:
    """The boolean roll of frames [a, b): (b - a, n_keys), or (b - a, 2 * n_keys) with the onset plane after
    the sustain plane. `max_len` (the longest note) bounds the search for notes that began before `a`."""
    b = notes.n_frames if b is None else b
    width = 2 * n_keys if onsets else n_keys
    roll = np.zeros((max(b - a, 0), width), dtype=bool)
    hi = np.searchsorted(notes.start, b, side="left")
    lo = 0 if max_len is None else np.searchsorted(notes.start, a - max_len, side="left")
    k, s, e = notes.key[lo:hi].astype(np.int64), notes.start[lo:hi].astype(np.int64), notes.end[lo:hi].astype(np.int64)
    live = e > a
    k, s, e = k[live], np.maximum(s[live], a) - a, np.minimum(e[live], b) - a
    lengths = e - s
    rows = np.repeat(s - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    roll[rows, np.repeat(k, lengths)] = True
    if onsets:
        started = notes.start[lo:hi][live] >= a
        roll[s[started], n_keys + k[started]] = True
    return roll


def from_roll(roll: np.ndarray, onset: np.ndarray | None = None) -> Notes:
    """Notes from a boolean roll (frames, keys): each run of active frames in one key is one note, split where
    the onset plane (if given) marks a new start. An onset on a silent cell is a one-frame note."""
    active = np.asarray(roll, dtype=bool)
    if onset is not None:
        onset = np.asarray(onset, dtype=bool)
        active = active | onset
    else:
        onset = np.zeros_like(active)
    before = np.pad(active, ((1, 0), (0, 0)))[:-1]
    starts = active & (~before | onset)
    after_active = np.pad(active, ((0, 1), (0, 0)))
    after_start = np.pad(starts, ((0, 1), (0, 0)))
    prev = np.pad(active, ((1, 0), (0, 0)))
    ends = prev & (~after_active | after_start)  # frame t ends a note when t-1 sounded and t is silent or new
    st_k, st_t = np.nonzero(starts.T)
    en_k, en_t = np.nonzero(ends.T)  # key-major: the i-th start pairs with the i-th end
    order = np.lexsort((st_k, st_t))
    return Notes(st_k[order].astype(np.uint8), st_t[order].astype(np.int32), en_t[order].astype(np.int32))


def to_tracks(notes: Notes, grid: Grid, name: str = "", program: int = 0, ticks_per_frame: int = 1,
              offset: int = 0, velocity: int = 100, keep_empty: bool = False) -> list[Track]:
    """Notes as symusic tracks: the pitched keys on `program`, the drum classes (if any) as their GM pitches
    on a drum track (channel 10). `offset` frames are added to every time; `velocity` stands in when the
    notes carry none. The pitched track is kept even when empty with `keep_empty`."""
    drum = grid.is_drum_key(notes.key)
    pitch = grid.midi_pitch(notes.key)
    vel = notes.velocity if notes.velocity is not None else np.full(len(notes), velocity)
    tracks = []
    for is_drum in (False, True):
        m = drum == is_drum
        if not m.any() and (is_drum or not keep_empty):
            continue
        label = (f"{name} drums" if name else "") if is_drum else name
        track = Track(name=label, program=0 if is_drum else program, is_drum=is_drum)
        track.notes = Note.from_numpy(((notes.start[m] + offset) * ticks_per_frame).astype(np.int32),
                                      ((notes.end[m] - notes.start[m]) * ticks_per_frame).astype(np.int32),
                                      pitch[m].astype(np.int8), np.asarray(vel)[m].astype(np.int8))
        tracks.append(track)
    return tracks
