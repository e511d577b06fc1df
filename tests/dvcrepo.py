"""A copy of this repository in a temporary git repo, and real dvc/git commands run in it.

`build` runs the whole tiny pipeline once (conftest.py's session fixture `built` calls it once per test session);
`copy_repo` gives a test its own copy of that run to change, so that no test sees another's changes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.params import overlay
from tests.conftest import FIXTURES, ROOT


def env(extra: dict | None = None) -> dict:
    """The subprocess environment; `extra` adds variables (credentials, say) to it alone, a None value unsets one."""
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
             GIT_COMMITTER_EMAIL="t@example.com", DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
    # one torch (OpenMP) thread per stage process unless the caller set OMP_NUM_THREADS: the tiny models gain
    # nothing from more, and where another process holds a core, two threads stall at every op's barrier
    # (measured on 2 cores with one busy: test_acquire_e2e's evaluate in 266 s and 288 s with 2 threads, 45 s and
    # 135 s with 1). train sets its own count from train.threads, which TINY sets to 1 for the same reason.
    e.setdefault("OMP_NUM_THREADS", "1")
    for k, v in (extra or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return e


def run(repo: Path, *args: str, ok: bool = True, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), cwd=repo, env=env(extra_env), capture_output=True, text=True)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def dvc(repo: Path, *args: str, ok: bool = True, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    return run(repo, sys.executable, "-m", "dvc", *args, ok=ok, extra_env=extra_env)




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
    path.write_text(yaml.safe_dump(overlay(yaml.safe_load(path.read_text()), over), sort_keys=False))


# params that make every stage after acquire take seconds. One torch thread for training (see env()): measured on
# a busy 2-core machine, the same 2 epochs in 100 s with threads 0 (that is 2 there) against 5 s with 1.
TINY = {
    "prepare": {"workers": 2},
    "split": {"valid": 0.2, "test": 0.2},
    "model": {"hidden": 16, "layers": 1, "dropout": 0.0},
    "train": {"seq_len": 8, "stride": 8, "epochs": 2, "batch_size": 16, "patience": 0, "threads": 1},
    "evaluate": {"batch_size": 64},
    "generate": {"n_samples": 2, "length": 3},
}


def built_params(local: Path) -> dict:
    """The shared run's params: TINY over 16 Bach chorales (music21) and the fixture folder (local: its junk,
    broken files and duplicates reach prepare's rejects), 3 samples of 4 beats."""
    return overlay(TINY, {"data": {"sources": ["music21", "local"], "music21": {"composers": ["bach"], "max_files": 16},
                                 "local": {"path": str(local)}},
                        "generate": {"n_samples": 3, "length": 4}})


@dataclass(frozen=True)
class Built:
    """A repository in which `dvc repro` ran every stage, committed as "baseline run". Read it, never change it:
    a test that runs DVC in it or changes a file takes a copy (`copy_repo`)."""
    repo: Path
    first_repro: str  # stdout of the `dvc repro` that built it


def build(root: Path) -> Built:
    """The whole tiny pipeline, run once by DVC in a fresh git repository under `root`."""
    shutil.copytree(FIXTURES, root / "my_midi")
    repo = make_repo(root / "repo", built_params(root / "my_midi"))
    out = dvc(repo, "repro").stdout
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline run")
    return Built(repo, out)


def copy_repo(src: Path, dest: Path) -> Path:
    """A copy of `src` (work tree, git history, DVC cache) at `dest`: a tenth of a second against a minute to run
    the pipeline again. DVC's .dvc/tmp (locks, experiment queue state) is left behind, so the copy starts clean;
    DVC keeps its file-hash index per repository path, so the copy's files are hashed afresh, not trusted."""
    shutil.copytree(src, dest, symlinks=True, ignore=lambda d, names: ["tmp"] if Path(d) == src / ".dvc" else [])
    return dest


def path_without(program: str, farm: Path) -> str:
    """The PATH of `env()` with `program` hidden: each PATH folder holding it is replaced by a folder (under
    `farm`) of links to everything else in it, so that python, git and the rest are still found."""
    out = []
    for i, folder in enumerate(env()["PATH"].split(os.pathsep)):
        d = Path(folder)
        if not (d / program).exists():
            out.append(folder)
            continue
        links = farm / str(i)
        links.mkdir(parents=True)
        for f in d.iterdir():
            if f.name != program:
                (links / f.name).symlink_to(f)
        out.append(str(links))
    return os.pathsep.join(out)
