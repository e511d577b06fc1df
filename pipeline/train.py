"""Stage `train`: fit the GRU seq2seq on train windows; keep the weights with the best valid loss.

Piano rolls train on the exact likelihood of the NADE head, or with focal (or plain) binary cross-entropy over
every cell of the independent head; token streams with cross-entropy over the vocabulary. Per epoch: train/valid
loss and valid NLL per frame, F1 and density (piano rolls) or token accuracy (tokens), logged with dvclive under
metrics/train/, and models/last.pt (model, optimizer, scheduler, RNG state, epoch, best weights so far) written
atomically. A run killed part-way resumes from last.pt on the next `dvc repro` when params and data are unchanged
(a fingerprint says so), and ends with the same weights as an uninterrupted run. models/model.pt holds the best
weights (config + state dict, loadable with torch.load(..., weights_only=True)).

`train.processes` > 1 relaunches the stage under torchrun: DDP over that many processes (gloo on CPU, nccl on
CUDA), each reading its own share of the shards; rank 0 alone logs and writes checkpoints.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import os
import time
from pathlib import Path

import torch
import yaml
from dvclive import Live
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import params as P
from pipeline import representations, runtime
from pipeline.atomic import atomic_path
from pipeline.cli import run_stage
from pipeline.dataset import Split, Windows, data_dir
from pipeline.model import Seq2Seq
from pipeline.paths import LAST, MODEL, TRAIN_LOG

LIVE = TRAIN_LOG


def windows(split: str, seq_len: int, stride: int, **kw) -> Windows:
    w = Windows(Split(data_dir(), split), seq_len, stride, **kw)
    if sum(w.count(r) for r in range(w.world)) == 0:
        raise SystemExit(f"train: the {split} split has no sequence of 2 * train.seq_len = {2 * seq_len} "
                         f"{w.codec.unit} ({w.too_short} are shorter); lower train.seq_len or add data")
    return w


ROOT = Path(__file__).resolve().parents[1]  # the project: dvc.yaml beside the pipeline package


def code_files() -> list[Path]:
    """The code that trains: the files dvc.yaml lists as the train stage's code deps (those under pipeline/, the
    C++ kernels included). tests/test_deps.py holds that list to the static import closure of pipeline.train
    (imports inside functions included, such as pipeline/tokens.py for token runs; plumbing that cannot change an
    output left out), so it is every module a run may execute, the same in every process, and DVC reruns the
    stage on exactly these. Raises FileNotFoundError without dvc.yaml beside the package, KeyError without a
    train stage in it."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
    return sorted(ROOT / d for d in stage["deps"] if d.startswith("pipeline/"))


def fingerprint(p: P.Params, d: Path) -> str:
    """What a checkpoint must match to be resumed: every param train reads, the bytes of the data and of the
    code that trains (a run killed before a code change must not be finished by the new code)."""
    h = hashlib.sha256(json.dumps({"seed": p.seed, "model": p.model.model_dump(), "train": p.train.model_dump(),
                                   "transpose": list(p.represent.transpose)}, sort_keys=True).encode())
    for f in code_files():
        h.update(f.relative_to(ROOT).as_posix().encode() + f.read_bytes())
    for f in sorted(d.iterdir()):
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def scheduler(opt, t: P.TrainParams):
    if t.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs)
    if t.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, t.patience // 2))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)


def decoder_inputs(model: Seq2Seq, x: torch.Tensor, y: torch.Tensor, ratio: float) -> torch.Tensor:
    """Scheduled sampling without a step loop (parallel scheduled sampling, Duckworth et al. 2019): the
    model's own decisions under teacher forcing replace each true step with probability 1 - ratio, and the
    decoder then runs fused over the mixed window."""
    if ratio >= 1.0:
        return y
    with torch.no_grad():
        own = model.decode(x, y)
    keep = torch.rand(y.shape[:2], device=y.device) < ratio
    return torch.where(keep.view(keep.shape + (1,) * (y.dim() - 2)), y, own.to(y.dtype))


@torch.no_grad()
def validate(model: Seq2Seq, loader: DataLoader, loss, device: torch.device, rep) -> dict:
    """Valid loss, then the representation's figures (piano rolls: F1, density and NLL per frame of the sustain
    plane; tokens: accuracy)."""
    model.eval()
    figures, total, n = rep.validation(), 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out, prev = model.states(x, y), model.previous(x, y)
        logits = model.head(out, y, prev)
        total += float(loss(logits, y)) * len(x)
        n += len(x)
        figures.add(model, out, logits, y, prev)
    return {"loss": total / n, **figures.summary()}


def _truncate_logs(before_step: int) -> None:
    """Drop dvclive rows from epochs that a resumed run will redo (logged after the last checkpoint).

    Each file is replaced atomically, so a kill mid-way leaves it whole. A log left empty or unreadable by an
    earlier kill (dvclive writes its files in place) is removed: the resumed run logs its epochs afresh rather
    than failing on every resume."""
    for tsv in (LIVE / "plots").rglob("*.tsv"):
        with open(tsv, newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if not rows or "step" not in rows[0]:
            tsv.unlink()
            continue
        with atomic_path(tsv) as tmp, open(tmp, "w", newline="") as f:
            csv.writer(f, delimiter="\t", lineterminator=os.linesep).writerows(
                [rows[0]] + [r for r in rows[1:] if int(r[rows[0].index("step")]) < before_step])
    summary = LIVE / "metrics.json"
    try:
        json.loads(summary.read_text())
    except FileNotFoundError:
        pass
    except ValueError:  # cut short by a kill while dvclive rewrote it: dvclive's resume would fail on it
        summary.unlink()


def train(p: P.Params, dist: runtime.Dist | None = None) -> tuple[Seq2Seq, dict, tuple[int, int]]:
    """The model with its best weights, the best epoch's figures, and (the epoch this run resumed after, the
    epochs done in all)."""
    if dist is None:  # a plain run: rank 0 of 1
        dist = runtime.Dist()
    t = p.train
    threads = t.threads or max(1, (os.cpu_count() or 1) // dist.world)
    runtime.setup(p.seed, threads)
    device = runtime.device(t.device, dist.local_rank)
    train_set = windows("train", t.seq_len, t.stride, shuffle=True, seed=p.seed, transpose=p.represent.transpose,
                        rank=dist.rank, world=dist.world)
    valid_set = windows("valid", t.seq_len, t.seq_len)
    meta, rep = train_set.meta, representations.of(train_set.meta.kind)
    train_loader = DataLoader(train_set, batch_size=t.batch_size, num_workers=t.loader_workers,
                              pin_memory=device.type == "cuda")
    valid_loader = DataLoader(valid_set, batch_size=t.batch_size)

    model = Seq2Seq(rep.model_config(meta, p.model, t.seq_len))
    rep.init(model, train_set.split)
    model.to(device)
    net = model
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model,
                                                        device_ids=[device.index] if device.type == "cuda" else None)
    step_fn = torch.compile(net) if t.compile and device.type == "cuda" else net
    amp = t.amp and device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sched = scheduler(opt, t)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss = rep.loss(p, meta)
    state = {"epoch": 0, "best": {"valid_loss": math.inf, "epoch": -1},
             "best_state": copy.deepcopy(model.state_dict()), "stale": 0}
    stamp = fingerprint(p, train_set.split.dir)
    if t.resume and LAST.exists():
        ckpt = torch.load(LAST, map_location="cpu", weights_only=True)
        if ckpt.get("fingerprint") == stamp and not ckpt.get("finished"):
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            torch.set_rng_state(ckpt["rng"])
            state = {k: ckpt[k] for k in state}
            if dist.main:
                print(f"train: resuming after epoch {state['epoch']} from {LAST}")
    start = state["epoch"]
    if dist.main:
        if start:
            _truncate_logs(start)
        print(f"train: {meta.kind}, {len(train_set)} train windows"
              + (f" per rank x {dist.world} ranks" if dist.world > 1 else "")
              + f" / {len(valid_set)} valid, {sum(x.numel() for x in model.parameters())} parameters, device {device}")
    live = Live(str(LIVE), dvcyaml=None, save_dvc_exp=False, report=None, resume=bool(start)) if dist.main else None
    if live is not None:
        live.step = start
    for epoch in range(start, t.epochs):
        model.train()
        train_set.set_epoch(epoch)
        n_batches = min(train_set.count(r) for r in range(dist.world)) // t.batch_size if dist.world > 1 else None
        ratio = t.teacher_forcing * t.teacher_forcing_decay ** epoch
        total, n = 0.0, 0
        bar = tqdm(train_loader, total=n_batches or len(train_loader), desc=f"epoch {epoch + 1}/{t.epochs}",
                   unit="batch", mininterval=1, leave=False, disable=not dist.main)  # the epoch's line follows
        for i, (x, y) in enumerate(bar):
            if n_batches is not None and i >= n_batches:
                break  # ranks step in lockstep
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                batch_loss = loss(step_fn(x, y, decoder_inputs(model, x, y, ratio)), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(batch_loss).backward()
            if t.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            scaler.step(opt)
            scaler.update()
            total += batch_loss.item() * len(x)
            n += len(x)
            bar.set_postfix(loss=f"{total / n:.4f}", refresh=False)  # shown at the next refresh, each second
        v = validate(model, valid_loader, loss, device, rep)
        sched.step(v["loss"]) if t.lr_schedule == "plateau" else sched.step()
        improved = v["loss"] < state["best"]["valid_loss"]
        if improved:
            state["best"] = {"valid_loss": v["loss"], "epoch": epoch + 1,
                             **{f"valid_{k}": x for k, x in v.items() if k != "loss"}}
            state["best_state"] = copy.deepcopy(model.state_dict())
            state["stale"] = 0
        else:
            state["stale"] += 1
        state["epoch"] = epoch + 1
        stop = bool(t.patience and state["stale"] >= t.patience)
        if dist.main:
            for k, val in {"train/loss": total / max(n, 1), "train/lr": opt.param_groups[0]["lr"],
                           **{f"valid/{k}": val for k, val in v.items()}}.items():
                live.log_metric(k, val)
            live.next_step()
            _save_last(model, opt, sched, state, stamp, finished=stop or epoch + 1 == t.epochs)
            print(f"epoch {epoch + 1}: train loss {total / max(n, 1):.4f}, valid loss {v['loss']:.4f}, "
                  f"{rep.validation().headline(v)}"
                  + (" *" if improved else ""))
        if stop:
            if dist.main:
                print(f"early stop: valid loss has not improved for {t.patience} epochs")
            break
    if live is not None:
        live.end()
    model.load_state_dict(state["best_state"])
    return model, state["best"], (start, state["epoch"])


def _save_last(model, opt, sched, state: dict, stamp: str, finished: bool) -> None:
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": torch.get_rng_state(), "fingerprint": stamp, "finished": finished, **state}
    LAST.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(LAST) as tmp:
        torch.save(ckpt, tmp)


def main() -> None:
    began = time.perf_counter()
    p = P.load()
    runtime.relaunch_under_torchrun("pipeline.train", p.train.processes, p.train.device)
    dist = runtime.init_distributed(p.train.device)
    model, best, (resumed, done) = train(p, dist)
    if dist.main:
        ckpt = model.cpu().checkpoint()
        ckpt["best"] = best
        with atomic_path(MODEL) as tmp:
            torch.save(ckpt, tmp)
        took = time.perf_counter() - began
        print(f"train: {done - resumed} epochs in " + (f"{took:.0f} s" if took < 90 else f"{took / 60:.1f} min")
              + (f" (resumed after epoch {resumed})" if resumed else "")
              + (f", stopped early at {done} of {p.train.epochs}" if done < p.train.epochs else "")
              + f"; best valid loss {best['valid_loss']:.4f} at epoch {best['epoch']} -> {MODEL}")
    if dist.world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run_stage(main)
