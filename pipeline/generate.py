"""Stage `generate`: continue real test windows (or silence) and write each sample as MIDI and a piano-roll PNG.

The seed and the continuation are separate MIDI tracks ("seed", "generated") and separate colours in the
picture, so what the model wrote is never confused with what it was given. Pitched notes play on the program
most used in the training data; drum classes go to a drum track (channel 10) as their GM pitches. A sample
whose continuation has no notes gets no MIDI file (its picture and index entry say so): an empty MIDI file
would pass for a sample. Every MIDI file is read back before it is kept. `index.json` holds each sample's
music statistics (pipeline/music.py), which `evaluate` compares with real music.

The pictures (pipeline/roll_plot.py) show the keys the training data sounds, as calibrate recorded their
frequencies on train, and any other key a sample plays. For the report, each sample's notes are also written in
seconds as `notes/sample_NNN.json` (what its browser player schedules), and index.json records where each
picture's plot area lies in the PNG (where the player's cursor runs).
"""
from __future__ import annotations

import json

import numpy as np
import torch
from symusic import Score, Tempo
from tqdm import tqdm

from pipeline import gm, music, representations, roll_plot, runtime
from pipeline import params as P
from pipeline.atomic import atomic_path, write_json
from pipeline.checkpoint import load_model
from pipeline.cli import run_stage
from pipeline.contracts import read_calibration
from pipeline.dataset import Split, data_dir, window_starts
from pipeline.paths import SAMPLES
from pipeline.pianoroll import Grid, Notes, to_tracks
from pipeline.rollout import EMPTY, reservoir, window_notes

TICKS_PER_FRAME = 120
TEMPO_BPM = {False: 120.0, True: 60.0}  # beat grid: 120 bpm; absolute grid: 60 bpm, so a beat is a second
VELOCITY = 80  # for notes that carry none
FREQUENCY_FLOOR = 1e-6  # baselines.fit clamps every key frequency to at least this: a key above it sounds in train


def to_midi(parts: list[tuple[str, Notes, int]], grid: Grid, program: int) -> bytes:
    """One pitched and one drum track per (name, notes, frame offset) part with notes; read back to check."""
    score = Score(int(grid.steps) * TICKS_PER_FRAME)
    score.tempos.append(Tempo(0, TEMPO_BPM[bool(grid.steps_per_second)]))
    for name, notes, offset in parts:
        for track in to_tracks(notes, grid, name, program, TICKS_PER_FRAME, offset, velocity=VELOCITY):
            score.tracks.append(track)
    data = score.dumps_midi()
    back = Score.from_midi(data)
    if sum(len(t.notes) for t in back.tracks) != sum(len(n) for _, n, _ in parts):
        raise RuntimeError("generate: a written MIDI file does not read back with its notes")
    return data


def length_frames(length: float, unit: str, grid: Grid) -> int:
    """Frames for `length` beats or seconds, at the tempo the samples are written with."""
    beats_per_second = TEMPO_BPM[bool(grid.steps_per_second)] / 60
    beats = length if unit == "beats" else length * beats_per_second
    return max(1, round(beats * frames_per_beat(grid)))


def frames_per_beat(grid: Grid) -> float:
    """Frames in a beat of the written MIDI: steps per beat, or on an absolute grid (60 bpm) steps per second."""
    beats_per_second = TEMPO_BPM[bool(grid.steps_per_second)] / 60
    return grid.steps_per_second / beats_per_second if grid.steps_per_second else grid.steps_per_beat


def trained_keys(key_frequency: list[float], grid: Grid) -> np.ndarray:
    """(grid.n_keys,) booleans: the keys that sound in the training frames, from calibrate's per-feature
    frequencies (`key_frequency`: n_keys or, with an onset plane, 2 * n_keys values; a key counts when either
    plane is above the floor baselines.fit clamps to). With no frequencies (no training window), every key of the
    grid. Raises ValueError when their number does not fit the grid."""
    f = np.asarray(key_frequency, dtype=float)
    if not len(f):
        return np.ones(grid.n_keys, bool)
    if len(f) % grid.n_keys:
        raise ValueError(f"calibration's key_frequency has {len(f)} values, not a multiple of the grid's "
                         f"{grid.n_keys} keys: rerun `dvc repro calibrate`")
    return (f.reshape(-1, grid.n_keys) > FREQUENCY_FLOOR).any(0)


def key_summary(used: np.ndarray, grid: Grid) -> dict:
    """Keys `used` ((grid.n_keys,) booleans) as index.json records them: "lowest_pitch", "highest_pitch" (MIDI
    pitches) and their names ("C4"; all four None without a pitched key), "drum_classes" (gm.DRUM_CLASSES names,
    in that order)."""
    pitched = np.nonzero(used[:grid.n_pitches])[0]
    ends = [int(grid.midi_pitch(pitched[i])) if len(pitched) else None for i in (0, -1)]
    names = [roll_plot.note_name(p) if p is not None else None for p in ends]
    return {"lowest_pitch": ends[0], "highest_pitch": ends[1], "lowest_name": names[0], "highest_name": names[1],
            "drum_classes": [gm.DRUM_CLASS_NAMES[c] for c in np.nonzero(used[grid.n_pitches:])[0]]}


def playback(parts: list[tuple[Notes, int]], grid: Grid) -> dict:
    """The notes as the report's player schedules them, exactly as the MIDI file plays them: per note [start s,
    duration s, MIDI pitch (a drum class's GM pitch), velocity, drum class index into `drum_classes` (-1:
    pitched), part (the index into `parts`: 0 the seed, 1 the continuation)], sorted by start; `seconds_per_frame`
    at the samples' tempo. `parts` are (notes, frame offset)."""
    spf = 60 / TEMPO_BPM[bool(grid.steps_per_second)] / frames_per_beat(grid)
    rows = []
    for part, (notes, offset) in enumerate(parts):
        drum = np.where(grid.is_drum_key(notes.key), notes.key.astype(np.int64) - grid.n_pitches, -1)
        vel = notes.velocity if notes.velocity is not None else np.full(len(notes), VELOCITY)
        for s, e, p, v, d in zip(notes.start, notes.end, grid.midi_pitch(notes.key), vel, drum):
            rows.append([round((int(s) + offset) * spf, 6), round((int(e) - int(s)) * spf, 6), int(p), int(v), int(d),
                         part])
    rows.sort(key=lambda r: (r[0], r[5], r[2]))
    return {"seconds_per_frame": spf, "drum_classes": list(gm.DRUM_CLASS_NAMES),
            "columns": ["start", "duration", "pitch", "velocity", "drum", "part"], "notes": rows}


def seeds(test: Split, L: int, n: int, seed: int) -> list[tuple[str, Notes, int]]:
    """`n` test windows with notes to seed from: (sequence id, the window's notes, its start frame).

    The split is streamed and only the chosen windows kept (reservoir sampling: uniform, without replacement),
    so a Lakh-sized test split costs no memory; with fewer such windows than `n`, they are drawn with replacement.
    """
    rng = np.random.default_rng(seed)
    windows = ((piece, window_notes(notes, a, a + L), a) for piece, notes in test.notes()
               for a in window_starts(notes.n_frames, L, L))
    chosen, seen = reservoir((w for w in windows if len(w[1])), n, rng)
    if not chosen:
        raise SystemExit("generate: no test window with notes to seed from")
    if seen < n:
        chosen = [chosen[int(k)] for k in rng.choice(seen, size=n)]
    return chosen


def main() -> None:
    p = P.load()
    g = p.generate
    runtime.setup(p.seed)
    test = Split(data_dir(), "test")
    meta, grid = test.meta, test.meta.grid
    model = load_model(meta)
    L, device = model.cfg.seq_len, runtime.device(p.train.device)
    steps = length_frames(g.length, g.unit, grid)
    draws = torch.Generator(device=device)
    draws.manual_seed(p.seed)
    rep = representations.of(meta.kind)
    sampler = rep.sampler(g, meta, read_calibration, model, draws)
    model.to(device)
    primes = (seeds(test, L, g.n_samples, p.seed) if g.prime == "test"
              else [("silence", EMPTY, 0)] * g.n_samples)
    gens = rep.continue_notes(model, test, [n for _, n, _ in primes], L, steps, sampler, device)
    trained = trained_keys(read_calibration()["baselines"]["key_frequency"], grid)
    index = []
    with atomic_path(SAMPLES) as tmp:
        (tmp / "rolls").mkdir(parents=True)
        (tmp / "notes").mkdir()
        for i, ((piece, seed_notes, a), gen) in enumerate(tqdm(zip(primes, gens), total=len(primes), mininterval=1,
                                                                desc="generate: write", unit="sample")):
            name = f"sample_{i:03d}"
            midi = None
            if len(gen):
                midi = f"{name}.mid"
                (tmp / midi).write_bytes(to_midi([("seed", seed_notes, 0), ("generated", gen, L)], grid,
                                                 meta.program))
            fig, ax = roll_plot.figure(seed_notes, gen, L, steps, grid, trained, frames_per_beat(grid),
                                       f"{name} from {piece}" + ("" if len(gen) else " (no notes generated)"))
            area = roll_plot.save(fig, ax, tmp / "rolls" / f"{name}.png")
            # compact: a note a few dozen bytes, where indented JSON would spend a line per number
            (tmp / "notes" / f"{name}.json").write_text(json.dumps(
                playback([(seed_notes, 0), (gen, L)], grid), separators=(",", ":"), sort_keys=True) + "\n")
            index.append({"name": name, "midi": midi, "png": f"rolls/{name}.png", "png_plot_area": area,
                          "notes": f"notes/{name}.json", "seed_from": piece,
                          "seed_start_frame": int(a), "seed_frames": L, "seed_notes": len(seed_notes),
                          "generated_frames": steps, "generated_notes": len(gen),
                          "music": music.finite(music.describe(gen, grid, steps))})
        write_json(tmp / "index.json", {"program": meta.program, "prime": g.prime, "sampling": g.sampling,
                                        "threshold": sampler.threshold if rep.thresholded else None,
                                        "temperature": g.temperature, "trained_keys": key_summary(trained, grid),
                                        "samples": index})
    silent = [s["name"] for s in index if s["generated_notes"] == 0]
    print(f"generate: {len(index)} samples of {steps} frames ({meta.kind}, {g.sampling} sampling, prime "
          f"{g.prime}) -> {SAMPLES}" + (f"; NO NOTES generated in {len(silent)}: {', '.join(silent)} (no MIDI "
                                    "written for those)" if silent else ""))


if __name__ == "__main__":
    run_stage(main)
