"""Stage `train`: fit the GRU seq2seq on train windows; keep the weights with the best valid loss.

Logs per-epoch train/valid loss, valid F1 and density with dvclive under metrics/train/, and writes
models/model.pt (config + state dict, loadable with torch.load(..., weights_only=True)).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from dvclive import Live
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import losses, runtime
from pipeline import params as P
from pipeline.cli import run_stage
from pipeline.atomic import atomic_path
from pipeline.dataset import Rolls, Windows, read_meta
from pipeline.metrics import FrameCounts
from pipeline.model import Config, Seq2Seq

MODEL, LIVE = Path("models/model.pt"), Path("metrics/train")


def windows(split: str, seq_len: int, stride: int) -> Windows:
    w = Windows(Rolls.load(split), seq_len, stride)
    if len(w) == 0:
        raise SystemExit(f"train: the {split} split has no sequence of 2 * train.seq_len = {2 * seq_len} frames "
                         f"({w.too_short} are shorter); lower train.seq_len or add data")
    return w


@torch.no_grad()
def validate(model: Seq2Seq, loader: DataLoader, loss_fn, device: torch.device) -> dict:
    model.eval()
    counts, total, n = FrameCounts(), 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x, y)
        total += float(loss_fn(logits, y)) * len(x)
        n += len(x)
        counts.add(torch.sigmoid(logits) > 0.5, y)
    s = counts.summary()
    return {"loss": total / n, "f1": s["f1"], "density_pred": s["density_pred"], "density_true": s["density_true"]}


def train(p: P.Params) -> tuple[Seq2Seq, dict]:
    t = p.train
    runtime.setup(p.seed, t.threads)
    device = runtime.device(t.device)
    meta = read_meta()
    train_set = windows("train", t.seq_len, t.stride)
    valid_set = windows("valid", t.seq_len, t.seq_len)
    gen = torch.Generator().manual_seed(p.seed)
    train_loader = DataLoader(train_set, batch_size=t.batch_size, shuffle=True, generator=gen)
    valid_loader = DataLoader(valid_set, batch_size=t.batch_size)

    cfg = Config(n_pitches=meta["n_pitches"], hidden=p.model.hidden, layers=p.model.layers,
                 dropout=p.model.dropout, seq_len=t.seq_len)
    model = Seq2Seq(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    loss_fn = losses.make(t.loss, t.focal_alpha, t.focal_gamma)
    best = {"valid_loss": math.inf, "epoch": -1}
    best_state = copy.deepcopy(model.state_dict())
    stale = 0
    print(f"train: {len(train_set)} train / {len(valid_set)} valid windows, {sum(x.numel() for x in model.parameters())} "
          f"parameters, device {device}")
    with Live(str(LIVE), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        for epoch in range(t.epochs):
            model.train()
            total, n = 0.0, 0
            bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch", leave=False)
            for x, y in bar:
                x, y = x.to(device), y.to(device)
                loss = loss_fn(model(x, y, teacher_forcing=t.teacher_forcing), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if t.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                opt.step()
                total += loss.item() * len(x)
                n += len(x)
                bar.set_postfix(loss=f"{total / n:.4f}")
            v = validate(model, valid_loader, loss_fn, device)
            live.log_metric("train/loss", total / n)
            for k, val in v.items():
                live.log_metric(f"valid/{k}", val)
            live.next_step()
            improved = v["loss"] < best["valid_loss"]
            print(f"epoch {epoch + 1}: train loss {total / n:.4f}, valid loss {v['loss']:.4f}, valid F1 {v['f1']:.3f}, "
                  f"density {v['density_pred']:.2f} (true {v['density_true']:.2f})" + (" *" if improved else ""))
            if improved:
                best = {"valid_loss": v["loss"], "valid_f1": v["f1"], "epoch": epoch + 1}
                best_state = copy.deepcopy(model.state_dict())
                stale = 0
            else:
                stale += 1
                if t.patience and stale >= t.patience:
                    print(f"early stop: valid loss has not improved for {t.patience} epochs")
                    break
    model.load_state_dict(best_state)
    return model, best


def main() -> None:
    p = P.load()
    model, best = train(p)
    ckpt = model.cpu().checkpoint()
    ckpt["best"] = best
    with atomic_path(MODEL) as tmp:
        torch.save(ckpt, tmp)
    print(f"train: best valid loss {best['valid_loss']:.4f} (F1 {best.get('valid_f1', 0):.3f}) at epoch "
          f"{best['epoch']} -> {MODEL}")


if __name__ == "__main__":
    run_stage(main)
