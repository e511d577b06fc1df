"""Device, threads, seeding and distributed setup, in one place so every stage runs the same way on CPU, CUDA
and several processes."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import torch


def device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)


def setup(seed: int, threads: int = 0) -> None:
    torch.set_num_threads(threads if threads > 0 else (os.cpu_count() or 1))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def relaunch_under_torchrun(module: str, processes: int, dev_name: str = "auto") -> None:
    """Run `python -m <module>` again as `processes` local processes under torchrun, unless this process is
    already one of them (or the user started torchrun, e.g. across machines); exit with its status.
    On CUDA each process needs a GPU of its own (NCCL refuses two ranks on one), so that is checked first."""
    if processes <= 1 or "LOCAL_RANK" in os.environ:
        return
    if device(dev_name).type == "cuda" and processes > torch.cuda.device_count():
        raise ValueError(f"train.processes={processes} needs {processes} GPUs but {torch.cuda.device_count()} "
                         "are visible: lower train.processes, or set train.device: cpu (gloo)")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
           "-m", module]
    raise SystemExit(subprocess.call(cmd))


def init_distributed(dev_name: str) -> Dist:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); a plain run is rank 0 of 1."""
    if "LOCAL_RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    import torch.distributed as dist

    local = int(os.environ["LOCAL_RANK"])
    cuda = dev_name == "cuda" or (dev_name == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local)
