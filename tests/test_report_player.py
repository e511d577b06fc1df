"""The report's player parts, fast: what a sample card embeds for the browser to play, and the clear error when
generate wrote no notes for it. The browser itself plays them in tests/test_generate_e2e.py."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from pipeline import generate, report
from pipeline.pianoroll import Grid, Notes

GRID = Grid(4, 21, 108, drums=True)
AREA = {"left": 0.06, "top": 0.1, "right": 0.98, "bottom": 0.87}


def entry(name: str, seed_notes: int, generated_notes: int) -> dict:
    return {"name": name, "midi": f"{name}.mid" if generated_notes else None, "png": f"rolls/{name}.png",
            "png_plot_area": AREA, "notes": f"notes/{name}.json", "seed_from": "a/</script>.mid",
            "seed_start_frame": 0, "seed_frames": 8, "seed_notes": seed_notes, "generated_frames": 16,
            "generated_notes": generated_notes}


def play(n_seed: int, n_gen: int) -> dict:
    k = np.arange(n_seed + n_gen, dtype=np.uint8) % 5 + 39
    s = np.arange(n_seed + n_gen, dtype=np.int32)
    seed, gen = (Notes(k[a:b], s[a:b] % 8, s[a:b] % 8 + 1) for a, b in ((0, n_seed), (n_seed, n_seed + n_gen)))
    return generate.playback([(seed, 0), (gen, 8)], GRID)


def embedded(card: str) -> dict:
    m = re.search(r"<script type='application/json' class='notes'>(.*?)</script>", card, re.S)
    assert m, card
    return json.loads(m.group(1))


def test_a_card_embeds_its_notes_seconds_and_plot_area_for_the_player():
    s, notes = entry("sample_000", 3, 4), play(3, 4)
    card = report.sample_card(s, {"files": {}}, notes)
    data = embedded(card)
    assert data["notes"] == notes["notes"] and len(data["notes"]) == 7 and data["area"] == AREA
    assert (data["seed_seconds"], data["total_seconds"]) == (1.0, 3.0)  # 8 and 24 frames at 120 bpm, 4 a beat
    assert "data-notes='7'" in card and "class='play'" in card and "class='cursor' hidden" in card
    assert card.count("</script>") == 1  # the seed's odd name is escaped, never ends the JSON early


def test_the_embedded_json_holds_no_angle_bracket_and_reads_back_the_same():
    data = {"x": "</script><!--", "n": [1, 2.5]}
    text = report.embedded_json(data)
    assert "<" not in text and json.loads(text) == data


def test_a_sample_without_notes_gets_no_player_and_one_without_a_continuation_plays_its_seed():
    silent = report.sample_card(entry("sample_001", 0, 0), {"files": {}}, play(0, 0))
    assert "class='play'" not in silent and "nothing to play" in silent
    seed_only = report.sample_card(entry("sample_002", 2, 0), {"files": {}}, play(2, 0))
    assert "class='play'" in seed_only and "plays the seed alone" in seed_only
    assert "The model generated no notes" in silent and "The model generated no notes" in seed_only


def test_the_player_script_is_inlined_and_reaches_for_nothing_outside_the_page():
    js = report.PLAYER.read_text()
    assert "AudioContext" in js and "#play=" in js
    for outside in ("http:", "https:", "fetch(", "import ", "XMLHttpRequest", "<img ", "<audio "):
        assert outside not in js, outside


def test_notes_missing_from_an_older_generate_are_a_clear_error(tmp_path):
    (tmp_path / "notes").mkdir()
    s = entry("sample_000", 1, 1)
    (tmp_path / "notes/sample_000.json").write_text(json.dumps(play(1, 1)))
    assert report.read_notes({"samples": [s]}, tmp_path)["sample_000"]["notes"] == play(1, 1)["notes"]
    old = {k: v for k, v in s.items() if k not in ("notes", "png_plot_area")}
    with pytest.raises(FileNotFoundError, match="older generate; run `dvc repro generate`"):
        report.read_notes({"samples": [old]}, tmp_path)
    (tmp_path / "notes/sample_000.json").unlink()
    with pytest.raises(FileNotFoundError, match="sample_000.json"):
        report.read_notes({"samples": [s]}, tmp_path)
