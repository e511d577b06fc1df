"""This project's GRU seq2seq on the classic polyphonic-music benchmarks (Boulanger-Lewandowski et al. 2012).

Usage: PYTHONPATH=. python benchmarks/polyphonic.py [--data JSB_Chorales] [--context full] [--hidden 256] ...
Needs scipy for the .mat files (`pip install -e .[bench]`); the data are read from --data-dir (by default
../shared/data/benchmarks/boulanger2012_via_tcn/). Runs on CUDA when there is a GPU (--device auto), else on CPU.

The protocol: next-frame prediction over every frame of every test piece, each test frame predicted exactly
once, from the real frames before it in its own piece (teacher forcing) and nothing else. Score: NLL per frame
in nats, summed over the 88 keys and averaged over all test frames: exact for every output head (--head nade:
the NADE's conditionals over the keys from low to high; --head hold_nade: a gate that repeats the frame before,
else the NADE, a mixture; --head independent: a sigmoid per key); frame accuracy TP/(TP+FP+FN) of the frames the
model decides at probability 0.5 (a NADE key by key, after the gate), summed over the test set.
Each piece gets `seq_len` silent frames in front, so its first frame is predicted too, from silence. Two ways of
feeding the model (pipeline.model.Seq2Seq, its own encoder, decoder and head, unchanged):

  --context full (default): the piece is cut into chunks of `seq_len` frames (the silent one first). Chunk k
      is decoded, teacher-forced, by the decoder started from the encoder's state after it has read every
      earlier chunk of the piece (the encoder runs over the whole prefix, its state carried from chunk to
      chunk), the decoder's first input being the last frame before the chunk. So every frame is predicted
      from the whole of the piece before it. Training does the same over whole pieces (backpropagation
      through the whole piece), `batch` pieces at a time, the frames past a piece's end masked out.
  --context window: the older protocol. Windows of (seq_len frames in, the next seq_len frames out), the
      model seeing at most seq_len frames of history plus the window so far; test windows tile each piece
      exactly once, training windows start every `stride` frames.

Training: plain BCE (the NLL itself; focal loss would skew the probabilities), AdamW, LR halved when valid
NLL stalls, early stopping on valid NLL; the output bias starts at the logit of each key's frequency in the
train split (--no-bias-init: PyTorch's default). The weights of the best valid epoch are scored on test once;
test is never looked at before that. Optional regularisers: dropout on the input frames (--in-dropout), on the
decoder's output before the head (--out-dropout), between GRU layers and inside the head (--dropout), and
random transposition of whole training pieces (--transpose N: up to N semitones either way, train split only,
never pushing a note off the keyboard; the published figures below did not use it). --locked makes the input and
output dropout variational (one mask per piece, the same at every frame, as in Gal & Ghahramani 2016);
--weight-drop p drops the GRUs' hidden-to-hidden weights (DropConnect, one mask per batch, as in AWD-LSTM);
--ema d scores valid and test with an exponential moving average of the weights (decay d per step), so model
selection sees the averaged model. --save-test FILE.npz keeps the test logits and targets of the chosen
weights; benchmarks/polyphonic_ensemble.py scores the average of several runs' probabilities (independent-head
runs only: a NADE's conditionals depend on the frame they score, so their average is not a mixture).
A progress bar on stderr counts the epochs (none with --quiet); the last line on stdout, before --json's, sums up
the test figures.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from pipeline.model import Config, Seq2Seq

DATA = Path(__file__).resolve().parents[2] / "shared/data/benchmarks/boulanger2012_via_tcn"
# Test NLL per frame (nats), as published. Independent outputs: Chung et al. 2014, Bai et al. 2018. Joint outputs:
# RNN-NADE (Boulanger-Lewandowski et al. 2012; 5.19 trained by SGD, 5.56 with Hessian-free), and LSTM-NADE,
# TP-LSTM-NADE and BALSTM (Johnson 2017, "Generating polyphonic music using tied parallel networks", Table 1),
# DBN-LSTM (Vohra et al. 2015, as listed in Johnson 2017). Every row uses the .mat splits; all but DBN-LSTM score
# each test frame given the real frames before it, as here (its protocol is not stated in the same detail).
PUBLISHED = {
    "JSB_Chorales": {"GRU (Chung 2014)": 8.54, "LSTM (Chung 2014)": 8.67, "GRU (Bai 2018)": 8.43,
                     "LSTM (Bai 2018)": 8.45, "TCN (Bai 2018)": 8.10, "RNN-NADE (2012, HF)": 5.56,
                     "RNN-NADE (2012, SGD)": 5.19, "LSTM-NADE (Johnson 2017)": 6.00,
                     "TP-LSTM-NADE (Johnson 2017)": 5.88, "BALSTM (Johnson 2017)": 5.05,
                     "DBN-LSTM (Vohra 2015)": 3.47},
    "Nottingham": {"LSTM (Chung 2014)": 3.20, "GRU (Bai 2018)": 3.46, "LSTM (Bai 2018)": 3.29,
                   "TCN (Bai 2018)": 3.07, "RNN-NADE (2012, HF)": 2.31, "LSTM-NADE (Johnson 2017)": 2.02,
                   "BALSTM (Johnson 2017)": 1.55},
    "MuseData": {"RNN-NADE (2012, HF)": 5.60, "BALSTM (Johnson 2017)": 3.90},
    "Piano_midi": {"RNN-NADE (2012, HF)": 7.05, "BALSTM (Johnson 2017)": 4.90},
}


def load(name: str, data_dir: Path) -> dict[str, list[np.ndarray]]:
    from scipy.io import loadmat

    m = loadmat(data_dir / f"{name}.mat")
    return {s: [np.asarray(x, dtype=np.float32) for x in m[f"{s}data"][0]] for s in ("train", "valid", "test")}


@dataclass(frozen=True)
class Reg:
    """The training-time regularisers of one forward pass (all off when scoring)."""
    in_drop: float = 0.0
    out_drop: float = 0.0
    locked: bool = False
    weight_drop: float = 0.0


OFF = Reg()


class Dropper:
    """Dropout for one forward pass: per cell, or with --locked one mask per sequence for every frame (drawn at
    the first call). `rows` repeats each sequence's mask for the chunks it was cut into (full context)."""

    def __init__(self, p: float, locked: bool, training: bool):
        self.p, self.locked, self.on, self.mask = p, locked, training and p > 0, None

    def __call__(self, x: torch.Tensor, rows: int = 1) -> torch.Tensor:
        if not self.on:
            return x
        if not self.locked:
            return F.dropout(x, self.p, True)
        if self.mask is None:
            self.mask = x.new_empty(x.size(0) // rows, 1, x.size(-1)).bernoulli_(1 - self.p) / (1 - self.p)
        return x * self.mask.repeat_interleave(rows, dim=0)


def gru_with_dropped_weights(gru: torch.nn.Module, p: float):
    """The GRU as a function whose hidden-to-hidden weights carry one DropConnect mask for the whole batch."""
    if not (gru.training and p > 0):
        return gru
    params = {n: F.dropout(w, p, True) if n.startswith("weight_hh") else w for n, w in gru.named_parameters()}
    return lambda x, h=None: functional_call(gru, params, (x, h))


def parts(model: Seq2Seq, reg: Reg):
    """(encoder, decoder, input dropout, output dropout) for one forward pass."""
    return (gru_with_dropped_weights(model.encoder, reg.weight_drop),
            gru_with_dropped_weights(model.decoder, reg.weight_drop),
            Dropper(reg.in_drop, reg.locked, model.training), Dropper(reg.out_drop, reg.locked, model.training))


class Counts:
    """Summed NLL and frame-accuracy counts over the frames a mask selects."""

    def __init__(self, keep: bool = False):
        self.nll, self.tp, self.fp, self.fn, self.frames = 0.0, 0, 0, 0, 0
        self.kept = [] if keep else None  # (logits, targets) of the masked frames, in scoring order

    def add(self, logits: torch.Tensor, y: torch.Tensor, m: torch.Tensor, decided: torch.Tensor) -> None:
        """`logits` score `y` (their summed BCE is -log p(y)); `decided`: the frames the model takes at 0.5."""
        if self.kept is not None:
            sel = m.bool()
            self.kept.append((logits[sel].float().cpu().numpy(), y[sel].bool().cpu().numpy()))
        cell = F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1)
        pred = decided.float() * m[..., None]
        self.nll += float((cell * m).sum())
        self.tp += int((pred * y).sum())
        self.fp += int((pred * (1 - y)).sum())
        self.fn += int(((1 - pred) * y * m[..., None]).sum())
        self.frames += int(m.sum())

    def result(self) -> dict:
        return {"nll": self.nll / self.frames, "acc": self.tp / max(self.tp + self.fp + self.fn, 1),
                "frames": self.frames}


# ---- --context window: fixed windows (seq_len frames of history at most) ----

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


class WindowTask:
    def __init__(self, data: dict, L: int, stride: int, device: torch.device):
        self.train = [t.to(device) for t in windows(data["train"], L, stride)]
        self.valid = [t.to(device) for t in windows(data["valid"], L, L)]
        self.test = [t.to(device) for t in windows(data["test"], L, L)]
        self.n_train = len(self.train[0])

    def batches(self, batch: int, g: torch.Generator):
        order = torch.randperm(self.n_train, generator=g)
        for k in range(0, len(order), batch):
            i = order[k:k + batch].to(self.train[0].device)
            yield self.train[0][i], self.train[1][i], self.train[2][i]

    @staticmethod
    def forward(model: Seq2Seq, b, reg: Reg):
        """Decoder states (before the head), targets, mask and the frames fed before each (for a hold gate) of a
        batch of windows."""
        x, y, m = b
        if reg == OFF:
            return model.states(x, y), y, m, model.previous(x, y)
        enc, dec, drop_in, drop_out = parts(model, reg)
        _, h = enc(drop_in(x))
        dec_in = torch.cat([x[:, -1:], y[:, :-1]], dim=1)
        out, _ = dec(drop_in(dec_in), h)
        return drop_out(out), y, m, dec_in

    def eval_batches(self, split: str, batch: int = 256):
        x, y, m = getattr(self, split)
        for k in range(0, len(x), batch):
            yield x[k:k + batch], y[k:k + batch], m[k:k + batch]


# ---- --context full: the encoder over the whole prefix of each piece ----

class PieceTask:
    def __init__(self, data: dict, L: int, device: torch.device, transpose: int = 0):
        self.L, self.device, self.transpose = L, device, transpose
        self.splits = {s: [torch.from_numpy(p).to(device) for p in data[s]] for s in ("train", "valid", "test")}
        self.n_train = len(self.splits["train"])
        keys = [np.flatnonzero(p.any(0)) for p in data["train"]]
        self.key_range = [(int(k.min()), int(k.max())) if len(k) else (0, 87) for k in keys]

    def pad(self, pieces: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, mask): `L` silent frames, then the piece, then silence up to a whole number of chunks."""
        L, T = self.L, max(len(p) for p in pieces)
        P = L * (1 + math.ceil(T / L))
        x = torch.zeros(len(pieces), P, 88, device=self.device)
        m = torch.zeros(len(pieces), P, device=self.device)
        for i, p in enumerate(pieces):
            x[i, L:L + len(p)] = p
            m[i, L:L + len(p)] = 1
        return x, m

    def shifted(self, i: int, g: torch.Generator) -> torch.Tensor:
        p = self.splits["train"][i]
        if not self.transpose:
            return p
        lo, hi = self.key_range[i]
        a, b = max(-self.transpose, -lo), min(self.transpose, 87 - hi)
        s = int(torch.randint(a, b + 1, (1,), generator=g))
        return torch.roll(p, s, dims=1) if s else p  # no note wraps: the shift keeps every key on the keyboard

    def batches(self, batch: int, g: torch.Generator):
        """Pieces of similar length together (less padding), the batches in random order."""
        lengths = torch.tensor([len(p) for p in self.splits["train"]], dtype=torch.float32)
        order = torch.argsort(lengths * (1 + 0.5 * torch.rand(len(lengths), generator=g))).tolist()
        groups = [order[k:k + batch] for k in range(0, len(order), batch)]
        for j in torch.randperm(len(groups), generator=g).tolist():
            x, m = self.pad([self.shifted(i, g) for i in groups[j]])
            yield x, m

    def forward(self, model: Seq2Seq, b, reg: Reg):
        """Decoder states (before the head), targets, mask and the frames fed before each (for a hold gate) for
        every chunk after the first (silent) one, each chunk decoded from the encoder's state after all chunks
        before it."""
        x, m = b
        B, P, n = x.shape
        L, K = self.L, P // self.L
        enc, dec, drop_in, drop_out = parts(model, reg)
        chunks = x.view(B, K, L, n)
        h, states = None, []
        for k in range(K - 1):
            _, h = enc(drop_in(chunks[:, k]), h)
            states.append(h)
        h0 = torch.stack(states, dim=2)                         # (layers, B, K-1, hidden)
        h0 = h0.reshape(h0.size(0), B * (K - 1), h0.size(-1)).contiguous()
        y = chunks[:, 1:]                                       # (B, K-1, L, n): the chunks to predict
        dec_in = torch.cat([chunks[:, :-1, -1:], y[:, :, :-1]], dim=2).reshape(B * (K - 1), L, n)
        out, _ = dec(drop_in(dec_in, rows=K - 1), h0)
        return (drop_out(out, rows=K - 1), y.reshape(B * (K - 1), L, n), m.view(B, K, L)[:, 1:].reshape(B * (K - 1), L),
                dec_in)

    def eval_batches(self, split: str, batch: int = 64):
        pieces = sorted(self.splits[split], key=len)
        for k in range(0, len(pieces), batch):
            yield self.pad(pieces[k:k + batch])


@torch.no_grad()
def score(model: Seq2Seq, task, split: str, keep: bool = False) -> Counts:
    model.eval()
    c = Counts(keep)
    for b in task.eval_batches(split):
        out, y, m, prev = task.forward(model, b, OFF)
        c.add(model.head(out, y, prev), y, m, model.head.decide(out, model.threshold(0.5), prev)[0])
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="JSB_Chorales", choices=["JSB_Chorales", "Nottingham", "MuseData", "Piano_midi"])
    ap.add_argument("--data-dir", type=Path, default=DATA, help="folder holding <data>.mat")
    ap.add_argument("--context", default="full", choices=["full", "window"])
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    ap.add_argument("--head", default="nade", choices=["nade", "hold_nade", "independent"],
                    help="output layer: a NADE over the 88 keys (low to high), the NADE behind a hold gate (a "
                         "frame that repeats the one before is one decision), or a sigmoid per key")
    ap.add_argument("--nade-hidden", type=int, default=64, help="hidden units of the NADE head")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.5, help="between GRU layers and inside the independent head")
    ap.add_argument("--in-dropout", type=float, default=0.0, help="on the input frames (encoder and decoder)")
    ap.add_argument("--out-dropout", type=float, default=0.0, help="on the decoder's output, before the head")
    ap.add_argument("--seq-len", type=int, default=32, help="chunk (full) or window (window) length in frames")
    ap.add_argument("--stride", type=int, default=4, help="window: start of a training window every N frames")
    ap.add_argument("--batch", type=int, default=32, help="pieces (full) or windows (window) per batch")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--transpose", type=int, default=0, help="train pieces transposed by up to N semitones")
    ap.add_argument("--locked", action="store_true", help="input/output dropout: one mask per piece, every frame")
    ap.add_argument("--weight-drop", type=float, default=0.0, help="DropConnect on the GRUs' hidden-to-hidden weights")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="score an EMA of the weights with this decay per step (0: off)")
    ap.add_argument("--save-test", type=Path, help="write the chosen weights' test logits and targets here (.npz)")
    ap.add_argument("--bias-init", action=argparse.BooleanOptionalAction, default=True,
                    help="start the output bias at the logit of each key's frequency in the train split")
    ap.add_argument("--clip", type=float, default=1.0, help="gradient norm clip")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=15, help="stop after this many epochs without a better valid NLL")
    ap.add_argument("--time-limit", type=float, default=0, help="stop training after this many seconds (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    ap.add_argument("--quiet", action="store_true", help="no per-epoch lines, no progress bar")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the result")
    args = ap.parse_args()
    for name in ("dropout", "in_dropout", "out_dropout", "weight_drop", "ema"):
        if not 0 <= getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(args, name)}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    data = load(args.data, args.data_dir)
    L = args.seq_len
    task = (PieceTask(data, L, device, args.transpose) if args.context == "full"
            else WindowTask(data, L, args.stride, device))
    model = Seq2Seq(Config(n_features=88, hidden=args.hidden, layers=args.layers, dropout=args.dropout, seq_len=L,
                           n_keys=88, head=args.head, nade_hidden=args.nade_hidden)).to(device)
    if args.bias_init:  # start the output at each key's training frequency instead of p = 0.5 everywhere
        freq = np.concatenate(data["train"]).mean(0).clip(1e-4, 1 - 1e-4)
        out = model.head.to_visible if args.head != "independent" else model.head.net[-1]
        with torch.no_grad():
            out.bias.copy_(torch.from_numpy(np.log(freq / (1 - freq))))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scored = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema)) if args.ema else None
    reg = Reg(args.in_dropout, args.out_dropout, args.locked, args.weight_drop)
    if args.weight_drop:  # cuDNN copies the dropped weights into one block each call, and says so every time
        warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=args.patience // 3)
    best, best_epoch, best_state, stale, t0 = {"nll": math.inf}, 0, None, 0, time.perf_counter()
    g = torch.Generator().manual_seed(args.seed)
    print(f"{args.data}: {len(data['train'])}/{len(data['valid'])}/{len(data['test'])} pieces, "
          f"{sum(map(len, data['test']))} test frames; {task.n_train} train "
          f"{'pieces' if args.context == 'full' else 'windows'}; "
          f"{sum(p.numel() for p in model.parameters())} parameters; context {args.context}; device {device}",
          flush=True)
    epoch = 0
    for epoch in tqdm(range(1, args.epochs + 1), desc=f"polyphonic {args.data}", unit="epoch", mininterval=1,
                      disable=args.quiet):
        model.train()
        for b in task.batches(args.batch, g):
            out, y, m, prev = task.forward(model, b, reg)
            logits = model.head(out, y, prev)
            cell = F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1)
            loss = (cell * m).sum() / m.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            if scored is not None:
                scored.update_parameters(model)
        judged = scored.module if scored is not None else model
        v = score(judged, task, "valid").result()
        sched.step(v["nll"])
        if v["nll"] < best["nll"]:
            best, best_epoch, stale = v, epoch, 0
            best_state = {k: t.detach().clone() for k, t in judged.state_dict().items()}
        else:
            stale += 1
        if not args.quiet:
            with tqdm.external_write_mode():  # the line above the bar, not through it
                print(f"epoch {epoch}: valid NLL {v['nll']:.3f} acc {v['acc']:.3f} ({time.perf_counter() - t0:.0f} s)"
                      + (" *" if stale == 0 else ""), flush=True)
        if stale >= args.patience or (args.time_limit and time.perf_counter() - t0 > args.time_limit):
            break
    model.load_state_dict(best_state)
    c = score(model, task, "test", keep=args.save_test is not None)
    r = c.result()
    if args.save_test:
        args.save_test.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.save_test, logits=np.concatenate([k[0] for k in c.kept]),
                 targets=np.concatenate([k[1] for k in c.kept]), head=np.array(args.head))
    wall = time.perf_counter() - t0
    assert r["frames"] == sum(map(len, data["test"])), "every test frame must be predicted exactly once"
    print(f"\n{args.data} test: NLL {r['nll']:.3f} nats/frame, frame accuracy {r['acc']:.3f} over {r['frames']} "
          f"frames; valid NLL {best['nll']:.3f} at epoch {best_epoch} of {epoch} "
          f"({wall:.0f} s on {device}{'' if device.type == 'cuda' else f', {torch.get_num_threads()} threads'})")
    published = PUBLISHED.get(args.data, {})
    for what, nll in published.items():
        print(f"  {what:30s} {nll:5.2f}  {'beaten' if r['nll'] < nll else 'not beaten'}")
    beaten = sum(r["nll"] < nll for nll in published.values())
    print(f"polyphonic: {args.data} test NLL {r['nll']:.3f} nats/frame, frame accuracy {r['acc']:.3f} (--head "
          f"{args.head}, --context {args.context}, epoch {best_epoch} of {epoch}, {wall:.0f} s); beats {beaten} of "
          f"{len(published)} published figures")
    if args.json:
        print(json.dumps({"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                          "test_nll": r["nll"], "test_acc": r["acc"], "valid_nll": best["nll"],
                          "best_epoch": best_epoch, "epochs": epoch, "wall_s": wall, "device": str(device)}))


if __name__ == "__main__":
    main()
