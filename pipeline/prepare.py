"""Stage `prepare`: parse every acquired file, drop what is unusable or duplicated, select what to model.

Workers parse with symusic under a time and size guard, infer each track's instrument, select tracks by
`filter.instruments`, form sequences (`filter.mode`: one per file, or one per track) and measure them for the
quality filters. The main process then drops exact and same-music duplicates, groups same-song files, and
writes data/prepared/selected.parquet (one row per sequence), data/prepared/rejects.parquet (one row per dropped
file, track or sequence, with a reason) and metrics/prepare.json.
"""
from __future__ import annotations

import ctypes
import os
import pickle
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from functools import cache, partial
from itertools import combinations
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline import gm, measures_native, quality, smf
from pipeline import params as P
from pipeline.artifacts import Batch, iter_batches, read_batch
from pipeline.atomic import atomic_path, write_json
from pipeline.cli import run_stage
from pipeline.dedupe import ContentKey, UnionFind, content_hash_of, first_of_each, smallest_member
from pipeline.external_sort import ExternalSort
from pipeline.instruments import infer, is_choral
from pipeline.midi import MidiError, parse
from pipeline.near_duplicates import NearIndex, NearKey, signatures
from pipeline.parallel import imap, isolated, n_workers
from pipeline.paths import PREPARE_REPORT, PREPARED, RAW
from pipeline.titles import song_key

SELECTED = pa.schema([
    ("id", pa.string()),          # the sequence: the file id, or "<file id>#<track>" in tracks mode
    ("file", pa.string()), ("source", pa.string()), ("artifact", pa.string()), ("member", pa.string()),
    ("md5", pa.string()), ("content_hash", pa.string()), ("song", pa.string()), ("group", pa.string()),
    ("title", pa.string()), ("composer", pa.string()), ("split", pa.string()),
    ("tracks", pa.list_(pa.int32())), ("programs", pa.list_(pa.int32())), ("is_drum", pa.list_(pa.bool_())),
    ("families", pa.list_(pa.string())), ("inferred", pa.list_(pa.string())),
    ("n_notes", pa.int64()), ("beats", pa.float64()),
    ("timing", pa.list_(pa.string())), ("off_grid", pa.list_(pa.float64())),  # per track: quality.timing_class
    ("instruments", pa.int32()),
    # null unless their filter is on
    ("max_polyphony", pa.int32()), ("unique_pitches", pa.float64()), ("pitch_class_entropy", pa.float64()),
    ("longest_silence", pa.float64()), ("notes_per_beat", pa.float64()), ("chunk_divergence", pa.float64()),
    # the most similar file this one's group joined it to at the near-duplicate level (all pairs: near.parquet)
    ("near_duplicate_of", pa.string()), ("near_similarity", pa.float64()),
])
NEAR = pa.schema([("a", pa.string()), ("b", pa.string()), ("similarity", pa.float64())])
REJECTS = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("member", pa.string()), ("stage", pa.string()),
    ("track", pa.int32()), ("reason", pa.string()), ("message", pa.string()), ("duplicate_of", pa.string()),
    ("notes", pa.int64()),  # the notes dropped with this row; null where the file was not read (acquire, md5)
])


@dataclass(frozen=True)
class Config:
    keys: frozenset
    mode: str
    timing: str
    limits: dict[str, float]  # the quality filters' params (quality.FILTERS) -> values; 0: off
    window_beats: float
    max_beats: float
    max_tempo_events: int
    max_bpm: float
    timeout_s: float
    content: ContentKey
    near: NearKey | None  # None: the near-duplicate level is off

    @classmethod
    def from_params(cls, p: P.Params) -> "Config":
        f, pr, d = p.filter, p.prepare, p.dedupe
        n = d.near
        return cls(gm.programs_for(f.instruments), f.mode, f.timing,
                   {q.param: getattr(f, q.param) for q in quality.FILTERS}, f.window_beats,
                   pr.max_beats, pr.max_tempo_events, pr.max_bpm, pr.timeout_s,
                   ContentKey(d.steps_per_beat, d.transpose_invariant),
                   NearKey(n.intervals, n.num_perm, n.threshold) if n.threshold else None)


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


_armed_in: int | None = None  # the pid whose SIGALRM handler is _alarm


def inspect(item: tuple[str, bytes], cfg: Config) -> dict:
    """One file: parse under a time guard, select, measure. Runs in a worker: takes data, returns data."""
    # The handler is installed once per process (installing it per file cost 0.1 ms, a tenth of the work); an
    # alarm can only fire while the timer is armed, which is inside this try.
    global _armed_in
    if _armed_in != os.getpid():
        signal.signal(signal.SIGALRM, _alarm)
        _armed_in = os.getpid()
    try:
        signal.setitimer(signal.ITIMER_REAL, cfg.timeout_s)
        return _inspect(item, cfg)
    except _Timeout:
        return {"id": item[0], "reason": "timeout", "message": f"took longer than prepare.timeout_s={cfg.timeout_s}"}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _timing_problem(song: smf.Song, cfg: Config) -> tuple[str, str] | None:
    """The file's timing values checked with exact integer measures (ticks are Python ints here: nothing wraps)."""
    beats = song.end_tick / song.ticks_per_quarter
    if beats > cfg.max_beats:
        return "too_long", f"{beats:.0f} beats, over prepare.max_beats={cfg.max_beats:g}"
    if len(song.tempos) > cfg.max_tempo_events:
        return "too_many_tempos", (f"{len(song.tempos)} tempo events, over "
                                   f"prepare.max_tempo_events={cfg.max_tempo_events}")
    if len(song.tempos):
        us = song.tempos[:, 1]
        bpm = 60e6 / np.maximum(us, 1)
        if (us == 0).any() or (bpm > cfg.max_bpm).any():
            worst = "0 microseconds per quarter" if (us == 0).any() else f"{bpm.max():.0f} bpm"
            return "bad_tempo", f"a tempo of {worst}, over prepare.max_bpm={cfg.max_bpm:g}"
    return None


def _inspect(item: tuple[str, bytes], cfg: Config) -> dict:
    id_, data = item
    try:
        try:
            song = smf.read(data)
        except MidiError:
            parse(data)  # symusic's reason where it rejects the file too, as for every broken file
            raise
        if song.irregular:
            # symusic, a strict parser, checks the bytes and gives its reason for a broken file. It is asked only
            # here: a file without an irregularity is one it accepts (tests/test_smf_irregular.py), and its
            # parse was a sixth of a file's time
            parse(data)
    except MidiError as e:
        return {"id": id_, "reason": e.reason, "message": str(e)}
    ignored = _ignored(song)
    problem = _timing_problem(song, cfg)
    if problem:
        return {"id": id_, "reason": problem[0], "message": problem[1], "notes_in": song.note_ons,
                "ignored": ignored}
    if not song.parts:
        return {"id": id_, "reason": "no_notes", "message": "the file holds no notes", "notes_in": 0,
                "ignored": ignored}
    tpq = song.ticks_per_quarter
    picked, dropped = [], []
    names = [p.name for p in song.parts]
    choral = is_choral(names)
    insts = [infer(p.program, p.on_drum_channel, p.name, choral) for p in song.parts]
    off_grids = quality.off_grid_shares([p.start for p in song.parts], tpq).tolist()
    for i, (part, inst, off_grid) in enumerate(zip(song.parts, insts, off_grids)):
        timing = quality.timing_class(off_grid)
        if inst.key not in cfg.keys:
            how = "" if inst.inferred == "program" else f" (by {inst.inferred})"
            dropped.append({"track": i, "reason": "instrument_filtered", "notes": len(part),
                            "message": f"{inst.family}{how}, program {part.program}, is not in filter.instruments"})
        elif cfg.timing != "any" and timing != cfg.timing:
            dropped.append({"track": i, "reason": "timing_filtered", "notes": len(part),
                            "message": f"{timing} ({off_grid:.0%} of onsets off the grid), not filter.timing="
                                       f"{cfg.timing}"})
        else:
            picked.append((i, part.program, inst.family == gm.DRUMS, inst.family, inst.inferred, timing, off_grid))
    # the hashes see prepare's drum decision: the same music hashes the same whichever channel its drums are on
    digest = content_hash_of([(inst.family == gm.DRUMS, p.start, p.pitch) for p, inst in zip(song.parts, insts)],
                             tpq, cfg.content)
    near = None if cfg.near is None else signatures(
        [(p.start, p.pitch) for p, inst in zip(song.parts, insts) if inst.family != gm.DRUMS], cfg.near)
    out = {"id": id_, "content_hash": digest, "near": near, "dropped": dropped, "sequences": [],
           "notes_in": song.note_ons, "recovered": song.recovered, "ignored": ignored}
    if not picked:
        return {**out, "reason": "no_matching_tracks",
                "message": "no track with notes matches filter.instruments and filter.timing"}
    groups = [picked] if cfg.mode == "files" else [[t] for t in picked]
    for tracks in groups:
        parts = [song.parts[t[0]] for t in tracks]
        start = np.concatenate([p.start for p in parts])
        end = np.concatenate([p.end for p in parts])
        pitch = np.concatenate([p.pitch for p in parts])
        # pitch-class entropy and repetitiveness look at the pitched notes: a drum kit's keys are not pitches, and
        # a steady beat repeats by design
        pitched = np.repeat([not t[2] for t in tracks], [len(p) for p in parts])
        m = quality.sequence_measures(start, end, pitch, pitched, tpq, cfg.window_beats)
        on = cfg.limits
        # measured only when their filter is on: some cost as much as the parse
        beats = (start / tpq, end / tpq) if on["max_polyphony"] or on["min_unique_pitches"] else None
        seq = {"track": None if cfg.mode == "files" else tracks[0][0],
               "tracks": [t[0] for t in tracks], "programs": [t[1] for t in tracks],
               "is_drum": [t[2] for t in tracks], "families": [t[3] for t in tracks],
               "inferred": [t[4] for t in tracks], "timing": [t[5] for t in tracks],
               "off_grid": [t[6] for t in tracks], "instruments": len({(t[1], t[2]) for t in tracks}),
               "n_notes": len(pitch), "beats": m["beats"],
               "max_polyphony": quality.max_polyphony(*beats) if on["max_polyphony"] else None,
               "unique_pitches": (quality.unique_pitches_per_window(beats[0], pitch, cfg.window_beats)
                                  if on["min_unique_pitches"] else None),
               "pitch_class_entropy": m["pitch_class_entropy"] if on["min_pitch_class_entropy"] else None,
               "longest_silence": m["longest_silence"] if on["max_silence_beats"] else None,
               "notes_per_beat": m["notes_per_beat"] if on["max_notes_per_beat"] else None,
               "chunk_divergence": m["chunk_divergence"] if on["min_chunk_divergence"] else None}
        reason = quality.reject_reason(seq, cfg.limits)
        if reason:
            seq["reason"], seq["message"] = reason
        out["sequences"].append(seq)
    if all("reason" in s for s in out["sequences"]) and cfg.mode == "files":
        s = out["sequences"][0]
        return {**out, "reason": s["reason"], "message": s["message"], "sequences": []}
    return out


def _ignored(song: smf.Song) -> dict[str, int]:
    """Timing values that are impossible but that nothing downstream uses, counted by reason: time signatures
    with a zero numerator or a denominator past 1/64 (the pipeline's grids are in beats or seconds, never bars)."""
    sigs = song.time_signatures
    bad = int(((sigs[:, 1] == 0) | (sigs[:, 2] > 6)).sum()) if len(sigs) else 0
    return {"invalid_time_signature": bad} if bad else {}


def _crashed(item: tuple[str, bytes]) -> dict:
    return {"id": item[0], "reason": "worker_died",
            "message": "the parsing process was killed (out of memory or a crash in the parser)"}


class Inspected(NamedTuple):
    """One file's result as a worker hands it to the main process: what the main process uses while the pool
    runs, and the rest of `inspect`'s dict already pickled (the worker's time, not the main process's, which
    parks it in the Spill as it is)."""
    file_no: int
    content_hash: bytes | None  # the sha1 digest (20 bytes), None where the file has no notes
    near: np.ndarray | None     # the parts' near-duplicate signatures
    usable: bool                # the file yields at least one sequence
    notes_in: int | None
    recovered: int
    ignored: dict
    rest: bytes                 # pickle of the rest of the dict


def pack(res: dict, file_no: int) -> Inspected:
    """`inspect`'s dict as an Inspected. Raises ValueError for a content hash that is not a sha1 digest."""
    digest = res.pop("content_hash", None)
    raw = None if digest is None else bytes.fromhex(digest)
    if raw is not None and len(raw) != 20:  # the array holds sha1 digests: another length would be cut or padded
        raise ValueError(f"prepare: a content hash of {len(raw)} bytes, not sha1's 20")
    usable = "reason" not in res and any("reason" not in s for s in res["sequences"])
    return Inspected(file_no, raw, res.pop("near", None), usable, res.get("notes_in"), res.get("recovered", 0),
                     res.get("ignored", {}), pickle.dumps(res, protocol=pickle.HIGHEST_PROTOCOL))


def inspect_batch(batch: Batch, cfg: Config) -> list[Inspected]:
    """A worker reads its batch's bytes itself (decompressing them in parallel) and inspects each file; each
    result carries its file's number (from the batch's rows)."""
    return [pack(inspect(item, cfg), k) for item, k in zip(read_batch(batch), batch.rows, strict=True)]


def _crashed_batch(batch: Batch, cfg: Config) -> list[Inspected]:
    """A batch whose process died: rerun its files one process each, so only the file that kills one is lost."""
    results = isolated(partial(inspect, cfg=cfg), read_batch(batch), _crashed)
    return [pack(res, k) for res, k in zip(results, batch.rows, strict=True)]


SEQUENCE_COLUMNS = ("tracks", "programs", "is_drum", "families", "inferred", "timing", "off_grid", "instruments",
                    "n_notes", "beats", "max_polyphony", "unique_pitches", "pitch_class_entropy", "longest_silence",
                    "notes_per_beat", "chunk_divergence")
ROW_COLUMNS = ("id", "source", "artifact", "member", "md5", "title", "composer", "split")  # what prepare reads


def load_manifests(sources: list[str]) -> tuple[pa.Table, pa.Table]:
    """Every source's manifest rows (ROW_COLUMNS) in params source order, by id within a source, kept in Arrow
    (a file's number in the stage is its row here), and acquire's skips as REJECTS rows."""
    files, skipped = [], []
    schema = pa.schema([(c, pa.string()) for c in ROW_COLUMNS])
    for s in sources:
        d = RAW / s
        if not (d / "manifest.parquet").exists():
            raise FileNotFoundError(f"{d}/manifest.parquet is missing: run `dvc repro acquire@{s}` first")
        # without threads: each thread's mimalloc heap would keep its decoding buffers (release_freed_memory
        # collects the calling thread's), and a manifest is read in milliseconds
        files.append(_by_id(pq.ParquetFile(d / "manifest.parquet").read(columns=list(ROW_COLUMNS), use_threads=False)
                            .cast(schema)))
        if (d / "skipped.parquet").exists():
            t = pq.ParquetFile(d / "skipped.parquet").read(use_threads=False)
            skipped.append(pa.table([t.column(f.name).cast(f.type) if f.name in t.column_names
                                     else pa.nulls(t.num_rows, f.type) for f in REJECTS], schema=REJECTS))
    return (pa.concat_tables(files).combine_chunks() if files else schema.empty_table(),
            pa.concat_tables(skipped) if skipped else REJECTS.empty_table())


def _by_id(table: pa.Table) -> pa.Table:
    """The table sorted by id; as it is when already sorted (acquire writes its manifests so), without a copy."""
    ids = table.column("id")
    if table.num_rows < 2 or pc.all(pc.less_equal(ids.slice(0, len(ids) - 1), ids.slice(1))).as_py():
        return table
    return table.sort_by("id")


def _reject(row: dict, reason: str, message: str, track: int | None = None, duplicate_of: str | None = None,
            notes: int | None = None) -> dict:
    return dict(id=row["id"], source=row["source"], member=row.get("member"), stage="prepare", track=track,
                reason=reason, message=message, duplicate_of=duplicate_of, notes=notes)


def digest_hex(digest: bytes) -> str:
    """A sha1 digest as held in Parsed.content_hash, as hex: numpy hands out an S20 value without its trailing zero
    bytes, so they are put back."""
    return digest.ljust(20, b"\0").hex()


def _rows(files: pa.Table, numbers: np.ndarray, chunk: int = 4_096) -> Iterator[tuple[int, dict]]:
    """(number, manifest row as a dict) for the given file numbers, converted a chunk at a time."""
    for lo in range(0, len(numbers), chunk):
        part = numbers[lo:lo + chunk]
        yield from zip(part.tolist(), files.take(pa.array(part)).to_pylist())


class Spill:
    """Per-file results parked in a temporary file until dedupe has decided which files they matter for; the
    main process holds 12 bytes a file (where each result lies) however large the corpus."""

    def __init__(self, n: int) -> None:
        self._file = tempfile.TemporaryFile()
        self._offset = np.full(n, -1, np.int64)
        self._size = np.zeros(n, np.int32)

    def put(self, file_no: int, blob: bytes) -> None:
        """Park a result, pickled (Inspected.rest)."""
        self._offset[file_no], self._size[file_no] = self._file.tell(), len(blob)
        self._file.write(blob)

    def holds(self) -> np.ndarray:
        """(n,) bool: the files whose result was put."""
        return self._offset >= 0

    def get(self, file_no: int) -> dict:
        self._file.seek(int(self._offset[file_no]))
        result = pickle.loads(self._file.read(int(self._size[file_no])))
        self._file.seek(0, os.SEEK_END)
        return result

    def close(self) -> None:
        self._file.close()


# output rows held before they go to disk as a sorted run (ExternalSort). A quarter MiB: at 1 MiB the output
# phase held about 5 MB more at 20,000 files than at 4,000 (the sort, merge and Parquet encoding of a run, each a
# few copies of it), the same time (benchmarks/prepare_speed.py, docs/benchmarks.md)
RUN_BYTES = 1 << 18


def write_tables(path: Path, schema: pa.Schema, tables: Iterable[pa.Table]) -> None:
    """A Parquet file (zstd) of the tables in turn, a row group or more each, as they come; the schema's empty
    table where there is none, so the file always has its columns."""
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        empty = True
        for t in tables:
            w.write_table(t)
            empty = False
        if empty:
            w.write_table(schema.empty_table())


class Outputs:
    """The stage's selected and rejects rows, each sorted on disk as it comes (ExternalSort: a bounded amount held
    here however large the corpus), and the report's counts, kept as rows are added (no table is held to count
    them)."""

    def __init__(self, n: int) -> None:
        self.selected = ExternalSort(SELECTED, ["id"], run_bytes=RUN_BYTES)
        # a file's own row before its tracks'
        self.rejects = ExternalSort(REJECTS, ["id", "track", "reason"], run_bytes=RUN_BYTES)
        self.sequences: Counter = Counter()       # selected rows by source
        self.files_selected: Counter = Counter()  # files with a selected row, by source
        self.notes = 0                            # notes of the selected rows
        self.families: Counter = Counter()        # selected tracks by instrument family...
        self.inferred: Counter = Counter()        # ...and by how it was inferred
        self.group_sequences = np.zeros(n, np.int64)  # selected rows by group (the file number naming it)
        self.reasons: Counter = Counter()         # reject rows by reason
        self.file_reasons: Counter = Counter()    # reject rows of whole files (no track) by (source, reason)
        self.dropped_notes: Counter = Counter()   # notes of the reject rows, by reason
        self.reject_sources: set[str] = set()     # the sources of the reject rows

    def select(self, row: dict, group: int) -> None:
        """A selected row (SELECTED) of the group named by file number `group`."""
        self.selected.append(row)
        self.sequences[row["source"]] += 1
        self.notes += row["n_notes"]
        self.families.update(row["families"])
        self.inferred.update(row["inferred"])
        self.group_sequences[group] += 1

    def reject(self, row: dict) -> None:
        """A reject row (REJECTS)."""
        self.rejects.append(row)
        self._count(row["source"], row["reason"], row["track"], row["notes"])

    def reject_table(self, table: pa.Table) -> None:
        """Reject rows already in a table (acquire's skips)."""
        self.rejects.extend(table)
        for r in table.select(["source", "reason", "track", "notes"]).to_pylist():
            self._count(r["source"], r["reason"], r["track"], r["notes"])

    def _count(self, source: str, reason: str, track: int | None, notes: int | None) -> None:
        self.reasons[reason] += 1
        if track is None:
            self.file_reasons[source, reason] += 1
        if notes is not None and notes > 0:
            self.dropped_notes[reason] += notes
        self.reject_sources.add(source)

    def write(self, out: Path) -> None:
        """selected.parquet and rejects.parquet in `out`, sorted (a row group per ExternalSort table)."""
        for name, rows in (("selected", self.selected), ("rejects", self.rejects)):
            write_tables(out / f"{name}.parquet", rows.schema, rows.tables())

    def close(self) -> None:
        self.selected.close()
        self.rejects.close()


@dataclass
class Parsed:
    """What the main process keeps of each parsed file, by file number ((n,) arrays over the manifest's rows)."""
    content_hash: np.ndarray  # S20: the sha1 digest of dedupe.content_hash_of (numpy drops trailing zero bytes
    #                           when it hands one out: pad it back to 20)
    hashed: np.ndarray        # bool: the file was parsed and has notes (content_hash is set)
    usable: np.ndarray        # bool: the file yields at least one sequence
    notes_in: np.ndarray      # int64: the file's note-ons, -1 where it was not read (a copy's reject row needs them)


def _inspect_all(p: P.Params, cfg: Config, files: pa.Table, parse_these: np.ndarray, spill: Spill,
                 near: NearIndex | None, accounts: NoteAccounts) -> Parsed:
    """Parse the files where `parse_these` ((n,) bool) in the pool; park each result in `spill` and its parts'
    near-duplicate signatures in `near`, both by file number, and count its notes in `accounts`."""
    n = files.num_rows
    out = Parsed(np.zeros(n, "S20"), np.zeros(n, bool), np.zeros(n, bool), np.full(n, -1, np.int64))
    where = files.select(["id", "artifact", "member"])

    def batches():
        for source in p.data.sources:
            mine = parse_these & pc.equal(files.column("source"), source).to_numpy(zero_copy_only=False)
            yield from iter_batches(RAW / source, where, np.flatnonzero(mine))  # rows: the file numbers

    work = imap(partial(inspect_batch, cfg=cfg), batches(), n_workers(p.prepare.workers), chunk=1,
                on_crash=partial(_crashed_batch, cfg=cfg))
    with tqdm(total=int(parse_these.sum()), desc="prepare", unit="file", mininterval=1) as bar:
        for batch_results in work:
            for res in batch_results:
                k = res.file_no
                if res.content_hash is not None:
                    out.content_hash[k], out.hashed[k] = res.content_hash, True
                if near is not None and res.near is not None:
                    near.add(k, res.near)
                out.usable[k] = res.usable
                if res.notes_in is not None:
                    out.notes_in[k] = res.notes_in
                accounts.add(res.notes_in, res.recovered, res.ignored)
                spill.put(k, res.rest)
            bar.update(len(batch_results))
    return out


@dataclass
class NearResult:
    """The near-duplicate level's decisions over the files kept after the content level, by file number."""
    a: np.ndarray             # (m,) every pair that joined, as file numbers (a's id < b's id), sorted by id...
    b: np.ndarray             # ...(m,)...
    pair_similarity: np.ndarray  # ...(m,) float64: and its estimated Jaccard similarity
    closest: np.ndarray       # (n,) int64: each file's most similar partner, -1 where it has none
    similarity: np.ndarray    # (n,) float64: that estimated Jaccard similarity, nan where none
    dropped: np.ndarray       # (d,) int64: files dropped by dedupe.near.drop_above...
    copies: np.ndarray        # (d,) int64: ...the kept file each copies...
    dropped_similarity: np.ndarray  # (d,) float64: ...and how similar they are
    parts: int = 0            # parts indexed
    crowded: int = 0          # band values skipped as shared by too many parts


def no_near(n: int) -> NearResult:
    """The result when the near-duplicate level is off: no pairs, nothing dropped."""
    none = np.empty(0, np.int64)
    return NearResult(none, none, np.empty(0), np.full(n, -1, np.int64), np.full(n, np.nan), none, none,
                      np.empty(0))


def near_duplicates(index: NearIndex, rank: np.ndarray, live: np.ndarray, drop_above: float) -> NearResult:
    """Join and (above `drop_above`, when > 0) drop near-duplicates among the `live` files ((n,) bool: those the
    content level kept that yield a sequence): a file rejected for another reason neither joins a group here
    nor causes a drop. A file is dropped when it is at least `drop_above` similar to a file before it (params
    source order, then id) that is itself kept. `rank`: (n,) each file's place in id order."""
    a, b, sim, crowded = index.pairs(live)  # a < b in file number
    out = no_near(len(rank))
    if drop_above:
        gone, dropped = set(), []
        strong = sim >= drop_above
        for i, j, x in sorted(zip(a[strong].tolist(), b[strong].tolist(), sim[strong].tolist()),
                              key=lambda t: (t[1], -t[2], t[0])):
            if i not in gone and j not in gone:
                gone.add(j)
                dropped.append((j, i, x))
        if dropped:
            out.dropped, out.copies, out.dropped_similarity = (np.array(c) for c in zip(*dropped))
    lo = np.where(rank[a] < rank[b], a, b)
    hi = a + b - lo
    order = np.lexsort((rank[hi], rank[lo]))
    lo, hi, sim = lo[order], hi[order], sim[order]
    out.a, out.b, out.pair_similarity = lo, hi, sim
    # each file's closest partner: the most similar, ties to the smallest id
    me, other, x = np.concatenate([lo, hi]), np.concatenate([hi, lo]), np.concatenate([sim, sim])
    order = np.lexsort((rank[other], -x, me))
    me, other, x = me[order], other[order], x[order]
    first = np.ones(len(me), bool)
    first[1:] = me[1:] != me[:-1]
    out.closest[me[first]], out.similarity[me[first]] = other[first], x[first]
    out.parts, out.crowded = index.parts, crowded
    return out


def write_pairs(path: Path, near: NearResult, ids: pa.ChunkedArray, chunk: int = 65_536) -> None:
    """near.parquet (NEAR): the joined pairs by id, written a chunk at a time (their ids made only there)."""
    write_tables(path, NEAR, (pa.table([ids.take(pa.array(near.a[lo:lo + chunk], pa.int64())),
                                        ids.take(pa.array(near.b[lo:lo + chunk], pa.int64())),
                                        pa.array(near.pair_similarity[lo:lo + chunk], pa.float64())], schema=NEAR)
                              for lo in range(0, len(near.a), chunk)))


def song_keys(files: pa.Table, by_title: bool, chunk: int = 4_096) -> pa.DictionaryArray:
    """Each file's same-song key (titles.song_key of its composer and title; null without a title, or all null
    when dedupe.by_title is off), dictionary-encoded: (n,) int32 codes into the distinct keys."""
    if not by_title:
        return pa.nulls(files.num_rows, pa.string()).dictionary_encode()
    keys = []
    for lo in range(0, files.num_rows, chunk):
        part = files.select(["composer", "title"]).slice(lo, chunk)
        keys.append(pa.array([song_key(c, t) for c, t in zip(part.column(0).to_pylist(),
                                                              part.column(1).to_pylist())], pa.string()))
    return pa.chunked_array(keys, pa.string()).combine_chunks().dictionary_encode()


class NoteAccounts:
    """Every note-on of every file read is either selected or in a reject row: checked per file, totalled."""

    def __init__(self) -> None:
        self.notes_in = self.recovered = 0
        self.ignored: Counter = Counter()

    def add(self, notes_in: int | None, recovered: int, ignored: dict[str, int]) -> None:
        """A file read: its note-ons (None where it could not be read), recovered notes and ignored values."""
        self.notes_in += notes_in or 0
        self.recovered += recovered
        self.ignored.update(ignored)

    @staticmethod
    def check(id_: str, notes_in: int | None, kept: int, dropped: int) -> None:
        """Raises RuntimeError (a bug in prepare, not in the data) when the file's notes do not add up."""
        if notes_in is not None and notes_in != kept + dropped:
            raise RuntimeError(f"prepare: {id_} has {notes_in} notes in, but {kept} selected + {dropped} counted "
                               "as dropped")

    def report(self, dropped: Counter) -> dict:
        """The totals, with `dropped`: the reject rows' notes by reason."""
        return {"notes_in": self.notes_in, "dropped": dict(sorted(dropped.items())),
                "recovered_without_note_off": self.recovered,
                "ignored_events": dict(sorted(self.ignored.items()))}


def _encode(column: pa.ChunkedArray | pa.Array) -> pa.DictionaryArray:
    """A column as one dictionary-encoded array: (n,) int32 codes into its distinct values."""
    return pc.dictionary_encode(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)


def _null_codes(keys: pa.DictionaryArray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, valid): a dictionary array's indices as (n,) int64 (0 where null) and where they are set."""
    valid = keys.is_valid().to_numpy(zero_copy_only=False)
    return pc.fill_null(keys.indices, 0).to_numpy().astype(np.int64), valid


def run(p: P.Params, out: Path) -> dict:
    """The stage's work: selected.parquet, rejects.parquet and near.parquet (the near-duplicate pairs) written in
    the folder `out` (made if missing); returns the report, as main writes it.

    The bookkeeping is by file number (a file's row in the manifests) in numpy arrays and Arrow columns, and the
    output rows are sorted on disk as they come (Outputs), so the main process holds tens of bytes a file, not
    Python objects or output tables: a web-scale corpus prepares in flat memory."""
    cfg = Config.from_params(p)
    # the C event reader and note measures built (or loaded) here, once, not by each worker under its file's time
    # guard (NearIndex does the same for the near-duplicate signatures)
    smf.warm()
    measures_native.library()
    files, skipped = load_manifests(p.data.sources)
    release_freed_memory()  # the reader's decoding buffers (see there)
    n = files.num_rows
    ids = files.column("id")
    rank = np.empty(n, np.int64)
    rank[pc.sort_indices(ids).to_numpy()] = np.arange(n)  # each id's place in id order: groups take the least
    out.mkdir(parents=True, exist_ok=True)
    outputs = Outputs(n)
    spill = Spill(n)
    index = NearIndex(cfg.near) if cfg.near else None
    try:
        outputs.reject_table(skipped)
        has = pc.fill_null(pc.not_equal(files.column("artifact"), ""), False).to_numpy(zero_copy_only=False)
        for _, r in _rows(files, np.flatnonzero(~has)):
            outputs.reject(_reject(r, "not_downloaded", "known by its metadata only: the source did not allow "
                                                        "the download"))
        groups = UnionFind(n)
        md5, md5_valid = _null_codes(_encode(files.column("md5")))
        first = first_of_each(md5, has & md5_valid)
        copy = np.flatnonzero((first >= 0) & (first != np.arange(n)))
        for (_, r), kept in zip(_rows(files, copy), ids.take(pa.array(first[copy], pa.int64())).to_pylist()):
            outputs.reject(_reject(r, "duplicate_md5", f"byte-identical to {kept}", duplicate_of=kept))
        groups.union_pairs(copy, first[copy])
        parse_these = has.copy()
        parse_these[copy] = False

        accounts = NoteAccounts()
        parsed = _inspect_all(p, cfg, files, parse_these, spill, index, accounts)
        lost = np.flatnonzero(parse_these & ~spill.holds())
        if len(lost):  # acquire vetted every member, so data/raw changed under it
            raise RuntimeError(f"prepare: {len(lost)} files of the manifests are not in their artifacts (first: "
                               f"{ids.take(pa.array(lost[:5])).to_pylist()}): rerun `dvc repro acquire` "
                               "(data/raw no longer matches its manifest)")
        kept = parse_these.copy()
        content = np.full(n, -1, np.int64)  # the kept file each same-music copy repeats
        if p.dedupe.content:
            content = first_of_each(parsed.content_hash, parsed.hashed)
            content[content == np.arange(n)] = -1
            kept[content >= 0] = False
        near = (near_duplicates(index, rank, kept & parsed.usable, p.dedupe.near.drop_above) if index
                else no_near(n))
        kept[near.dropped] = False
        release_freed_memory()
        dup = np.flatnonzero(content >= 0)
        _reject_copies(files, dup, content[dup], ["the same music as {}"] * len(dup), "duplicate_content",
                       parsed.notes_in, outputs)
        _reject_copies(files, near.dropped, near.copies,
                       [f"a near-copy of {{}} (estimated Jaccard {x:.3f} of their most similar parts, "
                        f"dedupe.near.drop_above={p.dedupe.near.drop_above:g})"
                        for x in near.dropped_similarity.tolist()], "near_duplicate", parsed.notes_in, outputs)
        groups.join_by(parsed.content_hash, parsed.hashed)  # same music joins a group, dropped or not
        groups.union_pairs(near.a, near.b)
        songs = song_keys(files, p.dedupe.by_title)
        groups.join_by(*_null_codes(songs))
        group_of = smallest_member(groups.labels(), rank)  # a group is named by its smallest id

        numbers = np.flatnonzero(kept)
        for lo in range(0, len(numbers), 4_096):
            part = numbers[lo:lo + 4_096]
            group_ids = ids.take(pa.array(group_of[part])).to_pylist()
            closest = ids.take(pa.array(np.maximum(near.closest[part], 0))).to_pylist()
            song_of = songs.take(pa.array(part)).to_pylist()  # the keys song_keys made, not made again
            for (k, r), group, near_of, song in zip(_rows(files, part), group_ids, closest, song_of):
                _select(r, spill.get(k), cfg, (group, int(group_of[k])), digest_hex(parsed.content_hash[k]), song,
                        (near_of, float(near.similarity[k])) if near.closest[k] >= 0 else (None, None),
                        outputs, accounts)
        spill.close()  # the parked results are spent: their disk space goes before the outputs are merged
        outputs.write(out)
        write_pairs(out / "near.parquet", near, ids)
    finally:
        spill.close()
        outputs.close()
        if index:
            index.close()
    report = summarize(_counts(files.column("source")), outputs)
    report["dedupe"] = dedupe_report(files.column("source"), group_of, songs, report["by_reason"], near)
    report["filters"] = filter_report(p.filter, report["by_reason"])
    report["note_accounting"] = accounts.report(outputs.dropped_notes)
    return report


def _reject_copies(files: pa.Table, copies: np.ndarray, originals: np.ndarray, messages: list[str], reason: str,
                   notes_in: np.ndarray, outputs: Outputs, chunk: int = 4_096) -> None:
    """Reject rows for files dropped as copies ((m,) file numbers) of kept ones ((m,) file numbers), each with its
    message (a format with {} for the kept file's id) and all its notes (notes_in, by file number; -1: unknown),
    a chunk at a time."""
    ids = files.column("id")
    for lo in range(0, len(copies), chunk):
        kept = ids.take(pa.array(originals[lo:lo + chunk], pa.int64())).to_pylist()
        notes = notes_in[copies[lo:lo + chunk]].tolist()
        for (_, r), original, message, n_notes in zip(_rows(files, copies[lo:lo + chunk]), kept,
                                                      messages[lo:lo + chunk], notes):
            outputs.reject(_reject(r, reason, message.format(original), duplicate_of=original,
                                   notes=n_notes if n_notes >= 0 else None))


def _select(r: dict, res: dict, cfg: Config, group: tuple[str, int], content_hash: str, song: str | None,
            closest: tuple[str | None, float | None], outputs: Outputs, accounts: NoteAccounts) -> None:
    """A kept file's selected sequences and its rejected tracks and sequences, its notes accounted for (its
    totals were added to `accounts` as it was read). `group`: the group's id and the number of the file naming
    it."""
    kept_notes = dropped_notes = 0
    for d in res.get("dropped", []):
        outputs.reject(_reject(r, d["reason"], d["message"], track=d["track"], notes=d["notes"]))
        dropped_notes += d["notes"]
    if "reason" in res:
        # the file's notes that no track row above accounts for: all of them, or its selection's
        lost = res.get("notes_in", 0) - dropped_notes if "notes_in" in res else None
        outputs.reject(_reject(r, res["reason"], res["message"], notes=lost))
        accounts.check(r["id"], res.get("notes_in"), 0, dropped_notes + (lost or 0))
        return
    for s in res["sequences"]:
        if "reason" in s:
            outputs.reject(_reject(r, s["reason"], s["message"], track=s["track"], notes=s["n_notes"]))
            dropped_notes += s["n_notes"]
            continue
        kept_notes += s["n_notes"]
        outputs.select(dict(
            id=r["id"] if s["track"] is None else f"{r['id']}#{s['track']}", file=r["id"],
            source=r["source"], artifact=r["artifact"], member=r["member"], md5=r["md5"],
            content_hash=content_hash, song=song, group=group[0],
            title=r["title"], composer=r["composer"], split=r["split"],
            near_duplicate_of=closest[0], near_similarity=closest[1],
            **{k: s[k] for k in SEQUENCE_COLUMNS},
        ), group[1])
    if any("reason" not in s for s in res["sequences"]):
        outputs.files_selected[r["source"]] += 1
    else:
        outputs.reject(_reject(r, "no_sequence_left", "every selected track failed a quality filter", notes=0))
    accounts.check(r["id"], res["notes_in"], kept_notes, dropped_notes)


def _counts(column: pa.ChunkedArray | pa.Array) -> Counter:
    """Rows per value of a column."""
    return Counter({c["values"]: c["counts"] for c in pc.value_counts(column).to_pylist()})


def summarize(acquired: Counter, outputs: Outputs) -> dict:
    """The report's file, sequence, group, reason and track counts, from those Outputs kept as rows came."""
    sources = sorted(set(acquired) | outputs.reject_sources)
    by_source = {s: {
        "acquired": acquired[s],
        "files_selected": outputs.files_selected[s],
        "sequences": outputs.sequences[s],
        "by_reason": dict(sorted((r, c) for (src, r), c in outputs.file_reasons.items() if src == s)),
    } for s in sources}
    sizes = outputs.group_sequences
    return {
        "files": {"acquired": sum(acquired.values()), "selected": sum(outputs.files_selected.values()),
                  "rejected": sum(outputs.file_reasons.values())},
        "sequences": sum(outputs.sequences.values()),
        "notes": outputs.notes,
        "groups": {"total": int((sizes > 0).sum()), "with_several_sequences": int((sizes > 1).sum())},
        "by_source": by_source,
        "by_reason": dict(sorted(outputs.reasons.items())),
        "tracks_by_family": dict(sorted(outputs.families.items())),
        "tracks_inferred_by": dict(sorted(outputs.inferred.items())),
    }


# each filter param and the reject reason it gives
FILTER_REASONS = {**{f.param: f.reason for f in quality.FILTERS},
                  "timing": "timing_filtered", "instruments": "instrument_filtered"}


def filter_report(f: P.FilterParams, reasons: dict[str, int]) -> dict:
    """Per filter: its value and the reject rows it gave (`reasons`: reject rows by reason): sequences (files in
    files mode) for the quality filters; tracks for `instruments` and `timing` (a file left with no track is
    `no_matching_tracks`)."""
    return {k: {"value": getattr(f, k), "rejected": reasons.get(reason, 0)} for k, reason in FILTER_REASONS.items()}


def dedupe_report(sources: pa.ChunkedArray | pa.Array, group_of: np.ndarray, songs: pa.DictionaryArray,
                  reasons: dict[str, int], near: NearResult) -> dict:
    """Per dedupe level, what it dropped and joined (`reasons`: reject rows by reason); and for every pair of
    sources, the groups holding files of both (how much two corpora overlap). `sources`, `group_of` (each file's
    group, as the number of the file that names it) and `songs` (same-song keys): (n,) by file number."""
    encoded = _encode(sources)
    names, codes = encoded.dictionary.to_pylist(), encoded.indices.to_numpy().astype(np.int64)
    pairs = np.unique(group_of.astype(np.int64) * max(len(names), 1) + codes)  # each (group, source) once
    group, source = pairs // max(len(names), 1), pairs % max(len(names), 1)
    across: Counter = Counter()
    cuts = np.flatnonzero(np.r_[True, group[1:] != group[:-1], True])  # each group's run of its sources
    for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        if hi - lo > 1:
            srcs = sorted(names[s] for s in source[lo:hi].tolist())
            across.update(f"{a}+{b}" for a, b in combinations(srcs, 2))
    code, valid = _null_codes(songs)
    per_song = np.bincount(code[valid]) if valid.any() else np.zeros(0, np.int64)
    return {
        "md5": {"dropped": reasons.get("duplicate_md5", 0)},
        "content": {"dropped": reasons.get("duplicate_content", 0)},
        "near": {"pairs": len(near.a), "files_in_pairs": int((near.closest >= 0).sum()),
                 "dropped": len(near.dropped), "parts_indexed": near.parts,
                 "crowded_band_values_skipped": near.crowded},
        "title": {"files_sharing_a_song": int(per_song[per_song > 1].sum())},
        "groups_across_sources": dict(sorted(across.items())),
    }


def use_system_allocator() -> None:
    """Arrow's allocations in this process through the system allocator: Arrow's default (mimalloc) keeps the
    pages of every large temporary it frees, which made the stage's peak grow with the corpus (about 20 MB more at
    20,000 files; benchmarks/prepare_speed.py, docs/benchmarks.md). A process-wide setting, so the stage's entry
    point makes it, not `run`."""
    pa.set_memory_pool(pa.system_memory_pool())


def release_freed_memory() -> None:
    """Hand the memory freed so far back to the system: the C heap's (glibc's malloc_trim(3)) and that of the
    mimalloc heap pyarrow's Parquet reader decodes in (its `arrow_mi_collect`, mimalloc's mi_collect).

    A phase's numpy temporaries are freed inside the heap, where a few live objects above them keep the pages
    resident, and the rest of the stage then runs on top of them: trimmed after the near-duplicate level, the
    stage's peak is that level's, not that level's plus what follows. The Parquet reader takes its decoding buffers
    from Arrow's C++ default pool, mimalloc in pyarrow's wheels, which `pa.set_memory_pool` does not reach and
    whose `release_unused` frees nothing there (measured): reading a manifest of 20,000 rows left 10 MB more
    resident than one of 4,000 (benchmarks/prepare_speed.py, docs/benchmarks.md). Nothing happens where the C
    library has no malloc_trim (musl, macOS) or pyarrow no mimalloc."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
    collect = _mimalloc_collect()
    if collect is not None:
        collect(1)  # force: free the pages now, not after mimalloc's purge delay


@cache
def _mimalloc_collect():
    """libarrow's exported mi_collect (Arrow builds mimalloc into libarrow with its symbols prefixed arrow_), or
    None where this pyarrow has none. Looked up through pyarrow's own extension module, already loaded, whose
    dependencies dlsym searches: the libarrow this process uses, never a second one found on a path."""
    try:
        collect = ctypes.CDLL(pa.lib.__file__).arrow_mi_collect
    except (OSError, AttributeError):
        return None
    collect.argtypes, collect.restype = [ctypes.c_bool], None
    return collect


def main() -> None:
    use_system_allocator()
    p = P.load()
    began = time.perf_counter()
    with atomic_path(PREPARED) as tmp:
        report = run(p, tmp)
        if report["sequences"] == 0:  # nothing moves into place
            raise SystemExit(f"prepare: no sequence survived ({sum(report['by_reason'].values())} rejects, "
                             f"reasons {report['by_reason']})")
    write_json(PREPARE_REPORT, report)
    f = report["files"]
    print(f"prepare: kept {report['sequences']} sequences from {f['selected']} of {f['acquired']} files "
          f"({report['notes']} notes, {report['groups']['total']} groups); rejected {f['rejected']} files; "
          f"reasons {report['by_reason']}; {report['dedupe']['near']['pairs']} near-duplicate pairs; in "
          f"{time.perf_counter() - began:.0f} s -> {PREPARED}, {PREPARE_REPORT}")


if __name__ == "__main__":
    run_stage(main)
