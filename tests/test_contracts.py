"""The stage contracts: dvc.yaml names the files pipeline/paths.py names, meta.json round-trips through `Meta`,
and every representation answers the whole interface (tests parametrised over all of them)."""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import paths, representations
from pipeline.codecs import CODECS, codec_of
from pipeline.contracts import Meta
from pipeline.pianoroll import Grid, Notes
from pipeline.representations.base import Representation

ROOT = Path(__file__).resolve().parents[1]


def _name(entry) -> str:
    return entry if isinstance(entry, str) else next(iter(entry))


def dag_files(dvc_yaml: dict) -> dict[str, tuple[set[str], set[str]]]:
    """Per stage of a dvc.yaml: (data files it depends on, files it writes), code under pipeline/ left out and
    a foreach stage's per-item folder (`data/raw/${item}`) read as its parent."""
    out = {}
    for name, stage in dvc_yaml["stages"].items():
        body = stage.get("do", stage)
        deps = {_name(d) for d in body.get("deps", []) if not _name(d).startswith("pipeline/")}
        writes = {_name(o).replace("/${item}", "") for key in ("outs", "metrics", "plots") for o in body.get(key, [])}
        out[name] = deps, writes
    return out


def contract_mismatches(dvc_yaml: dict) -> list[str]:
    """Where dvc.yaml and paths.STAGES disagree, one line each (empty when they agree)."""
    dag, problems = dag_files(dvc_yaml), []
    for name in sorted(set(dag) | set(paths.STAGES)):
        if name not in dag or name not in paths.STAGES:
            problems.append(f"{name}: a stage in only one of dvc.yaml and pipeline/paths.py")
            continue
        want = paths.STAGES[name]
        for what, have, code in (("reads", dag[name][0], want.reads), ("writes", dag[name][1], want.writes)):
            code = {str(p) for p in code}
            if have != code:
                problems.append(f"{name} {what}: dvc.yaml {sorted(have)} but pipeline/paths.py {sorted(code)}")
    return problems


def test_dvc_yaml_reads_and_writes_exactly_the_files_the_code_names():
    assert contract_mismatches(yaml.safe_load((ROOT / "dvc.yaml").read_text())) == []


def test_a_file_dvc_yaml_forgets_is_reported():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    dvc["stages"]["evaluate"]["deps"] = [d for d in dvc["stages"]["evaluate"]["deps"]
                                         if _name(d) != "models/calibration.json"]
    assert contract_mismatches(dvc) == [
        "evaluate reads: dvc.yaml ['data/processed', 'data/samples', 'models/model.pt'] but pipeline/paths.py "
        "['data/processed', 'data/samples', 'models/calibration.json', 'models/model.pt']"]


def _meta(kind: str, **extra) -> Meta:
    counts = {"train": 3, "valid": 1, "test": 1}
    return Meta(kind=kind, format_version=2, parts=["test-00000.parquet"], grid=Grid(4, 21, 108, 0.0, True),
                n_pitches=88, n_keys=97, drum_classes=["kick"], onsets=True, velocity=False, program=0,
                sequences=counts, frames=counts, notes=counts, notes_outside_range=0, notes_merged_unison=2,
                empty_after_range=[], **extra)


@pytest.mark.parametrize("meta", [_meta("pianoroll", features=194),
                                  _meta("tokens", tokens={"train": 9, "valid": 2, "test": 2}, tokenizer="REMI",
                                        vocab_size=300, pad_id=0)])
def test_meta_round_trips_through_its_file(meta, tmp_path):
    meta.write(tmp_path / "meta.json")
    back = Meta.read(tmp_path)
    assert back == meta and back.grid.n_keys == 97
    absent = {"pianoroll": "vocab_size", "tokens": "features"}[meta.kind]
    assert absent not in (tmp_path / "meta.json").read_text()  # a field the kind does not have is not written


def test_meta_from_another_version_of_convert_is_a_clear_error(tmp_path):
    d = _meta("pianoroll", features=194).to_dict()
    (tmp_path / "meta.json").write_text(__import__("json").dumps({**d, "frames_per_bar": 16}))
    with pytest.raises(ValueError, match="frames_per_bar.*dvc repro convert"):
        Meta.read(tmp_path)
    with pytest.raises(FileNotFoundError, match="dvc repro convert"):
        Meta.read(tmp_path / "nowhere")


@pytest.mark.parametrize("kind", sorted(representations.KINDS))
def test_every_representation_implements_the_whole_interface(kind):
    rep = representations.of(kind)
    assert isinstance(rep, Representation) and rep.kind == kind
    abstract = {n for n, f in inspect.getmembers(Representation) if getattr(f, "__isabstractmethod__", False)}
    assert abstract and all(not getattr(getattr(type(rep), n), "__isabstractmethod__", False) for n in abstract)
    assert rep.unit in ("frames", "tokens") and rep.length_column.startswith("n_")
    assert isinstance(rep, type(codec_of(kind)))  # the codec convert and the loader use is this one's own


def test_every_representation_has_its_codec_and_no_codec_is_orphaned():
    assert set(representations.KINDS) == set(CODECS)


def test_an_unknown_representation_is_named_in_the_error():
    with pytest.raises(ValueError, match="'midi-like'.*pianoroll, tokens"):
        representations.of("midi-like")


@pytest.mark.parametrize("kind", sorted(representations.KINDS))
def test_transposition_keeps_every_pitch_in_range_and_is_off_at_zero(kind, tmp_path):
    """The same rule for both kinds: a shift within the bounds that keeps the lowest and highest pitch in range."""
    from pipeline.codecs import transpose_shift

    rng = np.random.default_rng(0)
    shifts = {transpose_shift(2, 85, 87, (-3, 3), rng) for _ in range(200)}
    assert shifts == {-2, -1, 0, 1, 2}  # 2 below the lowest key, 2 above the highest
    assert transpose_shift(0, 87, 87, (-3, 3), rng) == 0  # nothing fits: unmoved
    assert representations.of(kind).transposer(None, (0, 0)) is None


def test_piano_roll_windows_are_the_densified_notes():
    rep = representations.of("pianoroll")
    notes = Notes(np.array([0, 5], np.uint8), np.array([0, 2], np.int32), np.array([3, 4], np.int32))
    meta = _meta("pianoroll", features=194)
    w = rep.window(rep.prepare(notes), 1, 5, meta)
    assert w.shape == (4, 2 * 97) and w.dtype == np.float32
    assert w[:, 0].tolist() == [1, 1, 0, 0] and w[:, 5].tolist() == [0, 1, 1, 0]
    assert w[:, 97 + 5].tolist() == [0, 1, 0, 0] and not w[:, 97].any()  # the note begun before a: no onset
