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


# Drum kits as a few classes instead of 47 pitches: hits that play the same role share a class (after the
# grouping used for drum modelling since MusicVAE). Each class is written back as its first pitch.
DRUM_CLASSES: dict[str, tuple[int, ...]] = {
    "kick": (36, 35),
    "snare": (38, 40, 37, 39, 27, 28, 31, 32, 33, 34, 56, 65, 66, 75, 85),
    "closed_hihat": (42, 44, 22, 54, 68, 69, 70, 71, 73, 78, 80),
    "open_hihat": (46, 26, 67, 72, 74, 79, 81),
    "low_tom": (45, 41, 43, 29, 61, 64, 84),
    "mid_tom": (48, 47, 60, 63, 77, 86, 87),
    "high_tom": (50, 30, 62, 76, 83),
    "crash": (49, 52, 55, 57, 58),
    "ride": (51, 53, 59, 82),
}
DRUM_CLASS_NAMES = tuple(DRUM_CLASSES)
DRUM_CLASS_PITCH = tuple(pitches[0] for pitches in DRUM_CLASSES.values())
# pitch -> class index, -1 for a pitch no class takes (outside the GM kit)
DRUM_CLASS_OF = tuple(next((i for i, ps in enumerate(DRUM_CLASSES.values()) if p in ps), -1) for p in range(128))
