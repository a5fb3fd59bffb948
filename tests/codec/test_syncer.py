"""``Syncer``, the spool's fsync thread, behaves the same in the Rust core and the pure
twin: tickets in order, one wake-up byte per sync on ``fileno()``, failures reported for
the tickets they cover, ``close()`` finishing what was asked and idempotent."""

from __future__ import annotations

import select
import time
from pathlib import Path
from types import ModuleType

import pytest

from ferrosmtp import _core, _pure


@pytest.fixture(params=[_core, _pure], ids=["rust", "pure"])
def backend(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


def wait_for(syncer: object, ticket: int) -> tuple[int, int, str | None]:
    deadline = time.monotonic() + 10
    while True:
        select.select([syncer], [], [], 1)
        completed: tuple[int, int, str | None] = syncer.completed()  # type: ignore[attr-defined]
        if completed[0] >= ticket:
            return completed
        assert time.monotonic() < deadline, f"ticket {ticket} never finished"


def test_tickets_finish_in_order_and_wake_the_reader(backend: ModuleType, tmp_path: Path) -> None:
    wal = tmp_path / "queue.db-wal"
    wal.write_bytes(b"frames")
    syncer = backend.Syncer(str(wal), tmp_path)
    try:
        assert syncer.completed() == (0, 0, None)
        first, second = syncer.request(False), syncer.request(True)
        assert (first, second) == (1, 2)
        assert wait_for(syncer, second) == (2, 0, None)
        # completed() emptied the wake-up socket: nothing to read until the next sync.
        assert select.select([syncer], [], [], 0)[0] == []
        third = syncer.request(False)
        assert wait_for(syncer, third)[0] == 3
    finally:
        syncer.close()


def test_a_failed_sync_fails_its_tickets(backend: ModuleType, tmp_path: Path) -> None:
    wal = tmp_path / "queue.db-wal"
    wal.write_bytes(b"frames")
    syncer = backend.Syncer(wal, tmp_path / "no-such-folder")
    try:
        ticket = syncer.request(True)
        done, failed_upto, error = wait_for(syncer, ticket)
        assert (done, failed_upto) == (ticket, ticket)
        assert error == "No such file or directory (os error 2)"  # the same in both
        later = syncer.request(False)  # without the folder: succeeds
        assert wait_for(syncer, later)[:2] == (later, ticket)
    finally:
        syncer.close()


def test_close_finishes_the_syncs_asked_for_and_refuses_more(
    backend: ModuleType, tmp_path: Path
) -> None:
    wal = tmp_path / "queue.db-wal"
    wal.write_bytes(b"frames")
    syncer = backend.Syncer(wal, tmp_path)
    tickets = [syncer.request(i % 2 == 0) for i in range(50)]
    syncer.close()
    assert syncer.completed()[0] == tickets[-1]
    with pytest.raises(OSError, match="closed"):
        syncer.request(False)
    syncer.close()  # idempotent


def test_a_missing_file_is_an_oserror(backend: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        backend.Syncer(tmp_path / "nothing", tmp_path)
