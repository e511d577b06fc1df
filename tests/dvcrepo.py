"""A copy of this repository in a temporary git repo, and real dvc/git commands run in it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT


def env(extra: dict | None = None) -> dict:
    """The subprocess environment; `extra` adds variables (credentials, say) to it alone, a None value unsets one."""
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
             GIT_COMMITTER_EMAIL="t@example.com", DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
    for k, v in (extra or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return e


def run(repo: Path, *args: str, ok: bool = True, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), cwd=repo, env=env(extra_env), capture_output=True, text=True)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def dvc(repo: Path, *args: str, ok: bool = True, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    return run(repo, sys.executable, "-m", "dvc", *args, ok=ok, extra_env=extra_env)


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def make_repo(dest: Path, params: dict) -> Path:
    """Copy the tracked and untracked-not-ignored files, merge `params` into params.yaml, commit."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    (dest / "dvc.lock").unlink(missing_ok=True)
    set_params(dest, params)
    run(dest, "git", "init", "-q")
    run(dest, "git", "add", "-A")
    run(dest, "git", "commit", "-qm", "init")
    return dest


def set_params(repo: Path, over: dict) -> None:
    path = repo / "params.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(path.read_text()), over), sort_keys=False))


# params that make every stage after acquire take seconds
TINY = {
    "prepare": {"workers": 2},
    "split": {"valid": 0.2, "test": 0.2},
    "model": {"hidden": 16, "layers": 1, "dropout": 0.0},
    "train": {"seq_len": 8, "stride": 8, "epochs": 2, "batch_size": 16, "patience": 0},
    "evaluate": {"batch_size": 64},
    "generate": {"n_samples": 2, "length": 3},
}
