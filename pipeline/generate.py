"""Stage `generate`: continue real test windows (or silence) and write each sample as MIDI and a piano-roll PNG.

The seed and the continuation are separate MIDI tracks ("seed", "generated") and separate colours in the
picture, so what the model wrote is never confused with what it was given. Pitched notes play on the program
most used in the training data; drum classes go to a drum track (channel 10) as their GM pitches. A sample
whose continuation has no notes gets no MIDI file (its picture and index entry say so): an empty MIDI file
would pass for a sample. Every MIDI file is read back before it is kept. `index.json` holds each sample's
music statistics (pipeline/music.py), which `evaluate` compares with real music.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from symusic import Score, Tempo

from pipeline import music, representations, runtime
from pipeline import params as P
from pipeline.atomic import atomic_path, write_json
from pipeline.checkpoint import load_model
from pipeline.cli import run_stage
from pipeline.contracts import read_calibration
from pipeline.dataset import Split, data_dir, window_starts
from pipeline.paths import SAMPLES
from pipeline.pianoroll import Grid, Notes, densify, to_tracks
from pipeline.rollout import EMPTY, reservoir, window_notes

TICKS_PER_FRAME = 120
TEMPO_BPM = {False: 120.0, True: 60.0}  # beat grid: 120 bpm; absolute grid: 60 bpm, so a beat is a second


def to_midi(parts: list[tuple[str, Notes, int]], grid: Grid, program: int) -> bytes:
    """One pitched and one drum track per (name, notes, frame offset) part with notes; read back to check."""
    score = Score(int(grid.steps) * TICKS_PER_FRAME)
    score.tempos.append(Tempo(0, TEMPO_BPM[bool(grid.steps_per_second)]))
    for name, notes, offset in parts:
        for track in to_tracks(notes, grid, name, program, TICKS_PER_FRAME, offset, velocity=80):
            score.tracks.append(track)
    data = score.dumps_midi()
    back = Score.from_midi(data)
    if sum(len(t.notes) for t in back.tracks) != sum(len(n) for _, n, _ in parts):
        raise RuntimeError("generate: a written MIDI file does not read back with its notes")
    return data


def length_frames(length: float, unit: str, grid: Grid) -> int:
    """Frames for `length` beats or seconds, at the tempo the samples are written with."""
    beats_per_second = TEMPO_BPM[bool(grid.steps_per_second)] / 60
    frames_per_beat = grid.steps_per_second / beats_per_second if grid.steps_per_second else grid.steps_per_beat
    beats = length if unit == "beats" else length * beats_per_second
    return max(1, round(beats * frames_per_beat))


def to_png(seed: np.ndarray, gen: np.ndarray, grid: Grid, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roll = np.concatenate([seed, gen]).astype(float)
    img = np.zeros(roll.shape + (3,))
    img[: len(seed)] = np.where(roll[: len(seed), :, None], [0.2, 0.4, 0.9], 1.0)
    img[len(seed):] = np.where(roll[len(seed):, :, None], [0.9, 0.3, 0.2], 1.0)
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    ax.imshow(img.transpose(1, 0, 2), origin="lower", aspect="auto", interpolation="nearest",
              extent=(0, len(roll), -0.5, roll.shape[1] - 0.5))
    ax.axvline(len(seed), color="black", linewidth=1)
    if grid.drums:
        ax.axhline(grid.n_pitches - 0.5, color="grey", linewidth=0.5)
    unit = f"{grid.steps_per_second} per second" if grid.steps_per_second else f"{grid.steps_per_beat} per beat"
    ax.set(xlabel=f"frame ({unit})", ylabel=f"key (pitch - {grid.pitch_low}; drum classes above)" if grid.drums
           else f"key (MIDI pitch - {grid.pitch_low})", title=f"{title}: seed (blue) | generated (red)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


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
    index = []
    with atomic_path(SAMPLES) as tmp:
        (tmp / "rolls").mkdir(parents=True)
        for i, ((piece, seed_notes, a), gen) in enumerate(zip(primes, gens)):
            name = f"sample_{i:03d}"
            midi = None
            if len(gen):
                midi = f"{name}.mid"
                (tmp / midi).write_bytes(to_midi([("seed", seed_notes, 0), ("generated", gen, L)], grid,
                                                 meta.program))
            to_png(densify(seed_notes, grid.n_keys, 0, L), densify(gen, grid.n_keys, 0, steps), grid,
                   f"{name} from {piece}" + ("" if len(gen) else " (no notes generated)"),
                   tmp / "rolls" / f"{name}.png")
            index.append({"name": name, "midi": midi, "png": f"rolls/{name}.png", "seed_from": piece,
                          "seed_start_frame": int(a), "seed_frames": L, "seed_notes": len(seed_notes),
                          "generated_frames": steps, "generated_notes": len(gen),
                          "music": music.finite(music.describe(gen, grid, steps))})
        write_json(tmp / "index.json", {"program": meta.program, "prime": g.prime, "sampling": g.sampling,
                                        "threshold": sampler.threshold if rep.thresholded else None,
                                        "temperature": g.temperature,
                                        "samples": index})
    silent = [s["name"] for s in index if s["generated_notes"] == 0]
    print(f"generate: {len(index)} samples of {steps} frames ({meta.kind}, {g.sampling} sampling, prime "
          f"{g.prime}) -> {SAMPLES}" + (f"; NO NOTES generated in {len(silent)}: {', '.join(silent)} (no MIDI "
                                    "written for those)" if silent else ""))


if __name__ == "__main__":
    run_stage(main)
