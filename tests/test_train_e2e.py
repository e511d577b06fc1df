"""Training as a user runs it through DVC: killed and resumed, and distributed over two CPU processes. Each test
runs in its own copy of the session's shared run (conftest.py, `built`), whose data is already built."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.dvcrepo import copy_repo, dvc, env, set_params

pytestmark = pytest.mark.slow
EPOCHS = 15


@pytest.fixture
def repo(built, tmp_path) -> Path:
    """A copy of the session's shared run (conftest.py) set to train for EPOCHS epochs on a cosine schedule: its
    data is already built (acquire, prepare and convert are up to date), and its training is stale."""
    r = copy_repo(built.repo, tmp_path / "repo")
    set_params(r, {"train": {"epochs": EPOCHS, "lr_schedule": "cosine"}})
    return r


def _epoch_of(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except Exception:  # not written yet
        return 0


def _steps(repo: Path) -> list[int]:
    rows = (repo / "metrics/train/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]
    return [int(r.split("\t")[0]) for r in rows]


def _kill_training_after(repo: Path, epochs: int) -> int:
    """Starts `dvc repro train`, SIGKILLs dvc and the training process under it once models/last.pt records
    `epochs` epochs (mid-epoch, as a crash would), and returns the epoch last.pt holds then."""
    last = repo / "models/last.pt"
    last.unlink(missing_ok=True)  # the shared run's, of a finished 2-epoch run
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "train"], cwd=repo, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while _epoch_of(last) < epochs and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the training process under it, mid-epoch
    proc.wait()
    return _epoch_of(last)


def test_a_killed_training_run_resumes_and_ends_with_the_same_weights(repo):
    killed_at = _kill_training_after(repo, 3)
    assert 3 <= killed_at < EPOCHS, "the run should have been killed part-way"
    assert not (repo / "models/model.pt").exists()

    out = dvc(repo, "repro", "train").stdout
    resumed_from = int(out.split("resuming after epoch ")[1].split()[0])
    assert resumed_from >= killed_at
    assert f"epoch {resumed_from + 1}:" in out and "epoch 1:" not in out
    assert _steps(repo) == list(range(EPOCHS))  # dvclive's log: every epoch once, none lost or repeated
    resumed = torch.load(repo / "models/model.pt", weights_only=True)["state_dict"]

    dvc(repo, "repro", "-f", "train")  # a finished checkpoint is not resumed: this trains from scratch
    fresh = torch.load(repo / "models/model.pt", weights_only=True)["state_dict"]
    assert resumed.keys() == fresh.keys()
    for k in fresh:
        assert torch.equal(resumed[k], fresh[k]), k


def test_changed_params_do_not_resume_a_stale_checkpoint(repo):
    killed_at = _kill_training_after(repo, 1)  # a checkpoint that the same params would resume (test above)
    assert 1 <= killed_at < EPOCHS, "the run should have been killed part-way"
    set_params(repo, {"train": {"lr": 0.002, "epochs": 3}})
    out = dvc(repo, "repro", "train").stdout
    assert "resuming" not in out and "epoch 1:" in out


def test_two_process_ddp_trains_and_evaluates(repo):
    set_params(repo, {"train": {"processes": 2, "epochs": 2}})
    out = dvc(repo, "repro", "evaluate").stdout
    assert "per rank x 2 ranks" in out and "evaluate:" in out
    assert out.count("epoch 2:") == 1  # rank 0 alone reports
    ckpt = torch.load(repo / "models/model.pt", weights_only=True)
    assert ckpt["best"]["epoch"] >= 1
    assert (repo / "metrics/eval.json").exists()


def test_a_queued_learning_rate_sweep_runs_and_dvc_exp_show_compares_it(built_copy):
    repo = built_copy  # the shared run, 2 epochs, committed: the baseline the sweep's experiments start from
    dvc(repo, "exp", "run", "--queue", "-S", "train.lr=0.01,0.0001", "-S", "train.epochs=2")
    dvc(repo, "queue", "start", "-j", "1")
    deadline = time.time() + 600
    while time.time() < deadline:
        status = dvc(repo, "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    runs = {}
    for commit in shown:
        for exp in [commit] + [e for ex in commit.get("experiments") or [] for e in ex["revs"]]:
            data = exp.get("data") or {}
            lr = (data.get("params", {}).get("params.yaml", {}).get("data", {}).get("train", {}) or {}).get("lr")
            ev = data.get("metrics", {}).get("metrics/eval.json", {}).get("data")
            if lr is not None and ev:
                runs[lr] = ev["continuation"]["model"]["f1"]
    assert {0.01, 0.0001} <= set(runs), shown
