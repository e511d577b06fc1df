"""Which generator makes the music most like its data: output heads, sampling and representations side by side.

Usage: python benchmarks/generators.py [--variants nade-bernoulli,independent-threshold,...] [--json FILE]

Each variant is the default pipeline with a few params changed (`dvc exp run -S ...` would run the same): the
stages from `convert` (token variants) or `train` on run with `python -m pipeline.<stage>` in a temporary copy of
this workspace, which needs `dvc repro prepare convert` (or `make repro`) done first. Variants that share a model
(same params up to `generate`) train it once. Printed per variant: the valid NLL the model was selected on, the
test figures of evaluate (next-frame NLL and F1; per token for token models), and how the 32 generated samples
compare with as many real test windows: the relative gap of the means of notes, pitches used, pitch-class
entropy and polyphony, the empty-beat rate's gap, and the mean overlapping area of the statistics'
distributions (Yang & Lerch 2020). Run by hand (minutes per trained model on 2 cores), not by the tests. A
progress bar on stderr counts the variants done; the last line on stdout names the variant closest to the data.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: params changed from params.yaml (each spelled out, so a row means the same as defaults move)
    "independent-threshold": {"model.head": "independent", "generate.sampling": "threshold", "train.epochs": 20},
    "independent-bernoulli": {"model.head": "independent", "generate.sampling": "bernoulli", "train.epochs": 20},
    "nade-threshold": {"model.head": "nade", "generate.sampling": "threshold", "train.epochs": 20},
    "nade-bernoulli": {"model.head": "nade", "generate.sampling": "bernoulli", "train.epochs": 20},
    "nade-bernoulli-40-epochs": {"model.head": "nade", "generate.sampling": "bernoulli", "train.epochs": 40},
    "hold-nade-bernoulli-40-epochs": {"model.head": "hold_nade", "generate.sampling": "bernoulli", "train.epochs": 40},
    "tokens-threshold": {"represent.kind": "tokens", "generate.sampling": "threshold", "train.epochs": 20},
    "tokens-bernoulli": {"represent.kind": "tokens", "generate.sampling": "bernoulli", "train.epochs": 20},
}
GAPS = ("notes", "pitches_used", "pitch_class_entropy", "polyphony")


def say(line: str) -> None:
    """Print a line to stdout at once (read while the run goes on), clearing the progress bar around it."""
    with tqdm.external_write_mode():
        print(line, flush=True)


def with_changes(params: dict, changes: dict) -> dict:
    out = json.loads(json.dumps(params))
    for key, value in changes.items():
        node = out
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return out


def model_key(changes: dict) -> str:
    """Variants whose params differ only in generate.* share a trained model."""
    return json.dumps({k: v for k, v in changes.items() if not k.startswith("generate.")}, sort_keys=True)


def run(cwd: Path, stage: str) -> float:
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", f"pipeline.{stage}"], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{stage} failed in {cwd}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return time.perf_counter() - t


def summary(cwd: Path, train_s: float, generate_s: float) -> dict:
    ev = json.loads((cwd / "metrics/eval.json").read_text())
    best = torch.load(cwd / "models/model.pt", map_location="cpu", weights_only=True)["best"]  # the chosen epoch
    music, tokens = ev["music"], ev["kind"] == "tokens"
    g, r = music["generated"], music["real"]
    row = {"valid_nll": best["valid_loss"] if tokens else best["valid_nll_per_frame"], "best_epoch": best["epoch"],
           "nll_unit": "token" if tokens else "frame",
           "test_nll": (ev["next_token"]["model"]["nll_per_token"] if tokens
                        else ev["next_frame"]["model"]["nll_per_frame"]),
           "next_frame_f1": None if tokens else ev["next_frame"]["model"]["f1"],
           "empty_beat_gap": ((g["empty_beat_rate"] - r["empty_beat_rate"]) if g["empty_beat_rate"] is not None
                              else None),
           "mean_value_oa": music["distributions"]["mean_value_oa"], "mean_oa": music["distributions"]["mean_oa"],
           "train_s": train_s, "generate_s": generate_s}
    for k in GAPS:
        row[f"{k}_gap"] = (g[k] - r[k]) / r[k] if g[k] is not None and r[k] else None
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    names = args.variants.split(",")
    for n in names:
        if n not in VARIANTS:
            ap.error(f"unknown variant {n!r}")
    if not (ROOT / "data/processed").is_dir():
        raise SystemExit("data/processed is missing: run `dvc repro convert` (or make repro) first")
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    rows, models = {}, {}
    with tempfile.TemporaryDirectory(prefix="generators-") as tmp:
        for name in tqdm(names, desc="generators", unit="variant", mininterval=1):
            changes = VARIANTS[name]
            key = model_key(changes)
            work = models.get(key)
            train_s = 0.0
            if work is None:
                work = Path(tmp) / f"m{len(models)}"
                shutil.copytree(ROOT / "pipeline", work / "pipeline")
                for d in ("data/raw", "data/prepared", "data/processed"):
                    shutil.copytree(ROOT / d, work / d)
                (work / "params.yaml").write_text(yaml.safe_dump(with_changes(base, changes), sort_keys=False))
                if changes.get("represent.kind", base["represent"]["kind"]) != base["represent"]["kind"]:
                    shutil.rmtree(work / "data/processed")
                    run(work, "convert")
                say(f"{name}: training ...")
                train_s = run(work, "train") + run(work, "calibrate")
                models[key] = work
            (work / "params.yaml").write_text(yaml.safe_dump(with_changes(base, changes), sort_keys=False))
            generate_s = run(work, "generate")
            run(work, "evaluate")
            rows[name] = summary(work, train_s, generate_s)
            say(f"{name}: {json.dumps(rows[name])}")
    print("\n| variant | valid NLL | test NLL | next-frame F1 | notes | pitches used | pitch-class entropy | "
          "polyphony | empty beats | mean value OA | mean OA |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    pct = lambda v: "–" if v is None else f"{100 * v:+.0f}%"
    num = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"
    for name, r in rows.items():
        print(f"| {name} | {num(r['valid_nll'], 2)}/{r['nll_unit']} | {num(r['test_nll'], 2)} "
              f"| {num(r['next_frame_f1'])} "
              f"| {' | '.join(pct(r[f'{k}_gap']) for k in GAPS)} | {num(r['empty_beat_gap'], 2)} "
              f"| {num(r['mean_value_oa'])} | {num(r['mean_oa'])} |")
    scored = {n: r["mean_value_oa"] for n, r in rows.items() if r["mean_value_oa"] is not None}
    best = max(scored, key=scored.get) if scored else None
    print(f"\ngenerators: {len(rows)} variants, {len(models)} models trained"
          + (f"; closest to the data by mean value OA: {best} ({scored[best]:.3f})" if best else ""))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
