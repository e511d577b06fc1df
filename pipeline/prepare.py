"""Stage `prepare`: parse every acquired file, drop what is unusable or duplicated, select tracks by instrument.

Writes data/prepared/selected.parquet (one row per kept file, with the kept track indices),
data/prepared/rejects.parquet (one row per dropped file or track, with a reason) and metrics/prepare.json.
"""
from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline import gm
from pipeline import params as P
from pipeline.cli import run_stage
from pipeline.atomic import atomic_path, write_json
from pipeline.midi import MidiError, parse
from pipeline.parallel import imap, n_workers
from pipeline.artifacts import iter_bytes

RAW, OUT, REPORT = Path("data/raw"), Path("data/prepared"), Path("metrics/prepare.json")

SELECTED = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("artifact", pa.string()), ("member", pa.string()),
    ("md5", pa.string()), ("group", pa.string()), ("title", pa.string()), ("composer", pa.string()), ("split", pa.string()),
    ("tracks", pa.list_(pa.int32())), ("programs", pa.list_(pa.int32())), ("is_drum", pa.list_(pa.bool_())),
    ("families", pa.list_(pa.string())), ("n_notes", pa.int64()), ("beats", pa.float64()),
])
REJECTS = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("member", pa.string()), ("stage", pa.string()),
    ("track", pa.int32()), ("reason", pa.string()), ("message", pa.string()), ("duplicate_of", pa.string()),
])


def inspect(item: tuple[str, bytes], keys: frozenset[int], min_notes: int) -> dict:
    """Parse one file and decide which tracks to keep. Runs in a worker: takes data, returns data."""
    id_, data = item
    try:
        score = parse(data)
    except MidiError as e:
        return {"id": id_, "reason": e.reason, "message": str(e)}
    kept, dropped, n_notes = [], [], 0
    for i, track in enumerate(score.tracks):
        n = track.note_num()
        if n == 0:
            continue
        key = gm.track_key(track.program, track.is_drum)
        fam = gm.family(track.program, track.is_drum)
        if key in keys:
            kept.append((i, int(track.program), bool(track.is_drum), fam))
            n_notes += n
        else:
            what = "drum track" if track.is_drum else f"program {track.program} ({fam})"
            dropped.append({"track": i, "reason": "instrument_filtered",
                            "message": f"{what} is not selected by filter.instruments"})
    if score.note_num() == 0:
        return {"id": id_, "reason": "no_notes", "message": "the file holds no notes"}
    if not kept:
        return {"id": id_, "reason": "no_matching_tracks", "dropped": dropped,
                "message": "no track with notes matches filter.instruments"}
    if n_notes < min_notes:
        return {"id": id_, "reason": "too_few_notes", "dropped": dropped,
                "message": f"{n_notes} notes in the selected tracks, fewer than filter.min_notes={min_notes}"}
    return {"id": id_, "kept": kept, "dropped": dropped, "n_notes": n_notes,
            "beats": score.end() / score.ticks_per_quarter}


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


def dedupe_exact(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Keep the first file of each md5 (sources in params order, then by id); reject the rest."""
    first: dict[str, str] = {}
    kept, rejects = [], []
    for r in rows:
        if r["md5"] in first:
            rejects.append(_reject(r, "duplicate_md5", f"byte-identical to {first[r['md5']]}",
                                   duplicate_of=first[r["md5"]]))
        else:
            first[r["md5"]] = r["id"]
            kept.append(r)
    return kept, rejects


def _reject(row: dict, reason: str, message: str, track: int | None = None, duplicate_of: str | None = None,
            stage: str = "prepare") -> dict:
    return dict(id=row["id"], source=row["source"], member=row.get("member"), stage=stage, track=track,
                reason=reason, message=message, duplicate_of=duplicate_of)


def run(p: P.Params) -> tuple[pa.Table, pa.Table, dict]:
    rows, acquire_skips = load_manifests(p.data.sources)
    rejects = [dict(s, track=None, duplicate_of=None) for s in acquire_skips]
    rejects += [_reject(r, "not_downloaded", "known by its metadata only: the source did not allow the download")
                for r in rows if not r["artifact"]]
    unique, dup_rejects = dedupe_exact([r for r in rows if r["artifact"]])
    rejects += dup_rejects
    by_id = {r["id"]: r for r in unique}
    keys = gm.programs_for(p.filter.instruments)
    workers = n_workers(p.prepare.workers)

    def stream():
        for source in p.data.sources:
            yield from iter_bytes(RAW / source, (r for r in unique if r["source"] == source))

    selected = []
    results = imap(partial(inspect, keys=keys, min_notes=p.filter.min_notes), stream(), workers)
    for res in tqdm(results, total=len(unique), desc="prepare", unit="file", mininterval=1):
        row = by_id[res["id"]]
        for d in res.get("dropped", []):
            rejects.append(_reject(row, d["reason"], d["message"], track=d["track"]))
        if "reason" in res:
            rejects.append(_reject(row, res["reason"], res["message"]))
            continue
        tracks, programs, drums, fams = zip(*res["kept"])
        selected.append(dict(
            id=row["id"], source=row["source"], artifact=row["artifact"], member=row["member"], md5=row["md5"],
            group=row["md5"], title=row["title"], composer=row["composer"], split=row["split"],
            tracks=list(tracks), programs=list(programs), is_drum=list(drums), families=list(fams),
            n_notes=res["n_notes"], beats=res["beats"],
        ))
    selected.sort(key=lambda r: r["id"])
    rejects.sort(key=lambda r: (r["id"], -1 if r["track"] is None else r["track"], r["reason"]))
    report = summarize(rows, selected, rejects)
    return pa.Table.from_pylist(selected, SELECTED), pa.Table.from_pylist(rejects, REJECTS), report


def summarize(rows: list[dict], selected: list[dict], rejects: list[dict]) -> dict:
    file_rejects = [r for r in rejects if r["track"] is None]
    by_source = {}
    for s in sorted({r["source"] for r in rows} | {r["source"] for r in rejects}):
        by_source[s] = {
            "acquired": sum(r["source"] == s for r in rows),
            "selected": sum(r["source"] == s for r in selected),
            "rejected": sum(r["source"] == s for r in file_rejects),
        }
    return {
        "files": {"acquired": len(rows), "selected": len(selected), "rejected": len(file_rejects)},
        "notes": sum(r["n_notes"] for r in selected),
        "by_source": by_source,
        "by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "tracks_by_family": dict(sorted(Counter(f for r in selected for f in r["families"]).items())),
    }


def main() -> None:
    p = P.load()
    selected, rejects, report = run(p)
    if selected.num_rows == 0:
        raise SystemExit(f"prepare: no file survived ({rejects.num_rows} rejects, see the reasons: "
                         f"{report['by_reason']})")
    with atomic_path(OUT) as tmp:
        tmp.mkdir(parents=True)
        pq.write_table(selected, tmp / "selected.parquet", compression="zstd")
        pq.write_table(rejects, tmp / "rejects.parquet", compression="zstd")
    write_json(REPORT, report)
    f = report["files"]
    print(f"prepare: kept {f['selected']} of {f['acquired']} files ({report['notes']} notes); "
          f"rejected {f['rejected']} files, reasons {report['by_reason']}")


if __name__ == "__main__":
    run_stage(main)
