"""Parsing MIDI bytes with symusic (C++, ~100x faster than pretty_midi) and classifying what goes wrong."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from symusic import Score


class MidiError(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# symusic's error texts -> a machine-readable reason
_PATTERNS = (
    ("header is not mthd", "not_midi"),
    ("size is less than 14", "not_midi"),
    ("chunk length", "truncated"),
    ("unexpected eof", "truncated"),
    ("division type", "smpte_division"),
    ("status byte", "invalid_event"),
    ("get ", "invalid_event"),  # "Get velocity=255", "Get program=208": a data byte over 127
)


def parse(data: bytes) -> Score:
    """Parse MIDI bytes in ticks; raise MidiError with a reason for anything unusable."""
    if not data:
        raise MidiError("empty_file", "the file is empty (0 bytes)")
    try:
        score = Score.from_midi(data)
    except Exception as e:  # symusic raises RuntimeError for every kind of malformed input
        text = str(e)
        reason = next((r for pat, r in _PATTERNS if pat in text.lower()), "parse_error")
        raise MidiError(reason, f"symusic: {text}") from None
    if score.ticks_per_quarter <= 0:
        raise MidiError("bad_division", f"ticks per quarter is {score.ticks_per_quarter}")
    return score


@dataclass(frozen=True)
class TrackNotes:
    """One track's notes in quarter-note time (or seconds)."""
    program: int
    is_drum: bool
    name: str
    start: np.ndarray     # float64, quarters
    end: np.ndarray       # float64, quarters
    pitch: np.ndarray     # int16
    velocity: np.ndarray  # int16


def track_notes(score: Score, index: int) -> TrackNotes:
    """Times in quarter notes for a score in ticks; in seconds for one converted with `score.to("second")`."""
    scale = 1.0 / score.ticks_per_quarter if str(score.ttype).endswith("Tick") else 1.0
    track = score.tracks[index]
    n = track.notes.numpy()
    start = n["time"].astype(np.float64) * scale
    return TrackNotes(
        program=int(track.program), is_drum=bool(track.is_drum), name=str(track.name),
        start=start, end=start + n["duration"].astype(np.float64) * scale,
        pitch=n["pitch"].astype(np.int16), velocity=n["velocity"].astype(np.int16),
    )
