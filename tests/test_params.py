import pytest
import yaml

from pipeline import params as P
from tests.conftest import ROOT


def test_repo_params_yaml_is_valid_and_is_the_defaults_parse_fills_in():
    loaded = P.load(ROOT / "params.yaml")
    assert P.parse({}) == loaded
    assert P.parse({"train": {"epochs": 3}}) == loaded.model_copy(
        update={"train": loaded.train.model_copy(update={"epochs": 3})})


def _leaves(node: dict, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _without(raw: dict, dotted: str) -> dict:
    *path, last = dotted.split(".")
    node = raw
    for part in path:
        node = node[part]
    del node[last]
    return raw


@pytest.mark.parametrize("key", list(_leaves(P.defaults())))
def test_every_key_is_required_so_params_yaml_is_the_only_default(key):
    """The schema holds no default of its own: a params file that leaves a key out fails, naming it."""
    with pytest.raises(P.ParamsError) as err:
        P.validate(_without(P.defaults(), key))
    assert f"  {key}: missing key" in str(err.value), str(err.value)


@pytest.mark.parametrize("raw, key, words", [
    ({"modle": {}}, "modle", "unknown key"),
    ({"model": {"hiden": 3}}, "model.hiden", "unknown key"),
    ({"train": {"epochs": -1}}, "train.epochs", "greater than or equal to 1"),
    ({"train": {"epochs": "many"}}, "train.epochs", "integer"),
    ({"represent": {"pitch_low": 60, "pitch_high": 60}}, "represent", "pitch_low (60) must be below"),
    ({"data": {"sources": ["napster"]}}, "data.sources", "unknown source"),
    ({"filter": {"instruments": ["kazoo"]}}, "filter.instruments", "unknown instrument 'kazoo'"),
    ({"filter": {"instruments": [130]}}, "filter.instruments", "outside 0..127"),
    ({"data": {"sources": ["local"]}}, "data.local", "data.local.path must be set"),
    ({"data": {"music21": {"composers": ["nobody"]}}}, "data.music21", "composers: unknown music21 corpus"),
    ({"split": {"valid": 0.5, "test": 0.5}}, "split", "leave a train share"),
    ({"train": {"loss": "mse"}}, "train.loss", "'bce' or 'focal'"),
    ({"data": {"maestro": {"checksum": "crc32:00"}}}, "data.maestro.checksum", "<algo>:<hex>"),
    ({"data": {"lakh": {"url": "ftp://x/y.tar.gz"}}}, "data.lakh.url", "not an http(s) URL"),
    ({"data": {"bitmidi": {"page_size": 51}}}, "data.bitmidi.page_size", "less than or equal to 50"),
    ({"represent": {"kind": "abc"}}, "represent.kind", "'pianoroll' or 'tokens'"),
    ({"represent": {"tokenizer": "Octuple"}}, "represent.tokenizer", "'REMI', 'TSD' or 'MIDILike'"),
    ({"represent": {"transpose": [2, 5]}}, "represent", "-12 <= low <= 0 <= high <= 12"),
    ({"train": {"lr_schedule": "step"}}, "train.lr_schedule", "'constant', 'cosine' or 'plateau'"),
    ({"train": {"processes": 0}}, "train.processes", "greater than or equal to 1"),
    ({"generate": {"threshold": 1.5}}, "generate.threshold", "'auto' or a number in (0, 1)"),
    ({"generate": {"threshold": "high"}}, "generate.threshold", "'auto'"),
    ({"generate": {"sampling": "nucleus"}}, "generate.sampling", "'threshold', 'bernoulli' or 'topk'"),
    ({"generate": {"unit": "bars"}}, "generate.unit", "'beats' or 'seconds'"),
    ({"generate": {"temperature": 0}}, "generate.temperature", "greater than 0"),
    ({"model": {"head": "mdn"}}, "model.head", "'independent', 'nade' or 'hold_nade'"),
    ({"model": {"nade_hidden": 0}}, "model.nade_hidden", "greater than or equal to 1"),
    ({"generate": {"sampling": "topk"}}, "(top level)", "generate.sampling: topk needs the independent head"),
])
def test_invalid_params_name_the_key_and_the_reason(raw, key, words):
    with pytest.raises(P.ParamsError) as err:
        P.parse(raw)
    text = str(err.value)
    assert f"  {key}:" in text and words in text, text


def test_scientific_notation_from_yaml_is_accepted():
    # PyYAML reads `1e-4` as a string; users write it all the time
    assert P.parse(yaml.safe_load("train: {lr: 1e-4}")).train.lr == pytest.approx(1e-4)


def test_families_and_programs_mix():
    p = P.parse({"filter": {"instruments": ["bass", "drums", 0]}})
    assert p.filter.instruments == ["bass", "drums", 0]


def test_music21_collections_are_checked_only_where_music21_is_a_source():
    """A machine that only trains (a GPU box) needs no music21: params naming other sources never look for it."""
    p = P.parse({"data": {"sources": ["local"], "local": {"path": "x"}, "music21": {"composers": ["nobody"]}}})
    assert p.data.music21.composers == ["nobody"]


def test_topk_sampling_is_refused_only_where_a_nade_head_decides_the_cells():
    P.parse({"model": {"head": "independent"}, "generate": {"sampling": "topk"}})
    P.parse({"represent": {"kind": "tokens"}, "generate": {"sampling": "topk"}})  # a softmax over tokens
