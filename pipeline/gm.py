"""General MIDI instrument families, and the `filter.instruments` vocabulary built on them."""
from __future__ import annotations

from typing import Iterable

# The 16 GM program families, 8 programs each, in program order (GM 1 sound set).
FAMILIES = (
    "piano", "chromatic_percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth_lead", "synth_pad", "synth_effects", "ethnic", "percussive", "sound_effects",
)
DRUMS = "drums"
# Drum tracks have no program of their own; they are keyed as -1 so one set covers both.
DRUM_KEY = -1
GROUPS = {"pitched": frozenset(range(128)), "all": frozenset(range(128)) | {DRUM_KEY}}


def family(program: int, is_drum: bool) -> str:
    return DRUMS if is_drum else FAMILIES[program // 8]


def family_programs(name: str) -> frozenset[int]:
    if name == DRUMS:
        return frozenset({DRUM_KEY})
    i = FAMILIES.index(name)
    return frozenset(range(i * 8, i * 8 + 8))


def programs_for(items: Iterable[str | int]) -> frozenset[int]:
    """The set of track keys (GM program, or DRUM_KEY) selected by `filter.instruments` entries."""
    keys: set[int] = set()
    for item in items:
        if isinstance(item, bool):
            raise ValueError(f"instrument {item!r} is neither a family name nor a program number")
        if isinstance(item, int):
            if not 0 <= item <= 127:
                raise ValueError(f"program {item} is outside 0..127")
            keys.add(item)
        elif item in GROUPS:
            keys |= GROUPS[item]
        elif item in FAMILIES or item == DRUMS:
            keys |= family_programs(item)
        else:
            raise ValueError(
                f"unknown instrument {item!r}; use a program number 0..127, one of {list(GROUPS)}, "
                f"'{DRUMS}', or a GM family: {', '.join(FAMILIES)}"
            )
    return frozenset(keys)


def track_key(program: int, is_drum: bool) -> int:
    return DRUM_KEY if is_drum else program
