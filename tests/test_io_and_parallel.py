import os
import time

import pytest

from pipeline.atomic import atomic_path, write_bytes
from pipeline.parallel import imap


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_directories_are_replaced_whole(tmp_path):
    target = tmp_path / "d"
    target.mkdir()
    (target / "stale.txt").write_text("x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("y")
    assert os.listdir(target) == ["new.txt"]


def _square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_imap_keeps_order_and_streams(workers):
    seen = []

    def items():
        for i in range(100):
            seen.append(i)
            yield i

    out = imap(_square, items(), workers=workers, chunk=4)
    assert next(out) == 0
    assert len(seen) < 100  # not everything was pulled before the first result
    assert [0] + list(out) == [i * i for i in range(100)]


def _die_on_13(x: int) -> int:
    if x == 13:
        os.kill(os.getpid(), 9)  # what the OOM killer does
    return x * x


def test_a_worker_killed_by_the_os_is_reported_and_the_rest_go_on():
    out = list(imap(_die_on_13, range(40), workers=2, chunk=4, on_crash=lambda x: ("died", x)))
    assert out == [("died", 13) if i == 13 else i * i for i in range(40)]


def _slow_die_on_3(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), 9)
    time.sleep(0.002)  # long enough that the main process is often topping up the queue when the pool breaks
    return x


def test_a_pool_that_breaks_while_chunks_are_being_submitted_still_loses_only_the_killer():
    # Many small chunks: the queue is topped up after every result, so a worker often dies between two
    # submissions, and submitting to the broken pool raised outside the handler (2 runs in 5 failed, 1 in 8 here)
    for _ in range(4):
        out = list(imap(_slow_die_on_3, range(200), workers=2, chunk=2, on_crash=lambda x: ("died", x)))
        assert out == [("died", 3) if i == 3 else i for i in range(200)]


def test_without_a_handler_a_dead_worker_is_an_error():
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool):
        list(imap(_die_on_13, range(20), workers=2, chunk=4))
