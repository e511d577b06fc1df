"""Representations: how music becomes a model's steps and back again, one class per kind.

Each is its codec (pipeline/codecs.py: storage and windows) plus what the model-facing stages need. `of(kind)`
maps `represent.kind` (and meta.json's `kind`) to its class; stages ask the representation and never branch on
the name. A new representation is a codec and a `Representation` subclass, one line in each registry.
"""
from __future__ import annotations

from pipeline.representations.base import Representation
from pipeline.representations.pianoroll import PianoRoll
from pipeline.representations.tokens import Tokens

KINDS: dict[str, type[Representation]] = {"pianoroll": PianoRoll, "tokens": Tokens}


def of(kind: str) -> Representation:
    """The representation named `kind`. Raises ValueError for an unknown name."""
    if kind not in KINDS:
        raise ValueError(f"unknown representation {kind!r}: one of {', '.join(KINDS)}")
    return KINDS[kind]()


__all__ = ["KINDS", "Representation", "of"]
