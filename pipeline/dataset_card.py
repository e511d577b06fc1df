"""The dataset card `convert` writes beside its shards: data/processed/<kind>/README.md.

A Hugging Face dataset card is a README.md whose YAML front matter names each split's files (`configs`,
`data_files`) and the columns' types (`dataset_info.features`), followed by prose for people. With it,
`datasets.load_dataset("data/processed/<kind>")` reads the shards as the splits train, validation and test
(meta.json's `valid` under the name the Hub's tools expect, as Hugging Face's own file-name detection maps a
`valid-*` shard), and checks each split's row count against the card. The format is Hugging Face's
(https://huggingface.co/docs/hub/datasets-cards and https://huggingface.co/docs/hub/datasets-manual-configuration);
the text is built from meta.json, the Parquet schema, convert's params and the sources' manifests, with no date
or version, so the same run writes the same bytes.
"""
from __future__ import annotations

import pyarrow as pa
import yaml

from pipeline.contracts import Meta

# meta.json's split names -> the dataset's split names (Hugging Face's standard `validation`)
HF_SPLITS = {"train": "train", "valid": "validation", "test": "test"}

# Hugging Face licence ids of the licences the sources record, where the mapping is exact
HF_LICENSES = {"CC BY 4.0": "cc-by-4.0", "CC BY-NC-SA 4.0": "cc-by-nc-sa-4.0"}

UNRECORDED = "not recorded"

# the Hub's row-count labels, one per decade from 1,000 (https://huggingface.co/docs/hub/datasets-cards)
SIZE_CATEGORIES = ("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
                   "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T")

_PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# What each column holds; `{frame}` is the grid's frame, `{keys}` the key range. Every column of the schema
# needs a line here (card() raises otherwise), so a new column cannot ship undocumented.
COLUMNS = {
    "id": "the sequence: its file's id, or `<file id>#<track>` when tracks are kept apart (`filter.mode: tracks`)",
    "file": "the MIDI file: `<source>/<path inside the collection>`",
    "group": "the file's duplicate group (same content or the same song); a group never straddles two splits",
    "source": "the corpus the file came from (a `data.sources` entry)",
    "split": "`train`, `valid` or `test` (the `validation` split holds the `valid` rows)",
    "families": "the General MIDI instrument family of each track merged into the sequence",
    "n_frames": "length in frames (the end of the last note); a frame is {frame}",
    "n_notes": "number of notes (after unisons merged)",
    "key": "each note's key index: {keys}",
    "start": "each note's onset frame, notes sorted by onset then key",
    "end": "each note's end frame, exclusive (> start); drum hits last one frame",
    "velocity": "each note's MIDI velocity (1-127)",
    "n_tokens": "number of token ids",
    "tokens": "MidiTok token ids of the sequence ({tokenizer}, vocabulary of {vocab_size}; see tokenizer.json)",
}


def note_name(pitch: int) -> str:
    """MIDI pitch -> scientific pitch name (60 -> C4, 21 -> A0), the MIDI convention of middle C as C4."""
    return f"{_PITCH_CLASSES[pitch % 12]}{pitch // 12 - 1}"


def size_category(n: int) -> str:
    """The Hub's `size_categories` label for `n` rows: a decade each, n<1K up to 100B<n<1T, then n>1T."""
    return SIZE_CATEGORIES[min(max(len(str(n)) - 3, 0), len(SIZE_CATEGORIES) - 1)]


def hf_feature(name: str, type_: pa.DataType) -> dict:
    """One column as `dataset_info.features` spells it: {"name", "dtype"} for a scalar, {"name", "list"} for a
    list of scalars (the form `datasets.Features._to_yaml_list` writes). Raises ValueError for other types."""
    if pa.types.is_list(type_):
        if pa.types.is_nested(type_.value_type):
            raise ValueError(f"column {name}: nested list type {type_} has no card spelling here")
        return {"name": name, "list": str(type_.value_type)}
    if pa.types.is_nested(type_):
        raise ValueError(f"column {name}: nested type {type_} has no card spelling here")
    return {"name": name, "dtype": str(type_)}


def _type_name(type_: pa.DataType) -> str:
    return f"list<{type_.value_type}>" if pa.types.is_list(type_) else str(type_)


def _frame(meta: Meta) -> str:
    g = meta.grid
    if g.steps_per_second:
        return (f"1/{g.steps_per_second} s (`represent.steps_per_second` {g.steps_per_second}: an absolute grid that "
                "follows each file's tempo map)")
    return f"1/{g.steps_per_beat} of a quarter note (`represent.steps_per_beat` {g.steps_per_beat})"


def _keys(meta: Meta) -> str:
    g = meta.grid
    text = (f"0..{meta.n_pitches - 1} are the MIDI pitches {g.pitch_low}..{g.pitch_high} "
            f"({note_name(g.pitch_low)}..{note_name(g.pitch_high)}; key = pitch - {g.pitch_low})")
    if meta.drum_classes:
        text += (f", {meta.n_pitches}..{meta.n_keys - 1} the General MIDI drum classes "
                 f"{', '.join(meta.drum_classes)} in that order")
    return text


def front_matter(meta: Meta, schema: pa.Schema, sources: list[str], licences: dict[str, dict[str, int]],
                 split_bytes: dict[str, int]) -> dict:
    """The card's YAML header as data: licence, tags, size, one config whose data_files list each split's shards,
    and dataset_info with the features and each split's row count and Arrow bytes (`split_bytes`, by meta.json's
    split name). `load_dataset` checks the row counts against the shards: a card that disagrees with them fails
    to load."""
    names = sorted({lic for by in licences.values() for lic in by})
    licence = HF_LICENSES.get(names[0], "other") if len(names) == 1 else "other"
    kind_tag = "piano-roll" if meta.kind == "pianoroll" else "tokens"
    return {
        "pretty_name": f"{' + '.join(sources)} {'piano rolls' if meta.kind == 'pianoroll' else 'token streams'}",
        "license": licence,
        "tags": ["music", "midi", "symbolic-music", kind_tag],
        "size_categories": [size_category(sum(meta.sequences.values()))],
        "configs": [{
            "config_name": "default",
            "data_files": [{"split": HF_SPLITS[s], "path": [f for f in meta.parts if f.startswith(f"{s}-")]}
                           for s in HF_SPLITS if any(f.startswith(f"{s}-") for f in meta.parts)],
        }],
        "dataset_info": {
            "config_name": "default",
            "features": [hf_feature(f.name, f.type) for f in schema],
            "splits": [{"name": HF_SPLITS[s], "num_bytes": split_bytes[s], "num_examples": meta.sequences[s]}
                       for s in HF_SPLITS if meta.sequences.get(s)],
            "dataset_size": sum(split_bytes.values()),
        },
    }


def _table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table; a | inside a cell (a source's or licence's name) is escaped, not read as a column."""
    def cell(c) -> str:
        return str(c).replace("|", "\\|")
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cell(c) for c in row) + " |" for row in rows)]


def _columns_section(meta: Meta, schema: pa.Schema) -> list[str]:
    missing = [f.name for f in schema if f.name not in COLUMNS]
    if missing:
        raise ValueError(f"dataset card: no description for column(s) {missing}: add them to dataset_card.COLUMNS")
    fill = {"frame": _frame(meta), "keys": _keys(meta), "tokenizer": meta.tokenizer, "vocab_size": meta.vocab_size}
    return _table(["column", "type", "what"],
                  [[f"`{f.name}`", f"`{_type_name(f.type)}`", COLUMNS[f.name].format(**fill)] for f in schema])


def _splits_section(meta: Meta) -> list[str]:
    counts = ["sequences", "frames", "notes"] + (["tokens"] if meta.tokens else [])
    rows = [[f"`{HF_SPLITS[s]}`", f"`{s}`", *(f"{getattr(meta, c)[s]:,}" for c in counts)] for s in HF_SPLITS]
    return _table(["split", "shards", *counts], rows)


def _representation_section(meta: Meta) -> list[str]:
    g = meta.grid
    lines = [f"- **Time**: a frame is {_frame(meta)}; onsets and ends are whole frames.",
             f"- **Keys**: {meta.n_keys}; {_keys(meta)}."]
    if meta.kind == "pianoroll":
        planes = "a sustain plane and an onset plane" if meta.onsets else "a sustain plane"
        lines += [f"- **Piano roll**: stored sparse as note intervals (`key`, `start`, `end`); the training frames "
                  f"are {meta.features} wide: {planes} of {meta.n_keys} keys each, a cell on while a note sounds "
                  "(sustain) or where it starts (onset)."]
    else:
        lines += [f"- **Tokens**: MidiTok {meta.tokenizer} on a score whose ticks are frames, so time shifts and "
                  f"durations are exact at the grid; vocabulary of {meta.vocab_size}, special tokens first "
                  f"(padding id {meta.pad_id}). `tokenizer.json` in this folder is the tokenizer: "
                  f"`miditok.{meta.tokenizer}.from_pretrained(<this folder>)` rebuilds it."]
    lines += [f"- **Velocity**: {'kept' if meta.velocity else 'dropped (every note equal)'}.",
              f"- **Dropped or merged**: {meta.notes_outside_range:,} notes outside pitches {g.pitch_low}.."
              f"{g.pitch_high} (or outside the drum classes) dropped; {meta.notes_merged_unison:,} unisons (same key "
              "and onset, across tracks too) merged into the longest note; "
              f"{len(meta.empty_after_range)} sequences left empty by the key range, and not stored."]
    return lines


def _load_section(meta: Meta) -> list[str]:
    lines = ["```python", "from datasets import load_dataset", "",
             f'ds = load_dataset("data/processed/{meta.kind}")  # or this folder\'s path: train, validation, test']
    if meta.kind == "tokens":
        lines += ["", "from miditok import MusicTokenizer", "",
                  f'tokenizer = MusicTokenizer.from_pretrained("data/processed/{meta.kind}")  # tokenizer.json']
    return lines + ["```"]


def card(meta: Meta, schema: pa.Schema, params: dict, licences: dict[str, dict[str, int]],
         split_bytes: dict[str, int]) -> str:
    """The dataset card of a processed folder: YAML front matter, then what the rows are and how they were made.

    `meta` is what convert writes to meta.json, `schema` the shards' Parquet schema, `params` convert's params
    as {"represent.kind": ..., "split.valid": ..., "data.sources": [...]} (shown as given, in order),
    `licences` {source: {licence: sequences}} from the sources' manifests, `split_bytes` {split: bytes} each
    split's size as Arrow in memory (Hugging Face's `num_bytes`), by meta.json's split names. Raises ValueError
    for a column with no description or a type the card cannot spell, KeyError for a split with rows and no size.
    """
    sources = list(licences) or list(params.get("data.sources", []))
    front = front_matter(meta, schema, sources, licences, split_bytes)
    header = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000)
    total = sum(meta.sequences.values())
    kind = "piano rolls" if meta.kind == "pianoroll" else f"MidiTok {meta.tokenizer} token streams"
    valid_share, test_share = params.get("split.valid"), params.get("split.test")
    body = [
        f"# {front['pretty_name']}", "",
        f"{total:,} MIDI sequences from {', '.join(sources)} as {kind} on a time grid, in Parquet shards split "
        "into train, validation and test without leaks between them. Written by the `convert` stage of a DVC "
        "pipeline (docs/representations.md in its repository), with `meta.json` (the grid, keys and counts) "
        "beside the shards.", "",
        "## Loading", "", *_load_section(meta), "",
        "## Splits", "", *_splits_section(meta), "",
        "A sequence's split is its duplicate group's, so copies and other versions of one song (found by content "
        "hash and melodic near-duplicate search in `prepare`) never sit in two splits. A split the source fixes "
        "(MAESTRO's official one) wins for the whole group; otherwise a sha256 hash of the group id decides "
        f"(`split.valid` {valid_share}, `split.test` {test_share} of groups), so the assignment does not depend on "
        "file order or run; if a tiny corpus leaves validation or test empty, the free group with the lowest hash "
        "moves there.", "",
        "## Columns", "", *_columns_section(meta, schema), "",
        "## Representation", "", *_representation_section(meta), "",
        "## Sources and licences", "",
        "As each source's acquire manifest records them; each file keeps its own terms.", "",
        *_table(["source", "licence", "sequences"],
                [[s, lic, f"{n:,}"] for s, by in licences.items() for lic, n in by.items()]), "",
        "## How it was made", "",
        "MIDI files were stored by `acquire`, parsed, filtered, deduplicated and their instruments selected by "
        "`prepare`, then quantised to the grid and written by `convert` "
        f"(format version {meta.format_version}) under these params:", "",
        "```yaml", yaml.safe_dump(params, sort_keys=False, width=1000).rstrip("\n"), "```",
    ]
    return "---\n" + header + "---\n\n" + "\n".join(body) + "\n"
