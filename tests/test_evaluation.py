"""Metrics, music statistics and sampling, each checked against a hand computation or a brute-force one."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline import music
from pipeline.metrics import FrameCounts, Sweep, onsets, sounding_prob
from pipeline.model import Config, Seq2Seq
from pipeline.pianoroll import Grid, Notes
from pipeline.rollout import continue_roll
from pipeline.sampling import Sampler

GRID = Grid(4, 21, 108)
DRUM_GRID = Grid(4, 21, 108, drums=True)


def notes(*rows, keys: bool = False) -> Notes:
    """(midi pitch, start, end) rows (or (key index, start, end) with `keys`) -> Notes sorted by start."""
    rows = sorted(rows, key=lambda r: (r[1], r[0]))
    key = [p if keys else p - GRID.pitch_low for p, _, _ in rows]
    return Notes(np.array(key, np.uint8), np.array([r[1] for r in rows], np.int32),
                 np.array([r[2] for r in rows], np.int32))


# ---- music statistics -------------------------------------------------------------------------------------

def test_music_statistics_of_a_c_major_scale_match_hand_computation():
    scale = [60, 62, 64, 65, 67, 69, 71]
    n = notes(*[(p, 4 * i, 4 * i + 4) for i, p in enumerate(scale)], (48, 0, 28))  # a held C under it
    s = music.describe(n, GRID, 32)
    assert s["notes"] == 8 and s["pitch_range"] == 71 - 48 and s["pitches_used"] == 8
    assert s["pitch_classes_used"] == 7 and s["scale_consistency"] == 1.0
    pc = np.array([2, 1, 1, 1, 1, 1, 1]) / 8  # C twice
    assert s["pitch_class_entropy"] == pytest.approx(-(pc * np.log2(pc)).sum())
    assert s["polyphony"] == 2.0  # frames 0..27 sound two notes; 28..31 none (not counted)
    assert s["polyphony_rate"] == pytest.approx(28 / 32)
    assert s["empty_beat_rate"] == 1 / 8  # of the 8 beats only the last (frames 28..31) starts no note
    assert s["density"] == pytest.approx((28 + 28) / 32)


def test_empty_beats_count_beats_where_no_note_starts():
    n = notes((60, 0, 16))  # one long note: beats 1..3 have no onset
    assert music.describe(n, GRID, 16)["empty_beat_rate"] == 0.75


def test_degenerate_samples_give_undefined_values_never_made_up_numbers():
    empty = music.describe(Notes(np.zeros(0, np.uint8), np.zeros(0, np.int32), np.zeros(0, np.int32)), GRID, 32)
    for k in ("pitch_range", "pitch_class_entropy", "scale_consistency", "polyphony", "groove_consistency",
              "drum_pattern_consistency"):
        assert math.isnan(empty[k]), k
    assert empty["pitches_used"] == 0 and empty["empty_beat_rate"] == 1.0 and empty["polyphony_rate"] == 0.0
    kick, snare = DRUM_GRID.n_pitches + 0, DRUM_GRID.n_pitches + 1
    bar = [(kick, 0, 1), (snare, 4, 5), (kick, 8, 9), (snare, 12, 13)]
    drums = music.describe(notes(*bar, *[(k, s + 16, e + 16) for k, s, e in bar], keys=True), DRUM_GRID, 32)
    assert math.isnan(drums["pitch_range"]) and drums["pitches_used"] == 0  # not -127 or 0 for a range
    assert drums["drum_pattern_consistency"] == 1.0 and drums["groove_consistency"] == 1.0
    changed = music.describe(notes(*bar, (kick, 16, 17), (kick, 20, 21), keys=True), DRUM_GRID, 32)
    # bars {k0,s4,k8,s12} and {k0,k4}: 1 hit shared of 5 (Jaccard)
    assert changed["drum_pattern_consistency"] == pytest.approx(1 / 5)
    one_bar = music.describe(notes((60, 0, 4), (64, 4, 8)), GRID, 16)
    assert math.isnan(one_bar["groove_consistency"])  # needs two bars
    assert music.finite(one_bar)["groove_consistency"] is None


def test_means_skip_undefined_values_and_gaps_are_generated_minus_real():
    a = music.describe(notes((60, 0, 4)), GRID, 16)
    b = music.describe(Notes(np.zeros(0, np.uint8), np.zeros(0, np.int32), np.zeros(0, np.int32)), GRID, 16)
    out = music.compare([a, b], [a])
    assert out["generated"]["pitch_range"] == 0 and out["generated"]["notes"] == 0.5
    assert out["gap"]["notes"] == -0.5 and out["generated"]["groove_consistency"] is None


# ---- prediction metrics -----------------------------------------------------------------------------------

def test_macro_and_onset_f1_match_hand_counts():
    pred = torch.tensor([[[1, 0, 0], [1, 1, 0]]], dtype=torch.bool)
    true = torch.tensor([[[1, 0, 0], [0, 1, 0]]], dtype=torch.bool)
    prev = torch.zeros(1, 1, 3, dtype=torch.bool)
    c = FrameCounts()
    c.add(pred, true, 0.0, onsets(pred, prev, 3), onsets(true, prev, 3))
    s = c.summary()
    assert s["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1))
    assert s["f1_macro"] == pytest.approx(np.mean([2 / 3, 1.0]))  # key 2 never sounds: no F1, not 0
    # onsets: pred key0@0, key1@1; true key0@0, key1@1 -> perfect
    assert s["onset_f1"] == 1.0 and s["density_gap"] == pytest.approx((3 - 2) / 2)


def test_onsets_use_the_onset_plane_when_there_is_one():
    frames = torch.tensor([[[1, 0, 0, 0], [1, 0, 1, 0]]], dtype=torch.bool)  # 2 keys: sustain | onset planes
    assert onsets(frames, torch.zeros(1, 1, 4), 2).tolist() == [[[False, False], [True, False]]]
    assert sounding_prob(torch.tensor([0.2, 0.1, 0.3, 0.6]), 2).tolist() == pytest.approx([0.3, 0.6])


def test_sweep_matches_brute_force_thresholds():
    g = torch.Generator().manual_seed(0)
    probs, true = torch.rand(500, generator=g), torch.rand(500, generator=g) < 0.3
    sw = Sweep()
    sw.add(probs[:250], true[:250])
    sw.add(probs[250:], true[250:])
    t, prec, rec, f1 = sw.curve()
    for k in (99, 499, 899):
        pred = probs >= t[k]
        tp = int((pred & true).sum())
        assert rec[k] == pytest.approx(tp / int(true.sum()))
        assert prec[k] == pytest.approx(tp / int(pred.sum()))
    best, best_f1 = sw.best()
    assert best_f1 == pytest.approx(f1.max()) and 0 < best < 1


# ---- sampling ---------------------------------------------------------------------------------------------

def test_sampling_modes():
    logits = torch.tensor([[[2.0, 0.0, -2.0, 1.0]]]).expand(2000, 1, 4)
    assert Sampler("threshold", 0.5)(logits)[0, 0].tolist() == [1, 0, 0, 1]
    draw = lambda mode, **kw: Sampler(mode, generator=torch.Generator().manual_seed(1), **kw)(logits)
    b = draw("bernoulli")
    assert b.mean(0)[0].tolist() == pytest.approx(torch.sigmoid(logits[0, 0]).tolist(), abs=0.04)
    assert torch.equal(b, draw("bernoulli"))  # seeded: reproducible
    top = draw("topk", top_k=1, n_keys=2)  # per plane of 2 keys: only key 0 and key 3 (the top of each) may sound
    assert top[..., 1].sum() == 0 and top[..., 2].sum() == 0 and top[..., 0].sum() > 0
    cold = draw("bernoulli", temperature=0.1)
    assert cold.mean(0)[0].tolist() == pytest.approx([1, 0.5, 0, 1], abs=0.05)
    tok = Sampler("topk", top_k=2, tokens=True, generator=torch.Generator().manual_seed(0))(logits)
    assert set(tok.flatten().tolist()) == {0, 3}
    assert Sampler("threshold", tokens=True)(logits)[0].tolist() == [0]


def test_a_stochastic_rollout_returns_the_frames_it_fed_back():
    torch.manual_seed(0)
    model = Seq2Seq(Config(n_features=8, hidden=8, layers=1, dropout=0.0, seq_len=4, n_keys=8)).eval()
    seed = (torch.rand(3, 4, 8) < 0.3).float()
    run = lambda s: continue_roll(model, seed, 10, Sampler("bernoulli", generator=torch.Generator().manual_seed(s)))
    a, b, c = run(1), run(1), run(2)
    assert a.shape == (3, 10, 8) and torch.equal(a, b) and not torch.equal(a, c)
    # the first window again, free running with the same draws: the frames it took are the rollout's
    taken, logits = model.free(seed, 4, Sampler("bernoulli", generator=torch.Generator().manual_seed(1)))
    assert torch.equal(taken, a[:, :4])
    # and replaying them under teacher forcing gives the logits they were drawn from
    assert torch.allclose(model(seed, taken), logits, atol=1e-5)
