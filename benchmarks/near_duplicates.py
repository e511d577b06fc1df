"""Same-song detection with every name hidden: the pair precision and recall of prepare's dedupe levels.

Usage: python benchmarks/near_duplicates.py [--corpus ../shared/data/midi/lakh/beatles] [--json FILE]

The shared Lakh Beatles files hold several versions (`_vN`) of most songs. LMD-full names every file by the md5
of its bytes, so here too: each file is copied as <md5>.mid (byte-identical files become one, as in LMD-full),
and the `local` source and `prepare` run on that folder in a temporary workspace (params.yaml's values, the
local path changed). The truth: two files are the same song when they share the folder (the album) and their
names agree without the track-number prefix and the `_vN` suffix, except for the mislabelled file the shared
corpus documents (MISLABELLED; LMD holds a few more, so neither figure can quite reach 1).
Printed per dedupe level that can group these files, over every pair of files prepare read: the pairs it puts
together, pair precision and pair recall. Levels: `content` (the same music after transposition on the dedupe
grid), `near` (the groups of the near-duplicate level's pairs alone: MinHash LSH over melodic shingles),
`title` (the song key from the file's own metadata: the names are md5s), and `union` (prepare's groups, what the
split keeps together). `--thresholds 0.2 0.25 0.3` reruns prepare at each dedupe.near.threshold (the sweep
behind the default). Run by hand (under a minute a threshold on 2 cores), not by the tests. A progress bar on
stderr counts the stages run; the last line on stdout gives the union level's figures at each threshold.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from tqdm import tqdm

from pipeline.dedupe import UnionFind

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "midi" / "lakh" / "beatles"


# LMD's mislabelled files that the shared corpus documents (../shared/data/midi/SOURCES.md, "Deliberate
# duplicates"): their true song. Only this one is known; other mislabels count against both figures.
MISLABELLED = {"10CD2_-_The_Beatles/CD2_-_13_-_Good_Night_v1.mid": "03_-_A_Hard_Day's_Night/a_hard_day's_night"}


def song_of(path: Path) -> str:
    """The truth label, the folder and the song: '05_-_Help!/ticket_to_ride' from
    '05_-_Help!/07_-_Ticket_To_Ride_v6.mid' (or the song MISLABELLED gives)."""
    known = MISLABELLED.get(f"{path.parent.name}/{path.name}")
    return known or f"{path.parent.name}/" + re.sub(r"_v\d+$", "", re.sub(r"^\d+_-_", "", path.stem)).lower()


def hide_names(files: list[Path], dest: Path) -> dict[str, str]:
    """Copy each file as <md5>.mid into `dest`; {md5: truth song} (the first name wins for identical bytes)."""
    dest.mkdir(parents=True)
    truth: dict[str, str] = {}
    for f in files:
        data = f.read_bytes()
        md5 = hashlib.md5(data).hexdigest()
        if md5 not in truth:
            (dest / f"{md5}.mid").write_bytes(data)
            truth[md5] = song_of(f)
    return truth


def run_prepare(work: Path, folder: Path, threshold: float | None = None, progress: tqdm | None = None) -> None:
    """`acquire local` then `prepare` on `folder` in the workspace `work` (params.yaml's values, the local path
    and `threshold` changed), each stage a step of `progress`. Raises SystemExit with a stage's output when it
    fails."""
    shutil.copytree(ROOT / "pipeline", work / "pipeline")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["sources"] = ["local"]
    params["data"]["local"]["path"] = str(folder)
    if threshold is not None:
        params["dedupe"]["near"]["threshold"] = threshold
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["pipeline.acquire", "local"], ["pipeline.prepare"]):
        if progress is not None:
            progress.set_postfix_str(cmd[0])
        done = subprocess.run([sys.executable, "-m", *cmd], cwd=work, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{cmd[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        if progress is not None:
            progress.update()


def predictions(work: Path) -> tuple[dict[str, dict[str, str | None]], dict[str, int]]:
    """Per file (its md5), its key at each level (None: the level says nothing of it), and how many files
    prepare did not keep for a reason other than duplication, per reason."""
    sel = pq.read_table(work / "data/prepared/selected.parquet", columns=["file", "content_hash", "song", "group"])
    rej = pq.read_table(work / "data/prepared/rejects.parquet", columns=["id", "track", "reason", "duplicate_of"])
    near = pq.read_table(work / "data/prepared/near.parquet").to_pylist()
    stems = sorted({Path(r["file"]).stem for r in sel.to_pylist()} | {Path(r[k]).stem for r in near for k in "ab"})
    number = {s: k for k, s in enumerate(stems)}
    groups = UnionFind(len(stems))  # the near level alone: its pairs' groups
    for r in near:
        groups.union(number[Path(r["a"]).stem], number[Path(r["b"]).stem])
    labels = groups.labels()
    keys: dict[str, dict[str, str | None]] = {}
    for r in sel.to_pylist():
        stem = Path(r["file"]).stem
        keys[stem] = {"content": r["content_hash"], "near": stems[labels[number[stem]]], "title": r["song"],
                      "union": r["group"]}
    other: dict[str, int] = {}
    for r in rej.to_pylist():
        if r["duplicate_of"]:  # dropped as a copy: it shares its kept file's content and group
            kept = keys.get(Path(r["duplicate_of"]).stem)
            if kept:
                keys[Path(r["id"]).stem] = {"content": kept["content"], "near": kept["near"], "title": None,
                                            "union": kept["union"]}
        elif r["track"] is None:  # a whole file (a track dropped by the instrument filter is no loss here)
            other[r["reason"]] = other.get(r["reason"], 0) + 1
    return keys, other


LEVELS = ("content", "near", "title", "union")


def pair_scores(keys: dict[str, dict], truth: dict[str, str], level: str) -> dict:
    tp = fp = fn = 0
    for a, b in itertools.combinations(sorted(keys), 2):
        same = truth[a] == truth[b]
        ka, kb = keys[a][level], keys[b][level]
        said = ka is not None and ka == kb
        tp, fp, fn = tp + (said and same), fp + (said and not same), fn + (same and not said)
    return {"pairs": tp + fp, "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None, "true_pairs": tp + fn}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS, help="folders of .mid files named <track>_-_<song>_vN")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--thresholds", type=float, nargs="+", help="dedupe.near.threshold values to sweep "
                                                                 "(default: params.yaml's)")
    args = ap.parse_args()
    files = sorted(p for p in args.corpus.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    if not files:
        raise SystemExit(f"no MIDI files under {args.corpus} (the shared corpus is absent from a plain clone)")
    out = {}
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    thresholds = args.thresholds or [None]
    bar = tqdm(total=2 * len(thresholds), desc="near_duplicates", unit="stage", mininterval=1)
    for threshold in thresholds:
        with tempfile.TemporaryDirectory(prefix="near-duplicates-") as tmp:
            truth = hide_names(files, Path(tmp) / "hidden")
            run_prepare(Path(tmp) / "work", Path(tmp) / "hidden", threshold, bar)
            keys, other = predictions(Path(tmp) / "work")
        distinct = len(truth)
        truth = {k: v for k, v in truth.items() if k in keys}
        label = "params.yaml" if threshold is None else f"{threshold:g}"
        tqdm.write(f"dedupe.near.threshold {label}: {len(files)} files, {distinct} distinct, {len(truth)} kept or "
                   f"grouped by prepare ({len(set(truth.values()))} songs; files not kept for other reasons: "
                   f"{other or 'none'}); names hidden as md5s")
        out[label] = {}
        for level in LEVELS:
            s = out[label][level] = pair_scores(keys, truth, level)
            tqdm.write(f"  {level:8s}: {s['pairs']:5d} pairs grouped, precision {fmt(s['precision'])}, "
                       f"recall {fmt(s['recall'])} of {s['true_pairs']} same-song pairs")
    bar.close()
    default = yaml.safe_load((ROOT / "params.yaml").read_text())["dedupe"]["near"]["threshold"]
    print("near_duplicates: " + "; ".join(
        f"precision {fmt(r['union']['precision'])}, recall {fmt(r['union']['recall'])} at threshold "
        f"{default if label == 'params.yaml' else label}" for label, r in out.items())
        + f" on {len(files)} files (union level: prepare's groups)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
