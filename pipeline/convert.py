"""Stage `convert`: selected tracks -> beat-relative binary piano rolls in Parquet, with leak-free splits.

Writes data/processed/pianoroll/part-NNNNN.parquet (one row per file: id, group, source, split and the
roll as note intervals) and data/processed/pianoroll/meta.json (the grid, the schema version, counts).
"""
from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline import params as P
from pipeline.cli import run_stage
from pipeline import split as S
from pipeline.atomic import atomic_path
from pipeline.midi import parse, track_notes
from pipeline.parallel import imap, n_workers
from pipeline.pianoroll import Grid, quantize
from pipeline.artifacts import iter_bytes

RAW, PREPARED, OUT = Path("data/raw"), Path("data/prepared"), Path("data/processed")
KIND = "pianoroll"
ROWS_PER_PART = 20_000
FORMAT_VERSION = 1

SCHEMA = pa.schema([
    ("id", pa.string()), ("file", pa.string()), ("group", pa.string()), ("source", pa.string()),
    ("split", pa.string()), ("families", pa.list_(pa.string())),
    ("n_frames", pa.int32()), ("n_notes", pa.int32()),
    ("pitch", pa.list_(pa.uint8())), ("start", pa.list_(pa.int32())), ("end", pa.list_(pa.int32())),
])


def encode(item: tuple[str, bytes, list[tuple[str, list[int]]]], grid: Grid) -> list[dict]:
    """One file's sequences (each a list of its tracks) on the grid. Runs in a worker."""
    file_id, data, sequences = item
    score = parse(data)
    out = []
    for seq_id, tracks in sequences:
        notes, outside = quantize([track_notes(score, i) for i in tracks], grid)
        out.append({"id": seq_id, "pitch": notes.pitch, "start": notes.start, "end": notes.end,
                    "n_frames": notes.n_frames, "outside": outside})
    return out


def run(p: P.Params, out_dir: Path) -> dict:
    selected = pq.read_table(PREPARED / "selected.parquet").to_pylist()
    grid = Grid(p.represent.steps_per_beat, p.represent.pitch_low, p.represent.pitch_high)
    splits = dict(zip((r["id"] for r in selected),
                      S.assign([r["group"] for r in selected], [r["split"] for r in selected],
                               p.split.valid, p.split.test)))
    meta = {r["id"]: r for r in selected}
    by_file: dict[str, list[dict]] = {}
    for r in selected:
        by_file.setdefault(r["file"], []).append(r)

    def stream():
        for source in p.data.sources:
            files = [seqs[0] for seqs in by_file.values() if seqs[0]["source"] == source]
            for file_id, data in iter_bytes(RAW / source, ({**r, "id": r["file"]} for r in files)):
                yield file_id, data, [(r["id"], r["tracks"]) for r in by_file[file_id]]

    results = imap(partial(encode, grid=grid), stream(), n_workers(p.prepare.workers))
    rows, outside, empty = [], 0, []
    for batch in tqdm(results, total=len(by_file), desc="convert", unit="file", mininterval=1):
        for res in batch:
            outside += res["outside"]
            if len(res["pitch"]) == 0:
                empty.append(res["id"])
                continue
            r = meta[res["id"]]
            rows.append(dict(id=r["id"], file=r["file"], group=r["group"], source=r["source"],
                             split=splits[r["id"]], families=r["families"],
                             n_frames=res["n_frames"], n_notes=len(res["pitch"]),
                             pitch=res["pitch"], start=res["start"], end=res["end"]))
    if not rows:
        raise SystemExit("convert: no sequence has notes inside represent.pitch_low..pitch_high")
    rows.sort(key=lambda r: r["id"])
    for k in range(0, len(rows), ROWS_PER_PART):
        part = rows[k:k + ROWS_PER_PART]
        table = pa.table({name: _column(part, name, SCHEMA.field(name).type) for name in SCHEMA.names}, SCHEMA)
        pq.write_table(table, out_dir / f"part-{k // ROWS_PER_PART:05d}.parquet", compression="zstd")
    counts = Counter(r["split"] for r in rows)
    frames = Counter()
    for r in rows:
        frames[r["split"]] += r["n_frames"]
    return {
        "kind": KIND, "format_version": FORMAT_VERSION,
        "steps_per_beat": grid.steps_per_beat, "pitch_low": grid.pitch_low, "pitch_high": grid.pitch_high,
        "n_pitches": grid.n_pitches,
        "sequences": {s: counts.get(s, 0) for s in S.SPLITS},
        "frames": {s: frames.get(s, 0) for s in S.SPLITS},
        "notes_outside_range": outside, "empty_after_range": sorted(empty),
    }


def _column(rows: list[dict], name: str, type_: pa.DataType) -> pa.Array:
    if pa.types.is_list(type_) and not pa.types.is_string(type_.value_type):
        values = [r[name] for r in rows]
        flat = np.concatenate(values).astype(type_.value_type.to_pandas_dtype())
        offsets = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type_.value_type))
    return pa.array([r[name] for r in rows], type_)


def main() -> None:
    p = P.load()
    import json

    with atomic_path(OUT) as tmp:
        (tmp / KIND).mkdir(parents=True)
        meta = run(p, tmp / KIND)
        (tmp / KIND / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    seq, fr = meta["sequences"], meta["frames"]
    print(f"convert: {sum(seq.values())} sequences ({sum(fr.values())} frames) -> {OUT / KIND}; "
          f"train/valid/test {seq['train']}/{seq['valid']}/{seq['test']}; "
          f"{meta['notes_outside_range']} notes outside the pitch range dropped")


if __name__ == "__main__":
    run_stage(main)
