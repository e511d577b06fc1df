"""What a part really plays: its GM program, corrected by channel 10 and by its name where those disagree.

Many files leave the program at 0 (acoustic grand piano) for every track, or put drums on another channel
than 10; a track called "Bass", "Lead Gtr" or "Drum Kit" says what it is. The decision is `RULES`, an ordered
table: the first rule that matches a part decides, and each rule looks at that part alone (plus, for voice
parts, whether the file is a choral score). Names override the program only where it is the default 0, or
where the name says drums; an explicit non-zero program is otherwise trusted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from pipeline import gm

# First match wins: drums before bass ("bass drum"), bass before guitar ("bass guitar"), reed before brass
# ("English horn").
_NAMES = (
    ("drums", r"drum(s|kit|set|mer)?\b|\bkit\b|percussion|\bperc\b|batterie|schlagzeug|\bsnare|hi-?hat|cymbal"),
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


# Words that name a sung part. The choral ones (soprano, alto, tenor) mark a file as a choral score; "bass"
# alone does not, since every band has one.
_CHORAL = re.compile(r"\b(soprano|alto|tenor|sopran|tenore)\b", re.I)
_VOICE = re.compile(r"\b(soprano|alto|tenor|bass|baritone|bariton|basso|sopran|tenore|voice|choir)\b", re.I)


@lru_cache(maxsize=65536)
def is_voice_part(name: str) -> bool:
    """A part named as a singer: a voice word, and no instrument word once the voice words are taken out
    ("Alto", "Bass", "Tenor 2", "Soprano Voice" are; "Alto Sax", "Bass Drum", "Tenor Horn", "Bass Guitar",
    "Soprano Recorder" are not)."""
    if not _VOICE.search(name or ""):
        return False
    rest = family_from_name(_VOICE.sub(" ", name))
    return rest is None or rest == "ensemble"


def is_choral(names: list[str]) -> bool:
    """A file whose parts are voices (a chorale, a motet): one part at least is a soprano, alto or tenor
    voice part. There "Bass" is a singer, not a bass guitar."""
    return any(_CHORAL.search(n or "") and is_voice_part(n) for n in names)


@dataclass(frozen=True)
class Instrument:
    family: str
    key: int         # the GM program, or gm.DRUM_KEY; what filter.instruments is matched against
    inferred: str    # "program", "channel" (drums on channel 10) or "name"


CHOIR = 52  # GM "Choir Aahs", the ensemble family's stand-in for a sung part


@dataclass(frozen=True)
class Part:
    """What the rules look at: one part's program, channel-10 flag and name, and whether its file is choral."""
    program: int
    on_drum_channel: bool
    name: str
    choral: bool = False


def _named_family(p: Part) -> Instrument | None:
    fam = family_from_name(p.name)
    if p.program == 0 and fam is not None and fam != "piano":
        return Instrument(fam, gm.FAMILIES.index(fam) * 8, "name")  # the family's first program stands in
    return None


Rule = tuple[str, Callable[[Part], "Instrument | None"]]
RULES: tuple[Rule, ...] = (
    ("drum channel", lambda p: Instrument(gm.DRUMS, gm.DRUM_KEY, "channel") if p.on_drum_channel else None),
    ("drum name", lambda p: Instrument(gm.DRUMS, gm.DRUM_KEY, "name")
     if family_from_name(p.name) == gm.DRUMS else None),
    ("voice part", lambda p: Instrument("ensemble", CHOIR, "name")
     if p.choral and p.program == 0 and is_voice_part(p.name) else None),
    ("family name", _named_family),
    ("program", lambda p: Instrument(gm.family(p.program, False), p.program, "program")),
)


@lru_cache(maxsize=65536)  # (program, drum, name) combinations repeat across a corpus as much as names do
def infer(program: int, is_drum: bool, name: str, choral: bool = False) -> Instrument:
    """The first rule of RULES that decides for this part (the last, "program", always does)."""
    part = Part(program, is_drum, name, choral)
    for _, rule in RULES:
        inst = rule(part)
        if inst is not None:
            return inst
    raise AssertionError("the program rule always decides")
