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
    from pipeline.smf import unwrap

    data = unwrap(data)  # a RIFF RMID (.rmi) file is read as the MIDI file inside it
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
    """One part's notes in quarter-note time (or seconds), with prepare's instrument decision."""
    program: int
    is_drum: bool
    name: str
    start: np.ndarray     # float64, quarters
    end: np.ndarray       # float64, quarters
    pitch: np.ndarray     # int16
    velocity: np.ndarray  # int16


def part_notes(song, index: int, is_drum: bool | None = None, sustain: bool = False,
               seconds: bool = False) -> TrackNotes:
    """Part `index` of a `pipeline.smf.Song` in quarter notes (or seconds, through the file's tempo map).

    `is_drum` is prepare's decision for the part (by channel 10 or by name); None takes the channel's.
    `sustain` applies the sustain pedal (smf.sustained)."""
    from pipeline import smf

    part = song.parts[index]
    end = smf.sustained(part, song.pedals) if sustain else part.end
    if seconds:
        start, end = smf.seconds(part.start, song), smf.seconds(end, song)
    else:
        start, end = part.start / song.ticks_per_quarter, end / song.ticks_per_quarter
    return TrackNotes(program=part.program, is_drum=part.on_drum_channel if is_drum is None else bool(is_drum),
                      name=part.name, start=start.astype(np.float64), end=end.astype(np.float64),
                      pitch=part.pitch, velocity=part.velocity)
