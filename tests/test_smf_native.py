"""smf.read's event pass in C (pipeline/smf_events.c, through pipeline/smf_native.py) against its Python loop, the
reference: the same Song (every field, every part's arrays, dtypes included) or the same error, on every real
file at hand, on hand-made edge cases, and on a few thousand damaged copies of real files; no read past the
data's end; and the Python loop taken wherever the C pass is not (PIPELINE_SMF_NATIVE=0, no compiler, ticks past
int64); and the build's cache safe against processes building at once, a build killed midway and a damaged
library."""
from __future__ import annotations

import ctypes
import dataclasses
import mmap
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from pipeline import smf, smf_native
from pipeline.native import compiler, library_path, source_text
from tests.test_reported import _vlq, smf_bytes

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "midi"
MIDI_SUFFIXES = {".mid", ".midi", ".rmi"}

FIXTURE_FILES = sorted(p for p in FIXTURES.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES)
SHARED_FILES = sorted(p for p in SHARED.rglob("*") if p.is_file()) if SHARED.is_dir() else []


@pytest.fixture(scope="module")
def native():
    """The C library; the test is skipped (with the reason) where this machine cannot build it."""
    lib = smf_native.library()
    if lib is None:
        pytest.skip("no C event reader here (no C compiler, or its build failed): only the Python loop runs")
    return lib


def _read(data: bytes, native: bool) -> tuple[smf.Song | tuple, bool]:
    """smf.read through one path: (the Song, or the error as (type, MidiError reason, message); whether the C
    pass gave the events)."""
    ran = []

    def spy(*args):
        out = real(*args)
        ran.append(out is not None)
        return out

    real = smf_native.scan
    with mock.patch.dict(os.environ, {"PIPELINE_SMF_NATIVE": "1" if native else "0"}), \
            mock.patch.object(smf_native, "scan", spy):
        try:
            return smf.read(data), any(ran)
        except Exception as e:  # noqa: BLE001 -- any error is an outcome to compare, its type included
            return (type(e).__name__, getattr(e, "reason", None), str(e)), any(ran)


def _assert_arrays(x: np.ndarray, y: np.ndarray, what: str) -> None:
    assert x.dtype == y.dtype and x.shape == y.shape, what
    np.testing.assert_array_equal(x, y, err_msg=what)


def _assert_same(a, b) -> None:
    """The same outcome: the same error, or Songs equal field by field, arrays by dtype, shape and values."""
    assert type(a) is type(b)
    if not isinstance(a, smf.Song):
        assert a == b
        return
    for f in dataclasses.fields(smf.Song):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "parts":
            assert len(x) == len(y)
            for i, (p, q) in enumerate(zip(x, y)):
                for g in dataclasses.fields(smf.Part):
                    u, v = getattr(p, g.name), getattr(q, g.name)
                    if isinstance(u, np.ndarray):
                        _assert_arrays(u, v, f"part {i}: {g.name}")
                    else:
                        assert type(u) is type(v) and u == v, f"part {i}: {g.name}"
        elif isinstance(x, np.ndarray):
            _assert_arrays(x, y, f.name)
        else:
            assert type(x) is type(y) and x == y, f.name
    assert list(a.pedals) == list(b.pedals)  # worked out from pedal_events when asked for
    for ch in a.pedals:
        _assert_arrays(a.pedals[ch], b.pedals[ch], f"pedals of channel {ch}")


def _assert_paths_agree(data: bytes) -> tuple[smf.Song | tuple, bool]:
    """Both paths give the same outcome on `data`; that outcome, and whether the C pass ran."""
    got, ran = _read(data, native=True)
    want, ran_python = _read(data, native=False)
    assert not ran_python
    _assert_same(got, want)
    return got, ran


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_every_fixture_reads_the_same_through_both_paths(path, native):
    data = path.read_bytes()
    out, ran = _assert_paths_agree(data)
    # the C pass ran wherever the header let read() get that far
    assert ran or (isinstance(out, tuple) and out[1] in ("not_midi", "smpte_division", "bad_division"))


@pytest.mark.skipif(not SHARED_FILES, reason=f"no shared MIDI collection at {SHARED} (beside the checkout)")
def test_every_shared_file_reads_the_same_through_both_paths(native):
    # one test over ~360 files: a Lakh file takes ~4 ms through the Python loop
    outcomes = {}
    for path in SHARED_FILES:
        out, ran = _assert_paths_agree(path.read_bytes())
        outcomes[path] = out
        assert ran or isinstance(out, tuple), path
    songs = [o for o in outcomes.values() if isinstance(o, smf.Song)]
    assert len(songs) > 300 and sum(s.n_notes for s in songs) > 1_000_000
    errors = {o[1] for o in outcomes.values() if isinstance(o, tuple)}
    assert "invalid_event" in errors  # the C pass's own error path met on a real file


# ---- hand-made edge cases ---------------------------------------------------------------------------------------

def _chunk(body: bytes, cid: bytes = b"MTrk", size: int | None = None) -> bytes:
    return cid + (len(body) if size is None else size).to_bytes(4, "big") + body


def _file(*chunks: bytes, fmt: int = 1, tpq: int = 96) -> bytes:
    return b"MThd" + (6).to_bytes(4, "big") + fmt.to_bytes(2, "big") + len(chunks).to_bytes(2, "big") \
        + tpq.to_bytes(2, "big") + b"".join(chunks)


def _events(*events: tuple[int, bytes]) -> bytes:
    return b"".join(_vlq(d) + e for d, e in events)


ON, OFF = b"\x90", b"\x80"
END = (0, b"\xff\x2f\x00")
EDGE_CASES = {
    # unreleased notes of several keys, recovered in the order of each key's first note-on, some paired FIFO
    "recovery order": _file(_chunk(_events((0, ON + b"\x40\x50"), (0, b"\x3c\x51"), (10, b"\x40\x52"),
                                           (5, b"\x3c\x00"), (5, b"\x43\x53"), (10, b"\x40\x00"), END))),
    # a key byte over 127 ORs into the channel bits: channel 0's key 0x85 pairs with channel 1's key 5
    "key byte over 127": _file(_chunk(_events((0, b"\x90\x85\x40"), (0, b"\x91\x05\x40"), (10, b"\x81\x05\x00"),
                                              (10, b"\x90\xc5\x40"), END))),
    # running status kept across meta and sysex events, and note-on velocity 0 as a note-off
    "running status": _file(_chunk(_events((0, ON + b"\x3c\x40"), (5, b"\xff\x01\x01x"), (5, b"\x3c\x00"),
                                           (0, b"\xf0\x02\x01\xf7"), (5, b"\x3e\x40"), (5, b"\x3e\x00"), END))),
    # a track name whose length runs past its chunk: the name reads on into the next chunk's bytes
    "name past its chunk": _file(_chunk(_events((0, ON + b"\x3c\x40"), (0, b"\xff\x03\x20ab"))),
                                 _chunk(_events((0, ON + b"\x3c\x40"), (96, OFF + b"\x3c\x00"), END))),
    # the last track name wins; a name in the second track only
    "names": _file(_chunk(_events((0, b"\xff\x03\x03one"), (0, b"\xff\x03\x03two"), END)),
                   _chunk(_events((0, b"\xff\x03\x04\xe9t\xe9 "), (0, b"\xc0\x05"), (0, ON + b"\x3c\x40"), END))),
    # a tempo cut short by the end of the file, and one by the end of its chunk (read on into the next chunk)
    "tempo cut short": _file(_chunk(_events((0, b"\xff\x51\x03\x07")))),
    "tempo past its chunk": _file(_chunk(_events((0, b"\xff\x51\x03\x07"))),
                                  _chunk(_events((0, ON + b"\x3c\x40"), END))),
    # time signatures: whole, of two bytes only, too short to read (one byte), and cut by the chunk's end
    "time signatures": _file(_chunk(_events((0, b"\xff\x58\x04\x06\x03\x18\x08"), (5, b"\xff\x58\x02\x03\x02"),
                                            (5, b"\xff\x58\x01\x04"), (5, b"\xff\x58\x04\x02")))),
    # program changes (any data byte, one over 127 too), channel pressure skipped, pedals down and up, type 2
    "programs and pedals": _file(_chunk(_events((0, b"\xc0\x21"), (0, b"\xd0\x40"), (0, b"\xb0\x40\x7f"),
                                                (0, ON + b"\x3c\x40"), (10, b"\xb0\x40\x00"), (0, b"\xc0\xfe"),
                                                (5, ON + b"\x3c\x00"), (0, b"\xb0\x40\x40"),
                                                (0, ON + b"\x3e\x40"), END))),
    "type 2": _file(_chunk(_events((0, b"\xc0\x21"), (0, b"\xb0\x40\x7f"), (0, ON + b"\x3c\x40"), (5, END[1]))),
                    _chunk(_events((0, ON + b"\x3e\x40"), (5, OFF + b"\x3e\x00"), END)), fmt=2),
    # a truncated final event ends the track, whatever kind it is
    "truncated note": _file(_chunk(_events((0, ON + b"\x3c\x40"), (7, ON + b"\x3e")))),
    "truncated program": _file(_chunk(_events((0, ON + b"\x3c\x40"), (7, b"\xc0")))),
    "truncated delta": _file(_chunk(_events((0, ON + b"\x3c\x40")) + b"\x81\x80")),
    "truncated meta": _file(_chunk(_events((0, ON + b"\x3c\x40")) + b"\x05\xff")),
    # chunks that are not tracks are skipped; a chunk length past the file's end
    "foreign chunk": _file(_chunk(b"xyz", cid=b"XFIH"), _chunk(_events((0, ON + b"\x3c\x40"), END))),
    "chunk past the end": _file(_chunk(_events((0, ON + b"\x3c\x40"), (9, OFF + b"\x3c\x00")), size=10_000)),
    "no track chunk": _file(_chunk(b"xyz", cid=b"XFIH")),
    # a data byte where a status byte is needed (no running status yet in the track)
    "invalid event": _file(_chunk(_events((0, ON + b"\x3c\x40"), END)), _chunk(_events((0, b"\x3c\x40")))),
    # program changes in a conductor track and in the notes' own, two at one tick (the later track's wins), one
    # after a note's onset; the same channel in two tracks; a key byte over 255 cannot be, a program byte over 127
    "programs across tracks": _file(_chunk(_events((0, b"\xc0\x10"), (0, b"\xc1\x20"), (48, b"\xc0\x11"), END)),
                                    _chunk(_events((48, b"\xc0\x12"), (0, ON + b"\x3c\x40"), (0, b"\x3e\x40"),
                                                   (10, b"\xc0\xc8"), (0, ON + b"\x3c\x00"), (0, b"\x91\x30\x40"),
                                                   (5, ON + b"\x3e\x00"), (0, b"\x91\x30\x00"), END)),
                                    _chunk(_events((0, ON + b"\x40\x40"), (60, ON + b"\x40\x00"), END))),
    # an onset past 2^32 ticks (sixteen deltas of 2^28 - 1): the parts' packed sort key does not fit, so the
    # reference groups them
    "onset past 2^32": _file(_chunk(_events((0, ON + b"\x3c\x40"), (5, ON + b"\x3c\x00"))
                                    + b"".join(_vlq(2 ** 28 - 1) + b"\xff\x01\x00" for _ in range(17))
                                    + _events((0, ON + b"\x3e\x40"), (5, ON + b"\x3e\x00"), END))),
    # a meta length longer than any buffer: the track ends there
    "huge meta length": _file(_chunk(_events((0, ON + b"\x3c\x40"), (3, b"\xff\x01" + b"\xff" * 12 + b"\x01")))),
}


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_cases_read_the_same_through_both_paths(name, native):
    out, ran = _assert_paths_agree(EDGE_CASES[name])
    assert ran


@pytest.fixture(params=["native", "python"])
def path(request, monkeypatch):
    """smf.read through the C pass (skipped where it cannot be built), or through the Python loop."""
    if request.param == "native":
        request.getfixturevalue("native")
    monkeypatch.setenv("PIPELINE_SMF_NATIVE", "1" if request.param == "native" else "0")
    return request.param


def test_the_edge_cases_are_what_they_claim(path):
    """A few answers spelt out, through each path, so that the edge cases above test what they say."""
    data = EDGE_CASES["name past its chunk"]
    name = smf.read(data).parts[0].name  # 32 bytes long, cut short by the file's end
    assert name.encode("latin-1") == data[data.index(b"ab"):] and name.startswith("abMTrk")
    assert [p.name for p in smf.read(EDGE_CASES["names"]).parts] == ["\xe9t\xe9 "]
    assert smf.read(EDGE_CASES["time signatures"]).time_signatures.tolist() == [[0, 6, 3], [5, 3, 2]]
    assert smf.read(EDGE_CASES["tempo cut short"]).tempos.tolist() == [[0, 7]]
    assert smf.read(EDGE_CASES["tempo past its chunk"]).tempos.tolist() == [[0, 0x074D54]]  # 'M', 'T' of MTrk
    # channel 0's key 0x85 is queued as channel 1's key 5: channel 1's note-off ends it, as channel 1's note
    (part,) = smf.read(EDGE_CASES["key byte over 127"]).parts
    assert part.channel == 1 and part.pitch.tolist() == [5, 5, 0x45] and part.end.tolist() == [10, 20, 20]
    assert [p.program for p in smf.read(EDGE_CASES["programs and pedals"]).parts] == [33, 0xFE]
    with pytest.raises(smf.MidiError, match="0x3c where a status byte"):
        smf.read(EDGE_CASES["invalid event"])


def test_ticks_past_int64_take_the_python_loop_and_stay_exact(native):
    huge = b"\xff" * 9 + b"\x7f"  # a delta of 2^70 - 1
    only_end = _file(_chunk(_events((0, ON + b"\x3c\x40"), (0, OFF + b"\x3c\x00"))
                            + huge + b"\xff\x2f\x00"))
    song, ran = _assert_paths_agree(only_end)
    assert not ran and song.end_tick == 2 ** 70 - 1 and song.n_notes == 1
    note_there = _file(_chunk(_events((0, ON + b"\x3c\x40")) + huge + OFF + b"\x3c\x00"))
    out, ran = _assert_paths_agree(note_there)
    assert not ran and out[:2] == ("MidiError", "too_long")  # the Python loop's answer, kept


# ---- damaged files ----------------------------------------------------------------------------------------------

SPECIAL = np.array([0x00, 0x01, 0x03, 0x7F, 0x80, 0x81, 0x90, 0xB0, 0xC0, 0xD0, 0xF0, 0xF7, 0xFF, 0x2F, 0x51, 0x58],
                   np.uint8)


def _damaged(data: bytes, rng: np.random.Generator) -> bytes:
    """`data` with one to three random changes: cut short, bytes overwritten (random or event-shaped values),
    bytes inserted (long runs of continuation bytes among them) or removed, a chunk length changed."""
    b = bytearray(data)
    for _ in range(rng.integers(1, 4)):
        kind = rng.integers(6)
        at = int(rng.integers(14, max(len(b), 15)))  # past the header: damage where the event pass sees it
        if kind == 0:
            del b[at:]
        elif kind == 1:
            for j in rng.integers(14, max(len(b), 15), rng.integers(1, 5)):
                if j < len(b):
                    b[j] = int(rng.integers(256))
        elif kind == 2:
            b[at:at + 1] = bytes([int(rng.choice(SPECIAL))])
        elif kind == 3:
            fill = 0xFF if rng.random() < 0.5 else 0x80
            b[at:at] = bytes([fill] * int(rng.integers(1, 12)))
        elif kind == 4:
            del b[at:at + int(rng.integers(1, 8))]
        else:
            tracks = [i for i in range(len(b) - 8) if b[i:i + 4] == b"MTrk"]
            if tracks:
                i = int(rng.choice(tracks))
                b[i + 4:i + 8] = int(rng.integers(0, 2 ** 32)).to_bytes(4, "big") if rng.random() < 0.3 else \
                    max(0, int.from_bytes(b[i + 4:i + 8], "big") + int(rng.integers(-20, 21))).to_bytes(4, "big")
    return bytes(b)


FUZZ_BASES = ["midi/folk/AprilWaltz.mid", "midi/pop/pypianoroll_sample2.mid", "reported/sax_bass_names.mid",
              "reported/sustain_pedal.mid", "reported/drums_on_channel3.mid"]
FUZZ_CASES = 3000


def test_damaged_files_read_the_same_through_both_paths(native):
    rng = np.random.default_rng(20261201)
    bases = [(FIXTURES / f).read_bytes() for f in FUZZ_BASES]
    kinds: dict[str, int] = {}
    for k in range(FUZZ_CASES):
        data = _damaged(bases[k % len(bases)], rng)
        try:
            out, _ = _assert_paths_agree(data)
        except AssertionError as e:
            raise AssertionError(f"case {k}: the paths differ on {data.hex()}") from e
        kind = "song" if isinstance(out, smf.Song) else out[1] or out[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    # the damage reaches the interesting paths: songs, invalid events and the int64 fallback among them
    assert kinds["song"] > FUZZ_CASES / 2 and kinds.get("invalid_event", 0) > 20, kinds


def _guarded(data: bytes) -> tuple[mmap.mmap, int]:
    """`data` copied to end exactly where an inaccessible page begins (a read past its end is a segfault): the
    mapping (keep it) and the data's address."""
    page = mmap.PAGESIZE
    n = -(-max(len(data), 1) // page) * page
    m = mmap.mmap(-1, n + page)
    m[n - len(data):n] = data
    buf = ctypes.c_char.from_buffer(m)
    address = ctypes.addressof(buf)
    del buf  # the mapping stays; only the export is released
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(address + n, page, 0) != 0:  # PROT_NONE
        raise OSError(ctypes.get_errno(), "mprotect")
    return m, address + n - len(data)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="guard pages through mprotect: Linux only here")
def test_the_c_pass_never_reads_past_the_data(native):
    # in a child process: a read past the end is a segfault, which would take pytest down with it
    code = f"""
import numpy as np
from pipeline import smf_native
from tests.test_smf_native import FIXTURES, FUZZ_BASES, _damaged, _guarded
lib = smf_native.library()
rng = np.random.default_rng(7)
bases = [(FIXTURES / f).read_bytes() for f in FUZZ_BASES]
n = 0
for k in range({FUZZ_CASES}):
    data = _damaged(bases[k % len(bases)], rng)
    for cut in (len(data), int(rng.integers(14, max(len(data), 15)))):
        m, address = _guarded(data[:cut])
        pos = 8 + int.from_bytes(data[4:8], "big")
        got = smf_native.scan_at(lib, address, cut, pos)
        want = smf_native.scan(data[:cut], pos)
        assert (got is None) == (want is None) and (got is None or all(
            np.array_equal(a, b) for a, b in zip(got, want))), k
        m.close()
        n += 1
print("OK", n)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("OK"), (out.returncode, out.stderr[-2000:])


# ---- the fallback and the build ---------------------------------------------------------------------------------

READ_TWICE = """
import sys, warnings
warnings.simplefilter("default")
from pipeline import smf, smf_native
data = open(sys.argv[1], "rb").read()
a, b = smf.read(data), smf.read(data)
pos = 8 + int.from_bytes(data[4:8], "big")
print("NATIVE" if smf_native.scan(data, pos) is not None else "PYTHON", a.n_notes, b.n_notes)
"""
SAMPLE = FIXTURES / "midi" / "folk" / "AprilWaltz.mid"


def _child(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """READ_TWICE in a fresh process, its build cache in tmp_path/cache."""
    base = {k: v for k, v in os.environ.items() if k not in ("CC", "PIPELINE_SMF_NATIVE")}
    return subprocess.run([sys.executable, "-c", READ_TWICE, str(SAMPLE)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**base, "XDG_CACHE_HOME": str(tmp_path / "cache"), **env})


def test_pipeline_smf_native_0_runs_the_python_loop_and_builds_nothing(tmp_path):
    out = _child(tmp_path, PIPELINE_SMF_NATIVE="0")
    assert out.returncode == 0, out.stderr
    notes = smf.read(SAMPLE.read_bytes()).n_notes
    assert out.stdout.split() == ["PYTHON", str(notes), str(notes)] and "smf_native" not in out.stderr
    assert not (tmp_path / "cache").exists()


def test_without_a_compiler_the_python_loop_runs_with_one_warning(tmp_path):
    out = _child(tmp_path, CC=str(tmp_path / "no-such-cc"))
    assert out.returncode == 0, out.stderr
    notes = smf.read(SAMPLE.read_bytes()).n_notes
    assert out.stdout.split() == ["PYTHON", str(notes), str(notes)]
    assert out.stderr.count("pipeline.smf_native: the C event reader is unavailable") == 1, out.stderr
    assert not [f for f in (tmp_path / "cache").rglob("*") if f.is_file()]  # no temporary file left behind


def test_the_build_is_cached_by_digest_and_a_damaged_library_is_built_again(tmp_path, native):
    out = _child(tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("NATIVE"), out.stderr
    (lib,) = (tmp_path / "cache" / "midi-pipeline").iterdir()  # the library alone: no temporary file left
    assert lib.name.startswith("smf_events_") and lib.suffix == ".so"
    with mock.patch.dict(os.environ, {"XDG_CACHE_HOME": str(tmp_path / "cache")}):
        source, cc, flags = source_text(smf_native.SMF_EVENTS), compiler(), smf_native.FLAGS
        assert library_path(source, cc, "smf_events", flags) == lib
        assert library_path(source + "\n", cc, "smf_events", flags) != lib  # an edit builds anew
        assert library_path(source, [*cc, "-m64"], "smf_events", flags) != lib
    lib.write_bytes(b"not a shared library")  # as a disk error might leave it
    out = _child(tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("NATIVE") and "unavailable" not in out.stderr, out.stderr
    assert lib.read_bytes()[:4] == b"\x7fELF" or sys.platform == "darwin"


def test_processes_building_at_once_share_one_whole_library(tmp_path, native):
    # prepare's worker pool starts with an empty cache: every worker builds, each into its own temporary file
    base = {k: v for k, v in os.environ.items() if k not in ("CC", "PIPELINE_SMF_NATIVE")}
    children = [subprocess.Popen([sys.executable, "-c", READ_TWICE, str(SAMPLE)], cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env={**base, "XDG_CACHE_HOME": str(tmp_path / "cache")}) for _ in range(4)]
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0 and out.startswith("NATIVE") and "unavailable" not in err, err
    (lib,) = (tmp_path / "cache" / "midi-pipeline").iterdir()
    assert lib.name.startswith("smf_events_") and lib.suffix == ".so"


def test_a_build_killed_midway_leaves_nothing_that_is_loaded(tmp_path, native):
    # a compiler that, while tmp_path/hang exists, writes half a library and hangs, else is the real one (the same
    # $CC either way, so the same library name)
    cc = tmp_path / "cc"
    cc.write_text('#!/bin/sh\nif [ -e "$(dirname "$0")/hang" ]; then\n'
                  '  while [ "$1" != "-o" ]; do shift; done; printf \'\\177ELF half\' > "$2"; exec sleep 60\n'
                  f'fi\nexec {shlex.join(compiler())} "$@"\n')
    cc.chmod(0o755)
    (tmp_path / "hang").touch()
    base = {k: v for k, v in os.environ.items() if k not in ("CC", "PIPELINE_SMF_NATIVE")}
    env = {**base, "XDG_CACHE_HOME": str(tmp_path / "cache"), "CC": str(cc)}
    child = subprocess.Popen([sys.executable, "-c", READ_TWICE, str(SAMPLE)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    folder = tmp_path / "cache" / "midi-pipeline"
    deadline = time.monotonic() + 60
    while not (folder.is_dir() and any(f.stat().st_size for f in folder.iterdir())):
        assert time.monotonic() < deadline and child.poll() is None, "the build never started"
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)  # the reader and its compiler, mid-build
    child.communicate()
    assert not list(folder.glob("smf_events_*.so"))  # the half-written file is under its temporary name only
    (tmp_path / "hang").unlink()
    out = subprocess.run([sys.executable, "-c", READ_TWICE, str(SAMPLE)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("NATIVE") and "unavailable" not in out.stderr, out.stderr


@pytest.mark.parametrize("far", [False, True])
def test_the_packed_part_order_is_the_five_key_lexsort(far):
    rng = np.random.default_rng(3)
    n = 5_000
    track, ch, prog = rng.integers(0, 4, n), rng.integers(0, 16, n), rng.integers(0, 256, n)
    start, pitch = rng.integers(0, 50, n) * (1 << 40 if far else 1), rng.integers(0, 128, n)  # many ties
    cols = [np.asarray(c, np.int64) for c in (track, ch, prog, start, pitch)]
    expected = np.lexsort((cols[4], cols[3], cols[2], cols[1], cols[0]))
    assert np.array_equal(smf._part_order(*cols), expected)


def test_a_file_that_fills_the_first_tables_is_read_again_with_the_bounds(native):
    # 12,000 note-ons by running status, never released: 3 bytes a note, past an eighth of the notes' bound
    events = [(0, b"\x90\x3c\x40")] + [(1, bytes([0x3c + k % 24, 0x40])) for k in range(12_000)]
    data = smf_bytes([events])
    assert len(data) // 3 // 8 + 64 < 12_000  # the first capacities cannot hold them
    song, ran = _assert_paths_agree(data)
    assert ran and song.n_notes == 12_001 and song.recovered == 12_001


# ---- both libraries: one build function, built before a pool forks ----------------------------------------------

WARM_THEN_FORK = """
import multiprocessing, shutil, sys
from pathlib import Path
from pipeline import smf
from pipeline.near_duplicates import NearIndex, NearKey, signatures
smf.warm()  # what prepare does before its pool forks: the event reader...
NearIndex(NearKey(6, 256, 0.3)).close()  # ...and the near-duplicate index, which loads the signature pass
folder = Path(sys.argv[2]) / "midi-pipeline"
print(*sorted(f.name.rsplit("_", 1)[0] for f in folder.iterdir()) if folder.is_dir() else ["none"])
shutil.rmtree(folder, ignore_errors=True)  # a worker that built a library now would make the folder again
data = open(sys.argv[1], "rb").read()


def work(_):
    return len(signatures([(p.start, p.pitch) for p in smf.read(data).parts], NearKey(6, 256, 0.3)))


with multiprocessing.get_context("fork").Pool(2) as pool:
    print(*pool.map(work, range(4)))
print("rebuilt" if folder.exists() else "inherited")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
@pytest.mark.parametrize("env, built", [({}, "near_signatures smf_events"),
                                        ({"PIPELINE_NEAR_NATIVE": "0"}, "smf_events"),
                                        ({"PIPELINE_SMF_NATIVE": "0"}, "near_signatures")])
def test_prepare_builds_each_library_switched_on_before_the_workers_fork(tmp_path, native, env, built):
    base = {k: v for k, v in os.environ.items() if k not in ("CC", "PIPELINE_SMF_NATIVE", "PIPELINE_NEAR_NATIVE")}
    cache = tmp_path / "cache"
    out = subprocess.run([sys.executable, "-c", WARM_THEN_FORK, str(SAMPLE), str(cache)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env={**base, "XDG_CACHE_HOME": str(cache), **env})
    assert out.returncode == 0 and "unavailable" not in out.stderr, out.stderr
    assert out.stdout.splitlines() == [built, "2 2 2 2", "inherited"]


def test_each_library_has_its_own_name_and_flags_in_the_cache(tmp_path):
    from pipeline.near_duplicates import NEAR_SIGNATURES
    with mock.patch.dict(os.environ, {"XDG_CACHE_HOME": str(tmp_path)}):
        source, cc = "int f(void) { return 0; }\n", compiler()
        events = library_path(source, cc, "smf_events", smf_native.FLAGS)
        assert events == library_path(source, cc, smf_native.SMF_EVENTS.stem, smf_native.SMF_EVENTS.flags)
        near = library_path(source, cc, NEAR_SIGNATURES.stem, NEAR_SIGNATURES.flags)
        assert events.name.startswith("smf_events_") and near.name.startswith("near_signatures_")
        assert events.name.split("_")[-1] != near.name.split("_")[-1]  # the flags are in the digest
        assert events.parent == near.parent == tmp_path / "midi-pipeline"
