"""Evaluation, generation, audio and the report as a user drives them: `dvc repro`, `dvc exp run -S ...`,
`dvc metrics diff`, `dvc plots show`, and the report opened in a real (headless) browser."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from symusic import Score

from tests.dvcrepo import TINY, dvc, env, make_repo, merge, run, set_params

pytestmark = pytest.mark.slow
CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
FLUIDSYNTH = shutil.which("fluidsynth") and Path("/usr/share/sounds/sf2/FluidR3_GM.sf2").is_file()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("generate")
    r = make_repo(d / "repo", merge(TINY, {"data": {"music21": {"composers": ["bach"], "max_files": 16}},
                                           "generate": {"n_samples": 3, "length": 4}}))
    dvc(r, "repro")
    run(r, "git", "add", "-A")
    run(r, "git", "commit", "-qm", "baseline run")
    return r


def restore(repo: Path) -> None:
    """Back to the committed baseline run (an experiment leaves its results in the workspace)."""
    run(repo, "git", "checkout", "--", ".")
    dvc(repo, "checkout", "-f")


def samples(repo: Path) -> dict:
    return json.loads((repo / "data/samples/index.json").read_text())


def media_status(report: Path) -> tuple[str, str]:
    """What the report's own check says after Chromium loaded every picture and recording."""
    dom = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'<p id="media-status" data-ok="(\w*)">([^<]*)</p>', dom)
    assert m, dom[-2000:]
    return m.group(1), m.group(2)


def test_report_shows_every_sample_with_its_picture_and_recording(repo):
    audio = json.loads((repo / "data/audio/index.json").read_text())
    html = (repo / "data/report.html").read_text()
    n = len(samples(repo)["samples"])
    # every sample's piano roll, and evaluate's histograms of the music statistics
    assert html.count("<img ") == n + 1 and html.count("<audio ") == len(audio["files"])
    assert "src='../metrics/music_distributions.png'" in html
    if FLUIDSYNTH:
        assert audio["rendered"] and len(audio["files"]) == sum(s["midi"] is not None for s in samples(repo)["samples"])
        wav = (repo / "data/audio" / next(iter(audio["files"].values()))).read_bytes()
        assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE" and any(wav[44:])  # not silence
    else:
        assert not audio["rendered"] and "apt install fluidsynth" in audio["reason"]
    if not CHROMIUM:
        pytest.skip("Chromium is not installed (Debian: apt install chromium): the browser check is skipped")
    ok, text = media_status(repo / "data/report.html")
    assert ok == "true", text
    assert text == f"{n + 1} of {n + 1} pictures and {len(audio['files'])} of {len(audio['files'])} recordings loaded"


def test_dvc_plots_show_curves_pr_and_sample_pictures(repo):
    shown = json.loads(dvc(repo, "plots", "show", "--json").stdout)["data"]
    assert {"Loss per epoch", "Valid F1 per epoch", "metrics/pr_curve.json"} <= set(shown)
    assert any(k.startswith("Valid NLL per frame") for k in shown)
    assert sum(k.startswith("data/samples/rolls/") and v[0]["type"] == "image" for k, v in shown.items()) == 3
    assert shown["metrics/music_distributions.png"][0]["type"] == "image"
    pr = shown["metrics/pr_curve.json"][0]["content"]
    assert pr["encoding"]["x"]["field"] == "recall" and pr["encoding"]["y"]["field"] == "precision"
    # the default NADE head's frames are decoded at each threshold of a grid: 0.05 to 0.95
    assert [round(r["threshold"], 2) for r in pr["data"]["values"]] == [round(0.05 * i, 2) for i in range(1, 20)]


def test_sampling_modes_from_silence_run_only_generation_and_after(repo):
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
    restore(repo)


def test_silence_is_reported_and_never_written_as_an_empty_midi_file(repo):
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
    restore(repo)


def test_a_head_change_shows_in_metrics_diff(repo):
    dvc(repo, "exp", "run", "-S", "model.head=independent")
    diff = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)["metrics/eval.json"]
    # the likelihood moves; at these tiny sizes both heads may decide silence at 0.5, so densities need not
    for key in ("next_frame.model.nll_per_frame", "versus_repeat_last.next_frame_nll"):
        assert diff[key]["old"] != diff[key]["new"], diff[key]
    restore(repo)


def test_a_model_of_another_representation_or_range_is_refused_by_name(repo):
    cmd = [sys.executable, "-m", "pipeline.generate"]
    try:
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
    finally:
        restore(repo)
    assert "Running stage" not in dvc(repo, "repro").stdout


def test_render_without_a_soundfont_is_skipped_with_the_reason_and_the_report_still_opens(repo):
    dvc(repo, "exp", "run", "-S", "render.soundfont=/nonexistent/gm.sf2")
    audio = json.loads((repo / "data/audio/index.json").read_text())
    assert not audio["rendered"] and "/nonexistent/gm.sf2" in audio["reason"] and not audio["files"]
    html = (repo / "data/report.html").read_text()
    assert "No recordings" in html and "<audio " not in html
    if CHROMIUM:
        ok, text = media_status(repo / "data/report.html")
        assert ok == "true" and text.endswith("0 of 0 recordings loaded"), text
    restore(repo)
