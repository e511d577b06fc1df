"""The reported problem files (tests/fixtures/reported/, from ../shared/data/midi/reported/): each file's right
answer through the stages, and each KIND of fault on more cases than the one file (built here byte by byte)."""
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from symusic import Score

from pipeline import convert, gm, prepare, smf, tokens
from pipeline import params as P
from pipeline.dataset import Split, data_dir
from pipeline.generate import to_midi
from pipeline.instruments import RULES, infer, is_choral, is_voice_part
from pipeline.midi import MidiError, parse, part_notes
from tests.test_prepare import _acquire, run_tables

REPORTED = Path(__file__).parent / "fixtures" / "reported"


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    while n > 0x7F:
        n >>= 7
        out.append(0x80 | (n & 0x7F))
    return bytes(reversed(out))


def smf_bytes(tracks: list[list[tuple[int, bytes]]], tpq: int = 480, fmt: int = 1) -> bytes:
    """A Standard MIDI File from (delta ticks, raw event bytes) lists, one per track; end-of-track added."""
    out = (b"MThd" + (6).to_bytes(4, "big") + fmt.to_bytes(2, "big") + len(tracks).to_bytes(2, "big")
           + tpq.to_bytes(2, "big"))
    for events in tracks:
        body = b"".join(_vlq(d) + e for d, e in events) + b"\x00\xff\x2f\x00"
        out += b"MTrk" + len(body).to_bytes(4, "big") + body
    return out


def _stage_run(files: dict[str, bytes], tmp_path, monkeypatch, filter_=None, **represent):
    """acquire@local -> prepare -> convert on the given files, in a temp working directory."""
    root = tmp_path / "collection"
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    _acquire(root, tmp_path, monkeypatch)
    p = P.parse({"data": {"sources": ["local"], "local": {"path": "x"}}, "prepare": {"workers": 1},
                 "filter": filter_ or {"instruments": ["all"]}, "split": {"valid": 0, "test": 0.5},
                 "represent": represent})
    selected, rejects, _, report = run_tables(p, tmp_path / "data/prepared")
    out = tmp_path / "data/processed" / p.represent.kind
    out.mkdir(parents=True, exist_ok=True)
    meta = convert.run(p, out)
    meta.write(out / "meta.json")
    notes = {}
    for split in ("train", "test"):
        if meta.sequences[split]:
            notes.update(Split(data_dir(), split).notes())
    return selected.to_pylist(), rejects.to_pylist(), report, meta, notes


def _read(name: str) -> bytes:
    return (REPORTED / name).read_bytes()


def _on_channel_10(data: bytes, track: int) -> bytes:
    score = Score.from_midi(data)
    score.tracks[track].is_drum = True
    score.tracks[track].program = 0
    return score.dumps_midi()


# 1. One instrument decision, used everywhere

def test_drums_named_off_channel_10_are_drums_from_prepare_to_the_generated_midi(tmp_path, monkeypatch):
    data = _read("drums_on_channel3.mid")
    selected, rejects, _, meta, notes = _stage_run(
        {"a_drums_on_channel3.mid": data, "b_on_channel10.mid": _on_channel_10(data, 1)}, tmp_path, monkeypatch)
    # the same music with its drums on channel 10 hashes the same: one copy kept, the other a duplicate of it
    assert [r["id"] for r in selected] == ["local/a_drums_on_channel3.mid"]
    dup = next(r for r in rejects if r["id"] == "local/b_on_channel10.mid")
    assert dup["reason"] == "duplicate_content" and dup["duplicate_of"] == "local/a_drums_on_channel3.mid"
    row = selected[0]
    assert row["families"] == ["piano", "drums"] and row["is_drum"] == [False, True] and row["inferred"][1] == "name"
    assert meta.drum_classes and meta.n_keys == meta.n_pitches + len(gm.DRUM_CLASSES)
    (seq,) = notes.values()
    grid = Split(data_dir(), "test").meta.grid
    drum = seq.key >= grid.n_pitches
    classes = [gm.DRUM_CLASS_NAMES[k - grid.n_pitches] for k in seq.key[drum]]
    assert sorted(classes) == sorted(["kick"] * 2 + ["snare"] * 2 + ["closed_hihat"] * 4)
    assert sorted(seq.key[~drum] + 21) == [60, 64, 67, 72]  # the piano, and no drum hit among the keys
    # generated MIDI puts them on channel 10, as their GM pitches
    song = smf.read(to_midi([("x", seq, 0)], grid, program=0))
    drums = [p for p in song.parts if p.on_drum_channel]
    assert len(drums) == 1 and sorted(drums[0].pitch.tolist()) == [36, 36, 38, 38, 42, 42, 42, 42]


def test_drums_named_off_channel_10_are_drum_tokens(tmp_path, monkeypatch):
    _, _, _, meta, notes = _stage_run({"d.mid": _read("drums_on_channel3.mid")}, tmp_path, monkeypatch,
                                      kind="tokens", tokenizer="REMI")
    tok = tokens.load(data_dir() / "tokenizer.json")
    (seq,) = notes.values()
    assert (seq.key >= meta.n_pitches).sum() == 8
    rows = pq.read_table(data_dir() / meta.parts[0]).to_pylist()
    names = [tok[int(i)] for i in rows[0]["tokens"]]
    assert sum(n.startswith("PitchDrum_") for n in names) == 8 and "Program_-1" in names
    assert not any(n in ("Pitch_36", "Pitch_38", "Pitch_42") for n in names)


def test_a_program_belongs_to_its_channel_across_tracks(tmp_path, monkeypatch):
    selected, _, _, _, _ = _stage_run({"p.mid": _read("prog_other_track.mid")}, tmp_path, monkeypatch,
                                      {"instruments": ["bass"]})
    assert len(selected) == 1 and selected[0]["programs"] == [33] and selected[0]["families"] == ["bass"]


def test_program_state_follows_time_and_file_type():
    pc = lambda ch, prog: bytes([0xC0 | ch, prog])  # noqa: E731
    on = lambda ch, key: bytes([0x90 | ch, key, 100])  # noqa: E731
    off = lambda ch, key: bytes([0x80 | ch, key, 0])  # noqa: E731
    conductor = [(0, pc(1, 33)), (960, pc(1, 40))]            # bass, then a violin from beat 2, on channel 2
    player = [(0, on(1, 40)), (480, off(1, 40)), (480, on(1, 45)), (480, off(1, 45))]
    parts = smf.read(smf_bytes([conductor, player])).parts
    assert [(p.track, p.program, p.pitch.tolist()) for p in parts] == [(1, 33, [40]), (1, 40, [45])]
    # a type-2 file's tracks are separate songs: the other track's program does not reach this one
    parts = smf.read(smf_bytes([conductor, player], fmt=2)).parts
    assert [(p.program, p.pitch.tolist()) for p in parts] == [(0, [40, 45])]


# 2. Name rules that cannot misfire across a whole file

def test_sax_names_do_not_make_a_choral_score(tmp_path, monkeypatch):
    data = _read("sax_bass_names.mid")
    selected, _, _, _, _ = _stage_run({"s.mid": data}, tmp_path, monkeypatch,
                                      {"instruments": ["bass", "drums"], "mode": "tracks"})
    assert [(r["families"], r["is_drum"]) for r in selected] == [(["bass"], [False]), (["drums"], [True])]
    names = [p.name for p in smf.read(data).parts]
    assert not is_choral(names)
    assert [infer(p.program, p.on_drum_channel, p.name, False).family for p in smf.read(data).parts] == [
        "reed", "reed", "bass", "drums"]


# one row per rule (in RULES order), each with the names that must NOT match it
RULE_ROWS = [
    ("drum channel", (0, True, "Piano", False), "drums", [(0, False, "Piano", False)]),
    ("drum name", (0, False, "Bass Drum", True), "drums",
     [(0, False, "Bass", False), (0, False, "Drummond Theme", False)]),
    ("voice part", (0, False, "Bass", True), "ensemble",
     [(0, False, "Bass", False), (0, False, "Alto Sax", True), (0, False, "Tenor Horn", True),
      (0, False, "Bass Guitar", True), (33, False, "Bass", True)]),
    ("family name", (0, False, "Tenor Sax", False), "reed",
     [(0, False, "Grand Piano", False), (0, False, "Untitled", False), (40, False, "Tenor Sax", False)]),
    ("program", (40, False, "Bass", False), "strings", []),
]


def _decider(program, is_drum, name, choral) -> str:
    from pipeline.instruments import Part

    part = Part(program, is_drum, name, choral)
    return next(rule_name for rule_name, rule in RULES if rule(part) is not None)


def test_the_rule_table_has_one_row_per_rule_in_order():
    assert [r[0] for r in RULE_ROWS] == [name for name, _ in RULES]


@pytest.mark.parametrize("rule,part,family,not_matching", RULE_ROWS, ids=[r[0] for r in RULE_ROWS])
def test_each_name_rule_decides_its_row_and_not_the_others(rule, part, family, not_matching):
    assert _decider(*part) == rule and infer(*part).family == family
    for other in not_matching:
        assert _decider(*other) != rule, other


def test_voice_parts_and_choral_files():
    assert all(is_voice_part(n) for n in ["Soprano", "Alto", "Tenor 2", "Bass", "Basso", "Soprano Voice", "Choir"])
    assert not any(is_voice_part(n) for n in ["Alto Sax", "Bass Drum", "Tenor Horn", "Bass Guitar",
                                              "Soprano Recorder", "Baritone Sax", "Fretless Bass"])
    assert is_choral(["Soprano", "Alto", "Tenor", "Bass"])
    assert not is_choral(["Alto Sax", "Tenor Sax", "Bass", "Bass Drum"]) and not is_choral(["Bass", "Drums"])


# 3. Timing values checked with measures that cannot overflow

@pytest.mark.parametrize("name", ["huge_tick_a.mid", "huge_tick_b.mid"])
def test_onsets_near_2_to_the_31_are_too_long(name, tmp_path, monkeypatch):
    data = _read(name)
    assert smf.read(data).end_tick >= 2 ** 31 - 1  # exact, where symusic's int32 end can wrap
    good = smf_bytes([[(0, b"\x90\x3c\x40"), (96, b"\x80\x3c\x00")]], tpq=96)
    root = {name: data, "good.mid": good}
    root_dir = tmp_path / "c"
    root_dir.mkdir()
    for k, v in root.items():
        (root_dir / k).write_bytes(v)
    _acquire(root_dir, tmp_path, monkeypatch)
    p = P.parse({"data": {"sources": ["local"], "local": {"path": "x"}}, "prepare": {"workers": 1}})
    _, rejects, *_ = run_tables(p)
    (r,) = [r for r in rejects.to_pylist() if r["id"] == f"local/{name}"]
    assert r["reason"] == "too_long" and r["notes"] == 6


def _inspect(data: bytes, **prepare_params) -> dict:
    # these files hold one note: the pitch-class entropy filter (one pitch class) is beside the point here
    p = P.parse({"filter": {"min_pitch_class_entropy": 0}, **({"prepare": prepare_params} if prepare_params else {})})
    return prepare.inspect(("x", data), prepare.Config.from_params(p))


def test_absurd_tempos_are_rejected_and_bad_time_signatures_ignored_with_a_count():
    note = [(0, b"\x90\x3c\x40"), (480, b"\x80\x3c\x00")]
    zero = smf_bytes([[(0, b"\xff\x51\x03\x00\x00\x00")] + note])
    assert _inspect(zero)["reason"] == "bad_tempo"
    fast = smf_bytes([[(0, b"\xff\x51\x03\x00\x00\x10")] + note])  # 16 us a beat: 3.75 M bpm
    assert _inspect(fast)["reason"] == "bad_tempo" and "reason" not in _inspect(fast, max_bpm=1e7)
    bad_sig = smf_bytes([[(0, b"\xff\x58\x04\x00\x09\x18\x08")] + note])  # 0/512 time
    res = _inspect(bad_sig)
    assert "reason" not in res and res["ignored"] == {"invalid_time_signature": 1}
    assert smf.seconds(np.array([480]), smf.read(smf_bytes([note]))).tolist() == [0.5]  # 120 bpm by default


def test_a_very_long_delta_is_exact():
    far = smf_bytes([[(0, b"\x90\x3c\x40"), (0x0FFFFFFF, b"\x80\x3c\x00"), (0x0FFFFFFF, b"\x90\x3e\x40"),
                      (10, b"\x80\x3e\x00")]], tpq=1)
    song = smf.read(far)
    assert song.end_tick == 2 * 0x0FFFFFFF + 10 and song.parts[0].end.dtype == np.int64


# 4. Nothing vanishes silently

def test_note_ons_without_note_offs_are_recovered_by_rule_and_counted():
    on = lambda ch, key: bytes([0x90 | ch, key, 100])  # noqa: E731
    drums = [(0, on(9, 36)), (240, on(9, 42)), (240, on(9, 38)), (240, on(9, 42))]    # never released
    piano = [(0, on(0, 60)), (480, on(0, 64)), (480, on(0, 60)), (480, b"\x80\x40\x00"), (480, b"\xff\x01\x00")]
    song = smf.read(smf_bytes([drums, piano]))
    assert song.note_ons == 7 and song.n_notes == 7 and song.recovered == 6
    piano_part = next(p for p in song.parts if not p.on_drum_channel)
    got = sorted(zip(piano_part.pitch.tolist(), piano_part.start.tolist(), piano_part.end.tolist()))
    # 64 has its note-off; the first 60 ends where 60 is struck again; the second at the end of its track
    assert got == [(60, 0, 960), (60, 960, 1920), (64, 480, 1440)]
    assert symusic_notes(smf_bytes([drums, piano])) == 1  # what the parser alone keeps
    # downstream a drum hit is one grid step whatever its length
    from pipeline.pianoroll import Grid, quantize

    notes, _ = quantize([part_notes(song, i) for i in range(len(song.parts))], Grid(4, 21, 108, drums=True))
    assert (notes.end - notes.start)[notes.key >= 88].tolist() == [1, 1, 1, 1]


def symusic_notes(data: bytes) -> int:
    return parse(data).note_num()


def test_notes_in_equal_notes_selected_plus_notes_dropped_per_file(tmp_path, monkeypatch):
    files = {p.name: p.read_bytes() for p in sorted(REPORTED.glob("*.mid"))}
    files.update({f"folk_{p.name}": p.read_bytes() for p in sorted((REPORTED.parent / "midi" / "pop").glob("*.mid"))})
    selected, rejects, report, meta, _ = _stage_run(files, tmp_path, monkeypatch, {"instruments": ["pitched"]})
    acc = report["note_accounting"]
    kept = sum(r["n_notes"] for r in selected)
    assert acc["notes_in"] == kept + sum(acc["dropped"].values())
    assert acc["dropped"]["instrument_filtered"] > 0 and acc["dropped"]["too_long"] == 12
    # convert: every selected note is on the grid, outside the keys, or one of a unison (counted)
    assert kept == sum(meta.notes.values()) + meta.notes_outside_range + meta.notes_merged_unison


# 5. The formats people have

def test_riff_wrapped_midi_is_read_as_the_midi_inside_and_found_by_the_local_source(tmp_path, monkeypatch):
    data = _read("rmid_wrapped.rmi")
    inner = smf.unwrap(data)
    assert inner[:4] == b"MThd" and data[:4] == b"RIFF"
    assert parse(data).note_num() == parse(inner).note_num() == smf.read(data).n_notes > 0
    selected, rejects, _, _, _ = _stage_run({"song.rmi": data}, tmp_path, monkeypatch)
    assert [r["id"] for r in selected] == ["local/song.rmi"] and selected[0]["n_notes"] == smf.read(inner).n_notes
    with pytest.raises(MidiError) as e:
        smf.unwrap(data[:30])
    assert e.value.reason == "truncated"


@pytest.mark.parametrize("sustain,lengths", [(True, [16, 12, 8, 4]), (False, [1, 1, 1, 1])])
def test_the_sustain_pedal_holds_notes_until_it_lifts(sustain, lengths, tmp_path, monkeypatch):
    _, _, _, _, notes = _stage_run({"p.mid": _read("sustain_pedal.mid")}, tmp_path, monkeypatch, sustain=sustain)
    (seq,) = notes.values()
    assert seq.start.tolist() == [0, 4, 8, 12] and (seq.end - seq.start).tolist() == lengths


def test_a_key_struck_again_under_the_pedal_ends_there():
    cc = lambda v: bytes([0xB0, 64, v])  # noqa: E731
    events = [(0, cc(127)), (0, b"\x90\x3c\x40"), (120, b"\x80\x3c\x00"), (360, b"\x90\x3c\x40"),
              (120, b"\x80\x3c\x00"), (1440, cc(0))]
    song = smf.read(smf_bytes([events]))
    part = song.parts[0]
    assert smf.sustained(part, song.pedals).tolist() == [480, 2040] and part.end.tolist() == [120, 600]


# 7. A killed process leaves nothing that blocks the next run (the GRU build lock: tests/test_gru_build.py)

def test_training_logs_cut_short_by_a_kill_do_not_block_a_resume(tmp_path, monkeypatch):
    from pipeline import train

    monkeypatch.chdir(tmp_path)
    plots = train.LIVE / "plots" / "metrics" / "train"
    plots.mkdir(parents=True)
    (plots / "loss.tsv").write_text("timestamp\tstep\tloss\n1\t0\t0.5\n2\t1\t0.4\n3\t2\t0.3\n")
    (plots / "lr.tsv").write_text("")                       # emptied by a kill mid-rewrite
    (train.LIVE / "metrics.json").write_text('{"step": 2, "tra')  # cut short the same way
    train._truncate_logs(2)
    assert (plots / "loss.tsv").read_text().splitlines() == ["timestamp\tstep\tloss", "1\t0\t0.5", "2\t1\t0.4"]
    assert not (plots / "lr.tsv").exists() and not (train.LIVE / "metrics.json").exists()
    assert sorted(p.name for p in plots.iterdir()) == ["loss.tsv"]  # no temporary file left behind
