"""Stage `prepare`: parse every acquired file, drop what is unusable or duplicated, select what to model.

Workers parse with symusic under a time and size guard, infer each track's instrument, select tracks by
`filter.instruments`, form sequences (`filter.mode`: one per file, or one per track) and measure them for the
quality filters. The main process then drops exact and same-music duplicates, groups same-song files, and
writes data/prepared/selected.parquet (one row per sequence), data/prepared/rejects.parquet (one row per dropped
file, track or sequence, with a reason) and metrics/prepare.json.
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from functools import partial
from itertools import combinations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline import gm, quality, smf
from pipeline import params as P
from pipeline.artifacts import Batch, iter_batches, read_batch
from pipeline.atomic import atomic_path, write_json
from pipeline.cli import run_stage
from pipeline.dedupe import ContentKey, Groups, content_hash_of, song_key
from pipeline.instruments import infer, is_choral
from pipeline.midi import MidiError, parse
from pipeline.near_duplicates import NearIndex, NearKey, signatures
from pipeline.parallel import imap, isolated, n_workers
from pipeline.paths import PREPARE_REPORT, PREPARED, RAW

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
        parse(data)  # symusic's checks of the bytes, and its reasons for a broken file
        song = smf.read(data)
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
        start = np.concatenate([p.start for p in parts]).astype(np.float64) / tpq
        end = np.concatenate([p.end for p in parts]).astype(np.float64) / tpq
        pitch = np.concatenate([p.pitch for p in parts])
        # pitch-class entropy and repetitiveness look at the pitched notes: a drum kit's keys are not pitches, and
        # a steady beat repeats by design
        pitched_parts = [p for p, t in zip(parts, tracks) if not t[2]]
        pitched = np.concatenate([p.pitch for p in pitched_parts] or [np.empty(0, np.int16)])
        pitched_start = np.concatenate([p.start for p in pitched_parts] or [np.empty(0, np.int64)]) / tpq
        on = cfg.limits
        seq = {"track": None if cfg.mode == "files" else tracks[0][0],
               "tracks": [t[0] for t in tracks], "programs": [t[1] for t in tracks],
               "is_drum": [t[2] for t in tracks], "families": [t[3] for t in tracks],
               "inferred": [t[4] for t in tracks], "timing": [t[5] for t in tracks],
               "off_grid": [t[6] for t in tracks], "instruments": len({(t[1], t[2]) for t in tracks}),
               "n_notes": len(pitch), "beats": quality.span_beats(start, end),
               # measured only when their filter is on: some cost as much as the parse
               "max_polyphony": quality.max_polyphony(start, end) if on["max_polyphony"] else None,
               "unique_pitches": (quality.unique_pitches_per_window(start, pitch, cfg.window_beats)
                                  if on["min_unique_pitches"] else None),
               "pitch_class_entropy": quality.pitch_class_entropy(pitched) if on["min_pitch_class_entropy"] else None,
               "longest_silence": quality.longest_silence(start, end) if on["max_silence_beats"] else None,
               "notes_per_beat": (quality.max_notes_per_beat(start, cfg.window_beats)
                                  if on["max_notes_per_beat"] else None),
               "chunk_divergence": (quality.chunk_divergence(pitched_start, pitched, cfg.window_beats)
                                    if on["min_chunk_divergence"] else None)}
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


def inspect_batch(batch: Batch, cfg: Config) -> list[dict]:
    """A worker reads its batch's bytes itself (decompressing them in parallel) and inspects each file."""
    return [inspect(item, cfg) for item in read_batch(batch)]


def _crashed_batch(batch: Batch, cfg: Config) -> list[dict]:
    """A batch whose process died: rerun its files one process each, so only the file that kills one is lost."""
    return list(isolated(partial(inspect, cfg=cfg), read_batch(batch), _crashed))


SEQUENCE_COLUMNS = ("tracks", "programs", "is_drum", "families", "inferred", "timing", "off_grid", "instruments",
                    "n_notes", "beats", "max_polyphony", "unique_pitches", "pitch_class_entropy", "longest_silence",
                    "notes_per_beat", "chunk_divergence")
ROW_COLUMNS = ("id", "source", "artifact", "member", "md5", "title", "composer", "split")  # what prepare reads


def load_manifests(sources: list[str]) -> tuple[list[dict], list[dict]]:
    rows, skipped = [], []
    for s in sources:
        d = RAW / s
        if not (d / "manifest.parquet").exists():
            raise FileNotFoundError(f"{d}/manifest.parquet is missing: run `dvc repro acquire@{s}` first")
        table = pq.ParquetFile(d / "manifest.parquet").read(columns=list(ROW_COLUMNS))
        part = sorted(table.to_pylist(), key=lambda r: r["id"])
        for r in part:  # one string object per distinct value, not per row: a corpus has few of these
            for k in ("source", "artifact", "split"):
                if r[k] is not None:
                    r[k] = sys.intern(r[k])
        rows += part
        if (d / "skipped.parquet").exists():
            skipped += pq.ParquetFile(d / "skipped.parquet").read().to_pylist()
    return rows, skipped


def _reject(row: dict, reason: str, message: str, track: int | None = None, duplicate_of: str | None = None,
            notes: int | None = None) -> dict:
    return dict(id=row["id"], source=row["source"], member=row.get("member"), stage="prepare", track=track,
                reason=reason, message=message, duplicate_of=duplicate_of, notes=notes)


def first_of_each(rows: list[dict], key) -> tuple[list[dict], list[tuple[dict, str]]]:
    """Keep the first row of each non-null key(row) (rows are in params source order, then id); return the
    kept rows and (duplicate row, id of the kept one) pairs."""
    first: dict[str, str] = {}
    kept, dups = [], []
    for r in rows:
        k = key(r)
        if k is not None and k in first:
            dups.append((r, first[k]))
        else:
            if k is not None:
                first[k] = r["id"]
            kept.append(r)
    return kept, dups


class Spill:
    """Per-file results parked in a temporary file until dedupe has decided which files they matter for, so the
    main process holds a few short strings per file however large the corpus."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()
        self._at: dict[str, tuple[int, int]] = {}

    def put(self, id_: str, result: dict) -> None:
        blob = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        self._at[id_] = (self._file.tell(), len(blob))
        self._file.write(blob)

    def get(self, id_: str) -> dict:
        offset, size = self._at[id_]
        self._file.seek(offset)
        result = pickle.loads(self._file.read(size))
        self._file.seek(0, os.SEEK_END)
        return result

    def close(self) -> None:
        self._file.close()


class Rows:
    """Output rows gathered into Arrow tables every `flush` rows: compact however many there are."""

    def __init__(self, schema: pa.Schema, flush: int = 5_000) -> None:
        self.schema, self.flush, self._rows, self._tables = schema, flush, [], []

    def append(self, row: dict) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.flush:
            self._tables.append(pa.Table.from_pylist(self._rows, self.schema))
            self._rows = []

    def table(self) -> pa.Table:
        return pa.concat_tables(self._tables + [pa.Table.from_pylist(self._rows, self.schema)])


def _inspect_all(p: P.Params, cfg: Config, unique: list[dict], spill: Spill,
                 near: NearIndex | None) -> tuple[dict[str, str | None], np.ndarray]:
    """Parse every file in the pool; park each result in `spill` and its parts' near-duplicate signatures in
    `near` (numbered by the file's place in `unique`); return each file's content hash, and by file number
    whether the file yields a sequence (bool, (len(unique),))."""
    def batches():
        for source in p.data.sources:
            yield from iter_batches(RAW / source, (r for r in unique if r["source"] == source))

    hashes = {}
    number = {r["id"]: k for k, r in enumerate(unique)}
    usable = np.zeros(len(unique), bool)
    work = imap(partial(inspect_batch, cfg=cfg), batches(), n_workers(p.prepare.workers), chunk=1,
                on_crash=partial(_crashed_batch, cfg=cfg))
    with tqdm(total=len(unique), desc="prepare", unit="file", mininterval=1) as bar:
        for batch_results in work:
            for res in batch_results:
                hashes[res["id"]] = res.pop("content_hash", None)
                sigs = res.pop("near", None)
                if near is not None and sigs is not None:
                    near.add(number[res["id"]], sigs)
                usable[number[res["id"]]] = "reason" not in res and any("reason" not in s for s in res["sequences"])
                spill.put(res["id"], res)
            bar.update(len(batch_results))
    return hashes, usable


@dataclass
class NearResult:
    """The near-duplicate level's decisions over the files kept after the content level."""
    pairs: pa.Table                               # NEAR: every pair that joined (a < b by id), sorted by id
    closest: dict[str, tuple[str, float]]         # file -> (its most similar partner, similarity)
    dropped: list[tuple[dict, str, float]]        # (row, kept file it copies, similarity), by dedupe.near.drop_above
    parts: int = 0                                # parts indexed
    crowded: int = 0                              # band values skipped as shared by too many parts


NO_NEAR = NearResult(NEAR.empty_table(), {}, [])


def near_duplicates(index: NearIndex, unique: list[dict], kept_rows: list[dict], usable: np.ndarray,
                    drop_above: float) -> NearResult:
    """Join and (above `drop_above`, when > 0) drop near-duplicates among the files of `kept_rows` (those the
    content level kept) that yield a sequence (`usable`, by place in `unique`): a file rejected for another
    reason neither joins a group here nor causes a drop. A file is dropped when it is at least `drop_above`
    similar to a file before it (params source order, then id) that is itself kept."""
    kept_ids = {r["id"] for r in kept_rows}
    live = usable & np.array([r["id"] in kept_ids for r in unique], bool)
    a, b, sim, crowded = index.pairs(live)  # a < b in `unique`'s order
    dropped, gone = [], set()
    if drop_above:
        strong = sim >= drop_above
        for i, j, x in sorted(zip(a[strong].tolist(), b[strong].tolist(), sim[strong].tolist()),
                              key=lambda t: (t[1], -t[2], t[0])):
            if i not in gone and j not in gone:
                gone.add(j)
                dropped.append((unique[j], unique[i]["id"], x))
    ids = np.array([r["id"] for r in unique], dtype=object)
    rank = np.empty(len(ids), np.int64)
    rank[np.argsort(ids, kind="stable")] = np.arange(len(ids))  # each id's place in id order
    lo = np.where(rank[a] < rank[b], a, b)
    hi = a + b - lo
    order = np.lexsort((rank[hi], rank[lo]))
    lo, hi, sim = lo[order], hi[order], sim[order]
    pairs = pa.table([pa.array(ids[lo], pa.string()), pa.array(ids[hi], pa.string()), pa.array(sim)],
                     schema=NEAR)
    # each file's closest partner: the most similar, ties to the smallest id
    me, other, x = np.concatenate([lo, hi]), np.concatenate([hi, lo]), np.concatenate([sim, sim])
    order = np.lexsort((rank[other], -x, me))
    me, other, x = me[order], other[order], x[order]
    first = np.ones(len(me), bool)
    first[1:] = me[1:] != me[:-1]
    closest = {ids[m]: (ids[o], s) for m, o, s in zip(me[first].tolist(), other[first].tolist(), x[first].tolist())}
    return NearResult(pairs, closest, dropped, index.parts, crowded)


class NoteAccounts:
    """Every note-on of every file read is either selected or in a reject row: checked per file, totalled."""

    def __init__(self) -> None:
        self.notes_in = self.recovered = 0
        self.ignored: Counter = Counter()

    def add(self, res: dict) -> None:
        self.notes_in += res.get("notes_in") or 0
        self.recovered += res.get("recovered", 0)
        self.ignored.update(res.get("ignored", {}))

    @staticmethod
    def check(id_: str, notes_in: int | None, kept: int, dropped: int) -> None:
        """Raises RuntimeError (a bug in prepare, not in the data) when the file's notes do not add up."""
        if notes_in is not None and notes_in != kept + dropped:
            raise RuntimeError(f"prepare: {id_} has {notes_in} notes in, but {kept} selected + {dropped} counted "
                               "as dropped")

    def report(self, rejects: pa.Table) -> dict:
        notes = rejects.column("notes").to_pylist()
        dropped = Counter()
        for reason, n in zip(rejects.column("reason").to_pylist(), notes):
            if n:
                dropped[reason] += n
        return {"notes_in": self.notes_in, "dropped": dict(sorted(dropped.items())),
                "recovered_without_note_off": self.recovered,
                "ignored_events": dict(sorted(self.ignored.items()))}


def run(p: P.Params) -> tuple[pa.Table, pa.Table, pa.Table, dict]:
    """The stage's work: (selected, rejects, near-duplicate pairs, report), as main writes them."""
    cfg = Config.from_params(p)
    smf.warm()  # the C event reader built (or loaded) here, once, not by each worker under its file's time guard
    rows, acquire_skips = load_manifests(p.data.sources)
    selected, rejects = Rows(SELECTED), Rows(REJECTS)
    for s in acquire_skips:
        rejects.append(dict(s, track=None, duplicate_of=None, notes=None))
    for r in rows:
        if not r["artifact"]:
            rejects.append(_reject(r, "not_downloaded", "known by its metadata only: the source did not allow the "
                                                        "download"))
    groups = Groups()
    for r in rows:
        groups.add(r["id"])
    unique, dups = first_of_each([r for r in rows if r["artifact"]], lambda r: r["md5"])
    for r, kept in dups:
        rejects.append(_reject(r, "duplicate_md5", f"byte-identical to {kept}", duplicate_of=kept))
        groups.union(r["id"], kept)

    spill = Spill()
    index = NearIndex(cfg.near) if cfg.near else None
    accounts = NoteAccounts()
    try:
        hashes, usable = _inspect_all(p, cfg, unique, spill, index)
        if p.dedupe.content:
            kept_rows, content_dups = first_of_each(unique, lambda r: hashes[r["id"]])
        else:
            kept_rows, content_dups = unique, []
        near = near_duplicates(index, unique, kept_rows, usable, p.dedupe.near.drop_above) if index else NO_NEAR
        copies = [(r, kept, "duplicate_content", f"the same music as {kept}") for r, kept in content_dups]
        copies += [(r, kept, "near_duplicate", f"a near-copy of {kept} (estimated Jaccard {x:.3f} of their most "
                                               f"similar parts, dedupe.near.drop_above={p.dedupe.near.drop_above:g})")
                   for r, kept, x in near.dropped]
        for r, kept, reason, message in copies:
            res = spill.get(r["id"])
            accounts.add(res)
            rejects.append(_reject(r, reason, message, duplicate_of=kept, notes=res.get("notes_in")))
            accounts.check(r["id"], res.get("notes_in"), 0, res.get("notes_in"))
        near_gone = {r["id"] for r, _, _ in near.dropped}
        kept_rows = [r for r in kept_rows if r["id"] not in near_gone]
        groups.join_by(hashes)  # same music joins a group, dropped or not
        for a, b in zip(near.pairs.column("a").to_pylist(), near.pairs.column("b").to_pylist()):
            groups.union(a, b)
        songs = {r["id"]: song_key(r["composer"], r["title"]) if p.dedupe.by_title else None for r in rows}
        groups.join_by(songs)

        for r in kept_rows:
            res = spill.get(r["id"])
            accounts.add(res)
            kept_notes = dropped_notes = 0
            for d in res.get("dropped", []):
                rejects.append(_reject(r, d["reason"], d["message"], track=d["track"], notes=d["notes"]))
                dropped_notes += d["notes"]
            if "reason" in res:
                # the file's notes that no track row above accounts for: all of them, or its selection's
                lost = res.get("notes_in", 0) - dropped_notes if "notes_in" in res else None
                rejects.append(_reject(r, res["reason"], res["message"], notes=lost))
                accounts.check(r["id"], res.get("notes_in"), 0, dropped_notes + (lost or 0))
                continue
            closest = near.closest.get(r["id"], (None, None))
            for s in res["sequences"]:
                if "reason" in s:
                    rejects.append(_reject(r, s["reason"], s["message"], track=s["track"], notes=s["n_notes"]))
                    dropped_notes += s["n_notes"]
                    continue
                kept_notes += s["n_notes"]
                selected.append(dict(
                    id=r["id"] if s["track"] is None else f"{r['id']}#{s['track']}", file=r["id"],
                    source=r["source"], artifact=r["artifact"], member=r["member"], md5=r["md5"],
                    content_hash=hashes[r["id"]], song=songs[r["id"]], group=groups.find(r["id"]),
                    title=r["title"], composer=r["composer"], split=r["split"],
                    near_duplicate_of=closest[0], near_similarity=closest[1],
                    **{k: s[k] for k in SEQUENCE_COLUMNS},
                ))
            if not any("reason" not in s for s in res["sequences"]):
                rejects.append(_reject(r, "no_sequence_left", "every selected track failed a quality filter",
                                       notes=0))
            accounts.check(r["id"], res["notes_in"], kept_notes, dropped_notes)
    finally:
        spill.close()
        if index:
            index.close()
    selected_t = selected.table().sort_by("id")
    rejects_t = rejects.table()
    order = pa.table({"id": rejects_t.column("id"), "track": pc.fill_null(rejects_t.column("track"), -1),
                      "reason": rejects_t.column("reason")})
    rejects_t = rejects_t.take(pc.sort_indices(order, [("id", "ascending"), ("track", "ascending"),
                                                       ("reason", "ascending")]))
    report = summarize(Counter(r["source"] for r in rows), selected_t, rejects_t)
    report["dedupe"] = dedupe_report(rows, report["by_reason"], groups, songs, near)
    report["filters"] = filter_report(p.filter, report["by_reason"])
    report["note_accounting"] = accounts.report(rejects_t)
    return selected_t, rejects_t, near.pairs, report


def summarize(acquired: Counter, selected: pa.Table, rejects: pa.Table) -> dict:
    """The report, from the tables' columns (a few at a time, not as rows)."""
    sel_source, sel_file = selected.column("source").to_pylist(), selected.column("file").to_pylist()
    rej_source, rej_reason = rejects.column("source").to_pylist(), rejects.column("reason").to_pylist()
    file_level = rejects.column("track").is_null().to_pylist()
    files_by_source = Counter(src for src, _ in set(zip(sel_source, sel_file)))
    by_source = {}
    for s in sorted(set(acquired) | set(rej_source)):
        by_source[s] = {
            "acquired": acquired[s],
            "files_selected": files_by_source[s],
            "sequences": sel_source.count(s),
            "by_reason": dict(sorted(Counter(reason for src, reason, f in zip(rej_source, rej_reason, file_level)
                                             if f and src == s).items())),
        }
    group_sizes = Counter(selected.column("group").to_pylist())
    flat = lambda col: (x for xs in selected.column(col).to_pylist() for x in xs)  # noqa: E731
    return {
        "files": {"acquired": sum(acquired.values()), "selected": len(set(sel_file)), "rejected": sum(file_level)},
        "sequences": selected.num_rows,
        "notes": sum(selected.column("n_notes").to_pylist()),
        "groups": {"total": len(group_sizes), "with_several_sequences": sum(n > 1 for n in group_sizes.values())},
        "by_source": by_source,
        "by_reason": dict(sorted(Counter(rej_reason).items())),
        "tracks_by_family": dict(sorted(Counter(flat("families")).items())),
        "tracks_inferred_by": dict(sorted(Counter(flat("inferred")).items())),
    }


# each filter param and the reject reason it gives
FILTER_REASONS = {**{f.param: f.reason for f in quality.FILTERS},
                  "timing": "timing_filtered", "instruments": "instrument_filtered"}


def filter_report(f: P.FilterParams, reasons: dict[str, int]) -> dict:
    """Per filter: its value and the reject rows it gave (`reasons`: reject rows by reason): sequences (files in
    files mode) for the quality filters; tracks for `instruments` and `timing` (a file left with no track is
    `no_matching_tracks`)."""
    return {k: {"value": getattr(f, k), "rejected": reasons.get(reason, 0)} for k, reason in FILTER_REASONS.items()}


def dedupe_report(rows: list[dict], reasons: dict[str, int], groups: Groups, songs: dict[str, str | None],
                  near: NearResult) -> dict:
    """Per dedupe level, what it dropped and joined (`reasons`: reject rows by reason); and for every pair of
    sources, the groups holding files of both (how much two corpora overlap)."""
    titled = Counter(k for k in songs.values() if k is not None)
    by_group: dict[str, set[str]] = {}
    for r in rows:
        by_group.setdefault(groups.find(r["id"]), set()).add(r["source"])
    across = Counter(f"{a}+{b}" for srcs in by_group.values() for a, b in combinations(sorted(srcs), 2))
    return {
        "md5": {"dropped": reasons.get("duplicate_md5", 0)},
        "content": {"dropped": reasons.get("duplicate_content", 0)},
        "near": {"pairs": near.pairs.num_rows, "files_in_pairs": len(near.closest), "dropped": len(near.dropped),
                 "parts_indexed": near.parts, "crowded_band_values_skipped": near.crowded},
        "title": {"files_sharing_a_song": sum(n for n in titled.values() if n > 1)},
        "groups_across_sources": dict(sorted(across.items())),
    }


def main() -> None:
    p = P.load()
    selected, rejects, near, report = run(p)
    if selected.num_rows == 0:
        raise SystemExit(f"prepare: no sequence survived ({rejects.num_rows} rejects, reasons "
                         f"{report['by_reason']})")
    with atomic_path(PREPARED) as tmp:
        tmp.mkdir(parents=True)
        pq.write_table(selected, tmp / "selected.parquet", compression="zstd")
        pq.write_table(rejects, tmp / "rejects.parquet", compression="zstd")
        pq.write_table(near, tmp / "near.parquet", compression="zstd")
    write_json(PREPARE_REPORT, report)
    f = report["files"]
    print(f"prepare: kept {report['sequences']} sequences from {f['selected']} of {f['acquired']} files "
          f"({report['notes']} notes, {report['groups']['total']} groups); rejected {f['rejected']} files; "
          f"reasons {report['by_reason']}")


if __name__ == "__main__":
    run_stage(main)
