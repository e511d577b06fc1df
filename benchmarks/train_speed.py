"""Training speed: model FLOPs utilisation of a step, and wall time to beat the repeat-last-frame baseline.

Usage: PYTHONPATH=. python benchmarks/train_speed.py [--mfu-only | --heads-only] [--budget-s 600]
(time to quality and the heads read data/processed/pianoroll/ from `make repro`).

1. MFU at DeepMusician's architecture: 2-layer GRU 512 encoder and decoder, head 512 -> 256 -> 88, batch 64,
   64 frames in / 64 out, one training step (forward, backward, AdamW) with the fused teacher-forced decoder,
   with this project's GRU (pipeline.gru) and with plain nn.GRU, interleaved.
   Useful FLOPs count the GRU gate matmuls (3 gates x 2 x H x (input + H) per step, both directions of the
   matmul counted as multiply + add) and the head, forward x 3 for forward + backward; divided by the step
   time (median) and by the machine's fp32 matmul rate measured between the steps (a 4096 x 4096 @ 4096 x 4096,
   median).
2. Time to quality on the default data: wall time (training only, validation excluded) until valid next-frame
   F1 beats the repeat-last-frame baseline, for this project's trainer (fused teacher forcing, stride-16
   windows) and for a DeepMusician-style loop of the same model (stride-1 windows, teacher-forcing ratio 0.5
   decoded step by step in Python), same data, same run, validation every 25 batches.
3. Output heads at the default size (hidden 256, 2 layers, batch 64, 32 frames in / 32 out, the default data's
   frames): the median training step with the independent head, the NADE head (model.nade_hidden 64
   and 128) and the hold-gated NADE (64), steps interleaved; and the time to continue 32 windows (of train) by
   64 frames, as many as the default samples, with each head.
Progress bars on stderr, over rounds and batches, tick between the timed steps, never inside one; the last line
on stdout sums up the run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn
from tqdm import tqdm

from pipeline import losses
from pipeline.model import Config, Seq2Seq


def matmul_rate(n: int = 4096, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def step_flops(batch: int, T: int, n_in: int, H: int, layers: int, head: tuple[int, int, int]) -> float:
    gru = sum(2 * 3 * H * ((n_in if layer == 0 else H) + H) for layer in range(layers)) * batch * T
    h1, h2, out = head
    forward = 2 * gru + 2 * (h1 * h2 + h2 * out) * batch * T  # encoder + decoder + head
    return 3 * forward


def mfu(threads: int, rounds: int = 5) -> dict[str, float]:
    """This project's GRU (pipeline.gru) and plain nn.GRU in the same model, steps interleaved with the matmul
    rate so that both see the same machine (its speed drifts by 10-20 % from minute to minute here). Returns
    the MFU of each, a share of the median matmul rate."""
    B, T, H = 64, 64, 512
    x, y = (torch.rand(B, T, 88) < 0.05).float(), (torch.rand(B, T, 88) < 0.05).float()
    runs = {}
    for name in ("pipeline.gru.GRU", "nn.GRU"):
        torch.manual_seed(0)
        model = Seq2Seq(Config(n_features=88, hidden=H, layers=2, dropout=0.0, seq_len=T, n_keys=88))
        if name == "nn.GRU":
            for part in ("encoder", "decoder"):
                plain = nn.GRU(88, H, 2, batch_first=True)
                plain.load_state_dict(getattr(model, part).state_dict())
                setattr(model, part, plain)
        runs[name] = (model, torch.optim.AdamW(model.parameters()), [])

    def step(model, opt):
        loss = losses.focal(model(x, y), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for model, opt, _ in runs.values():
        step(model, opt)
        step(model, opt)
    peaks = []
    for _ in tqdm(range(rounds), desc="train_speed: MFU", unit="round", mininterval=1):
        for model, opt, times in runs.values():
            for _ in range(3):
                t = time.perf_counter()
                step(model, opt)
                times.append(time.perf_counter() - t)
        peaks.append(matmul_rate(reps=2))
    flops, peak = step_flops(B, T, 88, H, 2, (H, H // 2, 88)), statistics.median(peaks)
    print(f"fp32 matmul rate (4096^2 @ 4096^2, {threads} threads): median {peak / 1e9:.1f} GFLOP/s "
          f"(range {min(peaks) / 1e9:.0f} to {max(peaks) / 1e9:.0f}); "
          f"a step does {flops / 1e9:.0f} GFLOP of useful work")
    out = {}
    for name, (_, _, times) in runs.items():
        dt = statistics.median(times)
        out[name] = flops / dt / peak
        print(f"MFU with {name:16s}: step median {dt * 1e3:.0f} ms (best {min(times) * 1e3:.0f}) -> "
              f"{flops / dt / 1e9:.1f} GFLOP/s -> MFU {flops / dt / peak:.0%}")
    return out


def step_loop(model: Seq2Seq, x: torch.Tensor, y: torch.Tensor, ratio: float) -> torch.Tensor:
    """DeepMusician's decoder: one step at a time in Python, each fed the true previous frame with probability
    `ratio`, else the model's own thresholded one. Logits (batch, steps, features)."""
    _, h = model.encoder(x)
    prev, logits = x[:, -1:], []
    for t in range(y.size(1)):
        out, h = model.decoder(prev, h)
        step = model.head(out)
        logits.append(step)
        own = (torch.sigmoid(step) > 0.5).float()
        prev = torch.where(torch.rand(x.size(0), 1, 1) < ratio, y[:, t:t + 1], own)
    return torch.cat(logits, dim=1)


def heads(rounds: int = 5) -> dict[str, float]:
    """Median step time of each head over the independent head's (and prints the steps and the rollouts)."""
    from torch.utils.data import DataLoader

    from pipeline.dataset import Split, Windows, data_dir
    from pipeline.rollout import continue_roll
    from pipeline.sampling import Sampler

    split = Split(data_dir(), "train")
    x, y = next(iter(DataLoader(Windows(split, 32, 16, shuffle=True, seed=0), batch_size=64)))
    x, y = x.float(), y.float()
    F, K = split.meta.features, split.meta.n_keys
    runs = {}
    for name, head, units in (("independent", "independent", 64), ("nade 64", "nade", 64), ("nade 128", "nade", 128),
                              ("hold_nade 64", "hold_nade", 64)):
        torch.manual_seed(0)
        model = Seq2Seq(Config(n_features=F, n_keys=K, hidden=256, layers=2, dropout=0.2, seq_len=32, head=head,
                               nade_hidden=units))
        runs[name] = (model, torch.optim.AdamW(model.parameters()), [])
    for _ in tqdm(range(rounds + 1), desc="train_speed: heads", unit="round", mininterval=1):  # the first warms up
        for model, opt, times in runs.values():
            t = time.perf_counter()
            loss = losses.bce(model(x, y), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
    base = statistics.median(runs["independent"][2][1:])
    print(f"heads: a training step at the default size on the default data ({x.shape[0]} windows, {F}-wide frames)")
    out = {}
    for name, (model, _, times) in runs.items():
        dt = statistics.median(times[1:])
        out[name] = dt / base
        model.eval()
        t = time.perf_counter()
        continue_roll(model, x[:32], 64, Sampler("bernoulli", generator=torch.Generator().manual_seed(0)))
        gen = time.perf_counter() - t
        print(f"  {name:12s}: step median {dt * 1e3:.0f} ms ({dt / base:.2f}x the independent head's); "
              f"32 samples of 64 frames in {gen:.2f} s")
    return out


def time_to_quality(budget_s: float) -> dict[str, float | None]:
    """Seconds of training each trainer took to beat repeat-last's valid F1 (None: not within `budget_s`)."""
    from torch.utils.data import DataLoader

    from pipeline.baselines import repeat_last
    from pipeline.dataset import Split, Windows, data_dir
    from pipeline.metrics import FrameCounts, sounding

    d = data_dir()
    valid = list(DataLoader(Windows(Split(d, "valid"), 32, 32), batch_size=256))
    K = Split(d, "valid").meta.n_keys
    base = FrameCounts()
    for x, y in valid:
        base.add(repeat_last(sounding(x, K), sounding(y, K), "next_frame"), sounding(y, K))
    target = base.summary()["f1"]
    print(f"time to quality: repeat-last valid next-frame F1 {target:.3f} on {sum(len(x) for x, _ in valid)} windows")

    def f1(model):
        model.eval()
        c = FrameCounts()
        with torch.no_grad():
            for x, y in valid:
                c.add(sounding(torch.sigmoid(model(x, y)) > 0.5, K), sounding(y, K))
        model.train()
        return c.summary()["f1"]

    out = {}
    for name, stride, ratio in (("this trainer (fused, stride 16)", 16, 1.0),
                                ("DeepMusician-style (stride 1, ratio 0.5, step loop)", 1, 0.5)):
        bar = tqdm(desc=f"train_speed: time to quality, {name.split(' (')[0]}", unit="batch", mininterval=1)
        torch.manual_seed(0)
        train = Windows(Split(d, "train"), 32, stride, shuffle=True, seed=0)
        model = Seq2Seq(Config(n_features=train.meta.features, n_keys=K, hidden=256, layers=2, dropout=0.2, seq_len=32))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        spent, batches, reached, epoch = 0.0, 0, None, 0
        while reached is None and spent < budget_s:
            train.set_epoch(epoch)
            for x, y in DataLoader(train, batch_size=64):
                t = time.perf_counter()
                loss = losses.focal(model(x, y) if ratio >= 1 else step_loop(model, x, y, ratio), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                spent += time.perf_counter() - t
                batches += 1
                bar.update()  # after the step's clock stopped
                if batches % 25 == 0:
                    score = f1(model)
                    bar.set_postfix(valid_f1=f"{score:.3f}", training_s=f"{spent:.0f}", refresh=False)
                    if score > target:
                        reached = spent
                        break
                if spent >= budget_s:
                    break
            epoch += 1
        bar.close()
        out[name] = reached
        print(f"  {name}: " + (f"beat the baseline after {reached:.0f} s of training ({batches} batches)" if reached
                                else f"not beaten within {budget_s:.0f} s ({batches} batches)"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mfu-only", action="store_true")
    ap.add_argument("--heads-only", action="store_true", help="only part 3: the output heads' cost")
    ap.add_argument("--budget-s", type=float, default=600)
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    parts = []
    if not args.heads_only:
        m = mfu(threads)
        parts.append("MFU " + ", ".join(f"{v:.0%} with {k}" for k, v in m.items()))
    if not args.mfu_only:
        h = heads()
        parts.append("training step against the independent head's: "
                     + ", ".join(f"{k} {v:.2f}x" for k, v in h.items() if k != "independent"))
    if not (args.mfu_only or args.heads_only):
        q = time_to_quality(args.budget_s)
        parts.append("time to beat repeat-last " + ", ".join(
            f"{k.split(' (')[0]} " + (f"not within {args.budget_s:.0f} s" if v is None else f"{v:.0f} s")
            for k, v in q.items()))
    print("train_speed: " + "; ".join(parts))


if __name__ == "__main__":
    main()
