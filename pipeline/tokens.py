"""Token streams with MidiTok (REMI, TSD, MIDILike), made from the same quantised notes as the piano rolls.

The tokenizer sees a score whose ticks are grid frames (ticks per beat = the grid's steps), so tokens are
exact at the grid resolution and decode straight back to frames: a MIDI -> tokens -> MIDI round trip keeps
every note's key and onset. Drum hits go in as their class's GM pitch on a drum track; Program tokens are used
only when the data has drums, to tell the two streams apart.
"""
from __future__ import annotations

from pathlib import Path

import miditok
import numpy as np
from symusic import Score

from pipeline import gm
from pipeline.pianoroll import Grid, Notes, to_tracks

TOKENIZERS = {"REMI": miditok.REMI, "TSD": miditok.TSD, "MIDILike": miditok.MIDILike}
SPECIAL = ["PAD", "BOS", "EOS"]
_DRUM_CLASS_OF = np.asarray(gm.DRUM_CLASS_OF, dtype=np.int64)


def make(name: str, grid: Grid, velocity: bool, max_beats: int) -> miditok.MusicTokenizer:
    """A tokenizer on the grid: time shifts and durations up to `max_beats` grid units at full resolution."""
    config = miditok.TokenizerConfig(
        pitch_range=(grid.pitch_low, grid.pitch_high + 1),
        beat_res={(0, max_beats): int(grid.steps)},
        use_velocities=velocity, num_velocities=16,
        use_programs=grid.drums, one_token_stream_for_programs=True, programs=[-1, 0],
        use_time_signatures=False, special_tokens=SPECIAL,
        drums_pitch_range=(min(gm.DRUM_CLASS_PITCH), max(gm.DRUM_CLASS_PITCH) + 1),
    )
    return TOKENIZERS[name](config)


def load(path: Path) -> miditok.MusicTokenizer:
    import json

    name = json.loads(Path(path).read_text())["tokenization"]
    return TOKENIZERS[name](params=Path(path))


def to_score(notes: Notes, grid: Grid) -> Score:
    """Notes as a score whose ticks are frames: one pitched track (program 0) and, if any, one drum track."""
    score = Score(int(grid.steps))
    for track in to_tracks(notes, grid):
        score.tracks.append(track)
    return score


def encode(tokenizer: miditok.MusicTokenizer, notes: Notes, grid: Grid) -> np.ndarray:
    if not len(notes):
        return np.zeros(0, np.int32)
    seq = tokenizer.encode(to_score(notes, grid))
    seqs = seq if isinstance(seq, list) else [seq]
    if len(seqs) != 1:
        raise ValueError(f"expected one token stream, got {len(seqs)}")
    return np.asarray(seqs[0].ids, dtype=np.int32)


def decode(tokenizer: miditok.MusicTokenizer, ids, grid: Grid) -> Notes:
    """Token ids -> notes on the grid. Ill-formed streams (a model's free output) decode what they can."""
    ids = [int(i) for i in ids if int(i) >= len(SPECIAL)]
    empty = Notes(np.zeros(0, np.uint8), np.zeros(0, np.int32), np.zeros(0, np.int32))
    if not ids:
        return empty
    try:
        score = tokenizer.decode([ids] if not tokenizer.config.use_programs else ids)
    except Exception:  # noqa: BLE001 - MidiTok raises assorted errors on malformed streams
        return empty
    keys, starts, ends, vels = [], [], [], []
    for t in score.tracks:
        n = t.notes.numpy()
        if not len(n["pitch"]):
            continue
        p = n["pitch"].astype(np.int64)
        if t.is_drum:
            k = _DRUM_CLASS_OF[p]
            ok = k >= 0
            k = k + grid.n_pitches
        else:
            ok = (p >= grid.pitch_low) & (p <= grid.pitch_high)
            k = p - grid.pitch_low
        s = n["time"].astype(np.int64)
        e = s + np.maximum(n["duration"].astype(np.int64), 1)
        if t.is_drum:
            e = s + 1
        keys.append(k[ok]), starts.append(s[ok]), ends.append(e[ok]), vels.append(n["velocity"][ok])
    if not keys:
        return empty
    k, s, e, v = (np.concatenate(a) for a in (keys, starts, ends, vels))
    order = np.lexsort((k, s))
    return Notes(k[order].astype(np.uint8), s[order].astype(np.int32), e[order].astype(np.int32),
                 v[order].astype(np.uint8))


def pitch_table(tokenizer: miditok.MusicTokenizer) -> np.ndarray:
    """For each token id, the MIDI pitch it names (Pitch/NoteOn/NoteOff tokens), else -1: what transposition
    moves. Drum tokens (PitchDrum) are not pitches and stay put."""
    table = np.full(len(tokenizer), -1, dtype=np.int64)
    for token, i in tokenizer.vocab.items():
        kind, _, value = token.partition("_")
        if kind in ("Pitch", "NoteOn", "NoteOff"):
            table[i] = int(value)
    return table


def transposer(tokenizer: miditok.MusicTokenizer) -> np.ndarray:
    """ids (n_tokens,) shifted by k semitones: `shift[ids] + k` indexes the (n_vocab, 128) id table."""
    pitch = pitch_table(tokenizer)
    index = {(t.partition("_")[0], int(p)): i for t, i in tokenizer.vocab.items() if (p := pitch[i]) >= 0}
    kinds = {i: t.partition("_")[0] for t, i in tokenizer.vocab.items()}
    out = np.tile(np.arange(len(tokenizer))[:, None], (1, 128))  # out[id, 64 + k]: id moved by k
    for i in np.nonzero(pitch >= 0)[0]:
        for k in range(-64, 64):
            out[i, 64 + k] = index.get((kinds[i], int(pitch[i]) + k), -1)
    return out
