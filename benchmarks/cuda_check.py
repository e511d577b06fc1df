"""Smoke-test the training stage's device paths and time them: `python -m pipeline.train` a few epochs per variant.

Usage: PYTHONPATH=. python benchmarks/cuda_check.py [--epochs 3] [--variants cuda,amp,compile,ddp2,cpu] [--stages]

Each variant runs in its own temporary copy of pipeline/, params.yaml and data/processed/ (so models/ and
metrics/ of the checkout are never touched), with params.yaml's train keys changed as the variant says:
  cpu      device cpu, amp false              cuda     device cuda, amp false, compile false
  amp      device cuda, amp true              compile  device cuda, amp true, compile true
  ddp2     device cuda, processes 2 (DDP under torchrun, nccl)
--stages then runs calibrate (when the checkout has it), generate and evaluate after the last variant that trained.
Prints, per variant: ok or failed (with the end of its output), the first epoch's time (start-up, cuDNN and
compile warm-up included) and the mean time of the later epochs, read off the time each `epoch N:` line appears.
A progress bar on stderr counts the runs done; the last line on stdout sums up which variants trained.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "cpu": {"device": "cpu", "amp": False, "compile": False},
    "cuda": {"device": "cuda", "amp": False, "compile": False},
    "amp": {"device": "cuda", "amp": True, "compile": False},
    "compile": {"device": "cuda", "amp": True, "compile": True},
    "ddp2": {"device": "cuda", "amp": False, "compile": False, "processes": 2},
}


def say(line: str) -> None:
    """Print a line to stdout at once (read while the run goes on), clearing the progress bar around it."""
    with tqdm.external_write_mode():
        print(line, flush=True)


def run(cmd: list[str], cwd: Path, timeout: float) -> tuple[int, list[tuple[float, str]], str]:
    """Exit status, stdout lines with the seconds since start when each appeared, and the end of stderr."""
    t0 = time.perf_counter()
    lines: list[tuple[float, str]] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        [str(cwd)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                start_new_session=True)
        watchdog = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        watchdog.start()
        try:
            for line in proc.stdout:
                lines.append((time.perf_counter() - t0, line.rstrip()))
            rc = proc.wait()
        finally:
            watchdog.cancel()
        if rc == -signal.SIGKILL:
            lines.append((time.perf_counter() - t0, f"killed after {timeout:.0f} s"))
        err.seek(0)
        tail = "\n".join(l for l in err.read().replace("\r", "\n").splitlines() if "batch/s" not in l and
                         "s/batch" not in l and l.strip())[-20000:]
    return rc, lines, tail


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--variants", default="cuda,amp,compile,ddp2")
    ap.add_argument("--stages", action="store_true", help="also run calibrate, generate and evaluate")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per variant")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cuda_check_"))
    results, last = [], None
    names = args.variants.split(",")
    bar = tqdm(total=len(names) + 3 * args.stages, desc="cuda_check", unit="run", mininterval=1)
    for name in names:
        bar.set_postfix_str(f"train ({name})")
        d = work / name
        d.mkdir()
        shutil.copytree(ROOT / "pipeline", d / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "data/processed", d / "data/processed")
        p = yaml.safe_load((ROOT / "params.yaml").read_text())
        p["train"].update(VARIANTS[name], epochs=args.epochs, resume=False)
        (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        rc, lines, tail = run([sys.executable, "-m", "pipeline.train"], d, args.timeout)
        epochs = [t for t, l in lines if l.startswith("epoch ")]
        first = epochs[0] if epochs else float("nan")
        later = (epochs[-1] - epochs[0]) / (len(epochs) - 1) if len(epochs) > 1 else float("nan")
        results.append((name, "ok" if rc == 0 else f"FAILED (exit {rc})", first, later))
        say(f"== {name}: {results[-1][1]}; first epoch done at {first:.1f} s, later epochs {later:.2f} s each")
        for _, l in lines[-4:]:
            say("   " + l)
        if rc != 0:
            errors = [l for l in tail.splitlines() if "Error" in l or "error:" in l][:10]
            say("   stderr:\n" + "\n".join("   " + l for l in errors + ["..."] + tail.splitlines()[-15:]))
        if rc == 0:
            last = d
        bar.update()
    stages_ok = []
    if args.stages and last is not None:
        for stage in ("calibrate", "generate", "evaluate"):
            bar.set_postfix_str(stage)
            if stage == "calibrate" and not (last / "pipeline/calibrate.py").exists():
                bar.update()
                continue
            t = time.perf_counter()
            rc, lines, tail = run([sys.executable, "-m", f"pipeline.{stage}"], last, args.timeout)
            say(f"== {stage} (after {last.name}): {'ok' if rc == 0 else f'FAILED (exit {rc})'} "
                f"in {time.perf_counter() - t:.1f} s")
            for _, l in lines[-3:]:
                say("   " + l)
            if rc != 0:
                say("   stderr:\n" + "\n".join("   " + l for l in tail.splitlines()[-25:]))
            else:
                stages_ok.append(stage)
            bar.update()
    bar.close()
    print("\nvariant   status                first epoch (s)   later epochs (s each)")
    for name, status, first, later in results:
        print(f"{name:9s} {status:21s} {first:15.1f}   {later:10.2f}")
    shutil.rmtree(work, ignore_errors=True)
    ok = [name for name, status, _, _ in results if status == "ok"]
    timed = [(later, name) for name, status, _, later in results if status == "ok" and not math.isnan(later)]
    print(f"cuda_check: {len(ok)} of {len(results)} variants trained {args.epochs} epochs"
          + (f" ({', '.join(ok)})" if ok else "")
          + (f"; fastest later epoch {min(timed)[1]} {min(timed)[0]:.2f} s" if timed else "")
          + (f"; stages run after {last.name}: {', '.join(stages_ok) or 'none ok'}" if args.stages and last else ""))


if __name__ == "__main__":
    main()
