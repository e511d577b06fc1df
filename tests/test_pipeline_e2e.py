"""The whole pipeline through real DVC commands, in a temporary git repository holding a copy of this one: the
session's shared run (conftest.py, `built`), and copies of it for the experiments."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from tests.dvcrepo import TINY, dvc, make_repo, overlay

pytestmark = pytest.mark.slow


def test_invalid_params_fail_before_any_work(tmp_path):
    repo = make_repo(tmp_path / "repo", overlay(TINY, {"train": {"epochs": -1}}))
    proc = dvc(repo, "repro", ok=False)
    assert proc.returncode != 0
    assert "train.epochs" in proc.stdout + proc.stderr
    assert not (repo / "data" / "raw").exists()


def test_repro_builds_every_output_then_an_experiment_reruns_only_the_model(built, built_copy):
    # the session's shared run (conftest.py, built): the first `dvc repro` in a fresh repository
    first, repo = built.first_repro, built.repo
    for stage in ("acquire@music21", "acquire@local", "prepare", "convert", "train", "calibrate", "generate",
                  "evaluate", "render", "report"):
        assert f"Running stage '{stage}'" in first

    for src in ("music21", "local"):
        manifest = pq.read_table(repo / f"data/raw/{src}/manifest.parquet")
        assert {"id", "source", "member", "md5", "bytes", "title", "composer", "license", "split"} <= set(
            manifest.column_names)
        assert manifest.num_rows > 0
    rejects = pq.read_table(repo / "data/prepared/rejects.parquet").to_pylist()
    assert {"not_midi", "truncated", "duplicate_md5", "no_notes"} <= {r["reason"] for r in rejects}
    assert pq.read_table(repo / "data/prepared/selected.parquet").num_rows > 0
    parts = sorted((repo / "data/processed/pianoroll").glob("*.parquet"))
    assert [p.name.split("-")[0] for p in parts] == ["test", "train", "valid"]

    ckpt = torch.load(repo / "models/model.pt", weights_only=True)
    assert ckpt["config"]["hidden"] == 16 and "state_dict" in ckpt
    ev = json.loads((repo / "metrics/eval.json").read_text())
    for protocol in ("next_frame", "continuation"):
        for who in ("model", "model_tuned", "repeat_last", "pitch_frequency", "pitch_frequency_tuned"):
            assert {"precision", "recall", "f1", "f1_macro", "onset_f1", "accuracy", "density_pred", "density_true",
                    "density_gap", "nll_per_frame"} <= set(ev[protocol][who])
    assert 0 < ev["thresholds"]["tuned"] < 1 and ev["thresholds"]["fixed"] == 0.5
    assert {"next_frame_f1", "next_frame_nll", "continuation_f1"} <= set(ev["versus_repeat_last"])
    assert ev["music"]["samples"] == 3 and set(ev["music"]["gap"]) == set(ev["music"]["real"])
    curve = json.loads((repo / "metrics/pr_curve.json").read_text())
    assert len(curve) == 19 and curve[0]["recall"] >= curve[-1]["recall"]  # the NADE head: a grid of 19 thresholds
    live = json.loads((repo / "metrics/train/metrics.json").read_text())
    assert {"train", "valid"} <= set(live)
    index = json.loads((repo / "data/samples/index.json").read_text())
    assert [s["png"] for s in index["samples"]] == [f"rolls/sample_{i:03d}.png" for i in range(3)]
    assert (repo / "data/samples/rolls/sample_000.png").read_bytes()[:4] == b"\x89PNG"
    for s in index["samples"]:  # a MIDI file exactly for the samples with notes
        assert ((s["midi"] is not None) == (s["generated_notes"] > 0)
                == (repo / f"data/samples/{s['name']}.mid").exists())
    assert (repo / "data/report.html").exists()

    # this test's own copy of that run (committed as "baseline run"), to run DVC in and change
    repo = built_copy
    again = dvc(repo, "repro").stdout
    assert "Running stage" not in again  # nothing changed, nothing runs

    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    assert "metrics/eval.json" in json.dumps(shown)

    exp = dvc(repo, "exp", "run", "-S", "model.hidden=24").stdout
    for stage in ("train", "calibrate", "generate", "evaluate"):
        assert f"Running stage '{stage}'" in exp
    for stage in ("acquire@music21", "acquire@local", "prepare", "convert"):
        assert f"Running stage '{stage}'" not in exp
    diff = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)
    changed = [k for f in diff.values() for k, v in f.items() if v.get("diff")]
    assert any(k.startswith("next_frame.model") for k in changed), diff
    assert torch.load(repo / "models/model.pt", weights_only=True)["config"]["hidden"] == 24


def test_token_streams_run_the_same_pipeline_with_comparable_metrics(built_copy):
    repo = built_copy
    rolls = json.loads((repo / "metrics/eval.json").read_text())
    exp = dvc(repo, "exp", "run", "-S", "represent.kind=tokens", "-S", "represent.tokenizer=TSD").stdout
    for stage in ("convert", "train", "calibrate", "generate", "evaluate"):
        assert f"Running stage '{stage}'" in exp
    for stage in ("acquire@music21", "acquire@local", "prepare"):
        assert f"Running stage '{stage}'" not in exp
    assert (repo / "data/processed/tokens/tokenizer.json").exists()
    assert not (repo / "data/processed/pianoroll").exists()
    toks = json.loads((repo / "metrics/eval.json").read_text())
    assert (rolls["kind"], toks["kind"]) == ("pianoroll", "tokens")
    assert toks["window_frames"] == rolls["window_frames"] and toks["test_windows"] == rolls["test_windows"]
    assert toks["thresholds"]["tuned"] is None and "model_tuned" not in toks["continuation"]
    for who in ("model", "repeat_last", "pitch_frequency"):  # the same frame metrics on the same windows
        assert set(toks["continuation"][who]) == set(rolls["continuation"][who])
        # the same truth, up to notes held past represent.max_shift_beats, which tokens cut at that length
        assert toks["continuation"][who]["density_true"] == pytest.approx(rolls["continuation"][who]["density_true"],
                                                                          rel=0.05)
    assert {"nll_per_token", "accuracy"} <= set(toks["next_token"]["model"])
    for s in json.loads((repo / "data/samples/index.json").read_text())["samples"]:
        assert (s["midi"] is not None) == (s["generated_notes"] > 0)
    ckpt = torch.load(repo / "models/model.pt", weights_only=True)
    assert ckpt["config"]["tokens"] and ckpt["config"]["kind"] == "tokens"
