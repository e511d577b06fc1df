"""Stage functions on a tiny processed dataset built from the fixture files, in both representations."""

from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline import baselines, convert, generate
from pipeline import params as P
from pipeline.checkpoint import load_model
from pipeline.dataset import Split, Windows, data_dir
from pipeline.midi import parse
from pipeline.model import Config, Seq2Seq
from pipeline.pianoroll import Grid, densify, from_roll
from tests.test_prepare import _acquire, run_tables


def _process(midi_folder, tmp_path, monkeypatch, **represent):
    tmp_path.mkdir(parents=True, exist_ok=True)
    _acquire(midi_folder, tmp_path, monkeypatch)
    p = P.parse({"data": {"sources": ["local"], "local": {"path": "x"}}, "prepare": {"workers": 1},
                 "filter": {"instruments": ["all"]}, "split": {"valid": 0.2, "test": 0.2}, "represent": represent})
    selected = run_tables(p, tmp_path / "data/prepared")[0]
    out = tmp_path / "data/processed" / p.represent.kind
    out.mkdir(parents=True)
    meta = convert.run(p, out)
    meta.write(out / "meta.json")
    return p, meta, selected


@pytest.fixture
def processed(midi_folder, tmp_path, monkeypatch):
    return _process(midi_folder, tmp_path, monkeypatch)


@pytest.fixture
def tokenized(midi_folder, tmp_path, monkeypatch):
    return _process(midi_folder, tmp_path, monkeypatch, kind="tokens", tokenizer="TSD")


def _rows(kind):
    return [r for f in sorted((data_dir() / "..").resolve().glob(f"{kind}/*.parquet"))
            for r in pq.read_table(f).to_pylist()]


def test_convert_writes_every_selected_sequence_once_in_its_split_shard(processed):
    p, meta, selected = processed
    rows = _rows("pianoroll")
    assert len(rows) == sum(meta.sequences.values()) == selected.num_rows == len({r["id"] for r in rows})
    assert {r["split"] for r in rows} == {"train", "valid", "test"}
    for f in meta.parts:
        assert {r["split"] for r in pq.read_table(data_dir() / f).to_pylist()} == {f.split("-")[0]}
    for r in rows:
        assert r["n_notes"] == len(r["key"]) == len(r["start"]) == len(r["end"])
        assert r["n_frames"] == max(r["end"])
    # the pop file's drums are in: the grid gains the drum-class keys, and only drum hits use them
    assert meta.grid.drums and meta.n_keys == 88 + 9 and meta.features == 2 * 97
    pop = next(r for r in rows if "pop" in r["id"])
    assert max(pop["key"]) >= 88
    drum_hits = [(s, e) for k, s, e in zip(pop["key"], pop["start"], pop["end"]) if k >= 88]
    assert drum_hits and all(e == s + 1 for s, e in drum_hits)


def test_conversion_is_byte_for_byte_reproducible(midi_folder, tmp_path, monkeypatch):
    a = _process(midi_folder, tmp_path / "a", monkeypatch)[1]
    b = _process(midi_folder, tmp_path / "b", monkeypatch)[1]
    assert a == b
    for f in a.parts:
        one = (tmp_path / "a/data/processed/pianoroll" / f).read_bytes()
        assert one == (tmp_path / "b/data/processed/pianoroll" / f).read_bytes()


def test_windows_are_consecutive_slices_of_the_roll_with_an_onset_plane(processed):
    split = Split(data_dir(), "train")
    w = Windows(split, seq_len=8, stride=8)
    items = list(w)
    assert len(items) == len(w) > 0
    seqs = list(split)
    expected = [(notes, a) for _, notes in seqs for a in w.starts(notes.n_frames)]
    K = split.meta.n_keys
    for (x, y), (notes, a) in list(zip(items, expected))[::7]:
        full = densify(notes, K, onsets=True)
        np.testing.assert_array_equal(x.numpy().astype(bool), full[a:a + 8])
        np.testing.assert_array_equal(y.numpy().astype(bool), full[a + 8:a + 16])


def test_shuffled_windows_are_a_seeded_permutation_and_ranks_share_them_out(processed):
    split = Split(data_dir(), "train")
    key = lambda xy: (xy[0].numpy().tobytes(), xy[1].numpy().tobytes())
    plain = sorted(map(key, Windows(split, 8, 4)))
    w = Windows(split, 8, 4, shuffle=True, seed=1)
    first = [key(xy) for xy in w]
    assert sorted(first) == plain and first != [key(xy) for xy in Windows(split, 8, 4)]
    assert first == [key(xy) for xy in Windows(split, 8, 4, shuffle=True, seed=1)]  # same seed, same order
    w.set_epoch(1)
    assert [key(xy) for xy in w] != first  # a new order each epoch
    ranks = [[key(xy) for xy in Windows(split, 8, 4, rank=r, world=2)] for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == plain


def test_transposition_stays_in_range_and_moves_every_pitched_note_together(processed):
    split = Split(data_dir(), "train")
    K, P_ = split.meta.n_keys, split.meta.n_pitches
    plain = list(Windows(split, 8, 8))
    moved = list(Windows(split, 8, 8, shuffle=False, transpose=(-3, 3), seed=3))
    shifts = set()
    for (x0, y0), (x1, y1) in zip(plain, moved):
        a, b = torch.cat([x0, y0]).numpy().astype(bool), torch.cat([x1, y1]).numpy().astype(bool)
        assert a.sum() == b.sum()
        np.testing.assert_array_equal(a[:, P_:K], b[:, P_:K])  # drum classes never move
        if not a[:, :P_].any():
            continue
        k = int(np.nonzero(b[:, :P_].any(0))[0][0] - np.nonzero(a[:, :P_].any(0))[0][0])
        assert -3 <= k <= 3
        np.testing.assert_array_equal(np.roll(a[:, :P_], k, axis=1), b[:, :P_])
        np.testing.assert_array_equal(np.roll(a[:, K:K + P_], k, axis=1), b[:, K:K + P_])
        shifts.add(k)
    assert len(shifts) > 3


def test_token_dataset_decodes_to_the_same_notes_as_the_rolls(midi_folder, tmp_path, monkeypatch):
    _process(midi_folder, tmp_path / "r", monkeypatch)
    rolls = dict(Split(data_dir(), "train").notes())
    _process(midi_folder, tmp_path / "t", monkeypatch, kind="tokens", tokenizer="REMI")
    split = Split(data_dir(), "train")
    assert (data_dir() / "tokenizer.json").exists() and split.meta.vocab_size > 100
    decoded = dict(split.notes())
    assert decoded.keys() == rolls.keys()
    for i, notes in decoded.items():
        assert sorted(zip(notes.key.tolist(), notes.start.tolist())) == sorted(
            zip(rolls[i].key.tolist(), rolls[i].start.tolist())), i


def test_token_windows_and_transposition(tokenized):
    split = Split(data_dir(), "train")
    plain = list(Windows(split, 16, 16))
    assert len(plain) == len(Windows(split, 16, 16)) > 0 and plain[0][0].dtype == torch.int64
    from pipeline import tokens

    pitch = tokens.pitch_table(split.tokenizer)
    shifted = list(Windows(split, 16, 16, transpose=(-3, 3), seed=0))
    ks = set()
    for (x0, y0), (x1, y1) in zip(plain, shifted):
        a, b = torch.cat([x0, y0]).numpy(), torch.cat([x1, y1]).numpy()
        np.testing.assert_array_equal(pitch[a] >= 0, pitch[b] >= 0)
        np.testing.assert_array_equal(a[pitch[a] < 0], b[pitch[b] < 0])  # time, duration, drum tokens stay
        d = set((pitch[b] - pitch[a])[pitch[a] >= 0].tolist())
        assert len(d) <= 1
        ks |= d
        assert pitch[b].max() <= 108 and pitch[b][pitch[b] >= 0].min(initial=21) >= 21
    assert len(ks) > 2 and ks <= set(range(-3, 4))


def test_repeat_last_baseline_shapes():
    x = torch.zeros(2, 4, 3)
    x[:, -1, 1] = 1
    y = torch.zeros(2, 4, 3)
    y[:, 0, 2] = 1
    nf = baselines.repeat_last(x, y, "next_frame")
    assert nf[0, 0, 1] == 1 and nf[0, 1, 2] == 1 and nf[0, 2].sum() == 0
    cont = baselines.repeat_last(x, y, "continuation")
    assert torch.all(cont[:, :, 1] == 1) and cont[:, :, [0, 2]].sum() == 0


def test_generated_midi_reads_back_as_seed_and_generated_tracks_with_drums_on_channel_10():
    grid = Grid(4, 21, 108, drums=True)
    rng = np.random.default_rng(0)
    seed = from_roll(rng.random((16, grid.n_keys)) < 0.05)
    gen = from_roll(rng.random((24, grid.n_keys)) < 0.05)
    score = parse(generate.to_midi([("seed", seed, 0), ("generated", gen, 16)], grid, program=40))
    assert [t.name for t in score.tracks] == ["seed", "seed drums", "generated", "generated drums"]
    assert [t.is_drum for t in score.tracks] == [False, True, False, True]
    assert score.tracks[0].program == 40
    for (pitched, drums), notes, offset in zip((score.tracks[:2], score.tracks[2:]), (seed, gen), (0, 16)):
        got = sorted((int(x.pitch), x.time // generate.TICKS_PER_FRAME - offset)
                     for t in (pitched, drums) for x in t.notes)
        want = sorted(zip(grid.midi_pitch(notes.key).tolist(), notes.start.tolist()))
        assert got == want


def test_checkpoint_mismatch_is_a_clear_error(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(Seq2Seq(Config(n_features=24, hidden=4, layers=1, dropout=0.0, seq_len=8, n_keys=12)).checkpoint(), path)
    with pytest.raises(ValueError, match="frame width .* of 24 but the data has 176"):
        load_model(SimpleNamespace(kind="pianoroll", features=176), path)
    with pytest.raises(ValueError, match="trained on pianoroll but the data is tokens"):
        load_model(SimpleNamespace(kind="tokens", vocab_size=300), path)
    with pytest.raises(FileNotFoundError, match="dvc repro train"):
        load_model(SimpleNamespace(kind="pianoroll", features=176), tmp_path / "missing.pt")


def test_summary_lines_for_both_kinds_say_whether_the_model_beats_the_baseline():
    from pipeline.summary import lines

    cell = lambda f1, nll: {"f1": f1, "density_pred": 4.0, "density_true": 3.9, "nll_per_frame": nll}
    rolls = {"next_frame": {"model": cell(0.8, 7.0), "repeat_last": cell(0.7, 8.7)},
             "continuation": {"model": cell(0.2, 16.0), "repeat_last": cell(0.25, 21.0)}}
    out = lines(rolls)
    assert "model beats it" in out[0] and "NLL 7.00" in out[0] and "does NOT beat" in out[1]
    toks = {"continuation": {"model": cell(0.3, None), "repeat_last": cell(0.25, 21.0)},
            "next_token": {"model": {"nll_per_token": 1.2, "accuracy": 0.6},
                           "unigram": {"nll_per_token": 3.3, "accuracy": 0.2}}}
    out = lines(toks)
    assert len(out) == 2 and "model beats it" in out[0] and "repeat-last NLL 21.00" in out[0]
    assert "1.200 nats/token" in out[1]
