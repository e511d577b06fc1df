"""convert's folder as the field's tools read it, offline: Hugging Face `datasets.load_dataset` through the dataset
card (README.md) and MidiTok's `from_pretrained` on the saved tokenizer, on shards converted from the fixtures."""
from __future__ import annotations

import json
import re
from pathlib import Path

import miditok
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import convert, dataset_card, smf, tokens
from pipeline.codecs import codec_of
from pipeline.contracts import Meta
from pipeline.midi import part_notes
from pipeline.pianoroll import quantize
from tests.test_stages import _process


@pytest.fixture
def hf_offline(tmp_path, monkeypatch) -> Path:
    """Hugging Face libraries offline, with their cache in this test's tmp dir: the environment variables for
    anything imported from here on, and the constants the already-imported libraries read them into."""
    import datasets
    import huggingface_hub.constants

    cache = tmp_path / "hf_home"
    for name, value in (("HF_DATASETS_OFFLINE", "1"), ("HF_HUB_OFFLINE", "1"), ("HF_HOME", str(cache))):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    return cache


def _front_matter(card: str) -> dict:
    m = re.match(r"---\n(.*?)\n---\n", card, re.S)
    assert m, "the card does not open with YAML front matter"
    return yaml.safe_load(m.group(1))


def _documented_columns(card: str) -> list[str]:
    section = card.split("## Columns\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, re.M)


def _load(folder: Path, cache: Path):
    import datasets

    return datasets.load_dataset(str(folder), cache_dir=str(cache / "datasets"))


def _check_splits(folder: Path, cache: Path) -> tuple[Meta, object]:
    """load_dataset on a processed folder: three splits with meta.json's row counts and ids, the schema's
    columns, each documented in the card. Returns the meta and the DatasetDict."""
    import datasets

    meta = Meta.read(folder)
    ds = _load(folder, cache)
    assert set(ds) == {"train", "validation", "test"}
    schema = convert.schema(codec_of(meta.kind), meta.velocity)
    for split, hf in dataset_card.HF_SPLITS.items():
        assert ds[hf].num_rows == meta.sequences[split] > 0
        ids = [i for f in meta.parts if f.startswith(f"{split}-") for i in pq.read_table(folder / f)["id"].to_pylist()]
        assert sorted(ds[hf]["id"]) == sorted(ids)
        assert set(ds[hf]["split"]) == {split}
        assert ds[hf].features == datasets.Features.from_arrow_schema(schema)
    card = (folder / "README.md").read_text()
    assert ds["train"].column_names == schema.names == _documented_columns(card)
    info = _front_matter(card)["dataset_info"]
    # the card spells the features as datasets itself does, and each split's Arrow size as datasets measured it
    assert info["features"] == datasets.Features.from_arrow_schema(schema)._to_yaml_list()
    assert {s["name"]: s["num_bytes"] for s in info["splits"]} == {
        hf: ds[hf].info.splits[hf].num_bytes for hf in dataset_card.HF_SPLITS.values()}
    return meta, ds


def test_load_dataset_reads_the_piano_roll_splits_the_card_describes(midi_folder, tmp_path, monkeypatch, hf_offline):
    _process(midi_folder, tmp_path / "run", monkeypatch, velocity=True)
    folder = tmp_path / "run/data/processed/pianoroll"
    meta, ds = _check_splits(folder, hf_offline)
    assert "velocity" in ds["train"].column_names
    # a row reads back exactly as the shard holds it
    first = pq.read_table(folder / meta.parts[0]).slice(0, 1).to_pylist()[0]
    split = dataset_card.HF_SPLITS[first["split"]]
    assert next(r for r in ds[split] if r["id"] == first["id"]) == first
    card = (folder / "README.md").read_text()
    front = _front_matter(card)
    assert front["license"] == "other"  # a local folder records no licence
    assert re.search(r"^\| local \| not recorded \| " + f"{sum(meta.sequences.values())} \\|$", card, re.M)
    assert "A0..C8" in card and "1/4 of a quarter note" in card
    assert "closed_hihat" in card  # the pop fixture's drums add the drum-class keys, named
    assert "represent.velocity: true" in card and "represent.tokenizer" not in card  # convert's params, as run


def test_a_card_whose_row_counts_disagree_with_the_shards_fails_to_load(midi_folder, tmp_path, monkeypatch,
                                                                        hf_offline):
    from datasets.exceptions import NonMatchingSplitsSizesError

    _process(midi_folder, tmp_path / "run", monkeypatch)
    folder = tmp_path / "run/data/processed/pianoroll"
    card = (folder / "README.md").read_text()
    n = Meta.read(folder).sequences["train"]
    wrong = re.sub(rf"(- name: train\n    num_bytes: \d+\n    num_examples: ){n}\n", rf"\g<1>{n + 1}\n", card)
    assert wrong != card
    (folder / "README.md").write_text(wrong)
    with pytest.raises(NonMatchingSplitsSizesError):
        _load(folder, hf_offline)


def test_the_card_is_byte_for_byte_reproducible_and_dateless(midi_folder, tmp_path, monkeypatch):
    cards = []
    for run in ("a", "b"):
        _process(midi_folder, tmp_path / run, monkeypatch)
        cards.append((tmp_path / run / "data/processed/pianoroll/README.md").read_bytes())
    assert cards[0] == cards[1]
    assert not re.search(rb"\d{4}-\d{2}-\d{2}", cards[0])


def _one_row_meta() -> Meta:
    from pipeline.pianoroll import Grid

    return Meta(kind="pianoroll", format_version=2, parts=["train-00000.parquet"], grid=Grid(), n_pitches=88,
                n_keys=88, drum_classes=[], onsets=True, velocity=False, program=0,
                sequences={"train": 1, "valid": 0, "test": 0}, frames={"train": 4, "valid": 0, "test": 0},
                notes={"train": 1, "valid": 0, "test": 0}, notes_outside_range=0, notes_merged_unison=0,
                empty_after_range=[], features=176)


def test_a_column_without_a_description_is_refused():
    import pyarrow as pa

    schema = pa.schema(convert.COMMON + [("loudness", pa.list_(pa.float32()))])
    with pytest.raises(ValueError, match="loudness"):
        dataset_card.card(_one_row_meta(), schema, {}, {"local": {"not recorded": 1}}, {"train": 100})


def test_one_known_licence_gets_its_hub_id_and_mixed_ones_other():
    schema = convert.schema(codec_of("pianoroll"), False)

    def licence(licences: dict) -> str:
        return dataset_card.front_matter(_one_row_meta(), schema, list(licences), licences, {"train": 1})["license"]

    assert licence({"lakh": {"CC BY 4.0": 3}}) == "cc-by-4.0"
    assert licence({"lakh": {"CC BY 4.0": 3}, "maestro": {"CC BY-NC-SA 4.0": 2}}) == "other"
    assert licence({"bitmidi": {"unknown: uploaded by bitmidi.com users": 1}}) == "other"


def test_note_names_and_size_labels():
    assert [dataset_card.note_name(p) for p in (21, 60, 61, 108)] == ["A0", "C4", "C#4", "C8"]
    sizes = [dataset_card.size_category(n) for n in (0, 999, 1000, 411_000, 178_561, 10**9, 10**13)]
    assert sizes == ["n<1K", "n<1K", "1K<n<10K", "100K<n<1M", "100K<n<1M", "1B<n<10B", "n>1T"]


def test_from_pretrained_rebuilds_the_pipelines_tokenizer(midi_folder, tmp_path, monkeypatch, hf_offline):
    p, meta, selected = _process(midi_folder, tmp_path / "run", monkeypatch, kind="tokens", tokenizer="TSD",
                                 velocity=True)
    folder = tmp_path / "run/data/processed/tokens"
    meta, ds = _check_splits(folder, hf_offline)
    loaded = miditok.MusicTokenizer.from_pretrained(folder)
    made = tokens.make(p.represent.tokenizer, meta.grid, p.represent.velocity, p.represent.max_shift_beats)
    assert type(loaded) is miditok.TSD
    assert loaded.vocab == made.vocab and len(loaded) == meta.vocab_size
    assert loaded.config == made.config
    assert json.loads(json.dumps(loaded.to_dict())) == json.loads(json.dumps(made.to_dict()))
    assert loaded.pad_token_id == meta.pad_id
    # a fixture file's sequence, encoded afresh by the loaded tokenizer, gives the ids convert stored
    row = next(r for r in ds["train"] if r["n_tokens"] > 50)
    sel = next(s for s in selected.to_pylist() if s["id"] == row["id"])
    song = smf.read((midi_folder / sel["member"]).read_bytes())
    parts = [part_notes(song, i, d, p.represent.sustain, seconds=False) for i, d in zip(sel["tracks"], sel["is_drum"])]
    notes, _ = quantize(parts, meta.grid, velocity=p.represent.velocity)
    assert tokens.encode(loaded, notes, meta.grid).tolist() == row["tokens"]
    assert "from_pretrained" in (folder / "README.md").read_text()
