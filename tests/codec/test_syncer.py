"""``Syncer``, the spool's file thread, behaves the same in the Rust core and the pure
twin: tickets in order, one wake-up byte per batch on ``fileno()``, failures reported for
the tickets they cover (the same ``OSError``), body files stored new or appended and
fsynced, removed only after a sync, ``close()`` finishing what was asked and idempotent."""

from __future__ import annotations

import select
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ferrosmtp import _core, _pure


@pytest.fixture(params=[_core, _pure], ids=["rust", "pure"])
def backend(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


def wait_for(syncer: Any, ticket: int) -> tuple[int, list[tuple[int, str]]]:
    """Wait for ``ticket``; the tickets that failed meanwhile, with ``str()`` of their
    errors."""
    deadline = time.monotonic() + 10
    failed: list[tuple[int, str]] = []
    while True:
        select.select([syncer], [], [], 1)
        done, errors = syncer.completed()
        for number, error in errors:
            assert isinstance(error, OSError)
            failed.append((number, str(error)))
        if done >= ticket:
            return done, failed
        assert time.monotonic() < deadline, f"ticket {ticket} never finished"


def test_tickets_finish_in_order_and_wake_the_reader(backend: ModuleType, tmp_path: Path) -> None:
    wal = tmp_path / "queue.db-wal"
    wal.write_bytes(b"frames")
    syncer = backend.Syncer(str(wal), tmp_path)
    try:
        assert syncer.completed() == (0, [])
        first, second = syncer.request(False), syncer.request(True)
        assert (first, second) == (1, 2)
        assert wait_for(syncer, second) == (2, [])
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
        # The same error in both: OSError(errno, strerror), a FileNotFoundError.
        assert wait_for(syncer, ticket) == (
            ticket,
            [(ticket, "[Errno 2] No such file or directory")],
        )
        later = syncer.request(False)  # without the folder: succeeds
        assert wait_for(syncer, later) == (later, [])
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
    assert syncer.completed() == (tickets[-1], [])
    with pytest.raises(OSError, match="closed"):
        syncer.request(False)
    syncer.close()  # idempotent


def test_a_missing_file_is_an_oserror(backend: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        backend.Syncer(tmp_path / "nothing", tmp_path)


def test_stores_write_new_files_or_append_and_sync_them(
    backend: ModuleType, tmp_path: Path
) -> None:
    wal = tmp_path / "queue.db-wal"
    wal.write_bytes(b"frames")
    body = tmp_path / "body"
    syncer = backend.Syncer(wal, tmp_path)
    try:
        first = syncer.store(str(body), b"one ")
        again = syncer.store(body, b"two")  # a new file by a name taken: refused
        more = syncer.store(body, b"three", True)
        assert first < again < more
        assert wait_for(syncer, more) == (more, [(again, "[Errno 17] File exists")])
        assert body.read_bytes() == b"one three"
        assert (body.stat().st_mode & 0o777) == 0o600
        nowhere = syncer.store(tmp_path / "none" / "body", b"x", True)
        assert wait_for(syncer, nowhere) == (
            nowhere,
            [(nowhere, "[Errno 2] No such file or directory")],
        )
    finally:
        syncer.close()


def test_removes_unlink_only_after_a_sync(backend: ModuleType, tmp_path: Path) -> None:
    wal = tmp_path / "queue.db-wal"
    wal.write_bytes(b"frames")
    kept, gone = tmp_path / "kept", tmp_path / "gone"
    kept.write_bytes(b"x")
    gone.write_bytes(b"x")
    broken = backend.Syncer("/dev/null", tmp_path)  # fdatasync fails: EINVAL
    try:
        # The sync fails: the file must stay, as the deletion it follows may not be
        # durable (the spool's recovery removes a body file without a row).
        sync, remove = broken.request(False), broken.remove(kept)
        invalid = "[Errno 22] Invalid argument"
        assert wait_for(broken, remove) == (remove, [(sync, invalid)])
        assert kept.exists()
    finally:
        broken.close()
    syncer = backend.Syncer(wal, tmp_path)
    try:
        first, second = syncer.remove(gone), syncer.remove(tmp_path / "never-there")
        assert wait_for(syncer, second) == (second, [])  # a missing file is no failure
        assert first < second
        assert not gone.exists()
    finally:
        syncer.close()
