"""This project's GRU seq2seq on the classic polyphonic-music benchmarks (Boulanger-Lewandowski et al. 2012).

Usage: PYTHONPATH=. python benchmarks/polyphonic.py [--data JSB_Chorales] [--hidden 256] [--epochs 200] ...
Needs scipy for the .mat files (`pip install -e .[bench]`) and ../shared/data/benchmarks/.

The standard protocol: the model predicts every frame of every test piece from the frames before it
(teacher forcing, next-frame prediction); NLL per frame in nats, summed over the 88 keys and averaged over all
test frames, and frame accuracy TP/(TP+FP+FN) at threshold 0.5 summed over the test set. Each piece is padded
with `seq_len` silent frames in front, so its first frames are predicted too, from silence; windows are
(seq_len frames in, the next seq_len frames out), and test windows tile each piece exactly once. Trained with
plain BCE (the NLL itself; focal loss would skew the probabilities), AdamW, early stopping on valid NLL.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.model import Config, Seq2Seq

DATA = Path(__file__).resolve().parents[2] / "shared/data/benchmarks/boulanger2012_via_tcn"
PUBLISHED = {  # test NLL per frame, from the papers (Chung et al. 2014; Bai et al. 2018; Boulanger-Lewandowski 2012)
    "JSB_Chorales": {"GRU (Chung 2014)": 8.54, "LSTM (Chung 2014)": 8.67, "GRU (Bai 2018)": 8.43,
                     "LSTM (Bai 2018)": 8.45, "TCN (Bai 2018)": 8.10, "RNN-NADE (2012)": 5.19},
    "Nottingham": {"LSTM (Chung 2014)": 3.20, "GRU (Bai 2018)": 3.46, "LSTM (Bai 2018)": 3.29,
                   "TCN (Bai 2018)": 3.07, "RNN-NADE (2012)": 2.31},
}


def load(name: str) -> dict[str, list[np.ndarray]]:
    from scipy.io import loadmat

    m = loadmat(DATA / f"{name}.mat")
    return {s: [np.asarray(x, dtype=np.float32) for x in m[f"{s}data"][0]] for s in ("train", "valid", "test")}


def windows(pieces: list[np.ndarray], L: int, stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, mask): every frame of every piece is a target once per `stride`-tiling; padding is masked out."""
    xs, ys, ms = [], [], []
    for p in pieces:
        T = len(p)
        padded = np.concatenate([np.zeros((L, 88), np.float32), p, np.zeros((2 * L, 88), np.float32)])
        for a in range(0, T, stride):
            xs.append(padded[a:a + L])
            ys.append(padded[a + L:a + 2 * L])
            m = np.zeros(L, np.float32)
            m[: max(0, min(L, T - a))] = 1
            ms.append(m)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)), torch.from_numpy(np.stack(ms))


@torch.no_grad()
def score(model, data, batch: int = 256) -> dict:
    model.eval()
    x, y, m = data
    nll, tp, fp, fn, frames = 0.0, 0, 0, 0, 0
    for k in range(0, len(x), batch):
        xb, yb, mb = x[k:k + batch], y[k:k + batch], m[k:k + batch]
        logits = model(xb, yb)
        cell = F.binary_cross_entropy_with_logits(logits, yb, reduction="none").sum(-1)
        nll += float((cell * mb).sum())
        pred = (logits > 0).float() * mb[..., None]
        tp += int((pred * yb).sum()); fp += int((pred * (1 - yb)).sum()); fn += int(((1 - pred) * yb * mb[..., None]).sum())
        frames += int(mb.sum())
    return {"nll": nll / frames, "acc": tp / max(tp + fp + fn, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="JSB_Chorales", choices=["JSB_Chorales", "Nottingham", "MuseData", "Piano_midi"])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    data = load(args.data)
    L = args.seq_len
    train = windows(data["train"], L, args.stride)
    valid, test = windows(data["valid"], L, L), windows(data["test"], L, L)
    model = Seq2Seq(Config(n_features=88, hidden=args.hidden, layers=args.layers, dropout=args.dropout, seq_len=L,
                           n_keys=88))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=args.patience // 3)
    best, best_state, stale, t0 = math.inf, None, 0, time.perf_counter()
    g = torch.Generator().manual_seed(args.seed)
    print(f"{args.data}: {len(data['train'])}/{len(data['valid'])}/{len(data['test'])} pieces, "
          f"{sum(map(len, data['test']))} test frames; {len(train[0])} train windows; "
          f"{sum(p.numel() for p in model.parameters())} parameters")
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train[0]), generator=g)
        for k in range(0, len(order), args.batch):
            i = order[k:k + args.batch]
            x, y, m = train[0][i], train[1][i], train[2][i]
            cell = F.binary_cross_entropy_with_logits(model(x, y), y, reduction="none").sum(-1)
            loss = (cell * m).sum() / m.sum()
            opt.zero_grad(); loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        v = score(model, valid)
        sched.step(v["nll"])
        if v["nll"] < best:
            best, stale = v["nll"], 0
            best_state = {k: t.clone() for k, t in model.state_dict().items()}
        else:
            stale += 1
        print(f"epoch {epoch + 1}: valid NLL {v['nll']:.3f} acc {v['acc']:.3f} ({time.perf_counter() - t0:.0f} s)"
              + (" *" if stale == 0 else ""), flush=True)
        if stale >= args.patience:
            break
    model.load_state_dict(best_state)
    r = score(model, test)
    print(f"\n{args.data} test: NLL {r['nll']:.2f} nats/frame, frame accuracy {r['acc']:.3f} "
          f"(hidden {args.hidden}, {args.layers} layers, dropout {args.dropout}, seq_len {L}; "
          f"{time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} threads)")
    for what, nll in PUBLISHED.get(args.data, {}).items():
        print(f"  {what:20s} {nll:5.2f}  {'beaten' if r['nll'] < nll else 'not beaten'}")


if __name__ == "__main__":
    main()
