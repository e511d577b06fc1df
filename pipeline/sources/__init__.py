"""Corpus sources. Each is a generator of `Item`s (MIDI bytes + metadata) and `Skip`s; acquire stores them."""
