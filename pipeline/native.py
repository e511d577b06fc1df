"""The pipeline's compiled C, built at first use and loaded with ctypes: one build for every library (`load`, given
each library's `Native` description, which lives beside the code that calls it: smf_native.SMF_EVENTS for the
event pass of smf.read, near_duplicates.NEAR_SIGNATURES for the near-duplicate signatures,
measures_native.MEASURES for prepare's note measures).

The build: the system C compiler ($CC, else `cc`), the library's flags, once per machine, into
$XDG_CACHE_HOME/midi-pipeline/ (~/.cache/midi-pipeline/ where that is unset), each library named by its stem and a
digest of the C source text, the compiler command, the flags and the platform: an edit of the source builds anew,
and copies of the repository share one build. The compiler writes to a temporary name in that folder, renamed into
place only once complete, so processes building at once (prepare's worker pool) and a process killed mid-build
never leave a half-written library under the real name (a killed build leaves at most its temporary file); a
library that fails to load is built again.

Each library has its fallback, the Python or numpy code its C is held to: where its switch (an environment
variable) is 0, and where it cannot be had (no compiler, a failed build: one warning per process and library).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import subprocess
import sysconfig
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

BUILD_TIMEOUT_S = 120


def compiler() -> list[str]:
    """The C compiler command: $CC (which may carry words, e.g. 'ccache gcc'), else cc."""
    return shlex.split(os.environ.get("CC") or "cc")


def cache_folder() -> Path:
    """$XDG_CACHE_HOME/midi-pipeline, else ~/.cache/midi-pipeline: per user, shared by every checkout."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "midi-pipeline"


class Native(NamedTuple):
    """One C library of the pipeline's: what `load` needs to build it, load it and say what runs without it."""
    source: Path          # the C file
    stem: str             # the library's file name begins with it; its entry point has this name
    flags: tuple[str, ...]
    argtypes: tuple       # the entry point's ctypes signature; it returns a C int
    owner: str            # the module that uses it, for the warning: "<owner>: <what> is unavailable (why);
    what: str             # <fallback>"
    fallback: str
    switch: str           # the environment variable that, set to 0, turns it off
    others: tuple = ()    # the library's other entry points: (name, ctypes signature) pairs, each returning a C int
    prelude: tuple = ()   # C files put before `source` (code it shares with other libraries), compiled with it


RADIX_SORT = Path(__file__).with_name("radix_sort.c")  # a prelude of smf_events.c and note_measures.c


def source_text(spec: Native) -> str:
    """The C text `spec`'s library is built from: its prelude's files, then its source."""
    return "".join(p.read_text() + "\n" for p in spec.prelude) + spec.source.read_text()


def library_path(source: str, cc: list[str], stem: str, flags: tuple[str, ...]) -> Path:
    """Where the library built from `source` with `cc` and `flags` lives: named by `stem` and a digest of the
    source text, the compiler command, the flags and the platform (not of the source's path: copies of the
    repository share it)."""
    parts = [source, *cc, *flags, sysconfig.get_platform()]
    digest = hashlib.sha1("\0".join(parts).encode()).hexdigest()[:16]
    return cache_folder() / f"{stem}_{digest}.so"


def build(source: str, cc: list[str], target: Path, flags: tuple[str, ...]) -> None:
    """Compile `source` (the C text itself, through stdin: the library is that text's, whatever the file holds by
    then) with `flags` to `target`, atomically. Raises OSError (no compiler), CalledProcessError,
    TimeoutExpired."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([*cc, *flags, "-o", tmp, "-x", "c", "-"], input=source, text=True, capture_output=True,
                       check=True, timeout=BUILD_TIMEOUT_S)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path, spec: Native) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for name, argtypes in ((spec.stem, spec.argtypes), *spec.others):
        f = getattr(lib, name)
        f.argtypes = list(argtypes)
        f.restype = ctypes.c_int
    return lib


_loaded: dict[str, ctypes.CDLL | None] = {}  # by stem: a lookup each file, where hashing the spec took microseconds


def load(spec: Native) -> ctypes.CDLL | None:
    """`spec`'s library, loaded, built first where needed; None, with a warning, where it cannot be built or
    loaded. Once per process and library."""
    if spec.stem not in _loaded:
        _loaded[spec.stem] = _build_and_load(spec)
    return _loaded[spec.stem]


def _build_and_load(spec: Native) -> ctypes.CDLL | None:
    try:
        source = source_text(spec)
        cc = compiler()
        path = library_path(source, cc, spec.stem, spec.flags)
        if path.is_file():
            try:
                return _load(path, spec)
            except (OSError, AttributeError):  # damaged, or not ours (no entry point): built again below
                pass
        build(source, cc, path, spec.flags)
        return _load(path, spec)
    # what a missing compiler, a failed build or an unloadable library raise; anything else (prepare's time
    # guard, an interrupt) propagates, and the next call tries again
    except (OSError, subprocess.SubprocessError, AttributeError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        warnings.warn(f"{spec.owner}: {spec.what} is unavailable ({type(e).__name__}: "
                      f"{str(detail).strip()[:300]}); {spec.fallback}", stacklevel=3)
        return None


def enabled(spec: Native) -> bool:
    """False where the library's switch is 0: its caller then runs the reference code."""
    return os.environ.get(spec.switch, "1") != "0"


def library(spec: Native) -> ctypes.CDLL | None:
    """`load(spec)` where its switch is on, else None: what a caller asks for each file."""
    return load(spec) if enabled(spec) else None
