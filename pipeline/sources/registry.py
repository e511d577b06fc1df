"""Every corpus source. A new source is one module in pipeline/sources/ defining `SOURCE`, imported here and
named in MODULES.

The imports are plain imports, not names looked up at run time, so tests/test_deps.py sees every source module a
stage runs (a source changed must rerun acquire). params.py builds data.sources' choices and the data.<name>
keys from REGISTRY, and acquire takes each source's entries and download behaviour from it; nothing else names a
source. MODULES' order is the order of the data.<name> keys in the schema, hence in validation messages.
"""
from __future__ import annotations

from pipeline.sources import bitmidi, lakh, local, maestro, music21_corpus
from pipeline.sources.base import Source

MODULES = (
    music21_corpus,
    local,
    maestro,
    lakh,
    bitmidi,
)

REGISTRY: dict[str, Source] = {m.SOURCE.name: m.SOURCE for m in MODULES}
