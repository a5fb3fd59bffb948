"""The queue interface, run against every backend (the ``queue`` fixture): put, lease,
record, retry, delete, list, recovery; then what only the SQLite spool has (group commit,
body files, corruption, a full disk)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ferrosmtp.relay.queue import (
    Envelope,
    Outcome,
    Queue,
    QueueEntry,
    QueueError,
    QueueFull,
    Recipient,
    RecipientResult,
)
from ferrosmtp.relay.sqlite import SqliteQueue
from tests.peers import missing
from tests.relay.support import run


def envelope(*recipients: str, sender: str = "a@x.test") -> Envelope:
    return Envelope(sender, [Recipient(r) for r in recipients or ("b@y.test",)])


async def put(queue: Queue, data: bytes, env: Envelope | None = None, **kw: Any) -> QueueEntry:
    body = queue.new_body()
    for i in range(0, len(data), 65536):
        await body.write(data[i : i + 65536])
    return await queue.put(env or envelope(), body, **kw)


async def opened(queue: Queue) -> Queue:
    await queue.open()
    return queue


def test_put_then_lease_returns_the_message_and_body(queue: Queue) -> None:
    async def main() -> None:
        await queue.open()
        try:
            entry = await put(queue, b"Subject: x\r\n\r\nhi\r\n", envelope("b@y.test", "c@z.test"))
            assert entry.size == 18
            leased = await queue.lease(10, 60)
            assert [e.id for e in leased] == [entry.id]
            got = leased[0]
            assert [r.address for r in got.pending] == ["b@y.test", "c@z.test"]
            assert await queue.read_body(got) == b"Subject: x\r\n\r\nhi\r\n"
            assert await queue.lease(10, 60) == []  # leased: not handed out twice
        finally:
            await queue.close()

    run(main())


def test_record_keeps_pending_recipients_and_deletes_when_done(queue: Queue) -> None:
    async def main() -> None:
        await queue.open()
        try:
            entry = await put(queue, b"x\r\n", envelope("b@y.test", "c@y.test", "d@y.test"))
            (leased,) = await queue.lease(10, 60)
            results = [
                RecipientResult("b@y.test", Outcome.SENT, "2.0.0", "250 ok"),
                RecipientResult("c@y.test", Outcome.BOUNCED, "5.1.1", "550 no such user"),
                RecipientResult("d@y.test", Outcome.PENDING, "4.2.0", "451 try later"),
            ]
            await queue.record(leased, results, time.time() + 300, "451 try later")
            (listed,) = await queue.list()
            assert listed.id == entry.id
            assert [r.address for r in listed.pending] == ["d@y.test"]
            assert listed.attempts == 1 and listed.last_error == "451 try later"
            assert listed.next_attempt > time.time() + 200
            assert await queue.lease(10, 60) == []  # not due yet
            assert await queue.retry(entry.id) == 1
            (again,) = await queue.lease(10, 60)
            assert [r.address for r in again.pending] == ["d@y.test"]
            await queue.record(again, [RecipientResult("d@y.test", Outcome.SENT)], None)
            assert await queue.list() == []
        finally:
            await queue.close()

    run(main())


def test_a_message_deleted_during_its_delivery_stays_deleted(queue: Queue) -> None:
    """``queue delete`` of a leased message: the delivery's record finds it gone, says so
    (False), and neither requeues it nor fails; a final attempt's record is harmless (its
    value is left open: PostgreSQL cannot tell a deleted row from a retried commit)."""

    async def main() -> None:
        await queue.open()
        try:
            await put(queue, b"x\r\n", envelope("b@y.test", "c@y.test"))
            await put(queue, b"y\r\n", envelope("d@y.test"))
            deferred, sent = await queue.lease(10, 60)
            assert await queue.delete(deferred.id) == 1
            assert await queue.delete(sent.id) == 1
            pending = [
                RecipientResult("b@y.test", Outcome.SENT),
                RecipientResult("c@y.test", Outcome.PENDING, "4.2.0", "451 later"),
            ]
            assert await queue.record(deferred, pending, time.time(), "451 later") is False
            await queue.record(sent, [RecipientResult("d@y.test", Outcome.SENT)], None)
            assert await queue.list() == [] and await queue.lease(10, 60) == []
            assert await queue.get(deferred.id) is None
            # A message still queued is recorded as before.
            await put(queue, b"z\r\n", envelope("e@y.test"))
            (again,) = await queue.lease(10, 60)
            later = [RecipientResult("e@y.test", Outcome.PENDING, "4.2.0", "451 later")]
            assert await queue.record(again, later, time.time() + 300, "451 later") is True
            assert [e.id for e in await queue.list()] == [again.id]
        finally:
            await queue.close()

    run(main())


def test_recover_ends_leases_left_by_a_crash(make_queue: Any) -> None:
    async def main() -> None:
        first = await opened(make_queue())
        entry = await put(first, b"x\r\n")
        assert [e.id for e in await first.lease(10, 3600)] == [entry.id]
        await first.close()  # the process "dies" with the lease held
        second = await opened(make_queue())
        try:
            assert await second.lease(10, 60) == []
            assert await second.recover() == 1
            assert [e.id for e in await second.lease(10, 60)] == [entry.id]
        finally:
            await second.close()

    run(main())


def test_put_leased_hands_the_message_to_its_caller(queue: Queue) -> None:
    async def main() -> None:
        await queue.open()
        try:
            entry = await put(queue, b"x\r\n", lease=60)
            assert entry.lease_until is not None
            assert await queue.lease(10, 60) == []
            await queue.release(entry)
            assert [e.id for e in await queue.lease(10, 60)] == [entry.id]
        finally:
            await queue.close()

    run(main())


def test_delete_and_list_and_counts(queue: Queue) -> None:
    async def main() -> None:
        await queue.open()
        try:
            ids = [(await put(queue, b"m%d\r\n" % i)).id for i in range(5)]
            listed = await queue.list()
            assert [e.id for e in listed] == ids
            data = listed[0].to_json()
            for key in (
                "id",
                "sender",
                "recipients",
                "size",
                "arrival",
                "attempts",
                "next_attempt",
                "last_error",
            ):
                assert key in data
            await queue.lease(2, 60)
            counts = await queue.counts()
            assert counts["active"] == 2 and counts["incoming"] == 3
            assert await queue.delete(ids[0]) == 1
            assert await queue.delete("nonexistent") == 0
            assert len(await queue.list()) == 4
            assert await queue.delete(None) == 4
            assert await queue.list() == []
        finally:
            await queue.close()

    run(main())


def test_aborted_body_leaves_nothing(queue: Queue) -> None:
    async def main() -> None:
        await queue.open()
        try:
            body = queue.new_body()
            await body.write(b"x" * (1 << 20))
            await body.abort()
            assert await queue.list() == []
        finally:
            await queue.close()

    run(main())


def test_big_bodies_round_trip(queue: Queue) -> None:
    data = os.urandom(3 << 20)

    async def main() -> None:
        await queue.open()
        try:
            await put(queue, data)
            (leased,) = await queue.lease(1, 60)
            assert await queue.read_body(leased) == data
        finally:
            await queue.close()

    run(main())


# --- the SQLite spool -------------------------------------------------------------------


def test_sqlite_concurrent_puts_share_commits(tmp_path: Path) -> None:
    async def main() -> int:
        queue = SqliteQueue(tmp_path / "spool")
        await queue.open()
        try:
            writer = queue._spool_writer
            assert writer is not None
            before = writer.batches
            await asyncio.gather(*(put(queue, b"m\r\n") for _ in range(50)))
            assert len(await queue.list()) == 50
            return writer.batches - before
        finally:
            await queue.close()

    batches = run(main())
    assert batches < 25, f"50 concurrent puts took {batches} commits"


class _HeldSyncer:
    """A syncer that syncs only when told to (``release``), or fails (``release(error)``);
    body files are stored at once."""

    def __init__(self, file: str, folder: str) -> None:
        import socket

        self.requested = 0
        self.done = 0
        self.failed: list[tuple[int, OSError]] = []
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)

    def fileno(self) -> int:
        return self._r.fileno()

    def request(self, folder: bool) -> int:
        self.requested += 1
        return self.requested

    def store(self, path: str, data: bytes, append: bool = False) -> int:
        with open(path, "ab" if append else "xb") as f:
            f.write(data)
        self.requested += 1
        self.done = self.requested
        self._w.send(b"\0")
        return self.requested

    def remove(self, path: str) -> int:
        self.requested += 1
        return self.requested

    def completed(self) -> tuple[int, list[tuple[int, OSError]]]:
        try:
            self._r.recv(4096)
        except BlockingIOError:
            pass
        failed, self.failed = self.failed, []
        return self.done, failed

    def release(self, error: OSError | None = None) -> None:
        if error is not None:
            self.failed.extend((t, error) for t in range(self.done + 1, self.requested + 1))
        self.done = self.requested
        self._w.send(b"\0")

    def close(self) -> None:
        self.release()
        self._r.close()
        self._w.close()


def test_sqlite_a_put_is_answered_only_once_its_commit_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop commits; the put waits for the syncer's fdatasync of the WAL. A
    sync that fails answers the put with an error and takes its row back (the client
    hears 451 and sends the message again: it must not be delivered twice)."""
    from ferrosmtp.relay import sqlite as sqlite_module

    syncers: list[_HeldSyncer] = []

    def held(file: str, folder: str) -> _HeldSyncer:
        syncers.append(_HeldSyncer(file, folder))
        return syncers[-1]

    monkeypatch.setattr(sqlite_module.codec, "Syncer", held)

    async def main() -> None:
        queue = SqliteQueue(tmp_path / "spool")
        await queue.open()
        (syncer,) = syncers
        try:
            pending = asyncio.ensure_future(put(queue, b"kept\r\n"))
            done, _ = await asyncio.wait([pending], timeout=0.2)
            assert not done, "a put was answered before its sync"
            assert syncer.requested == 1
            assert len(await queue.list()) == 1  # committed, not yet durable
            syncer.release()
            kept = await asyncio.wait_for(pending, 5)

            failing = asyncio.ensure_future(put(queue, b"lost\r\n"))
            for _ in range(100):
                if syncer.requested == 2:
                    break
                await asyncio.sleep(0.01)
            syncer.release(OSError(5, "Input/output error"))
            with pytest.raises(QueueError, match=r"sync failed: \[Errno 5\] Input/output error"):
                await asyncio.wait_for(failing, 5)
            for _ in range(100):  # the row goes with the next commit (a lazy one)
                if len(await queue.list()) == 1:
                    break
                await asyncio.sleep(0.01)
            assert [e.id for e in await queue.list()] == [kept.id]
        finally:
            await queue.close()

    run(main())


def test_sqlite_writers_of_one_spool_take_turns_on_a_lock_file(tmp_path: Path) -> None:
    """The workers of one spool commit in turn, woken by flock when the other is done
    (SQLite alone makes a waiting writer sleep and poll)."""
    import fcntl

    async def main() -> None:
        queue = SqliteQueue(tmp_path / "spool")
        await queue.open()
        other = os.open(tmp_path / "spool" / "queue.db-turn", os.O_RDWR)
        try:
            fcntl.flock(other, fcntl.LOCK_EX)  # another worker is committing
            pending = asyncio.ensure_future(put(queue, b"m\r\n"))
            done, _ = await asyncio.wait([pending], timeout=0.3)
            assert not done, "a put committed while another writer held the turn"
            fcntl.flock(other, fcntl.LOCK_UN)
            entry = await asyncio.wait_for(pending, 5)
            assert [e.id for e in await queue.list()] == [entry.id]
        finally:
            os.close(other)
            await queue.close()

    run(main())


def test_sqlite_small_bodies_stay_in_the_database_big_ones_in_files(tmp_path: Path) -> None:
    async def main() -> None:
        queue = SqliteQueue(tmp_path / "spool", inline_limit=1000)
        await queue.open()
        try:
            small = await put(queue, b"s" * 1000)
            big = await put(queue, b"b" * 1001)
            files = sorted(p.name for p in (tmp_path / "spool" / "bodies").iterdir())
            assert files == [big.id]
            assert small.id not in files
        finally:
            await queue.close()

    run(main())


def test_sqlite_body_files_are_written_at_the_end_up_to_the_spill_limit(tmp_path: Path) -> None:
    """A body over the inline limit but within the spill limit is written to its file
    only at put (in one go), is handed back for a delivery at once instead of being read
    back, and its file still goes once the message is delivered; a bigger body goes to
    its file as it arrives."""

    async def main() -> None:
        queue = SqliteQueue(tmp_path / "spool", inline_limit=10, spill_limit=100)
        bodies = tmp_path / "spool" / "bodies"
        await queue.open()
        try:
            body = queue.new_body()
            await body.write(b"m" * 60)
            await body.write(b"m" * 40)
            assert list(bodies.iterdir()) == []  # 100 octets: still in memory
            entry = await queue.put(envelope(), body, lease=60)
            assert (bodies / entry.id).read_bytes() == b"m" * 100
            assert entry.body == b"m" * 100  # no reading back for the delivery
            sent = [RecipientResult("b@y.test", Outcome.SENT, "2.0.0", "250 ok")]
            assert await queue.record(entry, sent, None)
            # The syncer unlinks the file once the deletion is synced, soon after.
            for _ in range(500):
                if not list(bodies.iterdir()):
                    break
                await asyncio.sleep(0.01)
            assert list(bodies.iterdir()) == []

            big = queue.new_body()
            await big.write(b"b" * 101)
            assert [p.name for p in bodies.iterdir()] == [big.id]  # spilled as it came
            await big.write(b"c" * 9)
            unleased = await queue.put(envelope(), big)
            assert unleased.body is None  # not delivered at once: not kept in memory
            (leased,) = await queue.lease(1, 60)
            assert await queue.read_body(leased) == b"b" * 101 + b"c" * 9
        finally:
            await queue.close()

    run(main())


@pytest.mark.parametrize("size", [100, 300], ids=["stored", "spilled"])
def test_sqlite_a_body_file_by_the_same_name_is_left_alone(tmp_path: Path, size: int) -> None:
    """Were a queue id ever drawn twice, the second body must fail without removing the
    first one's file (a message already acknowledged)."""

    async def main() -> None:
        queue = SqliteQueue(tmp_path / "spool", inline_limit=10, spill_limit=200)
        await queue.open()
        try:
            body = queue.new_body()
            taken = tmp_path / "spool" / "bodies" / body.id
            taken.write_bytes(b"another message")
            with pytest.raises(QueueError):
                await body.write(b"m" * size)
                await queue.put(envelope(), body)
            assert taken.read_bytes() == b"another message"
            assert await queue.list() == []
        finally:
            await queue.close()

    run(main())


def test_sqlite_missing_or_short_body_file_is_reported_not_fatal(tmp_path: Path) -> None:
    async def main() -> None:
        queue = SqliteQueue(tmp_path / "spool", inline_limit=10)
        await queue.open()
        try:
            gone = await put(queue, b"g" * 100)
            short = await put(queue, b"s" * 100)
            (tmp_path / "spool" / "bodies" / gone.id).unlink()
            (tmp_path / "spool" / "bodies" / short.id).write_bytes(b"s" * 10)
            listed = {e.id: e for e in await queue.list()}
            assert listed[gone.id].corrupt == "body file missing"
            assert "10 octets" in (listed[short.id].corrupt or "")
            leased = await queue.lease(10, 60)
            for entry in leased:
                with pytest.raises(Exception, match="body file"):
                    await queue.read_body(entry)
            assert await queue.lease(10, 60) == []  # held, not retried in a loop
            counts = await queue.counts()
            assert counts["corrupt"] == 2
        finally:
            await queue.close()

    run(main())


def test_sqlite_orphan_body_files_are_removed_at_recovery(tmp_path: Path) -> None:
    async def main() -> None:
        queue = SqliteQueue(tmp_path / "spool", inline_limit=10)
        await queue.open()
        try:
            kept = await put(queue, b"k" * 100)
            (tmp_path / "spool" / "bodies" / "ORPHAN").write_bytes(b"cut off mid-message")
            await queue.recover()
            names = [p.name for p in (tmp_path / "spool" / "bodies").iterdir()]
            assert names == [kept.id]
        finally:
            await queue.close()

    run(main())


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 4 MiB tmpfs (root only: CI runs as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        missing("mounting a small tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("spill_limit", [256 << 10, 16 << 20], ids=["spilled", "stored"])
def test_sqlite_full_disk_raises_queue_full_and_keeps_nothing(
    small_disk: Path, spill_limit: int
) -> None:
    """Whether the body went to its file as it came (spilled) or was written at the end
    by the syncer (stored), a full disk is QueueFull and no part of the file stays."""

    async def main() -> None:
        queue = SqliteQueue(small_disk / "spool", inline_limit=1000, spill_limit=spill_limit)
        await queue.open()
        try:
            kept = await put(queue, b"k" * 2000)
            with pytest.raises(QueueFull):
                await put(queue, os.urandom(8 << 20))
            names = [p.name for p in (small_disk / "spool" / "bodies").iterdir()]
            assert names == [kept.id]
            assert [e.id for e in await queue.list()] == [kept.id]
        finally:
            await queue.close()

    run(main())


def test_bodies_in_delivery_stay_within_the_memory_budget(queue: Queue) -> None:
    """1000 messages may be in delivery at once, but not 1000 big bodies in memory."""
    from ferrosmtp.relay.delivery import Attempt
    from ferrosmtp.relay.routing import Router
    from ferrosmtp.relay.scheduler import Scheduler

    class Recording:
        def __init__(self) -> None:
            self.busy = self.most = self.done = 0

        async def deliver(self, entry: QueueEntry, body: bytes, rcpts: Any, hops: Any) -> Any:
            self.busy += len(body)
            self.most = max(self.most, self.busy)
            await asyncio.sleep(0.02)
            self.busy -= len(body)
            self.done += 1
            return [
                Attempt(
                    RecipientResult(r.address, Outcome.SENT, "2.0.0", "250 ok"),
                    "test",
                    "250 ok",
                    (0.0, 0.0),
                )
                for r in rcpts
            ]

        def sweep(self) -> None: ...

        async def close(self) -> None: ...

    async def main() -> Recording:
        await queue.open()
        deliverer = Recording()
        scheduler = Scheduler(
            queue,
            Router(relayhost=("127.0.0.1", 9)),
            deliverer,  # type: ignore[arg-type]
            hostname="relay.test",
            body_budget=100_000,
        )
        try:
            for _ in range(10):
                await put(queue, b"x" * 40_000)
            scheduler.start()
            for _ in range(500):
                if deliverer.done == 10:
                    break
                await asyncio.sleep(0.02)
            return deliverer
        finally:
            await scheduler.stop()
            await queue.close()

    deliverer = run(main())
    assert deliverer.done == 10
    assert 40_000 <= deliverer.most <= 100_000
