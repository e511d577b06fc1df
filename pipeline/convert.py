"""Stage `convert`: selected sequences -> Parquet piano rolls or token streams, with leak-free splits.

Writes data/processed/<kind>/<split>-NNNNN.parquet (one row per sequence: ids, group, source, split, families
and the data; a few dozen shards whatever the corpus size, row groups small enough to stream) and
data/processed/<kind>/meta.json (the grid, the keys, counts), plus tokenizer.json for token streams (MidiTok's
`from_pretrained` loads it from the folder) and README.md, the Hugging Face dataset card that lets
`datasets.load_dataset` read the folder (pipeline/dataset_card.py). Rows are streamed to their shard as workers
finish files, so memory does not grow with the corpus.
"""
from __future__ import annotations

import math
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline import dataset_card, gm, smf
from pipeline import params as P
from pipeline import split as S
from pipeline.artifacts import iter_bytes
from pipeline.atomic import atomic_path
from pipeline.cli import run_stage
from pipeline.codecs import Codec, codec_of
from pipeline.contracts import Meta
from pipeline.midi import part_notes
from pipeline.parallel import imap, n_workers
from pipeline.paths import PREPARED, PROCESSED, RAW
from pipeline.pianoroll import Grid, quantize

FORMAT_VERSION = 2
ROWS_PER_PART = 8192
MAX_PARTS = {"train": 24, "valid": 4, "test": 4}
GROUPS_PER_PART = 16  # row groups per shard: the unit a loader worker reads and shuffles

COMMON = [
    ("id", pa.string()), ("file", pa.string()), ("group", pa.string()), ("source", pa.string()),
    ("split", pa.string()), ("families", pa.list_(pa.string())),
    ("n_frames", pa.int32()), ("n_notes", pa.int32()),
]


def schema(rep: Codec, velocity: bool) -> pa.Schema:
    return pa.schema(COMMON + rep.columns(velocity))


def grid_of(r: P.RepresentParams, drums: bool) -> Grid:
    return Grid(r.steps_per_beat, r.pitch_low, r.pitch_high, float(r.steps_per_second), drums)


def encode(item: tuple[str, bytes, list[tuple[str, list[int], list[bool]]]], r: P.RepresentParams,
           drums: bool, rep: Codec) -> list[dict]:
    """One file's sequences (each its parts, and prepare's drum decision for each) in the representation. Runs
    in a worker. A sequence that encodes to nothing has `data` None."""
    file_id, data, sequences = item
    grid = grid_of(r, drums)
    song = smf.read(data)
    out = []
    for seq_id, tracks, is_drum in sequences:
        parts = [part_notes(song, i, d, r.sustain, seconds=bool(r.steps_per_second)) for i, d in zip(tracks, is_drum)]
        notes, outside = quantize(parts, grid, velocity=r.velocity)
        # a unison (same key and onset frame, across parts too) is one cell of the roll: counted, not hidden
        merged = sum(len(p.pitch) for p in parts) - outside - len(notes)
        out.append({"id": seq_id, "n_frames": notes.n_frames, "n_notes": len(notes), "outside": outside,
                    "merged": merged, "data": rep.encode(notes, grid, r) if len(notes) else None})
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


def card_params(p: P.Params) -> dict:
    """The params the dataset card records: convert's own (dvc.yaml), less those its output does not depend on
    (`prepare.workers`; the tokenizer's for piano rolls), as {"dotted.key": value}."""
    r = p.represent
    keys = ["kind", "steps_per_beat", "steps_per_second", "pitch_low", "pitch_high", "onsets", "velocity", "sustain"]
    keys += ["tokenizer", "max_shift_beats"] if r.kind == "tokens" else []
    return {"data.sources": list(p.data.sources), **{f"represent.{k}": getattr(r, k) for k in keys},
            "split.valid": p.split.valid, "split.test": p.split.test}


def licences(rows: list[dict], sources: list[str]) -> dict[str, dict[str, int]]:
    """{source: {licence: sequences}} over `rows` (selected sequences: "source", "file"), the licence each file's
    manifest row records (data/raw/<source>/manifest.parquet, written by acquire); a file without one counts as
    dataset_card.UNRECORDED. Sources in `sources` order, licences sorted."""
    out = {}
    for source in (s for s in sources if any(r["source"] == s for r in rows)):
        mine = [r["file"] for r in rows if r["source"] == source]
        t = pq.read_table(RAW / source / "manifest.parquet", columns=["id", "license"])
        t = t.filter(pc.is_in(t.column("id"), pa.array(mine, pa.string())))  # the selected files' rows only
        of = dict(zip(t.column("id").to_pylist(), t.column("license").to_pylist()))
        n = Counter(of.get(r["file"]) or dataset_card.UNRECORDED for r in rows if r["source"] == source)
        out[source] = dict(sorted(n.items()))
    return out


def arrow_bytes(out_dir: Path, parts: list[str]) -> dict[str, int]:
    """{split: bytes} the shards' rows take as Arrow tables once read back, a row group at a time: the figure
    Hugging Face `datasets` records as a split's num_bytes (its Parquet loader reads one row group per batch and
    sums their Table.nbytes; equal on the fixtures and the default corpus with the pinned pyarrow)."""
    out: Counter = Counter()
    for name in parts:
        f = pq.ParquetFile(out_dir / name)
        for g in range(f.num_row_groups):
            out[name.split("-")[0]] += f.read_row_group(g).nbytes
    return dict(out)


def run(p: P.Params, out_dir: Path) -> Meta:
    r = p.represent
    smf.warm()  # the C event reader, before the pool forks its workers
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

    rep = codec_of(r.kind)
    shards = Shards(out_dir, schema(rep, r.velocity), Counter(splits.values()))
    totals = {k: Counter() for k in ("sequences", "frames", "notes", *rep.counted)}
    outside, merged, empty = 0, 0, []
    results = imap(partial(encode, r=r, drums=drums, rep=rep), stream(), n_workers(p.prepare.workers))
    for batch in tqdm(results, total=len(by_file), desc=f"convert ({r.kind})", unit="file", mininterval=1):
        for res in batch:
            outside += res["outside"]
            merged += res["merged"]
            if res["data"] is None:
                empty.append(res["id"])
                continue
            m, split = meta[res["id"]], splits[res["id"]]
            row = dict(id=m["id"], file=m["file"], group=m["group"], source=m["source"], split=split,
                       families=m["families"], n_frames=res["n_frames"], n_notes=res["n_notes"], **res["data"])
            shards.add(row)
            for k in totals:
                totals[k][split] += 1 if k == "sequences" else row[f"n_{k}"]
    parts = shards.close()
    if not parts:
        raise SystemExit("convert: no sequence has notes inside represent.pitch_low..pitch_high")
    programs = Counter(pr for s in selected for pr, d in zip(s["programs"], s["is_drum"]) if not d)
    meta = Meta(
        kind=r.kind, format_version=FORMAT_VERSION, parts=parts, grid=grid,
        n_pitches=grid.n_pitches, n_keys=grid.n_keys,
        drum_classes=list(gm.DRUM_CLASS_NAMES) if drums else [],
        onsets=r.onsets, velocity=r.velocity,
        program=programs.most_common(1)[0][0] if programs else 0,  # what generated MIDI is played on
        **{k: {s: totals[k].get(s, 0) for s in S.SPLITS} for k in totals},
        notes_outside_range=outside, notes_merged_unison=merged, empty_after_range=sorted(empty),
        **rep.finish(r, grid, out_dir),
    )
    dropped = set(empty)
    stored = [s for s in selected if s["id"] not in dropped]
    text = dataset_card.card(meta, shards.schema, card_params(p), licences(stored, list(p.data.sources)),
                             arrow_bytes(out_dir, parts))
    (out_dir / "README.md").write_bytes(text.encode())
    return meta


def main() -> None:
    p = P.load()
    kind = p.represent.kind
    with atomic_path(PROCESSED) as tmp:
        (tmp / kind).mkdir(parents=True)
        meta = run(p, tmp / kind)
        meta.write(tmp / kind / "meta.json")
    seq, fr = meta.sequences, meta.frames
    extra = "".join(f", {sum(getattr(meta, k).values())} {k}" for k in codec_of(kind).counted)
    print(f"convert: {sum(seq.values())} sequences ({sum(fr.values())} frames{extra}) -> {PROCESSED / kind} in "
          f"{len(meta.parts)} shards; train/valid/test {seq['train']}/{seq['valid']}/{seq['test']}; "
          f"{meta.notes_outside_range} notes outside the keys dropped")


if __name__ == "__main__":
    run_stage(main)
