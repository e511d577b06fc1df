"""Stage `prepare`: parse every acquired file, drop what is unusable or duplicated, select what to model.

Workers parse with symusic under a time and size guard, infer each track's instrument, select tracks by
`filter.instruments`, form sequences (`filter.mode`: one per file, or one per track) and measure them for the
quality filters. The main process then drops exact and same-music duplicates, groups same-song files, and
writes data/prepared/selected.parquet (one row per sequence), data/prepared/rejects.parquet (one row per dropped
file, track or sequence, with a reason) and metrics/prepare.json.
"""
from __future__ import annotations

import signal
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline import gm, quality
from pipeline import params as P
from pipeline.artifacts import iter_bytes
from pipeline.atomic import atomic_path, write_json
from pipeline.cli import run_stage
from pipeline.dedupe import ContentKey, Groups, content_hash_of, song_key
from pipeline.instruments import infer, is_choral
from pipeline.midi import MidiError, parse
from pipeline.parallel import imap, n_workers

RAW, OUT, REPORT = Path("data/raw"), Path("data/prepared"), Path("metrics/prepare.json")

SELECTED = pa.schema([
    ("id", pa.string()),          # the sequence: the file id, or "<file id>#<track>" in tracks mode
    ("file", pa.string()), ("source", pa.string()), ("artifact", pa.string()), ("member", pa.string()),
    ("md5", pa.string()), ("content_hash", pa.string()), ("song", pa.string()), ("group", pa.string()),
    ("title", pa.string()), ("composer", pa.string()), ("split", pa.string()),
    ("tracks", pa.list_(pa.int32())), ("programs", pa.list_(pa.int32())), ("is_drum", pa.list_(pa.bool_())),
    ("families", pa.list_(pa.string())), ("inferred", pa.list_(pa.string())),
    ("n_notes", pa.int64()), ("beats", pa.float64()),
    ("max_polyphony", pa.int32()), ("unique_pitches", pa.float64()),  # null unless their filter is on
])
REJECTS = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("member", pa.string()), ("stage", pa.string()),
    ("track", pa.int32()), ("reason", pa.string()), ("message", pa.string()), ("duplicate_of", pa.string()),
])


@dataclass(frozen=True)
class Config:
    keys: frozenset
    mode: str
    min_notes: int
    min_beats: float
    min_unique: float
    window_beats: float
    max_polyphony: int
    max_beats: float
    max_tempo_events: int
    timeout_s: float
    content: ContentKey

    @classmethod
    def from_params(cls, p: P.Params) -> "Config":
        f, pr, d = p.filter, p.prepare, p.dedupe
        return cls(gm.programs_for(f.instruments), f.mode, f.min_notes, f.min_beats, f.min_unique_pitches,
                   f.unique_window_beats, f.max_polyphony, pr.max_beats, pr.max_tempo_events, pr.timeout_s,
                   ContentKey(d.steps_per_beat, d.transpose_invariant))


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def inspect(item: tuple[str, bytes], cfg: Config) -> dict:
    """One file: parse under a time guard, select, measure. Runs in a worker: takes data, returns data."""
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, cfg.timeout_s)
        return _inspect(item, cfg)
    except _Timeout:
        return {"id": item[0], "reason": "timeout", "message": f"took longer than prepare.timeout_s={cfg.timeout_s}"}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _inspect(item: tuple[str, bytes], cfg: Config) -> dict:
    id_, data = item
    try:
        score = parse(data)
    except MidiError as e:
        return {"id": id_, "reason": e.reason, "message": str(e)}
    tpq = score.ticks_per_quarter
    if len(score.tempos) > cfg.max_tempo_events:
        return {"id": id_, "reason": "too_many_tempos",
                "message": f"{len(score.tempos)} tempo events, over prepare.max_tempo_events={cfg.max_tempo_events}"}
    if score.end() / tpq > cfg.max_beats:
        return {"id": id_, "reason": "too_long",
                "message": f"{score.end() / tpq:.0f} beats, over prepare.max_beats={cfg.max_beats:g}"}
    if score.note_num() == 0:
        return {"id": id_, "reason": "no_notes", "message": "the file holds no notes"}
    picked, dropped = [], []
    arrays = {}  # each track's notes are extracted once, for the hash and the measures alike
    choral = is_choral([str(t.name) for t in score.tracks])
    for i, track in enumerate(score.tracks):
        if track.note_num() == 0:
            continue
        arrays[i] = track.notes.numpy()
        inst = infer(int(track.program), bool(track.is_drum), str(track.name), choral)
        if inst.key in cfg.keys:
            picked.append((i, int(track.program), inst.family == gm.DRUMS, inst.family, inst.inferred))
        else:
            how = "" if inst.inferred == "program" else f" (by {inst.inferred})"
            dropped.append({"track": i, "reason": "instrument_filtered",
                            "message": f"{inst.family}{how}, program {track.program}, is not in filter.instruments"})
    digest = content_hash_of([(score.tracks[i].is_drum, a) for i, a in arrays.items()], tpq, cfg.content)
    out = {"id": id_, "content_hash": digest, "dropped": dropped, "sequences": []}
    if not picked:
        return {**out, "reason": "no_matching_tracks", "message": "no track with notes matches filter.instruments"}
    groups = [picked] if cfg.mode == "files" else [[t] for t in picked]
    for tracks in groups:
        notes = [arrays[t[0]] for t in tracks]
        start = np.concatenate([n["time"] for n in notes]).astype(np.float64) / tpq
        end = start + np.concatenate([n["duration"] for n in notes]).astype(np.float64) / tpq
        pitch = np.concatenate([n["pitch"] for n in notes])
        seq = {"track": None if cfg.mode == "files" else tracks[0][0],
               "tracks": [t[0] for t in tracks], "programs": [t[1] for t in tracks],
               "is_drum": [t[2] for t in tracks], "families": [t[3] for t in tracks],
               "inferred": [t[4] for t in tracks], "n_notes": len(pitch), "beats": quality.span_beats(start, end),
               # measured only when their filter is on: they cost as much as the parse
               "max_polyphony": quality.max_polyphony(start, end) if cfg.max_polyphony else None,
               "unique_pitches": (quality.unique_pitches_per_window(start, pitch, cfg.window_beats)
                                  if cfg.min_unique else None)}
        reason = _quality_reason(seq, cfg)
        if reason:
            seq["reason"], seq["message"] = reason
        out["sequences"].append(seq)
    if all("reason" in s for s in out["sequences"]) and cfg.mode == "files":
        s = out["sequences"][0]
        return {**out, "reason": s["reason"], "message": s["message"], "sequences": []}
    return out


def _quality_reason(seq: dict, cfg: Config) -> tuple[str, str] | None:
    if seq["n_notes"] < cfg.min_notes:
        return "too_few_notes", f"{seq['n_notes']} notes, fewer than filter.min_notes={cfg.min_notes}"
    if seq["beats"] < cfg.min_beats:
        return "too_short", f"{seq['beats']:.1f} beats, shorter than filter.min_beats={cfg.min_beats:g}"
    if cfg.min_unique and seq["unique_pitches"] < cfg.min_unique:
        return "repetitive", (f"{seq['unique_pitches']:.2f} distinct pitches per {cfg.window_beats:g}-beat window, "
                              f"under filter.min_unique_pitches={cfg.min_unique:g}")
    if cfg.max_polyphony and seq["max_polyphony"] > cfg.max_polyphony:
        return "too_polyphonic", f"{seq['max_polyphony']} notes at once, over filter.max_polyphony={cfg.max_polyphony}"
    return None


def _crashed(item: tuple[str, bytes]) -> dict:
    return {"id": item[0], "reason": "worker_died",
            "message": "the parsing process was killed (out of memory or a crash in the parser)"}


def load_manifests(sources: list[str]) -> tuple[list[dict], list[dict]]:
    rows, skipped = [], []
    for s in sources:
        d = RAW / s
        if not (d / "manifest.parquet").exists():
            raise FileNotFoundError(f"{d}/manifest.parquet is missing: run `dvc repro acquire@{s}` first")
        rows += sorted(pq.read_table(d / "manifest.parquet").to_pylist(), key=lambda r: r["id"])
        if (d / "skipped.parquet").exists():
            skipped += pq.read_table(d / "skipped.parquet").to_pylist()
    return rows, skipped


def _reject(row: dict, reason: str, message: str, track: int | None = None, duplicate_of: str | None = None) -> dict:
    return dict(id=row["id"], source=row["source"], member=row.get("member"), stage="prepare", track=track,
                reason=reason, message=message, duplicate_of=duplicate_of)


def first_of_each(rows: list[dict], key: str) -> tuple[list[dict], list[tuple[dict, str]]]:
    """Keep the first row of each non-null `key` (rows are in params source order, then id); return the
    kept rows and (duplicate row, id of the kept one) pairs."""
    first: dict[str, str] = {}
    kept, dups = [], []
    for r in rows:
        k = r.get(key)
        if k is not None and k in first:
            dups.append((r, first[k]))
        else:
            if k is not None:
                first[k] = r["id"]
            kept.append(r)
    return kept, dups


def run(p: P.Params) -> tuple[pa.Table, pa.Table, dict]:
    cfg = Config.from_params(p)
    rows, acquire_skips = load_manifests(p.data.sources)
    rejects = [dict(s, track=None, duplicate_of=None) for s in acquire_skips]
    rejects += [_reject(r, "not_downloaded", "known by its metadata only: the source did not allow the download")
                for r in rows if not r["artifact"]]
    groups = Groups()
    for r in rows:
        groups.add(r["id"])
    unique, dups = first_of_each([r for r in rows if r["artifact"]], "md5")
    for r, kept in dups:
        rejects.append(_reject(r, "duplicate_md5", f"byte-identical to {kept}", duplicate_of=kept))
        groups.union(r["id"], kept)

    def stream():
        for source in p.data.sources:
            yield from iter_bytes(RAW / source, (r for r in unique if r["source"] == source))

    results = {}
    work = imap(partial(inspect, cfg=cfg), stream(), n_workers(p.prepare.workers), on_crash=_crashed)
    for res in tqdm(work, total=len(unique), desc="prepare", unit="file", mininterval=1):
        results[res["id"]] = res

    parsed = []
    for r in unique:
        res = results[r["id"]]
        parsed.append({**r, "content_hash": res.get("content_hash")})
    if p.dedupe.content:
        kept_rows, content_dups = first_of_each(parsed, "content_hash")
    else:
        kept_rows, content_dups = parsed, []
    for r, kept in content_dups:
        rejects.append(_reject(r, "duplicate_content", f"the same music as {kept}", duplicate_of=kept))
    groups.join_by({r["id"]: r["content_hash"] for r in parsed})  # same music joins a group, dropped or not
    songs = {r["id"]: song_key(r["composer"], r["title"]) if p.dedupe.by_title else None for r in rows}
    groups.join_by(songs)

    selected = []
    for r in kept_rows:
        res = results[r["id"]]
        for d in res.get("dropped", []):
            rejects.append(_reject(r, d["reason"], d["message"], track=d["track"]))
        if "reason" in res:
            rejects.append(_reject(r, res["reason"], res["message"]))
            continue
        for s in res["sequences"]:
            if "reason" in s:
                rejects.append(_reject(r, s["reason"], s["message"], track=s["track"]))
                continue
            selected.append(dict(
                id=r["id"] if s["track"] is None else f"{r['id']}#{s['track']}", file=r["id"],
                source=r["source"], artifact=r["artifact"], member=r["member"], md5=r["md5"],
                content_hash=r["content_hash"], song=songs[r["id"]], group=groups.find(r["id"]),
                title=r["title"], composer=r["composer"], split=r["split"],
                **{k: s[k] for k in ("tracks", "programs", "is_drum", "families", "inferred", "n_notes", "beats",
                                     "max_polyphony", "unique_pitches")},
            ))
        if not any("reason" not in s for s in res["sequences"]):
            rejects.append(_reject(r, "no_sequence_left", "every selected track failed a quality filter"))
    selected.sort(key=lambda r: r["id"])
    rejects.sort(key=lambda r: (r["id"], -1 if r["track"] is None else r["track"], r["reason"]))
    report = summarize(rows, selected, rejects)
    return pa.Table.from_pylist(selected, SELECTED), pa.Table.from_pylist(rejects, REJECTS), report


def summarize(rows: list[dict], selected: list[dict], rejects: list[dict]) -> dict:
    file_rejects = [r for r in rejects if r["track"] is None]
    kept_files = {r["file"] for r in selected}
    by_source = {}
    for s in sorted({r["source"] for r in rows} | {r["source"] for r in rejects}):
        by_source[s] = {
            "acquired": sum(r["source"] == s for r in rows),
            "files_selected": len({r["file"] for r in selected if r["source"] == s}),
            "sequences": sum(r["source"] == s for r in selected),
            "by_reason": dict(sorted(Counter(r["reason"] for r in file_rejects if r["source"] == s).items())),
        }
    group_sizes = Counter(r["group"] for r in selected)
    return {
        "files": {"acquired": len(rows), "selected": len(kept_files), "rejected": len(file_rejects)},
        "sequences": len(selected),
        "notes": sum(r["n_notes"] for r in selected),
        "groups": {"total": len(group_sizes), "with_several_sequences": sum(n > 1 for n in group_sizes.values())},
        "by_source": by_source,
        "by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "tracks_by_family": dict(sorted(Counter(f for r in selected for f in r["families"]).items())),
        "tracks_inferred_by": dict(sorted(Counter(i for r in selected for i in r["inferred"]).items())),
    }


def main() -> None:
    p = P.load()
    selected, rejects, report = run(p)
    if selected.num_rows == 0:
        raise SystemExit(f"prepare: no sequence survived ({rejects.num_rows} rejects, reasons "
                         f"{report['by_reason']})")
    with atomic_path(OUT) as tmp:
        tmp.mkdir(parents=True)
        pq.write_table(selected, tmp / "selected.parquet", compression="zstd")
        pq.write_table(rejects, tmp / "rejects.parquet", compression="zstd")
    write_json(REPORT, report)
    f = report["files"]
    print(f"prepare: kept {report['sequences']} sequences from {f['selected']} of {f['acquired']} files "
          f"({report['notes']} notes, {report['groups']['total']} groups); rejected {f['rejected']} files; "
          f"reasons {report['by_reason']}")


if __name__ == "__main__":
    run_stage(main)
