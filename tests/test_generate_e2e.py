"""Evaluation, generation, audio and the report as a user drives them: `dvc repro`, `dvc exp run -S ...`,
`dvc metrics diff`, `dvc plots show`, and the report opened in a real (headless) browser, where a click on ▶
plays a sample from its notes. Each test reads the session's shared run (conftest.py, `built`) or changes its own
copy of it; the checks that need FluidSynth or Chromium skip, saying so, where they are missing."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from html import escape
from pathlib import Path

import pytest
import yaml
from matplotlib.image import imread
from symusic import Score

from pipeline import render
from tests.browser import CHROMIUM, NO_CHROMIUM, Browser
from tests.dvcrepo import copy_repo, dvc, env, path_without, set_params

pytestmark = pytest.mark.slow


def samples(repo: Path) -> dict:
    return json.loads((repo / "data/samples/index.json").read_text())


def audio(repo: Path) -> dict:
    return json.loads((repo / "data/audio/index.json").read_text())


def media_status(report: Path) -> tuple[str, str]:
    """What the report's own check says after Chromium loaded every picture and recording."""
    dom = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'<p id="media-status" data-ok="(\w*)">([^<]*)</p>', dom)
    assert m, dom[-2000:]
    return m.group(1), m.group(2)


def test_report_shows_every_sample_with_its_picture_and_recording(built):
    repo = built.repo
    html = (repo / "data/report.html").read_text()
    n = len(samples(repo)["samples"])
    # every sample's piano roll, and evaluate's histograms of the music statistics; a player per recording
    assert html.count("<img ") == n + 1 and html.count("<audio ") == len(audio(repo)["files"])
    assert "src='../metrics/music_distributions.png'" in html
    if not audio(repo)["rendered"]:
        assert f"No recordings: {escape(audio(repo)['reason'])}" in html


def test_render_writes_a_wav_for_every_sample_with_notes(built):
    repo = built.repo
    soundfont = Path(yaml.safe_load((repo / "params.yaml").read_text())["render"]["soundfont"])
    why = render.missing(soundfont)  # the render stage's own test of whether it can render here
    if why:
        assert not audio(repo)["rendered"] and audio(repo)["reason"] == why  # and the stage recorded why
        pytest.skip(f"FluidSynth cannot render here, so the render stage wrote no WAV: {why}")
    index = audio(repo)
    with_notes = [s["name"] for s in samples(repo)["samples"] if s["midi"] is not None]
    assert index["rendered"] and index["reason"] is None and sorted(index["files"]) == with_notes
    assert with_notes  # bernoulli sampling: some notes in 3 samples of 4 beats
    for wav in index["files"].values():
        data = (repo / "data/audio" / wav).read_bytes()
        assert data[:4] == b"RIFF" and data[8:12] == b"WAVE" and any(data[44:]), wav  # not silence


def test_render_without_fluidsynth_records_why_and_the_report_still_opens(built_copy, tmp_path):
    """The render stage's documented behaviour where FluidSynth is missing, on every machine: it is hidden from
    PATH here, whether or not this machine has it."""
    repo = built_copy
    hidden = {"PATH": path_without("fluidsynth", tmp_path / "bin")}
    proc = dvc(repo, "repro", "-f", "-s", "render", extra_env=hidden)
    assert "render: skipped: the fluidsynth program is not on PATH" in proc.stdout + proc.stderr
    index = audio(repo)
    assert not index["rendered"] and not index["files"]
    assert "fluidsynth program is not on PATH" in index["reason"] and "apt install fluidsynth" in index["reason"]
    dvc(repo, "repro", extra_env=hidden)  # the report follows (where the shared run had recordings)
    html = (repo / "data/report.html").read_text()
    assert f"No recordings: {escape(index['reason'])}" in html and "<audio " not in html
    assert html.count("<img ") == len(samples(repo)["samples"]) + 1


def test_the_report_loads_every_picture_and_recording_in_a_browser(built):
    if not CHROMIUM:
        pytest.skip(NO_CHROMIUM)
    repo = built.repo
    n, recordings = len(samples(repo)["samples"]), len(audio(repo)["files"])
    ok, text = media_status(repo / "data/report.html")
    assert ok == "true", text
    assert text == f"{n + 1} of {n + 1} pictures and {recordings} of {recordings} recordings loaded"


def test_each_samples_player_notes_are_its_midi_file_in_seconds(built):
    repo = built.repo
    for s in samples(repo)["samples"]:
        play = json.loads((repo / "data/samples" / s["notes"]).read_text())
        rows = play["notes"]
        assert len(rows) == s["seed_notes"] + s["generated_notes"]
        if s["midi"] is None:
            continue
        score = Score.from_file(str(repo / "data/samples" / s["midi"])).to("second")
        midi = sorted((round(n.time, 6), round(n.duration, 6), n.pitch, n.velocity, t.is_drum,
                       t.name.startswith("generated")) for t in score.tracks for n in t.notes)
        assert midi == sorted((t, d, p, v, k >= 0, part == 1) for t, d, p, v, k, part in rows), s["name"]


def test_each_pictures_recorded_plot_area_holds_the_line_between_seed_and_continuation(built):
    """Where generate says the plot area is (what the report's cursor runs over), the PNG draws the seed's end."""
    repo = built.repo
    for s in samples(repo)["samples"]:
        img = imread(repo / "data/samples" / s["png"])
        h, w = img.shape[:2]
        a, x = s["png_plot_area"], round(seed_end(s) * w)
        rows = img[round(a["top"] * h) + 3:round(a["bottom"] * h) - 3, x - 1:x + 2, :3].mean(-1)
        assert (rows < 0.35).any(1).all(), s["name"]  # a dark line, top to bottom of the plot, within a pixel


def play_in_browser(repo: Path, profile: Path) -> tuple[dict, list[dict]]:
    """Click ▶ on the first sample with notes in headless Chromium (a real mouse click, as a person gives, so no
    autoplay switch), then read its status line and cursor every 0.1 s until the cursor is over the continuation
    (or 20 s pass). Returns the sample's index entry and the readings."""
    s = next(s for s in samples(repo)["samples"] if s["seed_notes"] + s["generated_notes"])
    card = f"#{s['name']}"
    read = (f"(() => {{ const st = document.querySelector('{card} .play-status').dataset, "
            f"c = document.querySelector('{card} .cursor'); return {{...st, hidden: c.hidden, "
            "left: parseFloat(c.style.left), top: parseFloat(c.style.top), height: parseFloat(c.style.height)}; })()")
    readings = []
    with Browser(profile) as b:
        b.open((repo / "data/report.html").as_uri())
        assert b.js(read)["state"] == "idle"
        b.click(f"{card} button.play")
        end = time.monotonic() + 20
        while time.monotonic() < end:
            readings.append(b.js(read))
            if readings[-1].get("part") == "generated":
                break
            time.sleep(0.1)
    return s, readings


def seed_end(s: dict) -> float:
    """Where the seed ends on a sample's picture: a fraction of the PNG's width, from its recorded plot area."""
    a = s["png_plot_area"]
    return a["left"] + s["seed_frames"] / (s["seed_frames"] + s["generated_frames"]) * (a["right"] - a["left"])


def check_playback(repo: Path, profile: Path) -> None:
    s, readings = play_in_browser(repo, profile)
    last, a = readings[-1], s["png_plot_area"]
    n = s["seed_notes"] + s["generated_notes"]
    assert readings[0]["state"] in ("starting", "running")
    assert last["state"] == "running" and last["scheduled"] == last["notes"] == str(n), last  # every note scheduled
    assert last["part"] == "generated" and not last["hidden"], readings  # the cursor reached the continuation
    spf = json.loads((repo / "data/samples" / s["notes"]).read_text())["seconds_per_frame"]
    total = (s["seed_frames"] + s["generated_frames"]) * spf
    placed = [r for r in readings if "part" in r]
    per_second = 100 * (a["right"] - a["left"]) / total  # how far the cursor moves in a second, % of the width
    for r in placed:  # the cursor sits where the audio clock is, on the picture's time axis
        x = 100 * a["left"] + min(float(r["position"]), total) * per_second
        assert r["left"] == pytest.approx(x, abs=0.0005 * per_second + 1e-4), r  # position: rounded to the ms
    positions = [float(r["position"]) for r in placed]
    assert positions == sorted(positions) and last["left"] >= 100 * seed_end(s) - 1e-3
    assert last["top"] == pytest.approx(100 * a["top"])
    assert last["height"] == pytest.approx(100 * (a["bottom"] - a["top"]))


def test_a_sample_plays_from_its_notes_in_a_browser_with_a_cursor_over_its_picture(built, tmp_path):
    if not CHROMIUM:
        pytest.skip(NO_CHROMIUM)
    check_playback(built.repo, tmp_path / "profile")


def test_dvc_plots_show_curves_pr_and_sample_pictures(built_copy):
    repo = built_copy
    shown = json.loads(dvc(repo, "plots", "show", "--json").stdout)["data"]
    assert {"Loss per epoch", "Valid F1 per epoch", "metrics/pr_curve.json"} <= set(shown)
    assert any(k.startswith("Valid NLL per frame") for k in shown)
    assert sum(k.startswith("data/samples/rolls/") and v[0]["type"] == "image" for k, v in shown.items()) == 3
    assert shown["metrics/music_distributions.png"][0]["type"] == "image"
    pr = shown["metrics/pr_curve.json"][0]["content"]
    assert pr["encoding"]["x"]["field"] == "recall" and pr["encoding"]["y"]["field"] == "precision"
    # the default NADE head's frames are decoded at each threshold of a grid: 0.05 to 0.95
    assert [round(r["threshold"], 2) for r in pr["data"]["values"]] == [round(0.05 * i, 2) for i in range(1, 20)]


def test_sampling_modes_from_silence_run_only_generation_and_after(built_copy):
    repo = built_copy
    out = dvc(repo, "exp", "run", "-S", "generate.sampling=bernoulli", "-S", "generate.temperature=1.5",
              "-S", "generate.prime=empty", "-S", "generate.unit=seconds", "-S", "generate.length=2").stdout
    for stage in ("generate", "evaluate", "render", "report"):
        assert f"Running stage '{stage}'" in out
    for stage in ("train", "calibrate"):
        assert f"Running stage '{stage}'" not in out
    idx = samples(repo)
    assert (idx["sampling"], idx["prime"], idx["temperature"]) == ("bernoulli", "empty", 1.5)
    for s in idx["samples"]:
        assert s["generated_frames"] == 16  # 2 s at the samples' 120 bpm and 4 frames per beat
        assert s["seed_notes"] == 0 and s["seed_from"] == "silence"
        assert (s["midi"] is not None) == (s["generated_notes"] > 0)
        if s["midi"]:
            score = Score.from_file(str(repo / "data/samples" / s["midi"]))
            assert {t.name for t in score.tracks} <= {"generated", "generated drums"}
    midis = {p.name: p.read_bytes() for p in (repo / "data/samples").glob("*.mid")}
    dvc(repo, "repro", "-f", "-s", "generate")
    assert samples(repo) == idx  # seeded sampling: the same samples again, byte for byte
    assert {p.name: p.read_bytes() for p in (repo / "data/samples").glob("*.mid")} == midis


def test_silence_is_reported_and_never_written_as_an_empty_midi_file(built_copy):
    repo = built_copy
    proc = dvc(repo, "exp", "run", "-S", "generate.prime=empty", "-S", "generate.sampling=threshold",
               "-S", "generate.threshold=0.99")
    idx = samples(repo)
    assert all(s["generated_notes"] == 0 and s["midi"] is None for s in idx["samples"])
    assert not list((repo / "data/samples").glob("*.mid"))
    assert "NO NOTES generated in 3" in proc.stdout + proc.stderr
    ev = json.loads((repo / "metrics/eval.json").read_text())
    assert ev["music"]["silent_samples"] == 3 and ev["music"]["generated"]["pitch_range"] is None
    assert ev["music"]["real"]["pitch_range"] > 0
    assert "The model generated no notes" in (repo / "data/report.html").read_text()


def test_a_head_change_shows_in_metrics_diff(built_copy):
    repo = built_copy
    dvc(repo, "exp", "run", "-S", "model.head=independent")
    diff = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)["metrics/eval.json"]
    # the likelihood moves; at these tiny sizes both heads may decide silence at 0.5, so densities need not
    for key in ("next_frame.model.nll_per_frame", "versus_repeat_last.next_frame_nll"):
        assert diff[key]["old"] != diff[key]["new"], diff[key]


def test_a_model_of_another_representation_or_range_is_refused_by_name(built_copy):
    repo = built_copy
    cmd = [sys.executable, "-m", "pipeline.generate"]
    set_params(repo, {"represent": {"pitch_low": 36}})
    dvc(repo, "repro", "convert")  # new data, old model
    proc = subprocess.run(cmd, cwd=repo, env=env(), capture_output=True, text=True)
    assert proc.returncode != 0 and "frame width (keys x planes) of 176 but the data has 146" in proc.stderr
    assert "Traceback" not in proc.stderr
    set_params(repo, {"represent": {"pitch_low": 21, "kind": "tokens"}})
    dvc(repo, "repro", "convert")
    proc = subprocess.run(cmd, cwd=repo, env=env(), capture_output=True, text=True)
    assert proc.returncode != 0 and "trained on pianoroll but the data is tokens" in proc.stderr
    (repo / "models/model.pt").unlink()
    proc = subprocess.run(cmd, cwd=repo, env=env(), capture_output=True, text=True)
    assert proc.returncode != 0 and "models/model.pt is missing" in proc.stderr


@pytest.fixture(scope="module")
def no_soundfont(built, tmp_path_factory) -> Path:
    """A copy of the shared run after `dvc exp run -S render.soundfont=/nonexistent/gm.sf2`."""
    repo = copy_repo(built.repo, tmp_path_factory.mktemp("no_soundfont") / "repo")
    dvc(repo, "exp", "run", "-S", "render.soundfont=/nonexistent/gm.sf2")
    return repo


def test_render_without_a_soundfont_is_skipped_with_the_reason_and_the_report_still_opens(no_soundfont):
    repo = no_soundfont
    index = audio(repo)
    assert not index["rendered"] and "/nonexistent/gm.sf2" in index["reason"] and not index["files"]
    html = (repo / "data/report.html").read_text()
    assert "No recordings" in html and "<audio " not in html


def test_the_report_without_recordings_loads_in_a_browser(no_soundfont):
    if not CHROMIUM:
        pytest.skip(NO_CHROMIUM)
    ok, text = media_status(no_soundfont / "data/report.html")
    assert ok == "true" and text.endswith("0 of 0 recordings loaded"), text


def test_without_recordings_a_sample_still_plays_in_the_browser(no_soundfont, tmp_path):
    """The issue's "done when": the report plays a sample in headless Chromium where FluidSynth wrote nothing."""
    if not CHROMIUM:
        pytest.skip(NO_CHROMIUM)
    assert not audio(no_soundfont)["files"]
    check_playback(no_soundfont, tmp_path / "profile")
