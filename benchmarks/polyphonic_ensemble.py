"""Scores the average of several benchmarks/polyphonic.py runs (each saved with --save-test FILE.npz).

Usage: PYTHONPATH=. python benchmarks/polyphonic_ensemble.py run1.npz run2.npz ... [--json]

The ensemble's probability of each key in each test frame is the mean of the runs' sigmoid probabilities (a
mixture of the models); NLL and frame accuracy are then scored by polyphonic.py's own Counts. The runs must
have scored the same test frames in the same order (same --data and --seq-len), which is checked, and must use
the independent head (files from before the head was saved are taken to): a NADE's logits are conditionals given
the keys below, and the mixture of two NADEs is not the NADE of their mean conditionals, so such runs are refused.
The last line on stdout (before --json's) sums up the ensemble against its best single run; scoring takes seconds,
so there is no progress bar.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from polyphonic import Counts  # this folder is on sys.path when the script runs


def scores(logits: torch.Tensor, y: torch.Tensor) -> dict:
    c = Counts()
    c.add(logits, y, torch.ones(len(y), dtype=logits.dtype), (logits > 0).to(logits.dtype))  # decided at p = 0.5
    return c.result()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the result")
    args = ap.parse_args()
    targets, total, single = None, None, []
    for path in args.runs:
        with np.load(path) as f:
            logits, y = torch.from_numpy(f["logits"]).double(), torch.from_numpy(f["targets"]).double()
            head = str(f["head"]) if "head" in f.files else "independent"
        if head != "independent":
            raise SystemExit(f"{path}: a --head {head} run; only independent-head runs average into a mixture")
        if targets is None:
            targets = y
        elif y.shape != targets.shape or not torch.equal(y, targets):
            raise SystemExit(f"{path}: scored other test frames than {args.runs[0]} (different --data or --seq-len?)")
        single.append(scores(logits, y))
        p = torch.sigmoid(logits)
        total = p if total is None else total + p
        print(f"{path.name}: NLL {single[-1]['nll']:.3f}, frame accuracy {single[-1]['acc']:.3f}")
    r = scores(torch.logit(total / len(args.runs)), targets)
    print(f"ensemble of {len(args.runs)}: NLL {r['nll']:.3f} nats/frame, frame accuracy {r['acc']:.3f} "
          f"over {r['frames']} frames (single runs: NLL {min(s['nll'] for s in single):.3f} to "
          f"{max(s['nll'] for s in single):.3f})")
    best = min(s["nll"] for s in single)
    print(f"polyphonic_ensemble: {len(args.runs)} runs averaged, test NLL {r['nll']:.3f} nats/frame against "
          f"{best:.3f} for the best single run (gain {best - r['nll']:+.3f}) over {r['frames']} frames")
    if args.json:
        print(json.dumps({"runs": [str(p) for p in args.runs], "test_nll": r["nll"], "test_acc": r["acc"],
                          "single_nll": [s["nll"] for s in single]}))


if __name__ == "__main__":
    main()
