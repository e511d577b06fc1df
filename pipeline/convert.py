"""Stage `convert`: selected sequences -> Parquet piano rolls or token streams, with leak-free splits.

Writes data/processed/<kind>/<split>-NNNNN.parquet (one row per sequence: ids, group, source, split, families
and the data; a few dozen shards whatever the corpus size, row groups small enough to stream) and
data/processed/<kind>/meta.json (the grid, the keys, counts), plus tokenizer.json for token streams. Rows are
streamed to their shard as workers finish files, so memory does not grow with the corpus.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline import gm, smf
from pipeline import params as P
from pipeline import split as S
from pipeline.artifacts import iter_bytes
from pipeline.atomic import atomic_path
from pipeline.cli import run_stage
from pipeline.midi import part_notes
from pipeline.parallel import imap, n_workers
from pipeline.pianoroll import Grid, quantize

RAW, PREPARED, OUT = Path("data/raw"), Path("data/prepared"), Path("data/processed")
FORMAT_VERSION = 2
ROWS_PER_PART = 8192
MAX_PARTS = {"train": 24, "valid": 4, "test": 4}
GROUPS_PER_PART = 16  # row groups per shard: the unit a loader worker reads and shuffles

COMMON = [
    ("id", pa.string()), ("file", pa.string()), ("group", pa.string()), ("source", pa.string()),
    ("split", pa.string()), ("families", pa.list_(pa.string())),
    ("n_frames", pa.int32()), ("n_notes", pa.int32()),
]


def schema(kind: str, velocity: bool) -> pa.Schema:
    if kind == "tokens":
        return pa.schema(COMMON + [("n_tokens", pa.int32()), ("tokens", pa.list_(pa.uint16()))])
    extra = [("velocity", pa.list_(pa.uint8()))] if velocity else []
    return pa.schema(COMMON + [("key", pa.list_(pa.uint8())), ("start", pa.list_(pa.int32())),
                               ("end", pa.list_(pa.int32()))] + extra)


def grid_of(r: P.RepresentParams, drums: bool) -> Grid:
    return Grid(r.steps_per_beat, r.pitch_low, r.pitch_high, float(r.steps_per_second), drums)


@lru_cache(maxsize=2)
def _tokenizer(r: P.RepresentParams, drums: bool):
    from pipeline import tokens

    return tokens.make(r.tokenizer, grid_of(r, drums), r.velocity, r.max_shift_beats)


def encode(item: tuple[str, bytes, list[tuple[str, list[int], list[bool]]]], r: P.RepresentParams,
           drums: bool) -> list[dict]:
    """One file's sequences (each its parts, and prepare's drum decision for each) in the representation. Runs
    in a worker."""
    file_id, data, sequences = item
    grid = grid_of(r, drums)
    song = smf.read(data)
    out = []
    for seq_id, tracks, is_drum in sequences:
        parts = [part_notes(song, i, d, r.sustain, seconds=bool(r.steps_per_second)) for i, d in zip(tracks, is_drum)]
        notes, outside = quantize(parts, grid, velocity=r.velocity)
        # a unison (same key and onset frame, across parts too) is one cell of the roll: counted, not hidden
        merged = sum(len(p.pitch) for p in parts) - outside - len(notes)
        res = {"id": seq_id, "n_frames": notes.n_frames, "n_notes": len(notes), "outside": outside, "merged": merged}
        if r.kind == "tokens":
            from pipeline import tokens

            res["tokens"] = tokens.encode(_tokenizer(r, drums), notes, grid).astype(np.uint16)
        else:
            res.update(key=notes.key, start=notes.start, end=notes.end)
            if r.velocity:
                res["velocity"] = notes.velocity
        out.append(res)
    return out


class Shards:
    """Rows of each split go round-robin to that split's shards, written a row group at a time."""

    def __init__(self, out_dir: Path, schema: pa.Schema, counts: dict[str, int]):
        self.out_dir, self.schema = out_dir, schema
        self.n_parts = {s: max(1, min(MAX_PARTS[s], math.ceil(n / ROWS_PER_PART))) for s, n in counts.items()}
        self.group_rows = {s: max(8, min(256, math.ceil(n / self.n_parts[s] / GROUPS_PER_PART)))
                           for s, n in counts.items()}
        self.seen = Counter()
        self.buffers: dict[tuple[str, int], list[dict]] = {}
        self.writers: dict[tuple[str, int], pq.ParquetWriter] = {}

    def add(self, row: dict) -> None:
        s = row["split"]
        key = (s, self.seen[s] % self.n_parts[s])
        self.seen[s] += 1
        buf = self.buffers.setdefault(key, [])
        buf.append(row)
        if len(buf) >= self.group_rows[s]:
            self._flush(key)

    def _flush(self, key: tuple[str, int]) -> None:
        rows = self.buffers.pop(key, [])
        if not rows:
            return
        if key not in self.writers:
            path = self.out_dir / f"{key[0]}-{key[1]:05d}.parquet"
            self.writers[key] = pq.ParquetWriter(path, self.schema, compression="zstd")
        table = pa.table({f.name: _column(rows, f.name, f.type) for f in self.schema}, self.schema)
        self.writers[key].write_table(table)

    def close(self) -> list[str]:
        for key in list(self.buffers):
            self._flush(key)
        for w in self.writers.values():
            w.close()
        return sorted(f"{s}-{k:05d}.parquet" for s, k in self.writers)


def _column(rows: list[dict], name: str, type_: pa.DataType) -> pa.Array:
    if pa.types.is_list(type_) and not pa.types.is_string(type_.value_type):
        values = [r[name] for r in rows]
        flat = np.concatenate(values).astype(type_.value_type.to_pandas_dtype())
        offsets = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type_.value_type))
    return pa.array([r[name] for r in rows], type_)


def run(p: P.Params, out_dir: Path) -> dict:
    r = p.represent
    selected = pq.read_table(PREPARED / "selected.parquet").to_pylist()
    drums = any(any(r_["is_drum"]) for r_ in selected)
    grid = grid_of(r, drums)
    splits = dict(zip((s["id"] for s in selected),
                      S.assign([s["group"] for s in selected], [s["split"] for s in selected],
                               p.split.valid, p.split.test)))
    meta = {s["id"]: s for s in selected}
    by_file: dict[str, list[dict]] = {}
    for s in selected:
        by_file.setdefault(s["file"], []).append(s)

    def stream():
        for source in p.data.sources:
            files = [seqs[0] for seqs in by_file.values() if seqs[0]["source"] == source]
            for file_id, data in iter_bytes(RAW / source, ({**f, "id": f["file"]} for f in files)):
                yield file_id, data, [(s["id"], s["tracks"], s["is_drum"]) for s in by_file[file_id]]

    sch = schema(r.kind, r.velocity)
    shards = Shards(out_dir, sch, Counter(splits.values()))
    data_cols = [f.name for f in sch if f.name not in dict(COMMON)]
    totals = {k: Counter() for k in ("sequences", "frames", "notes", "tokens")}
    outside, merged, empty = 0, 0, []
    results = imap(partial(encode, r=r, drums=drums), stream(), n_workers(p.prepare.workers))
    for batch in tqdm(results, total=len(by_file), desc=f"convert ({r.kind})", unit="file", mininterval=1):
        for res in batch:
            outside += res["outside"]
            merged += res["merged"]
            if res["n_notes"] == 0 or (r.kind == "tokens" and len(res["tokens"]) == 0):
                empty.append(res["id"])
                continue
            m, split = meta[res["id"]], splits[res["id"]]
            row = dict(id=m["id"], file=m["file"], group=m["group"], source=m["source"], split=split,
                       families=m["families"], n_frames=res["n_frames"], n_notes=res["n_notes"])
            if r.kind == "tokens":
                row["n_tokens"] = len(res["tokens"])
            row.update({c: res[c] for c in data_cols if c in res})
            shards.add(row)
            for k, v in (("sequences", 1), ("frames", res["n_frames"]), ("notes", res["n_notes"]),
                         ("tokens", row.get("n_tokens", 0))):
                totals[k][split] += v
    parts = shards.close()
    if not parts:
        raise SystemExit("convert: no sequence has notes inside represent.pitch_low..pitch_high")
    programs = Counter(pr for s in selected for pr, d in zip(s["programs"], s["is_drum"]) if not d)
    out = {
        "kind": r.kind, "format_version": FORMAT_VERSION, "parts": parts,
        "grid": {"steps_per_beat": grid.steps_per_beat, "steps_per_second": r.steps_per_second,
                 "pitch_low": grid.pitch_low, "pitch_high": grid.pitch_high, "drums": drums},
        "n_pitches": grid.n_pitches, "n_keys": grid.n_keys,
        "drum_classes": list(gm.DRUM_CLASS_NAMES) if drums else [],
        "onsets": r.onsets, "velocity": r.velocity,
        "program": programs.most_common(1)[0][0] if programs else 0,  # what generated MIDI is played on
        **{k: {s: totals[k].get(s, 0) for s in S.SPLITS} for k in totals if k != "tokens" or r.kind == "tokens"},
        "notes_outside_range": outside, "notes_merged_unison": merged, "empty_after_range": sorted(empty),
    }
    if r.kind == "tokens":
        tok = _tokenizer(r, drums)
        tok.save(out_dir / "tokenizer.json")
        out.update(tokenizer=r.tokenizer, vocab_size=len(tok), pad_id=int(tok.pad_token_id))
    else:
        out["features"] = grid.n_keys * (2 if r.onsets else 1)
    return out


def main() -> None:
    p = P.load()
    kind = p.represent.kind
    with atomic_path(OUT) as tmp:
        (tmp / kind).mkdir(parents=True)
        meta = run(p, tmp / kind)
        (tmp / kind / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    seq, fr = meta["sequences"], meta["frames"]
    extra = f", {sum(meta['tokens'].values())} tokens" if kind == "tokens" else ""
    print(f"convert: {sum(seq.values())} sequences ({sum(fr.values())} frames{extra}) -> {OUT / kind} in "
          f"{len(meta['parts'])} shards; train/valid/test {seq['train']}/{seq['valid']}/{seq['test']}; "
          f"{meta['notes_outside_range']} notes outside the keys dropped")


if __name__ == "__main__":
    run_stage(main)
