from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

if "PYTEST_XDIST_WORKER" in os.environ:
    # `make test` runs two pytest-xdist workers on two cores: one torch (OpenMP) thread each, set before any test
    # imports torch, or the workers' thread pools fight over the cores and both slow down
    os.environ.setdefault("OMP_NUM_THREADS", "1")

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


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The whole tiny pipeline run once per test session by `dvc repro` and committed (tests/dvcrepo.py, Built):
    end-to-end tests read it; those that change a repository take `built_copy`. No test changes it."""
    from filelock import FileLock

    from tests.dvcrepo import Built, build

    # Under pytest-xdist every worker has its own basetemp inside one shared folder: the first worker to get the
    # lock builds there and the others read the same build (it is never changed), so it is built once per run.
    xdist = "PYTEST_XDIST_WORKER" in os.environ
    shared = tmp_path_factory.getbasetemp().parent if xdist else tmp_path_factory.getbasetemp()
    root, log = shared / "built", shared / "built" / "first_repro.txt"
    with FileLock(str(shared / "built.lock")):
        if not log.exists():
            shutil.rmtree(root, ignore_errors=True)  # a build that failed part way in another worker
            root.mkdir()
            b = build(root)
            log.write_text(b.first_repro)
    return Built(root / "repo", log.read_text())


@pytest.fixture
def built_copy(built, tmp_path) -> Path:
    """This test's own copy of the built and committed pipeline, to run DVC in and change at will."""
    from tests.dvcrepo import copy_repo

    return copy_repo(built.repo, tmp_path / "repo")


@pytest.fixture
def site():
    from tests.fakesite import Site

    s = Site().start()
    yield s
    s.stop()


def real_files(*subdirs: str, limit: int = 12) -> list[tuple[str, bytes]]:
    """(name, bytes) of real MIDI files: from the shared corpus when present, else the committed fixtures."""
    roots = [SHARED_MIDI / d for d in subdirs] if SHARED_MIDI.is_dir() else []
    roots = [r for r in roots if r.is_dir()] or [FIXTURES / "folk", FIXTURES / "piano", FIXTURES / "pop"]
    paths = sorted(p for r in roots for p in r.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    out, seen = [], set()
    for p in paths:
        data = p.read_bytes()
        if data not in seen:
            seen.add(data)
            out.append((p.name, data))
    return out[:limit]
