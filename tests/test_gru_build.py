"""The fused GRU gate kernels' build (pipeline.gru.gate_kernels) against killed processes and held locks.

Real processes throughout, each test with its own $TORCH_EXTENSIONS_DIR: two real compiles in all (the killed
build's successor, and the stale-files one), about 25 s each on 2 cores.
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]

# gate_kernels() in a fresh process: NONE (with its warnings) or WORKS (the kernels' forward agrees with PyTorch's)
CHECK = """
import warnings, torch
from pipeline.gru import _torch_forward, gate_kernels
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    k = gate_kernels()
for w in caught:
    print("WARNING", w.message)
if k is None:
    print("NONE")
    raise SystemExit
B, H = 3, 5
gi, gh, h = torch.randn(B, 3 * H), torch.randn(B, 3 * H), torch.randn(B, H)
outs = [[torch.empty(B, 2 * H), torch.empty(B, H), torch.empty(B, H), torch.empty(B, H)] for _ in range(2)]
k.forward(gi, gh, h, *outs[0])
_torch_forward(gi, gh, h, *outs[1])
for a, b in zip(*outs):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
print("WORKS")
"""


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_GRU_")}
    return {**env, "TORCH_EXTENSIONS_DIR": str(root), **extra}


def _folder(root: Path) -> Path:
    """The build folder gate_kernels() uses under `root` (the same interpreter and environment as the children)."""
    from pipeline.gru import build_folder

    with mock.patch.dict(os.environ, {"TORCH_EXTENSIONS_DIR": str(root)}):
        return build_folder()


def _start(root: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHECK], cwd=ROOT, env=_env(root, **extra), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _run(root: Path, timeout: float, **extra: str) -> SimpleNamespace:
    """CHECK in a child process; fails the test (instead of hanging it) if the child is not done in `timeout`."""
    start = time.monotonic()
    child = _start(root, **extra)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # its session: the child and any compiler it started
        out, err = child.communicate()
        pytest.fail(f"gate_kernels() still blocked after {timeout} s; stderr: {err[-2000:]}")
    assert child.returncode == 0, err[-3000:]
    return SimpleNamespace(out=out, err=err, seconds=time.monotonic() - start)


def _hold_flock(path: Path):
    f = open(path, "a")
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


@pytest.fixture(scope="module")
def killed_build(tmp_path_factory):
    """A first build SIGKILLed (the OOM killer's way: the Python process alone, so its compiler runs on)
    while load_inline compiles, then a second process's gate_kernels() in the same extensions folder."""
    root = tmp_path_factory.mktemp("torch_extensions")
    folder = _folder(root)
    first = _start(root)
    try:
        deadline = time.monotonic() + 120
        while not (folder / "lock").exists():  # PyTorch's own lock: load_inline is compiling
            assert first.poll() is None, f"the first build ended before it could be killed: {first.stderr.read()}"
            assert time.monotonic() < deadline, "the first build never started compiling"
            time.sleep(0.05)
        time.sleep(1.0)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        left = {p.name for p in folder.iterdir()}
        second = _run(root, timeout=240)
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)  # the killed build's compiler, if still running
        except ProcessLookupError:
            pass
        first.stdout.close()
        first.stderr.close()
    return SimpleNamespace(root=root, folder=folder, left=left, second=second)


def test_a_build_killed_midway_blocks_no_later_run(killed_build):
    """The issue's scenario: SIGKILL during 'building the fused GRU gate kernels' left PyTorch's `lock` file,
    and every later run slept on it forever. Now the next process builds and loads the kernels."""
    assert "lock" in killed_build.left and "built" not in killed_build.left  # what the dead build left
    second = killed_build.second
    assert "WORKS" in second.out, second.out + second.err
    assert "building the fused GRU gate kernels" in second.err
    assert second.seconds < 240
    assert (killed_build.folder / "built").is_file() and not (killed_build.folder / "lock").exists()


def test_stale_locks_of_a_dead_build_are_cleared(tmp_path):
    """Leftovers of a build killed at any point: PyTorch's `lock`, a half-written library and object, and our
    own lock file whose holder died (flock: the kernel released it with the process)."""
    folder = _folder(tmp_path)
    (folder / "lock").touch()
    (folder / f"{folder.name}.so").write_bytes(b"\x7fELF\x02\x01\x01")  # a link cut short
    (folder / "main.o").write_bytes(b"\x7fELF")
    lock_path = folder.with_name(folder.name + ".lock")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)",
                               str(lock_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    holder.stdout.close()
    done = _run(tmp_path, timeout=240)
    assert "WORKS" in done.out, done.out + done.err
    assert "building the fused GRU gate kernels" in done.err
    assert (folder / "built").is_file() and not (folder / "lock").exists()


def test_a_built_extension_loads_without_any_lock(killed_build):
    """Once built, loading takes no lock: neither our build lock, held here, nor a PyTorch `lock` file (which
    load_inline would wait on forever) delays it; with no wait allowed, any attempt to lock would fall back."""
    folder = killed_build.folder
    (folder / "lock").touch()
    try:
        with _hold_flock(folder.with_name(folder.name + ".lock")):
            done = _run(killed_build.root, timeout=60, PIPELINE_GRU_BUILD_WAIT_S="0")
    finally:
        (folder / "lock").unlink()
    assert "WORKS" in done.out and "WARNING" not in done.out, done.out + done.err
    assert "loading the fused GRU gate kernels" in done.err and "building" not in done.err
    print(f"loaded in {done.seconds:.1f} s")


def test_the_wait_for_another_build_is_bounded(tmp_path):
    """Another process holding the build lock (a build in progress, or hung): after PIPELINE_GRU_BUILD_WAIT_S
    the gates fall back to PyTorch ops, with a warning that names the lock and the wait."""
    folder = _folder(tmp_path)
    lock_path = folder.with_name(folder.name + ".lock")
    with _hold_flock(lock_path):
        done = _run(tmp_path, timeout=60, PIPELINE_GRU_BUILD_WAIT_S="2")
    assert "NONE" in done.out, done.out + done.err
    assert str(lock_path) in done.out and "for 2 s" in done.out and "PIPELINE_GRU_BUILD_WAIT_S" in done.out
    assert 2 <= done.seconds < 30
    assert not any(folder.iterdir()), "it built without the lock"


def test_each_environment_keeps_its_own_build():
    """Two virtualenvs sharing one extensions folder: each keeps its build (the build file records the
    environment's include paths, so one shared build was recompiled at every switch); the name is otherwise
    stable, so every run in one environment loads the one build."""
    from pipeline.gru import build_name

    src, cpu = "// source", "model name\t: Xeon\nflags\t\t: avx2\n"
    one = build_name(src, cpu, prefix="/a/.venv", executable="/a/.venv/bin/python")
    assert one == build_name(src, cpu, prefix="/a/.venv", executable="/a/.venv/bin/python")
    others = {build_name(src, cpu, prefix="/b/.venv", executable="/a/.venv/bin/python"),
              build_name(src, cpu, prefix="/a/.venv", executable="/b/.venv/bin/python"),
              build_name(src + " ", cpu, prefix="/a/.venv", executable="/a/.venv/bin/python"),
              build_name(src, cpu.replace("avx2", "sse2"), prefix="/a/.venv", executable="/a/.venv/bin/python")}
    assert len(others) == 4 and one not in others
    assert build_name(src, cpu) == build_name(src, cpu, prefix=sys.prefix, executable=sys.executable)
    assert one.isidentifier()  # the Python module's name too
