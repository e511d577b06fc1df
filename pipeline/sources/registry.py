"""Every corpus source: a new source is one module in pipeline/sources/ defining `SOURCE` and one line in MODULES.

params.py builds data.sources' choices and the data.<name> keys from REGISTRY, and acquire takes each source's
entries and download behaviour from it; nothing else names a source. MODULES' order is the order of the
data.<name> keys in the schema, hence in validation messages.
"""
from __future__ import annotations

from importlib import import_module

from pipeline.sources.base import Source

MODULES = (
    "music21_corpus",
    "local",
    "maestro",
    "lakh",
    "bitmidi",
)

REGISTRY: dict[str, Source] = {
    s.name: s for s in (import_module(f"{__package__}.{m}").SOURCE for m in MODULES)
}
