"""Stage `train`: fit the GRU seq2seq on train windows; keep the weights with the best valid loss.

Piano rolls train with focal (or plain) binary cross-entropy over every cell; token streams with cross-entropy
over the vocabulary. Logs per-epoch train/valid loss and valid F1 and density (piano rolls) or token accuracy
with dvclive under metrics/train/, and writes models/model.pt (config + state dict, loadable with
torch.load(..., weights_only=True)).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from dvclive import Live
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import losses, runtime
from pipeline import params as P
from pipeline.atomic import atomic_path
from pipeline.cli import run_stage
from pipeline.dataset import Split, Windows, data_dir
from pipeline.metrics import FrameCounts, sounding
from pipeline.model import Config, Seq2Seq

MODEL, LIVE = Path("models/model.pt"), Path("metrics/train")


def windows(split: str, seq_len: int, stride: int, **kw) -> Windows:
    w = Windows(Split(data_dir(), split), seq_len, stride, **kw)
    if len(w) == 0:
        unit = "tokens" if w.split.kind == "tokens" else "frames"
        raise SystemExit(f"train: the {split} split has no sequence of 2 * train.seq_len = {2 * seq_len} {unit} "
                         f"({w.too_short} are shorter); lower train.seq_len or add data")
    return w


def loss_fn(p: P.Params, meta: dict):
    if meta["kind"] == "tokens":
        pad = meta["pad_id"]
        return lambda logits, y: F.cross_entropy(logits.transpose(1, 2), y, ignore_index=pad)
    return losses.make(p.train.loss, p.train.focal_alpha, p.train.focal_gamma)


@torch.no_grad()
def validate(model: Seq2Seq, loader: DataLoader, loss, device: torch.device) -> dict:
    model.eval()
    counts, total, n, right, steps = FrameCounts(), 0.0, 0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x, y)
        total += float(loss(logits, y)) * len(x)
        n += len(x)
        if model.cfg.tokens:
            right += int((logits.argmax(-1) == y).sum())
            steps += y.numel()
        else:
            k = model.cfg.n_keys
            counts.add(sounding(torch.sigmoid(logits) > 0.5, k), sounding(y, k))
    if model.cfg.tokens:
        return {"loss": total / n, "accuracy": right / max(steps, 1)}
    s = counts.summary()
    return {"loss": total / n, "f1": s["f1"], "density_pred": s["density_pred"], "density_true": s["density_true"]}


def train(p: P.Params) -> tuple[Seq2Seq, dict]:
    t = p.train
    runtime.setup(p.seed, t.threads)
    device = runtime.device(t.device)
    train_set = windows("train", t.seq_len, t.stride, shuffle=True, seed=p.seed, transpose=p.represent.transpose)
    valid_set = windows("valid", t.seq_len, t.seq_len)
    meta = train_set.meta
    train_loader = DataLoader(train_set, batch_size=t.batch_size, num_workers=t.loader_workers)
    valid_loader = DataLoader(valid_set, batch_size=t.batch_size)

    tokens = meta["kind"] == "tokens"
    cfg = Config(n_features=meta["vocab_size"] if tokens else meta["features"], hidden=p.model.hidden,
                 layers=p.model.layers, dropout=p.model.dropout, seq_len=t.seq_len, tokens=tokens,
                 kind=meta["kind"], n_keys=meta["n_keys"])
    model = Seq2Seq(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    loss = loss_fn(p, meta)
    best = {"valid_loss": math.inf, "epoch": -1}
    best_state = copy.deepcopy(model.state_dict())
    stale = 0
    print(f"train: {meta['kind']}, {len(train_set)} train / {len(valid_set)} valid windows, "
          f"{sum(x.numel() for x in model.parameters())} parameters, device {device}")
    with Live(str(LIVE), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        for epoch in range(t.epochs):
            model.train()
            train_set.set_epoch(epoch)
            total, n = 0.0, 0
            bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch", leave=False)
            for x, y in bar:
                x, y = x.to(device), y.to(device)
                batch_loss = loss(model(x, y, teacher_forcing=t.teacher_forcing), y)
                opt.zero_grad(set_to_none=True)
                batch_loss.backward()
                if t.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                opt.step()
                total += batch_loss.item() * len(x)
                n += len(x)
                bar.set_postfix(loss=f"{total / n:.4f}")
            v = validate(model, valid_loader, loss, device)
            live.log_metric("train/loss", total / n)
            for k, val in v.items():
                live.log_metric(f"valid/{k}", val)
            live.next_step()
            improved = v["loss"] < best["valid_loss"]
            shown = (f"valid accuracy {v['accuracy']:.3f}" if tokens else
                     f"valid F1 {v['f1']:.3f}, density {v['density_pred']:.2f} (true {v['density_true']:.2f})")
            print(f"epoch {epoch + 1}: train loss {total / n:.4f}, valid loss {v['loss']:.4f}, {shown}"
                  + (" *" if improved else ""))
            if improved:
                best = {"valid_loss": v["loss"], "epoch": epoch + 1, **{f"valid_{k}": x for k, x in v.items() if k != "loss"}}
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
    print(f"train: best valid loss {best['valid_loss']:.4f} at epoch {best['epoch']} -> {MODEL}")


if __name__ == "__main__":
    run_stage(main)
