"""Corpus sources. Each module defines `SOURCE` (see base.py): its params model and a generator of `Item`s (MIDI
bytes + metadata) and `Skip`s, which acquire stores; registry.py lists them all."""
