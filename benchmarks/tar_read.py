"""Members listed and read from a 20,000-member LMD-style .tar.gz, as acquire@lakh and prepare read it.

Usage: python benchmarks/tar_read.py [--members 20000] [--midi-dir ../shared/data/midi]
Builds lmd_full/<h>/<name>.mid from the shared files (replicated), then times, on one core:
  1. acquire's pass: iter_tar (list + read + safety checks) and md5 of every member;
  2. prepare's pass: artifacts.iter_bytes picking every member listed in a manifest.
A progress bar (stderr) follows the build; the two timed passes (about 5 s each) run without one. The last line
on stdout sums up the run.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import tarfile
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from pipeline.archive import iter_tar
from pipeline.artifacts import iter_bytes
from pipeline.manifest import Item


def build(path: Path, midi_dir: Path, members: int) -> int:
    blobs = [p.read_bytes() for p in sorted(midi_dir.rglob("*.mid")) if "broken" not in p.parts]
    total = 0
    with tarfile.open(path, "w:gz") as tf:
        for i in tqdm(range(members), desc="tar_read: build", unit="member", mininterval=1):
            data = blobs[i % len(blobs)]
            name = hashlib.md5(i.to_bytes(4, "big")).hexdigest()
            info = tarfile.TarInfo(f"lmd_full/{name[0]}/{name}.mid")
            info.size, info.mtime = len(data), 0
            tf.addfile(info, io.BytesIO(data))
            total += len(data)
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=20_000)
    ap.add_argument("--midi-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/midi"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lmd_full.tar.gz"
        t = time.perf_counter()
        total = build(path, Path(args.midi_dir), args.members)
        print(f"built {args.members} members, {total / 1e6:.0f} MB of MIDI, {path.stat().st_size / 1e6:.0f} MB "
              f"gzipped, in {time.perf_counter() - t:.1f} s")

        t = time.perf_counter()
        rows = []
        for e in iter_tar(path, 16 << 20):
            if isinstance(e, Item):
                rows.append({"id": e.member, "member": e.member, "artifact": path.name,
                             "md5": hashlib.md5(e.data).hexdigest()})
        dt = time.perf_counter() - t
        listed = len(rows) / dt
        print(f"acquire pass (list, vet, read, md5): {listed:8.0f} files/s  {total / dt / 1e6:6.1f} MB/s")

        t = time.perf_counter()
        n = sum(1 for _ in iter_bytes(Path(tmp), rows))
        dt = time.perf_counter() - t
        print(f"prepare pass (read listed members):  {n / dt:8.0f} files/s  {total / dt / 1e6:6.1f} MB/s")
    print(f"tar_read: {args.members} members ({total / 1e6:.0f} MB of MIDI) read from a .tar.gz on one core: "
          f"acquire's pass {listed:.0f} files/s, prepare's {n / dt:.0f} files/s")


if __name__ == "__main__":
    main()
