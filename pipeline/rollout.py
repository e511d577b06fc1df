"""Free-running continuation: the model extends a seed on its own output, a window at a time.

Piano-roll models continue frame by frame; token models continue token by token and their output is decoded
to notes on the same grid, so both are judged on the same frames.
"""
from __future__ import annotations

from typing import Iterable, TypeVar

import numpy as np
import torch

from pipeline.pianoroll import Grid, Notes
from pipeline.sampling import Sampler

T = TypeVar("T")

# A token model's windows per continuation before it is cut off: enough for a stream of mostly time-shift tokens
# to pass the frames asked for (a window of seq_len tokens covers at least a bar of dense chorale texture), and
# a bound on a model that never advances time. What is cut short shows as fewer generated notes, not an error.
MIN_TOKEN_WINDOWS = 8
TOKEN_WINDOWS_PER_SEED_WINDOW = 4

EMPTY = Notes(np.zeros(0, np.uint8), np.zeros(0, np.int32), np.zeros(0, np.int32))


def reservoir(items: Iterable[T], n: int, rng: np.random.Generator) -> tuple[list[T], int]:
    """A uniform sample of `n` items without replacement from a stream of unknown length (reservoir sampling),
    and how many items there were: windows of a split are drawn without holding the split."""
    chosen, seen = [], 0
    for item in items:
        seen += 1
        if len(chosen) < n:
            chosen.append(item)
        elif (j := rng.integers(seen)) < n:
            chosen[j] = item
    return chosen, seen


def window_notes(notes: Notes, a: int, b: int) -> Notes:
    """The notes sounding in frames [a, b), clipped to it and shifted to start at 0."""
    m = (notes.start < b) & (notes.end > a)
    s = np.maximum(notes.start[m], a) - a
    e = np.minimum(notes.end[m], b) - a
    order = np.lexsort((notes.key[m], s))
    vel = notes.velocity[m][order] if notes.velocity is not None else None
    return Notes(notes.key[m][order], s[order].astype(np.int32), e[order].astype(np.int32), vel)


@torch.no_grad()
def continue_roll(model, seed: torch.Tensor, steps: int, sampler=None) -> torch.Tensor:
    """`steps` frames after `seed` (batch, seq_len, features), decoded a window at a time; each frame is the
    one `sampler` fed back (default: threshold 0.5)."""
    seq_len, sampler = model.cfg.seq_len, sampler or Sampler(n_keys=model.cfg.n_keys)
    frames = seed
    while frames.size(1) < seed.size(1) + steps:
        n = min(seq_len, seed.size(1) + steps - frames.size(1))
        taken, _ = model.free(frames[:, -seq_len:], n, sampler)
        frames = torch.cat([frames, taken.to(frames.dtype)], dim=1)
    return frames[:, seed.size(1):]


@torch.no_grad()
def continue_tokens(model, tokenizer, grid: Grid, seeds: list[Notes], seed_frames: int, frames: int,
                    pad_id: int, device, sampler=None) -> list[Notes]:
    """Per seed (notes in frames [0, seed_frames)), the notes the model writes in [seed_frames,
    seed_frames + frames): token windows are generated until the decoded music passes that span (or after
    MIN_TOKEN_WINDOWS, or TOKEN_WINDOWS_PER_SEED_WINDOW per seed_frames asked for, windows), then decoded
    with the seed so times are absolute. Tokens are chosen by `sampler` (default: the most likely one)."""
    from pipeline import tokens

    L, sampler = model.cfg.seq_len, sampler or Sampler(tokens=True)
    ids = [list(tokens.encode(tokenizer, s, grid)) for s in seeds]
    done = [False] * len(seeds)
    out = [EMPTY] * len(seeds)
    for _ in range(max(MIN_TOKEN_WINDOWS, TOKEN_WINDOWS_PER_SEED_WINDOW * frames // seed_frames)):
        todo = [i for i, d in enumerate(done) if not d]
        if not todo:
            break
        ctx = torch.full((len(todo), L), pad_id, dtype=torch.long)
        for row, i in enumerate(todo):
            tail = ids[i][-L:]
            if tail:
                ctx[row, L - len(tail):] = torch.tensor(tail)
        gen = model.free(ctx.to(device), L, sampler)[0].cpu().numpy()
        for row, i in enumerate(todo):
            ids[i] += gen[row].tolist()
            notes = tokens.decode(tokenizer, ids[i], grid)
            out[i] = notes
            if len(notes) and notes.start.max() >= seed_frames + frames:
                done[i] = True
    return [window_notes(n, seed_frames, seed_frames + frames) if len(n) else EMPTY for n in out]
