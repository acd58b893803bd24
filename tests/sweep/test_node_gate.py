"""The Ray node gate never leaves a lock behind: a task cancelled while it acquires it releases it."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from optim.sweep.ray_tasks import NodeGate


class CancelledOnTheTurn(NodeGate):
    """Ray's cancel arrives (KeyboardInterrupt) just after the shared lock was taken, still inside the turn."""

    @contextmanager
    def _holding(self, path: Path, how: int):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, how)
            yield
            raise KeyboardInterrupt
        finally:
            os.close(fd)


def _free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_task_cancelled_while_entering_its_working_section_releases_the_shared_lock(tmp_path: Path) -> None:
    gate = CancelledOnTheTurn("node", lock_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt), gate.working():
        pass
    assert _free(tmp_path / "optim-ray-quiet.lock")  # a timer on this node can go quiet


def test_working_then_quiet_then_done_leaves_every_lock_free(tmp_path: Path) -> None:
    gate = NodeGate("node", lock_dir=tmp_path)
    with gate.working():
        assert not _free(tmp_path / "optim-ray-quiet.lock")  # building: a timer waits
        with gate.quiet():
            assert not _free(tmp_path / "optim-ray-quiet.lock")
    assert _free(tmp_path / "optim-ray-quiet.lock") and _free(tmp_path / "optim-ray-turn.lock")
