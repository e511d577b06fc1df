"""DVC status, push and pull against an S3 remote for a Lakh-sized corpus: this pipeline's layout vs one file per MIDI.

Usage: python benchmarks/remote_speed.py [--files 176581] [--scale 0.25] [--per-file-files N] [--status-only]
                                        [--layouts archives,per-file] [--jobs N] [--workdir DIR]
Needs the s3 and dev extras (dvc-s3, moto[server]): pip install -e '.[dev]'.

A Lakh-sized corpus (LMD-full: 176,581 MIDI files in a 1.77 GB tarball) is laid out in a temporary DVC repo whose
dvc.yaml has the pipeline's three data stages (acquire@lakh -> data/raw/lakh, prepare -> data/prepared,
convert -> data/processed, with data/raw and data/prepared as dependencies, as in the real dvc.yaml), in two ways:

  archives   what this pipeline writes: data/raw/lakh/ holds the tarball (DVC never opens it, so its bytes are
             random), manifest.parquet (one row per file, the real schema) and skipped.parquet;
             data/prepared/ selected.parquet and rejects.parquet (one row per file); data/processed/pianoroll/
             24 train, 4 valid and 4 test Parquet shards plus meta.json: 38 files in all;
  per-file   the same, except that data/raw/lakh/ holds the corpus as one file per MIDI
             (lmd_full/<h>/<md5>.mid) beside the manifest: 176,581 files more.

Bytes are scaled by --scale (default 0.25, so the tarball is 443 MB and the processed shards as many again):
every file count is the real one, the bytes are what a 2-core machine with a shared disk can move in a few
minutes; push and pull rates are printed in MB/s to scale them up. The per-file layout spreads the same raw
bytes over its 176,581 files (or over --per-file-files, a smaller corpus with its bytes scaled alike, where the
full count would take too long; rates are printed in files/s to scale them up). The outputs are recorded with
`dvc commit -f` (the stages' commands never run), then timed with the DVC CLI: `dvc status` (twice: the first
after the commit, then again), `dvc push` to a moto S3 server on 127.0.0.1, `dvc status --cloud`, and in a fresh
`git clone`, `dvc pull` and the first `dvc status` (--status-only stops after the two statuses). A progress bar
on stderr counts these steps (never inside a timed command); the last line on stdout sums up the timings.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.manifest import MANIFEST, SKIPPED  # noqa: E402

LAKH_FILES = 176_581
LAKH_BYTES = 1_770_000_000  # lmd_full.tar.gz
SHARDS = {"train": 24, "valid": 4, "test": 4}  # convert's most shards per split
BUCKET = "bench"
DVC_YAML = """\
stages:
  acquire:
    foreach: [lakh]
    do:
      cmd: python -m pipeline.acquire ${item}
      params:
        - data.${item}
      outs:
        - data/raw/${item}:
            persist: true
  prepare:
    cmd: python -m pipeline.prepare
    deps:
      - data/raw
    outs:
      - data/prepared
  convert:
    cmd: python -m pipeline.convert
    deps:
      - data/raw
      - data/prepared
    outs:
      - data/processed
"""
PARAMS_YAML = """\
data:
  lakh:
    url: http://hog.ee.columbia.edu/craffel/lmd/lmd_full.tar.gz
    checksum: md5:2536ce3fd2cede53ddaa264f731859ab
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
             DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.com", GIT_COMMITTER_NAME="b",
             GIT_COMMITTER_EMAIL="b@example.com")
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        e.pop(k, None)
    return e


def sh(cwd: Path, *args: str) -> float:
    """Run a command; return its wall time in seconds (fail loudly with its output)."""
    t = time.perf_counter()
    p = subprocess.run(list(args), cwd=cwd, env=env(), capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return dt


def dvc(cwd: Path, *args: str) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env(), capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return dt, p.stdout


def start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"moto_server did not start: {log.read_text()}") from None
            time.sleep(0.2)
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                 aws_secret_access_key="bench").create_bucket(Bucket=BUCKET)
    return proc, endpoint


def random_bytes(rng: np.random.Generator, n: int, chunk: int = 64 << 20):
    while n > 0:
        k = min(n, chunk)
        yield rng.bytes(k)
        n -= k


def write_blob_parquet(path: Path, rng: np.random.Generator, nbytes: int, rows: int) -> None:
    """A Parquet shard of `rows` random binary cells, `nbytes` in all (random, so zstd leaves the size alone)."""
    per = max(1, nbytes // rows)
    with pq.ParquetWriter(path, pa.schema([("id", pa.string()), ("data", pa.binary())]), compression="zstd") as w:
        for start in range(0, rows, 256):
            n = min(256, rows - start)
            blob = rng.bytes(per * n)
            w.write_table(pa.table({"id": [f"row{start + i}" for i in range(n)],
                                    "data": pa.array([blob[i * per:(i + 1) * per] for i in range(n)], pa.binary())}))


def build(repo: Path, layout: str, files: int, raw_bytes: int, processed_bytes: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    raw, prepared, processed = repo / "data/raw/lakh", repo / "data/prepared", repo / "data/processed/pianoroll"
    for d in (raw, prepared, processed):
        d.mkdir(parents=True)
    md5s = [hashlib.md5(i.to_bytes(8, "little")).hexdigest() for i in range(files)]  # LMD-full names files by md5
    members = [f"lmd_full/{m[0]}/{m}.mid" for m in md5s]
    per_file = raw_bytes // files
    if layout == "archives":
        with open(raw / "lmd_full.tar.gz", "wb") as f:
            for block in random_bytes(rng, raw_bytes):
                f.write(block)
        artifacts = ["lmd_full.tar.gz"] * files
    else:
        for m in members:
            (raw / m).parent.mkdir(parents=True, exist_ok=True)
        blob = rng.bytes(per_file * 4096)
        for i, m in enumerate(tqdm(members, desc="remote_speed: one file per MIDI", unit="file", mininterval=1)):
            k = i % 4096
            # unique bytes per file (its index in front), so DVC stores every one
            (raw / m).write_bytes(i.to_bytes(8, "little") + blob[k * per_file:(k + 1) * per_file - 8])
        artifacts = members
    n = files
    manifest = pa.table({
        "id": [f"lakh/{m}" for m in members], "source": ["lakh"] * n, "artifact": artifacts, "member": members,
        "md5": md5s, "bytes": pa.array([per_file] * n, pa.int64()), "title": pa.nulls(n, pa.string()),
        "composer": pa.nulls(n, pa.string()), "license": ["CC BY 4.0"] * n, "split": pa.nulls(n, pa.string()),
        "source_id": md5s, "year": pa.nulls(n, pa.int32()), "duration": pa.nulls(n, pa.float64()),
        "url": pa.nulls(n, pa.string())}, schema=MANIFEST)
    pq.write_table(manifest, raw / "manifest.parquet", compression="zstd")
    pq.write_table(SKIPPED.empty_table(), raw / "skipped.parquet", compression="zstd")

    kept = n * 3 // 4  # a quarter of LMD-full goes as duplicates, unparsable or filtered
    splits = np.where(np.arange(kept) % 10 == 8, "valid", np.where(np.arange(kept) % 10 == 9, "test", "train"))
    selected = pa.table({"id": manifest["id"][:kept], "file": manifest["id"][:kept], "source": ["lakh"] * kept,
                         "artifact": manifest["artifact"][:kept], "member": manifest["member"][:kept],
                         "md5": manifest["md5"][:kept], "content_hash": [hashlib.sha1(m.encode()).hexdigest()
                                                                         for m in md5s[:kept]],
                         "group": manifest["id"][:kept], "split": pa.array(splits),
                         "n_notes": pa.array(rng.integers(100, 20000, kept), pa.int32()),
                         "beats": pa.array(rng.uniform(16, 1000, kept))})
    pq.write_table(selected, prepared / "selected.parquet", compression="zstd")
    rejects = pa.table({"id": manifest["id"][kept:], "source": ["lakh"] * (n - kept),
                        "member": manifest["member"][kept:], "stage": ["prepare"] * (n - kept),
                        "reason": ["duplicate_content"] * (n - kept), "message": [""] * (n - kept),
                        "duplicate_of": manifest["id"][:n - kept]})
    pq.write_table(rejects, prepared / "rejects.parquet", compression="zstd")

    total_shards = sum(SHARDS.values())
    for split, count in SHARDS.items():
        for i in range(count):
            write_blob_parquet(processed / f"{split}-{i:05d}.parquet", rng, processed_bytes // total_shards,
                               max(1, kept // total_shards))
    (processed / "meta.json").write_text(json.dumps({"kind": "pianoroll", "sequences": kept}, indent=1))
    nfiles = sum(1 for p in (repo / "data").rglob("*") if p.is_file())
    nbytes = sum(p.stat().st_size for p in (repo / "data").rglob("*") if p.is_file())
    return {"files": nfiles, "bytes": nbytes}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), to tell the S3 server's share of a transfer."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


STEPS = ("build", "commit", "status", "status again", "push", "status --cloud", "clone", "pull",
         "status after pull")  # what measure() does, in order; --status-only stops after the first four


def measure(work: Path, server: subprocess.Popen, endpoint: str, layout: str, files: int, raw_bytes: int,
            processed_bytes: int, jobs: int | None, transfer: bool = True, progress: tqdm | None = None) -> dict:
    """Seconds each step of STEPS took (and the corpus' files and bytes, the S3 server's CPU seconds), each step
    ticked off on `progress` between the timed commands."""

    def done(step: str) -> None:
        if progress is not None:
            progress.update()
            progress.set_postfix_str(f"{layout}: {STEPS[STEPS.index(step) + 1]}" if step != STEPS[-1] else "")

    origin, clone = work / f"{layout}-origin", work / f"{layout}-clone"
    origin.mkdir()
    sh(origin, "git", "init", "-q")
    dvc(origin, "init", "-q")
    dvc(origin, "config", "core.analytics", "false")
    dvc(origin, "remote", "add", "-d", "store", f"s3://{BUCKET}/{layout}")
    dvc(origin, "remote", "modify", "store", "endpointurl", endpoint)
    (origin / "dvc.yaml").write_text(DVC_YAML)
    (origin / "params.yaml").write_text(PARAMS_YAML)
    t = time.perf_counter()
    size = build(origin, layout, files, raw_bytes, processed_bytes)
    size["build"] = time.perf_counter() - t
    done("build")
    jobs_args = ["-j", str(jobs)] if jobs else []
    size["commit"], _ = dvc(origin, "commit", "-f")
    sh(origin, "git", "add", "-A")
    sh(origin, "git", "commit", "-qm", "corpus")
    done("commit")
    size["status"], out = dvc(origin, "status")
    assert "up to date" in out, out
    done("status")
    size["status_again"], _ = dvc(origin, "status")
    done("status again")
    if not transfer:
        shutil.rmtree(origin)
        return size
    cpu = cpu_seconds(server.pid)
    size["push"], _ = dvc(origin, "push", *jobs_args)
    size["server_cpu_push"] = cpu_seconds(server.pid) - cpu
    done("push")
    size["status_cloud"], out = dvc(origin, "status", "--cloud", *jobs_args)
    assert "in sync" in out, out
    done("status --cloud")
    sh(work, "git", "clone", "-q", str(origin), str(clone))
    done("clone")
    cpu = cpu_seconds(server.pid)
    size["pull"], _ = dvc(clone, "pull", *jobs_args)
    size["server_cpu_pull"] = cpu_seconds(server.pid) - cpu
    done("pull")
    size["status_after_pull"], out = dvc(clone, "status")
    assert "up to date" in out, out
    done("status after pull")
    shutil.rmtree(origin)
    shutil.rmtree(clone)
    return size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=LAKH_FILES, help="MIDI files in the corpus (LMD-full: 176581)")
    ap.add_argument("--scale", type=float, default=0.25, help="bytes, as a share of LMD-full's 1.77 GB tarball")
    ap.add_argument("--per-file-files", type=int, default=0,
                    help="a smaller corpus for the per-file layout, bytes scaled alike (0: --files; the full "
                         "176,581 single files take over an hour to push and pull on 2 cores)")
    ap.add_argument("--layouts", default="archives,per-file")
    ap.add_argument("--status-only", action="store_true", help="build, commit and time dvc status; no S3 transfer")
    ap.add_argument("--jobs", type=int, default=None, help="dvc -j (default: DVC's own, 4 x cores)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to build (default: a temporary folder)")
    a = ap.parse_args()
    missing = [m for m in ("dvc_s3", "moto.server") if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        raise SystemExit(f"needs dvc-s3 and moto[server] (missing: {', '.join(missing)}): pip install -e '.[dev]'")
    raw_bytes = processed_bytes = int(LAKH_BYTES * a.scale)
    free = shutil.disk_usage(a.workdir or tempfile.gettempdir()).free
    print(f"corpus: {a.files:,} MIDI files, {raw_bytes / 1e6:,.0f} MB raw + {processed_bytes / 1e6:,.0f} MB processed "
          f"(scale {a.scale} of LMD-full); {free / 1e9:.0f} GB free; {os.cpu_count()} cores", flush=True)
    rows = []
    layouts = a.layouts.split(",")
    bar = tqdm(total=len(layouts) * (4 if a.status_only else len(STEPS)), desc="remote_speed", unit="step",
               mininterval=1)
    with tempfile.TemporaryDirectory(dir=a.workdir, prefix="remote_speed_") as tmp:
        work = Path(tmp)
        server, endpoint = start_moto(work / "moto.log")
        try:
            for layout in layouts:
                bar.set_postfix_str(f"{layout}: build")
                files = a.per_file_files or a.files if layout == "per-file" else a.files
                share = files / a.files
                r = measure(work, server, endpoint, layout, files, int(raw_bytes * share),
                            int(processed_bytes * share), a.jobs, transfer=not a.status_only, progress=bar)
                r["corpus"] = files
                rows.append((layout, r))
                with tqdm.external_write_mode():  # the line above the bar, not through it
                    print(f"{layout}: {json.dumps({k: round(v, 2) for k, v in r.items()})}", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
            bar.close()
    print()
    print("| layout | MIDI files | files DVC tracks | MB | dvc commit (hash + cache) | dvc status | dvc push "
          "| dvc status --cloud | dvc pull, fresh clone | dvc status after pull |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for layout, r in rows:
        n, mb = r["files"], r["bytes"] / 1e6
        if "push" not in r:
            print(f"| {layout} | {r['corpus']:,} | {n:,} | {mb:,.0f} | {r['commit']:.1f} s "
                  f"| {r['status']:.1f} s, again {r['status_again']:.1f} s | not run | not run | not run | not run |")
            continue
        print(f"| {layout} | {r['corpus']:,} | {n:,} | {mb:,.0f} | {r['commit']:.1f} s "
              f"| {r['status']:.1f} s, again {r['status_again']:.1f} s "
              f"| {r['push']:.1f} s ({n / r['push']:,.0f} files/s, {mb / r['push']:.0f} MB/s) "
              f"| {r['status_cloud']:.1f} s | {r['pull']:.1f} s ({n / r['pull']:,.0f} files/s, "
              f"{mb / r['pull']:.0f} MB/s) | {r['status_after_pull']:.1f} s |")
    if any("push" in r for _, r in rows):
        print("\nS3 server (moto) CPU during push / pull: " + "; ".join(
            f"{layout} {r['server_cpu_push']:.0f} s / {r['server_cpu_pull']:.0f} s" for layout, r in rows
            if "push" in r))
    print("remote_speed: " + "; ".join(
        f"{layout} ({r['files']:,} files, {r['bytes'] / 1e6:,.0f} MB): status {r['status']:.1f} s"
        + (f", push {r['push']:.1f} s, pull {r['pull']:.1f} s" if "push" in r else "") for layout, r in rows)
        + f"; a corpus of {a.files:,} MIDI files at scale {a.scale}")

if __name__ == "__main__":
    main()
