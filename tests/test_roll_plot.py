"""The sample pictures fit what was trained: the keys the training data sounds (from calibrate's frequencies),
named by pitch or drum class, with beats and bars; the plot area generate records is where the PNG draws; the
notes the report's player schedules are the MIDI file's, in seconds."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread
from symusic import Score

from pipeline import baselines, convert, generate, prepare, representations, roll_plot
from pipeline import params as P
from pipeline.dataset import Split, data_dir
from pipeline.pianoroll import Grid, Notes
from tests.test_prepare import _acquire

PIANO = Grid(4, 21, 108)
KIT = Grid(4, 21, 108, drums=True)


def notes(keys, starts, ends=None) -> Notes:
    starts = np.asarray(starts, np.int32)
    return Notes(np.asarray(keys, np.uint8), starts, np.asarray(ends if ends is not None else starts + 1, np.int32))


def used(grid: Grid, keys) -> np.ndarray:
    out = np.zeros(grid.n_keys, bool)
    out[list(keys)] = True
    return out


def drum_key(name: str) -> int:
    return KIT.n_pitches + list(roll_plot.gm.DRUM_CLASSES).index(name)


def test_note_names_follow_scientific_pitch_notation():
    assert [roll_plot.note_name(p) for p in (60, 61, 69, 21, 108, 0, 127)] == \
        ["C4", "C#4", "A4", "A0", "C8", "C-1", "G9"]
    with pytest.raises(ValueError, match="outside 0..127"):
        roll_plot.note_name(128)


def test_pitch_rows_run_from_the_lowest_used_to_the_highest_named_on_every_c():
    r = roll_plot.rows(PIANO, used(PIANO, [36 - 21, 50 - 21, 88 - 21]))  # C2, D3, E6
    assert r.keys == tuple(range(36 - 21, 88 - 21 + 1)) and r.n_pitched == len(r.keys) == 53
    assert [label for label in r.labels if label] == ["C2", "C3", "C4", "C5", "C6"]
    assert r.labels[0] == "C2" and r.labels[60 - 36] == "C4" and r.labels[1] == ""


def test_a_narrow_range_names_every_row():
    r = roll_plot.rows(PIANO, used(PIANO, [60 - 21, 67 - 21]))
    assert r.labels == ("C4", "C#4", "D4", "D#4", "E4", "F4", "F#4", "G4")


def test_a_drums_only_set_gets_drum_class_names_alone():
    r = roll_plot.rows(KIT, used(KIT, [drum_key("kick"), drum_key("snare"), drum_key("closed_hihat")]))
    assert r.n_pitched == 0 and r.labels == ("kick", "snare", "closed hi-hat")
    assert r.keys == (88, 89, 90)


def test_pitches_then_the_used_drum_classes_in_kit_order():
    r = roll_plot.rows(KIT, used(KIT, [drum_key("ride"), 40 - 21, drum_key("kick"), 43 - 21]))
    assert r.n_pitched == 4 and r.labels == ("E2", "F2", "F#2", "G2", "kick", "ride")


def test_rows_refuse_no_key_and_a_set_of_another_grid():
    with pytest.raises(ValueError, match="no key is used"):
        roll_plot.rows(KIT, np.zeros(KIT.n_keys, bool))
    with pytest.raises(ValueError, match="expected 97 keys"):
        roll_plot.rows(KIT, np.ones(PIANO.n_keys, bool))


def drum_sample():
    """Two bars of kit as the seed, then two bars generated, on a grid trained on kick, snare and hi-hats."""
    seed = notes([drum_key("kick"), drum_key("closed_hihat"), drum_key("snare"), drum_key("closed_hihat")],
                 [0, 4, 8, 12])
    gen = notes([drum_key("kick"), drum_key("snare"), drum_key("open_hihat"), drum_key("kick")], [0, 8, 14, 16])
    trained = used(KIT, [drum_key(c) for c in ("kick", "snare", "closed_hihat", "open_hihat")])
    return seed, gen, trained


def vertical_lines(ax, width: float) -> set[float]:
    """The x (beats) of the vertical lines `width` points wide that the axes draw as line collections."""
    return {round(float(seg[0][0]), 6) for c in ax.collections if c.get_linewidth()[0] == width
            for seg in c.get_segments()}


def test_a_drums_only_sample_is_drawn_on_its_drum_classes_with_bars_and_beats(tmp_path):
    seed, gen, trained = drum_sample()
    fig, ax = roll_plot.figure(seed, gen, 32, 32, KIT, trained, 4, "drums")
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["kick", "snare", "closed hi-hat", "open hi-hat"]
    assert ax.get_ylabel() == "drum" and ax.get_xlim() == (0, 16)
    assert [t.get_text() for t in ax.get_xticklabels() if 0 <= t.get_position()[0] <= 16] == \
        ["1", "2", "3", "4", "5"]  # bar numbers at every fourth beat
    assert vertical_lines(ax, 0.9) == {0, 4, 8, 12, 16} and vertical_lines(ax, 0.5) == set(range(17))  # bars, beats
    texts = {t.get_text() for t in ax.texts}
    assert texts == {"seed", "generated"}
    roll_plot.save(fig, ax, tmp_path / "drums.png")


def test_on_an_absolute_grid_time_runs_in_seconds():
    grid = Grid(4, 21, 108, steps_per_second=10)
    assert generate.frames_per_beat(grid) == 10 and generate.frames_per_beat(PIANO) == 4  # 60 bpm: a beat a second
    fig, ax = roll_plot.figure(notes([39], [0], [20]), notes([43], [5], [60]), 40, 80, grid, used(grid, [39]),
                               generate.frames_per_beat(grid), "performance")
    fig.canvas.draw()
    assert ax.get_xlim() == (0, 12) and ax.get_xlabel().startswith("second")
    assert [t.get_text() for t in ax.get_xticklabels() if 0 <= t.get_position()[0] <= 12] == ["0", "4", "8", "12"]
    assert vertical_lines(ax, 0.5) == set(range(13))


def test_a_key_the_trained_data_never_sounds_still_shows_when_a_sample_plays_it():
    trained = used(PIANO, range(60 - 21, 72 - 21 + 1))
    fig, ax = roll_plot.figure(notes([48 - 21], [0], [4]), notes([84 - 21], [0], [2]), 8, 8, PIANO, trained, 4,
                               "wide")  # C3 in the seed, C6 generated: outside C4..C5, the keys trained on
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["C3", "C4", "C5", "C6"] and ax.get_ylim() == (-0.5, 84 - 48 + 0.5)


def dark(pixels: np.ndarray) -> np.ndarray:
    return pixels[..., :3].mean(-1) < 0.35


def test_the_recorded_plot_area_is_where_the_png_draws_its_frame_and_the_seed_boundary(tmp_path):
    seed, gen, trained = drum_sample()
    fig, ax = roll_plot.figure(seed, gen, 32, 32, KIT, trained, 4, "drums")
    area = roll_plot.save(fig, ax, tmp_path / "a.png")
    img = imread(tmp_path / "a.png")
    h, w = img.shape[:2]
    assert (w, h) == (1000, 300)
    left, right, top, bottom = (round(area[k] * n) for k, n in (("left", w), ("right", w), ("top", h), ("bottom", h)))
    assert 0 < left < right < w and 0 < top < bottom < h
    inside = slice(top + 3, bottom - 3)
    for x in (left, right):  # the axes' frame: a dark column along the whole plot height, within a pixel
        assert dark(img[inside, x - 1:x + 2]).any(1).all(), x
    for y in (top, bottom):
        assert dark(img[y - 1:y + 2, left + 3:right - 3]).any(0).all(), y
    boundary = round((area["left"] + 0.5 * (area["right"] - area["left"])) * w)  # the seed is half the sample
    assert dark(img[inside, boundary - 1:boundary + 2]).any(1).all()
    assert not dark(img[inside, boundary - 40:boundary - 30]).any(1).all()  # no such line elsewhere
    fig, ax = roll_plot.figure(seed, gen, 32, 32, KIT, trained, 4, "drums")
    assert roll_plot.save(fig, ax, tmp_path / "b.png") == area
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()  # same input, same bytes


def test_trained_keys_are_the_keys_calibrates_frequencies_find_in_train():
    """baselines.fit (what calibrate records) on windows that sound three keys, with an onset plane."""
    keys = [40 - 21, 64 - 21, drum_key("snare")]
    roll = np.zeros((2, 16, 2 * KIT.n_keys), np.float32)
    roll[:, 3:9, keys[0]] = roll[:, 3, KIT.n_keys + keys[0]] = 1
    roll[0, 10, keys[1]] = 1                       # a sustain cell alone
    roll[1, 12, KIT.n_keys + keys[2]] = 1          # an onset cell alone
    import torch

    x = torch.from_numpy(roll)
    fitted = baselines.fit([(x, x)], KIT.n_keys)
    assert min(fitted["key_frequency"]) > 0  # clamped: never exactly zero
    assert np.nonzero(generate.trained_keys(fitted["key_frequency"], KIT))[0].tolist() == keys
    assert generate.trained_keys([], KIT).all()
    with pytest.raises(ValueError, match="not a multiple of the grid's 97 keys"):
        generate.trained_keys([0.5] * 100, KIT)


def test_key_summary_names_the_range_and_the_drum_classes():
    k = generate.key_summary(used(KIT, [36 - 21, 88 - 21, drum_key("ride"), drum_key("kick")]), KIT)
    assert k == {"lowest_pitch": 36, "highest_pitch": 88, "lowest_name": "C2", "highest_name": "E6",
                 "drum_classes": ["kick", "ride"]}
    assert generate.key_summary(used(KIT, [drum_key("kick")]), KIT)["lowest_pitch"] is None


def test_the_players_notes_are_the_midi_files_in_seconds():
    seed = notes([60 - 21, 64 - 21, drum_key("kick")], [0, 2, 4], [4, 3, 5])
    gen = notes([67 - 21, drum_key("crash"), drum_key("snare")], [1, 1, 6], [9, 2, 7])
    play = generate.playback([(seed, 0), (gen, 8)], KIT)
    assert play["seconds_per_frame"] == 0.125 and play["columns"][-2:] == ["drum", "part"]
    rows = play["notes"]
    assert rows == sorted(rows, key=lambda r: (r[0], r[5], r[2])) and len(rows) == 6
    assert [0.0, 0.5, 60, 80, -1, 0] in rows and [1.125, 0.125, 49, 80, 7, 1] in rows  # crash: GM 49
    score = Score.from_midi(generate.to_midi([("seed", seed, 0), ("generated", gen, 8)], KIT, 0)).to("second")
    midi = sorted((round(n.time, 6), round(n.duration, 6), n.pitch, n.velocity, t.is_drum, t.name.startswith("gen"))
                  for t in score.tracks for n in t.notes)
    assert midi == sorted((s, d, p, v, k >= 0, part == 1) for s, d, p, v, k, part in rows)
    absolute = generate.playback([(seed, 0)], Grid(4, 21, 108, steps_per_second=50, drums=True))
    assert absolute["seconds_per_frame"] == 0.02  # 60 bpm, a beat a second, 50 frames in it


@pytest.fixture
def drums_only(midi_folder, tmp_path, monkeypatch):
    """The fixture files' drum tracks alone (filter.instruments: [drums]), converted as a piano roll."""
    _acquire(midi_folder, tmp_path, monkeypatch)
    p = P.parse({"data": {"sources": ["local"], "local": {"path": "x"}}, "prepare": {"workers": 1},
                 "filter": {"instruments": ["drums"]}, "split": {"valid": 0.01, "test": 0.01}})
    prepare.run(p, tmp_path / "data/prepared")
    out = tmp_path / "data/processed/pianoroll"
    out.mkdir(parents=True)
    convert.run(p, out).write(out / "meta.json")
    # the few drum tracks may all land in one split: fit on whichever holds them, as calibrate fits on train
    return next(s for s in (Split(data_dir(), name) for name in ("train", "valid", "test")) if s.units)


def test_a_drums_only_corpus_gives_pictures_of_drum_classes_alone(drums_only):
    train = drums_only
    grid = train.meta.grid
    assert grid.drums and train.meta.program == 0 and sum(train.meta.sequences.values()) >= 1
    rep = representations.of(train.meta.kind)
    fitted = baselines.fit(rep.frame_windows(train, 8, 16), grid.n_keys)  # as calibrate fits it on train
    trained = generate.trained_keys(fitted["key_frequency"], grid)
    assert trained.any() and not trained[:grid.n_pitches].any()
    sounded = sorted({int(k) for _, n in train.notes() for k in n.key})
    r = roll_plot.rows(grid, trained)
    assert r.n_pitched == 0 and list(r.keys) == sounded  # the fixture's kit is a closed hi-hat alone
    assert r.labels == tuple(roll_plot.DRUM_LABELS[roll_plot.gm.DRUM_CLASS_NAMES[k - grid.n_pitches]] for k in sounded)
    assert generate.key_summary(trained, grid)["lowest_pitch"] is None
