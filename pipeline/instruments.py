"""What a track really plays: its GM program, corrected by channel 10 and by its name where those disagree.

Many files leave the program at 0 (acoustic grand piano) for every track, or put drums on another channel
than 10; a track called "Bass", "Lead Gtr" or "Drum Kit" says what it is. Names override only where the program
is the default 0 or the name says drums; an explicit non-zero program is otherwise trusted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from pipeline import gm

# First match wins: drums before bass ("bass drum"), bass before guitar ("bass guitar"), reed before brass
# ("English horn").
_NAMES = (
    ("drums", r"drum|\bkit\b|percussion|\bperc\b|batterie|schlagzeug|\bsnare|hi-?hat|cymbal"),
    ("bass", r"\bbass\b|\bbajo\b|fretless|\bbs\b"),
    ("guitar", r"guitar|\bgtr|\bguit|\bgt\b"),
    ("piano", r"piano|\bpno\b|\bkeys\b|rhodes|clavinet|harpsichord"),
    ("organ", r"organ|hammond|accordion"),
    ("strings", r"string|violin|viola|cello|\bvln|\bvlc|contrabass|fiddle"),
    ("reed", r"\bsax|clarinet|oboe|bassoon|\bcl\b|eng(lish|\.)? ?horn|cor anglais"),
    ("brass", r"trumpet|\btpt|trombone|\btbn|\bhorn|tuba|brass"),
    ("pipe", r"flute|piccolo|recorder|whistle|ocarina|pan ?pipe"),
    ("ensemble", r"choir|voice|vocal|\bvox\b|\baah|\booh"),
)
_COMPILED = tuple((fam, re.compile(pat, re.I)) for fam, pat in _NAMES)


@lru_cache(maxsize=65536)  # names repeat across a corpus ("Drums", "Bass"): match each one once
def family_from_name(name: str) -> str | None:
    for fam, pat in _COMPILED:
        if pat.search(name or ""):
            return fam
    return None


_CHORAL = re.compile(r"\b(soprano|alto|tenor|sopran|tenore)\b", re.I)
_VOICE = re.compile(r"\b(soprano|alto|tenor|bass|baritone|bariton|basso|sopran|tenore|voice|choir)\b", re.I)


def is_choral(names: list[str]) -> bool:
    """A file whose tracks are voice parts (a chorale, a motet): there "Bass" is a singer, not a bass guitar."""
    return any(_CHORAL.search(n or "") for n in names)


@dataclass(frozen=True)
class Instrument:
    family: str
    key: int         # the GM program, or gm.DRUM_KEY; what filter.instruments is matched against
    inferred: str    # "program", "channel" (drums on channel 10) or "name"


CHOIR = 52  # GM "Choir Aahs", the ensemble family's stand-in for a sung part


@lru_cache(maxsize=65536)  # (program, drum, name) combinations repeat across a corpus as much as names do
def infer(program: int, is_drum: bool, name: str, choral: bool = False) -> Instrument:
    if is_drum:
        return Instrument(gm.DRUMS, gm.DRUM_KEY, "channel")
    if choral and program == 0 and _VOICE.search(name or ""):
        return Instrument("ensemble", CHOIR, "name")
    by_name = family_from_name(name)
    if by_name == gm.DRUMS:
        return Instrument(gm.DRUMS, gm.DRUM_KEY, "name")
    if program == 0 and by_name is not None and by_name != "piano":
        first = gm.FAMILIES.index(by_name) * 8  # the family's first program stands in for the unknown one
        return Instrument(by_name, first, "name")
    return Instrument(gm.family(program, False), program, "program")
