"""Stage `generate`: continue real test windows and write each sample as MIDI and as a piano-roll PNG.

The seed and the continuation are separate MIDI tracks ("seed", "generated") and separate colours in the
picture, so what the model wrote is never confused with what it was given.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from symusic import Note, Score, Tempo, Track

from pipeline import params as P
from pipeline.cli import run_stage
from pipeline import runtime
from pipeline.atomic import atomic_path, write_json
from pipeline.checkpoint import load_model
from pipeline.dataset import Rolls, Windows, read_meta
from pipeline.pianoroll import from_roll

OUT = Path("data/samples")
TICKS_PER_FRAME = 120


@torch.no_grad()
def continue_window(model, seed: torch.Tensor, steps: int, threshold: float) -> torch.Tensor:
    """`steps` frames after `seed` (seq_len, n_pitches), decoded a window at a time on the model's own output."""
    seq_len = model.cfg.seq_len
    frames = seed
    while len(frames) < len(seed) + steps:
        n = min(seq_len, len(seed) + steps - len(frames))
        logits = model(frames[-seq_len:].unsqueeze(0), steps=n, threshold=threshold)[0]
        frames = torch.cat([frames, (torch.sigmoid(logits) > threshold).float()])
    return frames[len(seed):]


def to_midi(seed: np.ndarray, gen: np.ndarray, meta: dict) -> bytes:
    tpq = meta["steps_per_beat"] * TICKS_PER_FRAME
    score = Score(tpq)
    score.tempos.append(Tempo(0, 120.0))
    for name, roll, offset in (("seed", seed, 0), ("generated", gen, len(seed))):
        track = Track(name=name, program=0, is_drum=False)
        n = from_roll(roll)
        for p, s, e in zip(n.pitch, n.start, n.end):
            track.notes.append(Note(int(s + offset) * TICKS_PER_FRAME, int(e - s) * TICKS_PER_FRAME,
                                    int(p) + meta["pitch_low"], 80))
        score.tracks.append(track)
    return score.dumps_midi()


def to_png(seed: np.ndarray, gen: np.ndarray, meta: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roll = np.concatenate([seed, gen]).astype(float)
    img = np.zeros(roll.shape + (3,))
    img[: len(seed)] = np.where(roll[: len(seed), :, None], [0.2, 0.4, 0.9], 1.0)
    img[len(seed):] = np.where(roll[len(seed):, :, None], [0.9, 0.3, 0.2], 1.0)
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    ax.imshow(img.transpose(1, 0, 2), origin="lower", aspect="auto", interpolation="nearest",
              extent=(0, len(roll), meta["pitch_low"] - 0.5, meta["pitch_high"] + 0.5))
    ax.axvline(len(seed), color="black", linewidth=1)
    ax.set(xlabel=f"frame ({meta['steps_per_beat']} per beat)", ylabel="MIDI pitch",
           title=f"{title}: seed (blue) | generated (red)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    p = P.load()
    runtime.setup(p.seed)
    meta = read_meta()
    model = load_model(meta)
    test = Windows(Rolls.load("test"), model.cfg.seq_len, model.cfg.seq_len)
    with_notes = [k for k in range(len(test)) if test[k][0].any()]
    if not with_notes:
        raise SystemExit("generate: no test window with notes to seed from")
    rng = np.random.default_rng(p.seed)
    picks = rng.choice(with_notes, size=p.generate.n_samples, replace=len(with_notes) < p.generate.n_samples)
    index = []
    with atomic_path(OUT) as tmp:
        tmp.mkdir(parents=True)
        for i, k in enumerate(picks):
            seed, _ = test[int(k)]
            gen = continue_window(model, seed, p.generate.steps, p.generate.threshold).numpy().astype(bool)
            seed = seed.numpy().astype(bool)
            name = f"sample_{i:03d}"
            (tmp / f"{name}.mid").write_bytes(to_midi(seed, gen, meta))
            piece = test.rolls.ids[int(test.index[k][0])]
            to_png(seed, gen, meta, f"{name} from {piece}", tmp / f"{name}.png")
            index.append({"name": name, "seed_from": piece, "seed_frames": len(seed), "generated_frames": len(gen),
                          "generated_notes": len(from_roll(gen)), "generated_density": float(gen.sum(1).mean())})
        write_json(tmp / "index.json", index)
    silent = sum(s["generated_notes"] == 0 for s in index)
    print(f"generate: {len(index)} samples of {p.generate.steps} frames -> {OUT}"
          + (f"; {silent} generated no notes (model predicts silence at generate.threshold)" if silent else ""))


if __name__ == "__main__":
    run_stage(main)
