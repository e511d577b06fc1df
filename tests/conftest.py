from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "midi"
SHARED_MIDI = ROOT.parent / "shared" / "data" / "midi"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def shared_midi() -> Path:
    if not SHARED_MIDI.is_dir():
        pytest.skip(f"needs the shared MIDI corpus at {SHARED_MIDI} (present in CI, absent in a plain clone)")
    return SHARED_MIDI


@pytest.fixture
def midi_folder(tmp_path: Path) -> Path:
    """A user-style collection: nested folders, mixed-case extensions, junk files, duplicates, broken files."""
    root = tmp_path / "collection"
    shutil.copytree(FIXTURES, root)
    (root / "folk" / "AprilWaltz.mid").rename(root / "folk" / "AprilWaltz.MIDI")
    (root / "notes.txt").write_text("not music")
    return root
