"""Stage functions on a tiny processed dataset built from the fixture files."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline import convert, evaluate, generate, prepare
from pipeline import params as P
from pipeline.checkpoint import load_model
from pipeline.dataset import Rolls, Windows, read_meta
from pipeline.midi import parse
from pipeline.model import Config, Seq2Seq
from pipeline.pianoroll import densify, from_roll
from tests.test_prepare import _acquire


@pytest.fixture
def processed(midi_folder, tmp_path, monkeypatch):
    _acquire(midi_folder, tmp_path, monkeypatch)
    p = P.parse({"data": {"sources": ["local"], "local": {"path": "x"}}, "prepare": {"workers": 1},
                 "split": {"valid": 0.2, "test": 0.2}})
    selected, _, _ = prepare.run(p)
    (tmp_path / "data/prepared").mkdir(parents=True)
    pq.write_table(selected, tmp_path / "data/prepared/selected.parquet")
    out = tmp_path / "data/processed/pianoroll"
    out.mkdir(parents=True)
    meta = convert.run(p, out)
    (out / "meta.json").write_text(json.dumps(meta))
    return p, meta


def test_convert_writes_every_selected_file_once_with_a_split(processed):
    p, meta = processed
    sizes = sum(meta["sequences"].values())
    rows = pq.read_table("data/processed/pianoroll/part-00000.parquet").to_pylist()
    assert len(rows) == sizes == len({r["id"] for r in rows})
    assert {r["split"] for r in rows} == {"train", "valid", "test"}
    for r in rows:
        assert r["n_notes"] == len(r["pitch"]) == len(r["start"]) == len(r["end"])
        assert r["n_frames"] == max(r["end"])


def test_windows_are_consecutive_slices_of_the_roll(processed):
    rolls = Rolls.load("train")
    w = Windows(rolls, seq_len=8, stride=8)
    assert len(w) > 0
    i, a = w.index[3]
    x, y = w[3]
    full = densify(rolls.notes(int(i)), rolls.n_pitches)
    np.testing.assert_array_equal(x.numpy().astype(bool), full[a:a + 8])
    np.testing.assert_array_equal(y.numpy().astype(bool), full[a + 8:a + 16])


def test_repeat_last_baseline_shapes():
    x = torch.zeros(2, 4, 3); x[:, -1, 1] = 1
    y = torch.zeros(2, 4, 3); y[:, 0, 2] = 1
    nf = evaluate.repeat_last(x, y, "next_frame")
    assert nf[0, 0, 1] == 1 and nf[0, 1, 2] == 1 and nf[0, 2].sum() == 0
    cont = evaluate.repeat_last(x, y, "continuation")
    assert torch.all(cont[:, :, 1] == 1) and cont[:, :, [0, 2]].sum() == 0


def test_generated_midi_reads_back_as_the_two_rolls():
    meta = {"steps_per_beat": 4, "pitch_low": 21, "pitch_high": 108, "n_pitches": 88}
    rng = np.random.default_rng(0)
    seed, gen = rng.random((16, 88)) < 0.05, rng.random((24, 88)) < 0.05
    score = parse(generate.to_midi(seed, gen, meta))
    assert [t.name for t in score.tracks] == ["seed", "generated"]
    for track, roll, offset in zip(score.tracks, (seed, gen), (0, 16)):
        n = from_roll(roll)
        got = sorted((x.pitch - 21, x.time // generate.TICKS_PER_FRAME - offset, x.duration // generate.TICKS_PER_FRAME)
                     for x in track.notes)
        assert got == sorted(zip(n.pitch.tolist(), n.start.tolist(), (n.end - n.start).tolist()))


def test_checkpoint_mismatch_is_a_clear_error(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(Seq2Seq(Config(n_pitches=12, hidden=4, layers=1)).checkpoint(), path)
    with pytest.raises(ValueError, match="trained on 12 pitches but the data has 88"):
        load_model({"n_pitches": 88}, path)
    with pytest.raises(FileNotFoundError, match="dvc repro train"):
        load_model({"n_pitches": 88}, tmp_path / "missing.pt")
