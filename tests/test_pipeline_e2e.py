"""The whole pipeline through real DVC commands, in a temporary git repository holding a copy of this one."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from tests.conftest import FIXTURES, ROOT

pytestmark = pytest.mark.slow

TINY = {
    "data": {"sources": ["music21", "local"], "music21": {"composers": ["bach"], "max_files": 12}},
    "prepare": {"workers": 2},
    "split": {"valid": 0.2, "test": 0.2},
    "model": {"hidden": 16, "layers": 1, "dropout": 0.0},
    "train": {"seq_len": 8, "stride": 8, "epochs": 2, "batch_size": 16, "patience": 0},
    "evaluate": {"batch_size": 64},
    "generate": {"n_samples": 2, "steps": 12},
}


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com", DVC_NO_ANALYTICS="1")
    return env


def run(repo: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), cwd=repo, env=_env(), capture_output=True, text=True)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def dvc(repo: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    return run(repo, sys.executable, "-m", "dvc", *args, ok=ok)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("e2e") / "repo"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (d / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, d / f)
    shutil.copytree(FIXTURES, d.parent / "my_midi")
    params = yaml.safe_load((d / "params.yaml").read_text())
    tiny = _merge(TINY, {"data": {"local": {"path": str(d.parent / "my_midi")}}})
    (d / "params.yaml").write_text(yaml.safe_dump(_merge(params, tiny), sort_keys=False))
    run(d, "git", "init", "-q")
    run(d, "git", "add", "-A")
    run(d, "git", "commit", "-qm", "init")
    return d


def test_invalid_params_fail_before_any_work(repo):
    good = (repo / "params.yaml").read_text()
    try:
        bad = yaml.safe_load(good)
        bad["train"]["epochs"] = -1
        (repo / "params.yaml").write_text(yaml.safe_dump(bad))
        proc = dvc(repo, "repro", ok=False)
        assert proc.returncode != 0
        assert "train.epochs" in proc.stdout + proc.stderr
        assert not (repo / "data" / "raw").exists()
    finally:
        (repo / "params.yaml").write_text(good)


def test_repro_builds_every_output_then_an_experiment_reruns_only_the_model(repo):
    first = dvc(repo, "repro").stdout
    for stage in ("acquire@music21", "acquire@local", "prepare", "convert", "train", "evaluate", "generate"):
        assert f"Running stage '{stage}'" in first

    for src in ("music21", "local"):
        manifest = pq.read_table(repo / f"data/raw/{src}/manifest.parquet")
        assert {"id", "source", "member", "md5", "bytes", "title", "composer", "license", "split"} <= set(
            manifest.column_names)
        assert manifest.num_rows > 0
    rejects = pq.read_table(repo / "data/prepared/rejects.parquet").to_pylist()
    assert {"not_midi", "truncated", "duplicate_md5", "no_notes"} <= {r["reason"] for r in rejects}
    assert pq.read_table(repo / "data/prepared/selected.parquet").num_rows > 0
    parts = list((repo / "data/processed/pianoroll").glob("part-*.parquet"))
    splits = set(pq.read_table(parts[0]).column("split").to_pylist())
    assert splits == {"train", "valid", "test"}

    ckpt = torch.load(repo / "models/model.pt", weights_only=True)
    assert ckpt["config"]["hidden"] == 16 and "state_dict" in ckpt
    ev = json.loads((repo / "metrics/eval.json").read_text())
    for protocol in ("next_frame", "continuation"):
        for who in ("model", "repeat_last"):
            assert {"precision", "recall", "f1", "density_pred", "density_true", "nll_per_frame"} <= set(
                ev[protocol][who])
    live = json.loads((repo / "metrics/train/metrics.json").read_text())
    assert {"train", "valid"} <= set(live)
    samples = sorted(p.name for p in (repo / "data/samples").iterdir())
    assert samples == ["index.json", "sample_000.mid", "sample_000.png", "sample_001.mid", "sample_001.png"]
    assert (repo / "data/samples/sample_000.png").read_bytes()[:4] == b"\x89PNG"

    again = dvc(repo, "repro").stdout
    assert "Running stage" not in again  # nothing changed, nothing runs

    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    assert "metrics/eval.json" in json.dumps(shown)

    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline run")
    exp = dvc(repo, "exp", "run", "-S", "model.hidden=24").stdout
    for stage in ("train", "evaluate", "generate"):
        assert f"Running stage '{stage}'" in exp
    for stage in ("acquire@music21", "acquire@local", "prepare", "convert"):
        assert f"Running stage '{stage}'" not in exp
    diff = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)
    changed = [k for f in diff.values() for k, v in f.items() if v.get("diff")]
    assert any(k.startswith("next_frame.model") for k in changed), diff
    assert torch.load(repo / "models/model.pt", weights_only=True)["config"]["hidden"] == 24
